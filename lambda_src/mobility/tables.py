"""One tenant's tables in one database, read the same way in every tier: which tables, in
foreign-key order, their columns and owned sequences, and each table's rows as COPY text with
their count and sha256.

A tenant's data is either a whole database (bridge and silo: every table of the application's
schemas, read as the tenant's objects role, which owns them) or its rows of the pool's
protected tables (`WHERE tenant_id = %s`, read as the pool's maintainer, the one role whose
policy admits every tenant's rows: row-level security stays on, and the filter keeps every
other tenant out). Rows are read in primary-key order and written with fixed output settings,
so the same rows give the same bytes, hence the same checksum, in any tier.

`conn` is always the admin's connection to the tenant's database, inside a transaction the
caller opened; nothing here commits.
"""

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..migrations.apply import TRACKING_SCHEMA
from ..provisioner.plans.pool_rls import ISOLATION_POLICY
from ..tenancy import POOL, tenant_names, validate_tenant_id

TENANTKIT_SCHEMAS = (POOL.registry_schema, POOL.sample_schema, TRACKING_SCHEMA)
"""tenantkit's own schemas (the registry, the verify probes' sample tables, the migrations'
record): never a tenant's data, never exported."""

COPY_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
}
"""COPY's text output depends on these; fixed so that two databases give the same bytes."""

LAYOUTS = ("pool", "database")

BATCH_BYTES = 1 << 16
"""stream_rows passes rows on in batches of about this many bytes (a row is never split)."""


@dataclass(frozen=True)
class TenantScope:
    """Where a tenant's rows are: `pool` (shared tables, its rows only) or `database` (a bridge
    or silo tenant's own database, every row)."""

    tenant_id: str
    layout: str

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant_id)
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}")

    @classmethod
    def of_tier(cls, tenant_id: str, tier: str) -> "TenantScope":
        """The scope of a tenant of `tier` (pool, bridge or silo)."""
        return cls(tenant_id, "pool" if tier == "pool" else "database")

    @property
    def pooled(self) -> bool:
        """Whether the tenant shares its tables with other tenants."""
        return self.layout == "pool"

    @property
    def reader_role(self) -> str:
        """The role tables are read and written as: the pool's maintainer, or the tenant
        database's objects role (the owner of the application's objects)."""
        return POOL.maintainer_role if self.pooled else tenant_names(self.tenant_id).objects_role


@dataclass(frozen=True)
class Column:
    """A column as exported: its name and its type (format_type)."""

    name: str
    type: str


@dataclass(frozen=True)
class Table:
    """A table of the tenant's data."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    """The primary key's columns (empty: none, rows are then ordered by their whole text)."""
    parents: tuple[str, ...]
    """Qualified names of the tables its foreign keys reference (itself excluded)."""

    @property
    def qualified(self) -> str:
        """`schema.name`, how manifests and messages name it."""
        return f"{self.schema}.{self.name}"

    @property
    def identifier(self) -> sql.Identifier:
        """The table as an SQL identifier."""
        return sql.Identifier(self.schema, self.name)

    @property
    def column_list(self) -> sql.Composable:
        """Its exported columns, in order, as an SQL list."""
        return sql.SQL(", ").join(sql.Identifier(c.name) for c in self.columns)

    @property
    def has_tenant_column(self) -> bool:
        """Whether its rows carry tenant_id (every pool table does)."""
        return any(c.name == "tenant_id" for c in self.columns)


@dataclass(frozen=True)
class SequencePosition:
    """An identity or serial sequence owned by an exported column, and where it stands."""

    table: str
    column: str
    last_value: int
    is_called: bool

    @property
    def position(self) -> int:
        """The last value handed out (last_value, or one before it if none was yet)."""
        return self.last_value if self.is_called else self.last_value - 1


@dataclass(frozen=True)
class TableDigest:
    """A table's tenant rows: how many, and the sha256 of their COPY text."""

    rows: int
    sha256: str


