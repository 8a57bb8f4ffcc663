"""Export one tenant's data: a directory with `manifest.json` and one COPY-text file per table,
written from one consistent snapshot (a read-only REPEATABLE READ transaction), streamed table
by table. The directory is made 0700 and its files 0600: it is the tenant's data.

The export is written into `<dir>.partial` and renamed when complete, so a failed export leaves
no directory that could pass for one.
"""

import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from ..core.errors import TenantkitError
from .tables import (
    SchemaVersion,
    SequencePosition,
    Table,
    TableDigest,
    TenantScope,
    acting_as,
    schema_version,
    sequence_positions,
    stream_rows,
    tenant_tables,
)

FORMAT = "tenantkit-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ExportError(TenantkitError):
    """The export could not be written (nothing is left at its path)."""


@dataclass(frozen=True)
class ExportedTable:
    """A table's entry in the manifest."""

    name: str
    file: str
    rows: int
    sha256: str
    columns: list[dict[str, str]]
    key: list[str]


@dataclass(frozen=True)
class Manifest:
    """What an export holds (manifest.json)."""

    tenant: str
    tier: str
    exported_at: str
    schema: SchemaVersion
    tables: list[ExportedTable]
    """In foreign-key order: parents first."""
    sequences: list[SequencePosition]
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def as_json(self) -> dict[str, Any]:
        """The manifest's JSON document."""
        return {
            "format": self.format,
            "format_version": self.format_version,
            "tenant": self.tenant,
            "tier": self.tier,
            "exported_at": self.exported_at,
            "schema": {"version": self.schema.version, "checksum": self.schema.checksum},
            "tables": [asdict(t) for t in self.tables],
            "sequences": [asdict(s) for s in self.sequences],
        }

    @property
    def total_rows(self) -> int:
        """Rows over every table."""
        return sum(t.rows for t in self.tables)


def data_file_name(position: int, table: Table) -> str:
    """`001-public.customers.copy`: numbered in load order, so a listing reads in that order."""
    return f"{position:03d}-{table.schema}.{table.name}.copy"


def _private_file(path: Path) -> Any:
    # O_EXCL: never write through a file (or a link) that was already there.
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def export_tenant(
    conn: psycopg.Connection, scope: TenantScope, tier: str, directory: Path
) -> Manifest:
    """Write the tenant's data from `conn` (the admin's connection to its database, not in a
    transaction) into `directory`, which must not exist; returns the manifest. Raises
    ExportError (nothing left behind) if it cannot."""
    if directory.exists():
        raise ExportError(f"{directory} already exists: an export is never written over another")
    partial = directory.with_name(directory.name + ".partial")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial.mkdir(mode=0o700)
        manifest = _write(conn, scope, tier, partial)
        with _private_file(partial / MANIFEST) as handle:
            handle.write(json.dumps(manifest.as_json(), indent=2).encode() + b"\n")
        partial.rename(directory)
    except (OSError, psycopg.Error) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise ExportError(f"exporting {scope.tenant_id} failed: {error}") from error
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _write(conn: psycopg.Connection, scope: TenantScope, tier: str, directory: Path) -> Manifest:
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        with conn.transaction():
            started = datetime.now(UTC)
            version = schema_version(conn)
            tables = tenant_tables(conn, scope)
            sequences = sequence_positions(conn, tables)
            exported = []
            with acting_as(conn, scope.reader_role):
                for position, table in enumerate(tables, start=1):
                    name = data_file_name(position, table)
                    with _private_file(directory / name) as handle:
                        digest: TableDigest = stream_rows(conn, table, scope, handle.write)
                    exported.append(
                        ExportedTable(
                            table.qualified,
                            name,
                            digest.rows,
                            digest.sha256,
                            [{"name": c.name, "type": c.type} for c in table.columns],
                            list(table.key),
                        )
                    )
    finally:
        conn.isolation_level = None
        conn.read_only = None
    return Manifest(
        scope.tenant_id,
        tier,
        started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        version,
        exported,
        sequences,
    )


def default_export_dir(root: Path, tenant_id: str, now: datetime | None = None) -> Path:
    """`<root>/<id>-<UTC timestamp>` (microseconds included: two exports in one second)."""
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return root / f"{tenant_id}-{moment}"
