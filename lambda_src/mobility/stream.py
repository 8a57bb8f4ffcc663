"""A tenant's data streamed from its database in one tier straight into its database in another
(a move's copy): no files. Each table, parents first, is read from the source with the export's
own ordered `COPY (SELECT ...) TO STDOUT` and every chunk goes into the target's `COPY ... FROM
STDIN` as it arrives, hashed on the way, so the source's count and sha256 per table come out of
the one read. The target is loaded as an import loads it (load.py: the same checks of schema
version, tables and columns, the tenant_id check, the pool's temporary tables and sequences).

One transaction on each side: the source's is a REPEATABLE READ read-only snapshot, the
target's holds the whole load and the verify, which reads every table back from the target and
compares it with what the source sent; the target commits only when every table matched, and
rolls back on a mismatch or any error.

The text format, not COPY's binary one: the checksums are over the same bytes as an export's
(a move's report and an export of the same rows agree), and binary COPY carries type OIDs in
arrays and composite values, which differ between two databases for the application's own
types. The measured difference is in the README ("Moving a tenant").
"""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import psycopg

from ..core.errors import TenantkitError
from .load import load_table, prepare_target, set_sequences
from .tables import (
    Table,
    TableDigest,
    TenantScope,
    acting_as,
    differing_tables,
    schema_version,
    sequence_positions,
    stream_rows,
    tenant_digests,
    tenant_tables,
)

ORIGIN = "the source"


class CopyFailedError(TenantkitError):
    """The streamed copy failed or did not verify; the target's transaction was rolled back."""


class StreamedCopy:
    """A copy in progress: `copy()` loads every table, `verify()` reads the target back. Made by
    streamed_copy, which commits the target only after a verify that passed."""

    def __init__(
        self,
        source: psycopg.Connection,
        target: psycopg.Connection,
        source_scope: TenantScope,
        target_scope: TenantScope,
        replace: bool,
    ) -> None:
        self.source = source
        self.target = target
        self.source_scope = source_scope
        self.target_scope = target_scope
        self.replace = replace
        self.tables: list[Table] = []
        """The target's tables in load order (in the source's column order)."""
        self.sent: dict[str, TableDigest] = {}
        """Qualified name -> the count and sha256 of the rows the source sent."""
        self.sequences: dict[str, int] = {}
        self.verified = False

    def copy(self) -> dict[str, TableDigest]:
        """Stream every table of the tenant from the source into the target and set the
        sequences; the source's count and checksum per table."""
        version = schema_version(self.source)
        tables = tenant_tables(self.source, self.source_scope)
        positions = sequence_positions(self.source, tables)  # as the admin: the owner's view
        self.tables, _ = prepare_target(
            self.target,
            self.target_scope,
            version,
            [(t.qualified, [{"name": c.name, "type": c.type} for c in t.columns]) for t in tables],
            replace=self.replace,
            origin=ORIGIN,
        )
        with acting_as(self.source, self.source_scope.reader_role):
            for position, (table, into) in enumerate(zip(tables, self.tables, strict=True), 1):
                load_table(
                    self.target,
                    into,
                    self.target_scope,
                    position,
                    partial(self._send, table),
                    f"{ORIGIN}'s {table.qualified}",
                )
        self.sequences = set_sequences(
            self.target, positions, self.target_scope, self.tables, ORIGIN
        )
        return dict(self.sent)

    def _send(self, table: Table, copy: Any) -> int:
        digest = stream_rows(self.source, table, self.source_scope, copy.write)
        self.sent[table.qualified] = digest
        return digest.rows

    def verify(self) -> dict[str, TableDigest]:
        """Read every table back from the target (in its open transaction) and compare its
        count and checksum with what the source sent; CopyFailedError naming the tables that
        differ."""
        held = tenant_digests(self.target, self.target_scope, self.tables)
        different = differing_tables(held, self.sent)
        if different:
            raise CopyFailedError(
                f"the copy of {self.target_scope.tenant_id} did not verify: "
                f"{', '.join(different)} differ(s) from the source; rolled back"
            )
        self.verified = True
        return held


@contextmanager
def streamed_copy(
    source: psycopg.Connection,
    target: psycopg.Connection,
    source_scope: TenantScope,
    target_scope: TenantScope,
    *,
    replace: bool = False,
) -> Iterator[StreamedCopy]:
    """The tenant's copy from `source` to `target` (the admin's connections to its databases,
    not in a transaction): the body calls copy() then verify(); the target commits when the
    body returns after a verify that passed, and rolls back otherwise (CopyFailedError, or the
    body's own exception)."""
    if source_scope.tenant_id != target_scope.tenant_id:
        raise ValueError("a copy is of one tenant: the scopes name two")
    source.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    source.read_only = True
    try:
        with source.transaction(), target.transaction():
            stream = StreamedCopy(source, target, source_scope, target_scope, replace)
            yield stream
            if not stream.verified:
                raise CopyFailedError(
                    f"the copy of {target_scope.tenant_id} was not verified: rolled back"
                )
    except psycopg.Error as error:
        raise CopyFailedError(
            f"copying {target_scope.tenant_id} failed, the target was rolled back: {error}"
        ) from error
    finally:
        source.isolation_level = None
        source.read_only = None