@dataclass(frozen=True)
class SchemaVersion:
    """The application's migrations a database is at: the newest applied version and a sha256
    over every applied (version, checksum), so two databases at the same version with other
    files differ."""

    version: int | None
    checksum: str | None

    @property
    def label(self) -> str:
        """How a message names it."""
        if self.version is None:
            return "no migration applied"
        return f"V{self.version} (applied set {str(self.checksum)[:12]})"


_TABLES = sql.SQL(
    "SELECT c.oid, n.nspname, c.relname FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema' "
    "AND n.nspname <> ALL(%s) "
    "AND (NOT %s OR EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = %s)) "
    "ORDER BY n.nspname, c.relname"
)
"""The tenant's tables: the application's schemas' (parameter 1: tenantkit's own, excluded);
in the pool (parameter 2) only those under the tenant policy (parameter 3)."""
_COLUMNS = sql.SQL(
    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
    "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attgenerated = '' "
    "ORDER BY attnum"
)
"""Columns COPY can write back (generated columns are computed again on load)."""
_KEY = sql.SQL(
    "SELECT a.attname FROM pg_index i "
    "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) "
    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.position"
)
_PARENTS = sql.SQL(
    "SELECT DISTINCT n.nspname || '.' || c.relname FROM pg_constraint k "
    "JOIN pg_class c ON c.oid = k.confrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE k.contype = 'f' AND k.conrelid = %s AND k.confrelid <> k.conrelid ORDER BY 1"
)
_OWNED_SEQUENCES = sql.SQL(
    "SELECT a.attname, n.nspname, s.relname FROM pg_depend d "
    "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
    "JOIN pg_namespace n ON n.oid = s.relnamespace "
    "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
    "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
    "AND d.refobjid = %s::regclass AND d.deptype IN ('a', 'i') ORDER BY a.attnum"
)
"""(column, schema, sequence) of the serial and identity sequences a table's columns own."""
_APPLIED = sql.SQL("SELECT version, checksum FROM {} ORDER BY version").format(
    sql.Identifier(TRACKING_SCHEMA, "applied_migrations")
)


def fk_order(tables: Sequence[Table]) -> list[Table]:
    """Tables with every table after the tables it references (parents first); ties by name.
    A reference cycle cannot be loaded table by table: ValueError naming the tables."""
    by_name = {t.qualified: t for t in tables}
    ordered: list[Table] = []
    done: set[str] = set()
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise ValueError(f"foreign keys form a cycle: {cycle}")
        visiting.append(name)
        for parent in by_name[name].parents:
            if parent in by_name:
                visit(parent)
        visiting.pop()
        done.add(name)
        ordered.append(by_name[name])

    for name in sorted(by_name):
        visit(name)
    return ordered


def tenant_tables(conn: psycopg.Connection, scope: TenantScope) -> list[Table]:
    """The tables holding the tenant's data in this database, parents first."""
    tables = []
    found = conn.execute(_TABLES, (list(TENANTKIT_SCHEMAS), scope.pooled, ISOLATION_POLICY))
    for oid, schema, name in found.fetchall():
        columns = tuple(Column(*row) for row in conn.execute(_COLUMNS, (oid,)).fetchall())
        key = tuple(row[0] for row in conn.execute(_KEY, (oid,)).fetchall())
        parents = tuple(row[0] for row in conn.execute(_PARENTS, (oid,)).fetchall())
        tables.append(Table(schema, name, columns, key, parents))
    return fk_order(tables)


def sequence_positions(conn: psycopg.Connection, tables: Sequence[Table]) -> list[SequencePosition]:
    """Where each sequence owned by an exported column stands (read as the admin, who acts as
    the sequences' owner: the maintainer and the objects role may not read a pool sequence)."""
    positions = []
    for table in tables:
        exported = {c.name for c in table.columns}
        owned = conn.execute(_OWNED_SEQUENCES, (table.identifier.as_string(conn),))
        for column, schema, sequence in owned.fetchall():
            if column not in exported:
                continue
            row = conn.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(
                    sql.Identifier(schema, sequence)
                )
            ).fetchone()
            assert row is not None
            positions.append(SequencePosition(table.qualified, column, int(row[0]), bool(row[1])))
    return positions


