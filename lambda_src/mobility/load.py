"""Import an export into a tenant of any tier, all or nothing.

Before the database is touched: the manifest is read and checked (format, the tenant it is of)
and every data file's row count and sha256 are checked against it. Then, in one transaction:
the target must be at the export's schema version (the same applied migrations) and have the
export's tables and columns; a tenant that already has rows is refused unless `replace`
(its rows are then deleted in the same transaction); the tables are loaded parents first;
every row must be the tenant's; sequences are set; and the tenant's rows are read back and
must give the manifest's counts and checksums, or the whole transaction rolls back.

Every row must be the tenant's: COPY FROM's own `WHERE tenant_id = <id>` keeps only its rows
and a count short of the rows fed refuses the load (no second pass over the rows). Pool
tables are under FORCE ROW LEVEL SECURITY and COPY FROM is refused on them, so a pool table
is loaded into a temporary table first (as the admin, the same WHERE), and inserted from
there as the maintainer; row-level security is never turned off.

load_table, prepare_target and set_sequences are also the steps of a move's streamed copy
(stream.py): the rows then come from the source's COPY instead of a file.

Sequences: a bridge or silo tenant owns its sequences and gets the export's position (raised
to the largest imported value if that is higher); a pool sequence is shared by every tenant,
so it is set to GREATEST(its position, the export's, the largest imported value): never moved
backwards, or another tenant's next row could reuse a value.
"""

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..core.errors import TenantkitError
from .export import FORMAT, FORMAT_VERSION, MANIFEST, ExportedTable, Manifest
from .tables import (
    SchemaVersion,
    SequencePosition,
    Table,
    TenantScope,
    acting_as,
    schema_version,
    sequence_of,
    sequence_positions,
    tenant_digests,
    tenant_tables,
)

CHUNK = 1 << 20
"""Bytes read from a data file at a time."""
_MAX_MANIFEST_BYTES = 16 << 20


class ImportRefusedError(TenantkitError):
    """The export or the target is not fit to import (nothing was changed): bad input."""


class ImportFailedError(TenantkitError):
    """The load failed or did not verify; its transaction was rolled back (nothing changed)."""


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    rows = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            rows += chunk.count(b"\n")
    return rows, digest.hexdigest()


