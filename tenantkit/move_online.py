"""`tenantctl move <id> --to bridge|silo --online`: the move's copy made by logical replication
while the tenant keeps writing, so the freeze only covers the cut-over
(lambda_src.mobility.replication has the SQL):

    provision-target -> catch-up (publication with the tenant's row filter, slot, login and
                        subscription; the initial copy and the stream, writes go on)
    -> freeze (as offline) -> copy (= drain: the transactions from before the freeze end, the
       target applied the source's WAL up to now, sequences set)
    -> verify -> switch -> activate (as offline; then the replication is dropped)

Only out of the pool or between tenant databases: PostgreSQL refuses to apply replicated rows to
a table whose row-level security applies to the applying role (the table's owner), and the
pool's tables FORCE it, so a move into the pool is refused with --online before anything
changes.

The clean-up (cleanup_replication) runs on every path that ends a move (rollback, activate, a
resumed move, the start of a new one) whether or not it was online: it looks the objects up by
their names and drops what it finds, so a killed online move never leaves a slot behind.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from lambda_src.core.connection import ConnectionSettings
from lambda_src.core.errors import TenantkitError
from lambda_src.mobility import TenantScope, tenant_digests
from lambda_src.mobility.load import set_sequences
from lambda_src.mobility.replication import (
    Publisher,
    ReplicationError,
    ReplicationNames,
    create_login,
    create_publication,
    create_slot,
    create_subscription,
    current_lsn,
    detach_subscription,
    drop_source_side,
    drop_subscription,
    refuse_logged_ddl,
    refuse_unready_source,
    transaction_id_now,
    wait_applied,
    wait_synced,
    wait_transactions_before,
)
from lambda_src.mobility.tables import (
    Table,
    differing_tables,
    sequence_positions,
    tenant_tables,
)

from .local import tenant_admin_settings

if TYPE_CHECKING:
    from .move import Move

TIMEOUT_ENV = "TENANTKIT_MOVE_ONLINE_TIMEOUT"
"""Seconds the initial copy and each catch-up may take (default DEFAULT_TIMEOUT)."""
DEFAULT_TIMEOUT = 600.0
DRAIN_TIMEOUT = 30.0
"""Seconds the cut-over may wait for transactions from before the freeze and the last WAL."""
CATCH_UP_FAULT = "catch-up"
"""TENANTKIT_MOVE_FAULT value that kills the process while the subscription copies."""
ONLINE_TIERS = ("bridge", "silo")


@dataclass
class OnlineTimes:
    """What the online copy took (seconds)."""

    catch_up: float = 0.0
    drain_transactions: float = 0.0
    drain_wal: float = 0.0
    sequences: dict[str, int] | None = None

    def as_json(self) -> dict[str, Any]:
        """The `online` field of `tenantctl move --json`."""
        return {
            "catch_up_seconds": round(self.catch_up, 3),
            "drain_transactions_seconds": round(self.drain_transactions, 3),
            "drain_wal_seconds": round(self.drain_wal, 3),
            "sequences": self.sequences or {},
        }


def connect_autocommit(settings: ConnectionSettings) -> psycopg.Connection[Any]:
    """An autocommit connection (the move's and the online copy's admin connections)."""
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


class OnlineCopy:
    """The online copy of one move (a Move's hook: catch_up before the freeze, drain as the
    copy step)."""

    def __init__(self, move: "Move", source_tier: str, target_tier: str) -> None:
        self.move = move
        self.source_tier = source_tier
        self.target_tier = target_tier
        self.names = ReplicationNames(move.tenant_id)
        self.times = OnlineTimes()
        self.timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
        self.kept: tuple[psycopg.Connection[Any], psycopg.Connection[Any]] | None = None
        """The source and target connections catch_up leaves open for the drain (two
        connections fewer to open while the tenant is frozen)."""
        self.tables: tuple[list[Table], list[Table]] = ([], [])

    def source(self) -> psycopg.Connection[Any]:
        """The admin's connection to the source database."""
        return self.move.data(self.source_tier)

    def target(self) -> psycopg.Connection[Any]:
        """The admin's connection to the target database."""
        return self.move.data(self.target_tier)

    def refuse(self) -> None:
        """Before anything changes: refuse what an online move cannot do (raises
        MoveRefusedError with the reason and what to do instead)."""
        from .move import MoveRefusedError, registry_settings

        tenant_id = self.move.tenant_id
        if self.target_tier not in ONLINE_TIERS:
            raise MoveRefusedError(
                f"{tenant_id} cannot be moved into the {self.target_tier} --online: PostgreSQL "
                "refuses to apply replicated rows to a table under row-level security that "
                "applies to the applying role (the pool's tables FORCE it, owner included); "
                "move it without --online (the freeze then lasts the copy)"
            )
        try:
            with self.source() as conn:
                refuse_unready_source(conn)
            with connect_autocommit(
                registry_settings(self.move.local, tenant_id, self.target_tier)
            ) as conn:
                refuse_logged_ddl(conn)
        except ReplicationError as error:
            raise MoveRefusedError(f"{tenant_id} cannot be moved --online: {error}") from None

    def catch_up(self) -> None:
        """Replicate the tenant's rows into the (suspended) target until it has caught up."""
        from .move import _fault

        started = time.perf_counter()
        cleanup_replication(self.move, self.source_tier, self.target_tier)
        source_settings = tenant_admin_settings(
            self.move.local.servers, self.move.tenant_id, self.source_tier
        )
        scope = TenantScope.of_tier(self.move.tenant_id, self.source_tier)
        src, dst = self.source(), self.target()
        self.kept = (src, dst)  # closed by drain(), or with the process
        target_scope = TenantScope.of_tier(self.move.tenant_id, self.target_tier)
        tables = tenant_tables(src, scope)
        self.tables = (tables, tenant_tables(dst, target_scope))
        if not tables:
            raise ReplicationError(f"{self.move.tenant_id} has no table to replicate")
        password = create_login(src, self.names, scope, self.timeout)
        create_publication(src, self.names, scope, tables)
        create_slot(src, self.names)
        publisher = Publisher(
            source_settings.host,
            source_settings.port,
            source_settings.dbname,
            str(source_settings.ssl_root_cert),
        )
        create_subscription(dst, self.names, publisher, password)
        del password
        _fault(CATCH_UP_FAULT)
        wait_synced(dst, self.names, len(tables), self.timeout)
        wait_applied(src, dst, self.names, current_lsn(src), self.timeout)
        self.times.catch_up = time.perf_counter() - started

    def drain(self) -> None:
        """After the freeze: the writes let through before it reach the target and the
        target's sequences are set. The replication stays until the target is active
        (cleanup_replication in Move.activate): nothing more comes from the frozen source,
        and its teardown (a walsender to end, a slot to drop) is then outside the freeze."""
        target_scope = TenantScope.of_tier(self.move.tenant_id, self.target_tier)
        src, dst = self.connections()
        started = time.perf_counter()
        wait_transactions_before(src, transaction_id_now(src), DRAIN_TIMEOUT)
        self.times.drain_transactions = time.perf_counter() - started
        self.times.drain_wal = wait_applied(src, dst, self.names, current_lsn(src), DRAIN_TIMEOUT)
        with src.transaction():
            positions = sequence_positions(src, self.tables[0])
        # logical replication carries no sequence: set as an import sets them
        with dst.transaction():
            self.times.sequences = set_sequences(
                dst, positions, target_scope, self.tables[1], origin="the source"
            )

    def connections(self) -> tuple[psycopg.Connection[Any], psycopg.Connection[Any]]:
        """The source and target connections catch_up left open (new ones after a resume)."""
        if self.kept is None or self.kept[0].closed or self.kept[1].closed:
            self.kept = (self.source(), self.target())
            scopes = (
                TenantScope.of_tier(self.move.tenant_id, self.source_tier),
                TenantScope.of_tier(self.move.tenant_id, self.target_tier),
            )
            self.tables = (
                tenant_tables(self.kept[0], scopes[0]),
                tenant_tables(self.kept[1], scopes[1]),
            )
        return self.kept

    def verify(self) -> dict[str, tuple[int, str]]:
        """After the drain: count and checksum of every table on both sides, read at the same
        time on the connections already open (the verify is inside the freeze), then closed;
        TenantkitError naming the tables that differ."""
        src, dst = self.connections()
        jobs = (
            (src, TenantScope.of_tier(self.move.tenant_id, self.source_tier), self.tables[0]),
            (dst, TenantScope.of_tier(self.move.tenant_id, self.target_tier), self.tables[1]),
        )

        def digests(conn: Any, scope: TenantScope, tables: list[Table]) -> dict[str, Any]:
            with conn.transaction():
                found = tenant_digests(conn, scope, tables)
            return {name: (d.rows, d.sha256) for name, d in found.items()}

        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                at_source, at_target = pool.map(lambda job: digests(*job), jobs)
        finally:
            src.close()
            dst.close()
            self.kept = None
        different = differing_tables(at_source, at_target)
        if different:
            raise TenantkitError(
                f"the copy did not verify: {', '.join(different)} differ(s) from the source"
            )
        return at_source


def cleanup_replication(move: "Move", source_tier: str, target_tier: str) -> list[str]:
    """Drop whatever an online move of the tenant from `source_tier` to `target_tier` left:
    the subscription in the target database (if that database exists), then on the source its
    slots, publication and login. What was dropped; TenantkitError if it could not be."""
    names = ReplicationNames(move.tenant_id)
    dropped = []
    oid = None
    # The subscription is detached first and dropped last: its oid names the table-sync slots
    # on the source, so a clean-up that fails half-way leaves it to name them to the next one.
    try:
        with move.data(target_tier) as dst:
            oid = detach_subscription(dst, names)
    except psycopg.OperationalError as error:
        if "does not exist" not in str(error):  # no target database: no subscription
            raise TenantkitError(f"detaching the move's subscription: {error}") from error
    try:
        with move.data(source_tier) as src:
            dropped += drop_source_side(src, names, oid)
    except psycopg.OperationalError as error:
        if "does not exist" not in str(error):
            raise TenantkitError(f"dropping the move's replication slot: {error}") from error
    if oid is not None:
        with move.data(target_tier) as dst:
            drop_subscription(dst, names)
        dropped.insert(0, f"subscription {names.name}")
    return dropped