def sequence_of(conn: psycopg.Connection, table: str, column: str) -> str | None:
    """The qualified name of the sequence `table.column` owns (None: it owns none)."""
    row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def schema_version(conn: psycopg.Connection) -> SchemaVersion:
    """The database's applied migrations (read as the admin, the tracking table's only
    reader): the newest version and the sha256 of every `version:checksum` line."""
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{TRACKING_SCHEMA}.applied_migrations",)
    ).fetchone()
    if exists != (True,):
        return SchemaVersion(None, None)
    applied = conn.execute(_APPLIED).fetchall()
    if not applied:
        return SchemaVersion(None, None)
    digest = hashlib.sha256()
    for version, checksum in applied:
        digest.update(f"{version}:{checksum}\n".encode())
    return SchemaVersion(int(applied[-1][0]), digest.hexdigest())


@contextmanager
def acting_as(conn: psycopg.Connection, role: str) -> Iterator[None]:
    """The statements inside run as `role` (SET LOCAL ROLE, in the caller's transaction), with
    COPY's output settings fixed."""
    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
    for name, value in COPY_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))
    try:
        yield
    finally:
        # After a failed statement the transaction can only roll back (which ends SET LOCAL):
        # a RESET there would fail too and hide the statement's own error.
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("RESET ROLE")


def rows_query(table: Table, scope: TenantScope) -> sql.Composed:
    """COPY of the tenant's rows of `table`, in key order, as text (the tenant id bound)."""
    where = sql.SQL(" WHERE tenant_id = %s") if scope.pooled else sql.SQL("")
    order = (
        sql.SQL(", ").join(sql.Identifier(c) for c in table.key)
        if table.key
        else sql.SQL("t::text")
    )
    return sql.SQL("COPY (SELECT {} FROM {} t{} ORDER BY {}) TO STDOUT").format(
        table.column_list, table.identifier, where, order
    )


def stream_rows(
    conn: psycopg.Connection,
    table: Table,
    scope: TenantScope,
    sink: Callable[[bytes], object] = lambda _chunk: None,
) -> TableDigest:
    """Stream the tenant's rows of `table` into `sink` (a chunk at a time, never the whole
    table in memory); their count and sha256. Run inside acting_as(scope.reader_role)."""
    digest = hashlib.sha256()
    rows = 0
    params = (scope.tenant_id,) if scope.pooled else None
    batch = bytearray()

    def emit() -> int:
        data = bytes(batch)
        batch.clear()
        digest.update(data)
        sink(data)
        return data.count(b"\n")  # COPY text: one line per row (newlines are escaped)

    # The server sends a message per row: they are passed on (and hashed) in batches, which
    # halves the client's CPU time per row of a move's streamed copy.
    with conn.cursor().copy(rows_query(table, scope), params) as copy:
        for chunk in copy:
            batch += chunk
            if len(batch) >= BATCH_BYTES:
                rows += emit()
        if batch:
            rows += emit()
    return TableDigest(rows, digest.hexdigest())


def tenant_digests(
    conn: psycopg.Connection, scope: TenantScope, tables: Sequence[Table] | None = None
) -> dict[str, TableDigest]:
    """Qualified table name -> the count and checksum of the tenant's rows in this database
    (`tables`: those, else every table of the tenant), in the caller's transaction. What an
    export records and what an import or a move checks the copy against."""
    tables = tenant_tables(conn, scope) if tables is None else tables
    with acting_as(conn, scope.reader_role):
        return {t.qualified: stream_rows(conn, t, scope) for t in tables}


def differing_tables(one: Mapping[str, TableDigest], other: Mapping[str, TableDigest]) -> list[str]:
    """The tables (qualified names) whose count or checksum differs, or that only one holds."""
    return sorted(name for name in one.keys() | other.keys() if one.get(name) != other.get(name))