def _field(document: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = document.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ImportRefusedError(f"{where}: field {key!r} is missing or malformed")
    return value


def read_manifest(directory: Path) -> Manifest:
    """The export's manifest, checked for shape (ImportRefusedError naming the file if not)."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ImportRefusedError(f"{directory} is not an export directory")
    if not path.is_file():
        raise ImportRefusedError(f"{path} is missing: {directory} is not a complete export")
    if path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ImportRefusedError(f"{path} is too large to be a manifest")
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise ImportRefusedError(
            f"{path} is not valid JSON (corrupted or truncated): {error}"
        ) from None
    if not isinstance(document, dict):
        raise ImportRefusedError(f"{path} is not a tenantkit export manifest")
    where = str(path)
    if document.get("format") != FORMAT:
        raise ImportRefusedError(f"{path} is not a tenantkit export manifest")
    if document.get("format_version") != FORMAT_VERSION:
        raise ImportRefusedError(
            f"{path}: export format version {document.get('format_version')!r}, this tenantkit "
            f"reads version {FORMAT_VERSION}"
        )
    schema = _field(document, "schema", dict, where)
    version = schema.get("version")
    checksum = schema.get("checksum")
    if not (version is None or isinstance(version, int)) or not (
        checksum is None or isinstance(checksum, str)
    ):
        raise ImportRefusedError(f"{where}: field 'schema' is malformed")
    tables = []
    for entry in _field(document, "tables", list, where):
        if not isinstance(entry, dict):
            raise ImportRefusedError(f"{where}: a table entry is malformed")
        columns = _field(entry, "columns", list, where)
        if not all(
            isinstance(c, dict)
            and isinstance(c.get("name"), str)
            and isinstance(c.get("type"), str)
            for c in columns
        ):
            raise ImportRefusedError(f"{where}: the columns of {entry.get('name')!r} are malformed")
        file = _field(entry, "file", str, where)
        if Path(file).name != file or file in (".", "..", MANIFEST):
            raise ImportRefusedError(f"{where}: data file name {file!r} is not a plain file name")
        tables.append(
            ExportedTable(
                _field(entry, "name", str, where),
                file,
                _field(entry, "rows", int, where),
                _field(entry, "sha256", str, where),
                [{"name": c["name"], "type": c["type"]} for c in columns],
                [str(k) for k in _field(entry, "key", list, where)],
            )
        )
    sequences = []
    for entry in _field(document, "sequences", list, where):
        if not isinstance(entry, dict):
            raise ImportRefusedError(f"{where}: a sequence entry is malformed")
        sequences.append(
            SequencePosition(
                _field(entry, "table", str, where),
                _field(entry, "column", str, where),
                _field(entry, "last_value", int, where),
                _field(entry, "is_called", bool, where),
            )
        )
    return Manifest(
        _field(document, "tenant", str, where),
        _field(document, "tier", str, where),
        _field(document, "exported_at", str, where),
        SchemaVersion(version, checksum),
        tables,
        sequences,
    )


def verify_export(directory: Path, tenant_id: str) -> Manifest:
    """The manifest of an export of `tenant_id` whose every data file is whole and unchanged
    (its row count and sha256 as recorded); ImportRefusedError naming the file otherwise."""
    manifest = read_manifest(directory)
    if manifest.tenant != tenant_id:
        raise ImportRefusedError(
            f"{directory} is an export of tenant {manifest.tenant!r}, not of {tenant_id!r}"
        )
    listed = {t.file for t in manifest.tables}
    if len(listed) != len(manifest.tables):
        raise ImportRefusedError(f"{directory / MANIFEST} names one data file twice")
    unlisted = sorted(
        p.name for p in directory.iterdir() if p.name != MANIFEST and p.name not in listed
    )
    if unlisted:
        raise ImportRefusedError(
            f"{directory} holds file(s) its manifest does not list: {', '.join(unlisted)}"
        )
    for table in manifest.tables:
        path = directory / table.file
        if not path.is_file():
            raise ImportRefusedError(f"{path} is missing (data of {table.name})")
        rows, sha256 = _file_digest(path)
        if sha256 != table.sha256 or rows != table.rows:
            raise ImportRefusedError(
                f"{path} does not match the manifest (corrupted, truncated or changed): "
                f"{rows} rows, sha256 {sha256[:12]}; the manifest says {table.rows} rows, "
                f"sha256 {table.sha256[:12]}"
            )
    return manifest


@dataclass(frozen=True)
class ImportResult:
    """What an import loaded."""

    tables: dict[str, int]
    """Qualified table name -> rows loaded (in load order)."""
    replaced_rows: int
    """The tenant's rows deleted first (replace)."""
    sequences: dict[str, int]
    """`table.column` -> the position its sequence was set to."""

    @property
    def total_rows(self) -> int:
        """Rows loaded over every table."""
        return sum(self.tables.values())


def _check_tables(
    exported: Sequence[tuple[str, Sequence[dict[str, str]]]],
    target: Sequence[Table],
    tenant_id: str,
    origin: str,
) -> list[Table]:
    """The target's tables in the order and column order of `exported` ((qualified name,
    columns) of the export's or the source's tables); ImportRefusedError if the sets differ."""
    by_name = {t.qualified: t for t in target}
    names = [name for name, _ in exported]
    missing = sorted(set(names) - set(by_name))
    extra = sorted(set(by_name) - set(names))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{origin} has table(s) the target lacks: {', '.join(missing)}")
        if extra:
            parts.append(f"the target has table(s) {origin} lacks: {', '.join(extra)}")
        raise ImportRefusedError(
            f"{tenant_id}'s tables differ from {origin}'s: " + "; ".join(parts)
        )
    ordered = []
    for name, wanted in exported:
        table = by_name[name]
        columns = [{"name": c.name, "type": c.type} for c in table.columns]
        if sorted(columns, key=str) != sorted(wanted, key=str):
            raise ImportRefusedError(
                f"{name}: the target's columns {_columns(columns)} differ from {origin}'s "
                f"{_columns(wanted)}"
            )
        # Load and verify in the export's column order: the checksum is over those bytes.
        positions = {c["name"]: i for i, c in enumerate(wanted)}
        ordered.append(
            Table(
                table.schema,
                table.name,
                tuple(sorted(table.columns, key=lambda c: positions[c.name])),
                table.key,
                table.parents,
            )
        )
    return ordered


def _columns(columns: Sequence[dict[str, str]]) -> str:
    return "(" + ", ".join(f"{c['name']} {c['type']}" for c in columns) + ")"


def _count(conn: psycopg.Connection, table: Table, scope: TenantScope) -> int:
    where = sql.SQL(" WHERE tenant_id = %s") if scope.pooled else sql.SQL("")
    params = (scope.tenant_id,) if scope.pooled else None
    query = sql.SQL("SELECT count(*) FROM {}{}").format(table.identifier, where)
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def tenant_row_counts(
    conn: psycopg.Connection, scope: TenantScope, tables: Sequence[Table]
) -> dict[str, int]:
    """Qualified table name -> the tenant's rows in it (in the caller's transaction)."""
    with acting_as(conn, scope.reader_role):
        return {t.qualified: _count(conn, t, scope) for t in tables}


def _stream_file(copy: Any, path: Path, expected: str) -> int:
    digest = hashlib.sha256()
    rows = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            rows += chunk.count(b"\n")
            copy.write(chunk)
    if digest.hexdigest() != expected:
        raise ImportFailedError(f"{path} changed while it was loaded")
    return rows


RowFeed = Callable[[Any], int]
"""Writes a table's rows, as COPY text, into a psycopg Copy object; returns how many."""


def load_table(
    conn: psycopg.Connection,
    table: Table,
    scope: TenantScope,
    position: int,
    feed: RowFeed,
    origin: str,
) -> int:
    """Load the rows `feed` writes into the tenant's `table` (in the caller's transaction);
    every row must be the tenant's, or ImportFailedError naming `origin` (where the rows came
    from). Returns the rows loaded.

    The tenant check is COPY's own `WHERE tenant_id = <id>`: a row of another tenant (or
    without one) is not loaded, and the count COPY reports is then short of the rows fed;
    no second pass over the rows."""
    keep = sql.SQL(" WHERE tenant_id = %s")
    tenant = (scope.tenant_id,)
    if not scope.pooled:
        check = table.has_tenant_column
        with acting_as(conn, scope.reader_role):
            copy_in = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
                table.identifier, table.column_list, keep if check else sql.SQL("")
            )
            loaded, fed = _copy_in(conn, copy_in, tenant if check else None, feed)
        _refuse_foreign(fed - loaded, table, scope, origin)
        return loaded
    # The pool: COPY FROM is refused on a table under row-level security, so the rows go to a
    # temporary table, are checked to be the tenant's, and are inserted from it as the
    # maintainer (the only role whose policy admits a tenant's rows without its context).
    staging = sql.Identifier(f"tenantkit_import_{position}")
    conn.execute(
        sql.SQL(
            "CREATE TEMPORARY TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
        ).format(staging, table.column_list, table.identifier)
    )
    copy_in = sql.SQL("COPY {} FROM STDIN{}").format(staging, keep)
    loaded, fed = _copy_in(conn, copy_in, tenant, feed)
    _refuse_foreign(fed - loaded, table, scope, origin)
    conn.execute(
        sql.SQL("GRANT SELECT ON {} TO {}").format(staging, sql.Identifier(scope.reader_role))
    )
    with acting_as(conn, scope.reader_role):
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}").format(
                table.identifier, table.column_list, table.column_list, staging
            )
        )
    return loaded


def _copy_in(
    conn: psycopg.Connection,
    statement: sql.Composed,
    params: tuple[str, ...] | None,
    feed: RowFeed,
) -> tuple[int, int]:
    """(rows COPY loaded, rows fed)."""
    cursor = conn.cursor()
    with cursor.copy(statement, params) as copy:
        fed = feed(copy)
    return cursor.rowcount, fed


def _refuse_foreign(foreign: int, table: Table, scope: TenantScope, origin: str) -> None:
    if foreign:
        raise ImportFailedError(
            f"{origin}: {foreign} row(s) of {table.qualified} belong to another tenant than "
            f"{scope.tenant_id}: refused, nothing loaded"
        )


def set_sequences(
    conn: psycopg.Connection,
    sequences: Sequence[SequencePosition],
    scope: TenantScope,
    tables: Sequence[Table],
    origin: str = "the export",
) -> dict[str, int]:
    """Set the target's sequences after a load from the source's `sequences` (the module's
    docstring says how); `table.column` -> the position each was set to."""
    current = {(s.table, s.column): s for s in sequence_positions(conn, tables)}
    by_name = {t.qualified: t for t in tables}
    positions = {}
    for source in sequences:
        table = by_name.get(source.table)
        now = current.get((source.table, source.column))
        sequence = sequence_of(conn, source.table, source.column) if table else None
        if table is None or now is None or sequence is None:
            raise ImportRefusedError(
                f"{origin} has a sequence on {source.table}.{source.column}; the target's "
                "column owns none"
            )
        with acting_as(conn, scope.reader_role):
            where = sql.SQL(" WHERE tenant_id = %s") if scope.pooled else sql.SQL("")
            row = conn.execute(
                sql.SQL("SELECT max({}) FROM {}{}").format(
                    sql.Identifier(source.column), table.identifier, where
                ),
                (scope.tenant_id,) if scope.pooled else None,
            ).fetchone()
        imported = int(row[0]) if row and row[0] is not None else None
        if scope.pooled:
            found = [] if imported is None else [imported]
            wanted, called = max(now.position, source.position, *found), True
            if wanted == now.position:
                positions[f"{source.table}.{source.column}"] = now.position
                continue
        else:
            wanted, called = source.last_value, source.is_called
            if imported is not None and imported > source.position:
                wanted, called = imported, True
        conn.execute("SELECT setval(%s::regclass, %s, %s)", (sequence, wanted, called))
        positions[f"{source.table}.{source.column}"] = wanted if called else wanted - 1
    return positions


def import_tenant(
    conn: psycopg.Connection,
    scope: TenantScope,
    manifest: Manifest,
    directory: Path,
    *,
    replace: bool = False,
) -> ImportResult:
    """Load a verified export (verify_export) into the tenant's tables through `conn`, the
    admin's connection to its database (not in a transaction), in one transaction.
    ImportRefusedError: the target is at another schema version, has other tables, or has
    rows and not `replace`; ImportFailedError: the load failed or did not verify. Either way
    the transaction is rolled back and nothing changed."""
    if manifest.tenant != scope.tenant_id:
        raise ImportRefusedError(
            f"the export is of tenant {manifest.tenant!r}, not of {scope.tenant_id!r}"
        )
    try:
        with conn.transaction():
            return _import(conn, scope, manifest, directory, replace)
    except psycopg.Error as error:
        raise ImportFailedError(
            f"importing into {scope.tenant_id} failed, nothing was changed: {error}"
        ) from error


def prepare_target(
    conn: psycopg.Connection,
    scope: TenantScope,
    schema: SchemaVersion,
    exported: Sequence[tuple[str, Sequence[dict[str, str]]]],
    *,
    replace: bool,
    origin: str,
) -> tuple[list[Table], int]:
    """Check the target before a load (in the caller's transaction): at `schema`, with the
    tables and columns of `exported` (see _check_tables), and without rows of the tenant
    unless `replace` (they are then deleted). The target's tables in load order, and the rows
    deleted."""
    version = schema_version(conn)
    if version != schema:
        raise ImportRefusedError(
            f"{scope.tenant_id} is at {version.label}, {origin} at {schema.label}: "
            "bring both to the same migrations (tenantctl migrate apply) and import again"
        )
    tables = _check_tables(exported, tenant_tables(conn, scope), scope.tenant_id, origin)
    existing = tenant_row_counts(conn, scope, tables)
    replaced = sum(existing.values())
    if replaced and not replace:
        held = ", ".join(f"{name} {rows}" for name, rows in existing.items() if rows)
        raise ImportRefusedError(
            f"{scope.tenant_id} already has rows ({held}): import with --replace to delete "
            "them and load the export instead"
        )
    if replaced:
        where = sql.SQL(" WHERE tenant_id = %s") if scope.pooled else sql.SQL("")
        with acting_as(conn, scope.reader_role):
            for table in reversed(tables):  # children before the rows they reference
                conn.execute(
                    sql.SQL("DELETE FROM {}{}").format(table.identifier, where),
                    (scope.tenant_id,) if scope.pooled else None,
                )
    return tables, replaced


def _import(
    conn: psycopg.Connection,
    scope: TenantScope,
    manifest: Manifest,
    directory: Path,
    replace: bool,
) -> ImportResult:
    tables, replaced = prepare_target(
        conn,
        scope,
        manifest.schema,
        [(t.name, t.columns) for t in manifest.tables],
        replace=replace,
        origin="the export",
    )
    entries = {t.name: t for t in manifest.tables}
    for position, table in enumerate(tables, start=1):
        entry = entries[table.qualified]
        path = directory / entry.file

        def feed(copy: Any, path: Path = path, entry: ExportedTable = entry) -> int:
            return _stream_file(copy, path, entry.sha256)

        load_table(conn, table, scope, position, feed, entry.file)
    sequences = set_sequences(conn, manifest.sequences, scope, tables)
    loaded = tenant_digests(conn, scope, tables)
    for name, digest in loaded.items():
        entry = entries[name]
        if (digest.rows, digest.sha256) != (entry.rows, entry.sha256):
            raise ImportFailedError(
                f"{name} did not verify after loading ({digest.rows} rows, sha256 "
                f"{digest.sha256[:12]}; the export has {entry.rows}, {entry.sha256[:12]}): "
                "rolled back, nothing changed"
            )
    return ImportResult({n: d.rows for n, d in loaded.items()}, replaced, sequences)
