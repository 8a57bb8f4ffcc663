"""`tenantctl move`, locally: a tenant's data moved to another tier as a resumable state machine
recorded in the source host's registry (lambda_src.mobility.journal):

    started -> provision-target (suspended, at the source's schema version)
            -> freeze (the source suspended: logins disabled / the pool policy denies it;
                       registry `moving`)
            -> copy (streamed from the source's snapshot into one target transaction)
            -> verify (every table read back from the target: counts and checksums against
                       what the source sent; the target commits only then)
            -> switch (the catalog's tier) -> activate (the target active; source `moved`)

A failure before the switch rolls back: the target's copy is destroyed (it holds nothing the
source does not) and the source is active as before, the cause recorded. A process killed at
any step boundary is finished by the next `tenantctl move` of the tenant: forward if the
catalog already names the target tier, else rolled back; the tenant is never active in two
places or in none. The source's rows stay (frozen, `moved`) until `--purge-source`, which
exports them first.

`--online` (tenantkit.move_online): the copy is made by logical replication between the
provision and the freeze, the copy step only drains it, and the replication is dropped on every
path that ends a move.
"""

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from lambda_src.core.connection import ConnectionSettings
from lambda_src.core.errors import TenantkitError
from lambda_src.migrations.files import load_migrations
from lambda_src.mobility import (
    TenantScope,
    default_export_dir,
    schema_version,
    streamed_copy,
)
from lambda_src.mobility.journal import (
    DONE,
    PURGED,
    ROLLED_BACK,
    RUNNING,
    MoveRecord,
    mark_registry,
    read_move,
    record_move,
    start_move,
)
from lambda_src.provisioner.migrate import PoolSchema
from lambda_src.provisioner.plans.lifecycle import ACTIVE, MOVED, MOVING, SUSPENDED
from lambda_src.provisioner.postgres import read_registry
from lambda_src.tenancy import POOL

from .catalog import Catalog, CatalogError, Tenant
from .catalog_edit import edit_catalog, preview_catalog, set_setting
from .local import (
    EXPORTS_DIR,
    LocalSession,
    ProvisionResult,
    export_local_tenant,
    offboard_pool_tenant,
    offboard_tenant_database,
    provision_pool,
    provision_tenant_databases,
    tenant_admin_settings,
)
from .move_online import OnlineCopy, cleanup_replication, connect_autocommit

FAULT_ENV = "TENANTKIT_MOVE_FAULT"
"""Fault injection for tests: the step after which the process dies (os._exit), as a kill."""
FAULT_EXIT = 70
MOVES_DIR = "moves"


class MoveRefusedError(TenantkitError):
    """The move cannot start (bad input); nothing was changed."""


class MoveFailedError(TenantkitError):
    """The move failed and was rolled back: the source is active as before."""


@dataclass
class MoveReport:
    """What a move did."""

    tenant_id: str
    source_tier: str
    target_tier: str
    outcome: str
    steps: list[str] = field(default_factory=list)
    resumed: bool = False
    freeze_seconds: float | None = None
    rows: int = 0
    tables: dict[str, tuple[int, str]] = field(default_factory=dict)
    online: dict[str, Any] | None = None
    """An online move's replication times (move_online.OnlineTimes)."""
    active_at: float | None = None
    """perf_counter() when the target was activated (the end of the freeze)."""

    def as_json(self) -> dict[str, Any]:
        """The JSON fields of `tenantctl move --json`."""
        return {
            "tenant": self.tenant_id,
            "from": self.source_tier,
            "to": self.target_tier,
            "outcome": self.outcome,
            "steps": self.steps,
            "resumed": self.resumed,
            "rows": self.rows,
            "tables": [{"name": n, "rows": r, "sha256": s} for n, (r, s) in self.tables.items()],
            **({"online": self.online} if self.online is not None else {}),
        }


def catalog_in_tier(path: Path, tenant_id: str, tier: str) -> Catalog:
    """The catalog as it would be with the tenant in `tier` (validated, not written)."""
    return preview_catalog(path, set_setting(tenant_id, "tier", tier))


def registry_settings(local: LocalSession, tenant_id: str, tier: str) -> ConnectionSettings:
    """The admin's connection to the registry database of the tier's host for the tenant."""
    shared = local.servers.server_for_pool()
    if tier == "pool":
        return shared.admin_settings(POOL.database)
    if tier == "silo":
        return local.servers.running(tenant_id).admin_settings()
    return shared.admin_settings()


def provision(local: LocalSession, tenant: Tenant, catalog: Catalog) -> ProvisionResult:
    """Converge one tenant as `tenant` says (its tier, suspended or not) through the handler;
    a pool tenant with the catalog's other pool tenants (their batches are sent whole)."""
    if tenant.tier != "pool":
        result = provision_tenant_databases(
            [tenant],
            local.servers.server_for,
            local.store,
            migrations_dir=catalog.application_migrations,
        )[0]
    else:
        others = [t for t in catalog.in_tier("pool") if t.id != tenant.id]
        results = provision_pool(
            [*others, tenant],
            local.servers.server_for_pool(),
            local.store,
            migrations_dir=catalog.application_migrations,
            pool_schema=catalog.schema.pool_schema if catalog.schema else PoolSchema(),
            mode=catalog.pool.mode,
        )
        result = next((r for r in results if r.tenant_id == tenant.id), results[0])
    if not result.ok:
        raise TenantkitError(f"provisioning {tenant.id} in {tenant.tier} failed: {result.error}")
    return result


def destroy(local: LocalSession, tenant: Tenant, catalog: Catalog) -> None:
    """Destroy the tenant's data in `tenant.tier` (the handler's Delete with destroy)."""
    if tenant.tier == "pool":
        pool = [t for t in catalog.in_tier("pool") if t.id != tenant.id]
        offboard_pool_tenant(
            tenant,
            [*pool, tenant],
            local.servers.server_for_pool(),
            destroy=True,
            mode=catalog.pool.mode,
            store=local.store,
        )
    else:
        offboard_tenant_database(
            tenant, local.servers.server_for(tenant), local.store, destroy=True
        )


def _fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os._exit(FAULT_EXIT)


class Move:
    """One tenant's move on a local session (the state lock is held)."""

    def __init__(
        self, local: LocalSession, catalog_path: Path, state_dir: Path, tenant_id: str
    ) -> None:
        self.local = local
        self.catalog_path = catalog_path
        self.state_dir = state_dir
        self.tenant_id = tenant_id
        self.workdir = state_dir / MOVES_DIR / tenant_id
        """Where moves before the streamed copy kept their export files (tenant data): removed
        when a move ends, so an interrupted one of those leaves no copy behind."""
        self.online: OnlineCopy | None = None
        """Set by run(online=True): the copy is made by logical replication (move_online)."""

    def journal(self, tier: str) -> psycopg.Connection[Any]:
        """The admin's connection to the registry of the tenant's host in `tier`."""
        return connect_autocommit(registry_settings(self.local, self.tenant_id, tier))

    def held_in(self, tier: str) -> str | None:
        """The tenant's status in the registry of its host in `tier` (None: no row)."""
        try:
            with self.journal(tier) as conn:
                return registry_status(conn, self.tenant_id)
        except psycopg.OperationalError as error:
            if "does not exist" in str(error):  # no pool database yet
                return None
            raise

    def recorded_moves(self) -> list[MoveRecord]:
        """The tenant's moves as each registry that could hold one recorded them."""
        tiers = ["bridge", "pool"] + (
            ["silo"] if self.tenant_id in self.local.servers.silos else []
        )
        found = []
        for tier in tiers:
            try:
                with self.journal(tier) as conn:
                    record = read_move(conn, self.tenant_id)
            except psycopg.OperationalError as error:
                if "does not exist" in str(error):
                    continue
                raise
            if record is not None and record.source_tier == tier:
                found.append(record)
        return found

    def find_open(self) -> MoveRecord | None:
        """A move of the tenant that is still running (interrupted), if any."""
        return next((r for r in self.recorded_moves() if r.outcome == RUNNING), None)

    def data(self, tier: str) -> psycopg.Connection[Any]:
        """The admin's connection to the database holding the tenant's data in `tier`."""
        return connect_autocommit(tenant_admin_settings(self.local.servers, self.tenant_id, tier))

    def run(
        self,
        loaded: Catalog,
        target_tier: str,
        progress: Callable[[str], None] = lambda _step: None,
        *,
        online: bool = False,
    ) -> MoveReport:
        """Start a move of the tenant to `target_tier` and carry it to its end (`online`: copy
        by logical replication before the freeze, tenantkit.move_online)."""
        tenant = loaded.get(self.tenant_id)
        source_tier = tenant.tier
        try:
            target_catalog = catalog_in_tier(self.catalog_path, self.tenant_id, target_tier)
        except CatalogError as error:
            raise MoveRefusedError(
                f"{self.tenant_id} cannot be in {target_tier}: {error}"
            ) from None
        if target_tier == source_tier:
            raise MoveRefusedError(f"{self.tenant_id} is already in {source_tier}")
        held = self.held_in(target_tier)
        if held is not None:
            hint = (
                f"the rows of an earlier move are still there: purge them first "
                f"(tenantctl move {self.tenant_id} --purge-source)"
                if held == MOVED
                else "its data there must be offboarded with --destroy-data first"
            )
            raise MoveRefusedError(
                f"the {target_tier} registry still holds {self.tenant_id} ({held}): {hint}"
            )
        self.refuse_other_versions(loaded, source_tier, target_tier)
        if online:
            self.online = OnlineCopy(self, source_tier, target_tier)
            self.online.refuse()
        report = MoveReport(self.tenant_id, source_tier, target_tier, RUNNING)
        with self.journal(source_tier) as conn:
            start_move(conn, self.tenant_id, source_tier, target_tier)
        report.steps.append("started")
        _fault("started")
        return self.carry_on(loaded, target_catalog, report, progress)

    def refuse_other_versions(self, loaded: Catalog, source_tier: str, target_tier: str) -> None:
        """The target is provisioned at the catalog's newest migration: refuse, before anything
        changes, a source at another version (the copy is checked again after provisioning)."""
        with self.data(source_tier) as conn:
            at_source = schema_version(conn)
        migrations = loaded.application_migrations
        newest = load_migrations(migrations)[-1].version if migrations else None
        if newest is not None and at_source.version != newest:
            raise MoveRefusedError(
                f"{self.tenant_id} ({source_tier}) is at {at_source.label}; a new {target_tier} "
                f"target starts at the newest migration, V{newest}: bring the source to it "
                f"first (tenantctl migrate apply --tenant {self.tenant_id})"
            )

    def resume(self, loaded: Catalog, record: MoveRecord) -> MoveReport:
        """Finish an interrupted move: forward if the catalog has switched, else roll back."""
        report = MoveReport(
            self.tenant_id, record.source_tier, record.target_tier, RUNNING, resumed=True
        )
        if loaded.get(self.tenant_id).tier == record.target_tier:
            target_catalog = loaded
            source_catalog = catalog_in_tier(self.catalog_path, self.tenant_id, record.source_tier)
            self.activate(source_catalog, target_catalog, report)
            return report
        self.rollback(loaded, record.target_tier, report, "interrupted at step " + record.step)
        return report

    def carry_on(
        self,
        loaded: Catalog,
        target_catalog: Catalog,
        report: MoveReport,
        progress: Callable[[str], None],
    ) -> MoveReport:
        source = loaded.get(self.tenant_id)
        target = target_catalog.get(self.tenant_id)
        try:
            # provision the target, suspended: nobody may use it before the switch
            progress("provision-target")
            provision(self.local, target.model_copy(update={"suspended": True}), target_catalog)
            with self.data(source.tier) as src, self.data(target.tier) as dst:
                at_source, at_target = schema_version(src), schema_version(dst)
            if at_source != at_target:
                raise TenantkitError(
                    f"the target ({target.tier}) is at {at_target.label}, the source at "
                    f"{at_source.label}: bring both to the same migrations first"
                )
            self.step("provision-target", source.tier, report)
            if self.online is not None:
                progress("catch-up")
                self.online.catch_up()

            progress("freeze")
            frozen = time.perf_counter()
            provision(self.local, source.model_copy(update={"suspended": True}), loaded)
            with self.journal(source.tier) as conn:
                mark_registry(conn, self.tenant_id, MOVING, f"moving to {target.tier}")
            self.step("freeze", source.tier, report)

            progress("copy")
            if self.online is not None:
                self.online.drain()  # the rows are there already: the last writes, sequences
                report.online = self.online.times.as_json()
                self.step("copy", source.tier, report)
                progress("verify")
                report.tables = self.online.verify()  # both sides, on the drain's connections
            else:
                # Streamed from the source's snapshot into one target transaction, which commits
                # only after the verify read every table back from the target (no files).
                with (
                    self.data(source.tier) as src,
                    self.data(target.tier) as dst,
                    streamed_copy(
                        src,
                        dst,
                        TenantScope.of_tier(self.tenant_id, source.tier),
                        TenantScope.of_tier(self.tenant_id, target.tier),
                        replace=True,
                    ) as stream,
                ):
                    stream.copy()
                    self.step("copy", source.tier, report)
                    progress("verify")
                    verified = stream.verify()
                report.tables = {name: (d.rows, d.sha256) for name, d in verified.items()}
            report.rows = sum(r for r, _ in report.tables.values())
            self.step("verify", source.tier, report)

            progress("switch")
            switched, _ = edit_catalog(
                self.catalog_path, set_setting(self.tenant_id, "tier", target.tier)
            )
        except (TenantkitError, psycopg.Error, OSError, CatalogError) as error:
            self.rollback(loaded, target.tier, report, str(error))
            raise MoveFailedError(
                f"moving {self.tenant_id} to {target.tier} failed and was rolled back "
                f"({source.tier} active as before): {error}"
            ) from error
        self.step("switch", source.tier, report)
        self.activate(loaded, switched, report)
        report.freeze_seconds = (report.active_at or time.perf_counter()) - frozen
        return report

    def step(self, step: str, source_tier: str, report: MoveReport) -> None:
        """Record a completed step (then die there if the fault injection says so)."""
        with self.journal(source_tier) as conn:
            record_move(conn, self.tenant_id, step=step)
        report.steps.append(step)
        _fault(step)

    def activate(
        self, source_catalog: Catalog, target_catalog: Catalog, report: MoveReport
    ) -> None:
        """After the switch: the target as the catalog says (active), the source `moved`."""
        source = source_catalog.get(self.tenant_id)
        provision(self.local, target_catalog.get(self.tenant_id), target_catalog)
        report.active_at = time.perf_counter()
        # an online move's replication, drained before the switch, is dropped once the tenant
        # can write again, and before the move is recorded done (a kill here resumes it)
        cleanup_replication(self, source.tier, report.target_tier)
        with self.journal(source.tier) as conn:
            mark_registry(conn, self.tenant_id, MOVED, f"moved to {report.target_tier}")
            record_move(conn, self.tenant_id, step="activate", outcome=DONE)
        shutil.rmtree(self.workdir, ignore_errors=True)
        report.steps.append("activate")
        report.outcome = DONE

    def rollback(self, loaded: Catalog, target_tier: str, report: MoveReport, cause: str) -> None:
        """Before the switch: the target's copy destroyed, the source as the catalog says."""
        source = loaded.get(self.tenant_id)
        target_catalog = catalog_in_tier(self.catalog_path, self.tenant_id, target_tier)
        target = target_catalog.get(self.tenant_id)
        # an online move's subscription first: it writes into the target, and a database
        # with a subscription cannot be dropped; its slot next, which holds the source's WAL.
        # A clean-up that fails still gives the tenant its source back; the move stays
        # running with both causes recorded, so the next move or status of the tenant rolls
        # it back again (the clean-up first).
        try:
            cleanup_replication(self, source.tier, target_tier)
        except TenantkitError as error:
            provision(self.local, source, loaded)
            with self.journal(source.tier) as conn:
                mark_registry(conn, self.tenant_id, SUSPENDED if source.suspended else ACTIVE)
                record_move(
                    conn, self.tenant_id, cause=f"{cause}; then the clean-up failed: {error}"
                )
            raise
        if (
            self.held_in(target_tier) is not None
        ):  # the move's own copy (a held tenant is refused before it starts)
            destroy(self.local, target, target_catalog)
        provision(self.local, source, loaded)
        with self.journal(source.tier) as conn:
            mark_registry(conn, self.tenant_id, SUSPENDED if source.suspended else ACTIVE)
            record_move(conn, self.tenant_id, outcome=ROLLED_BACK, cause=cause)
        shutil.rmtree(self.workdir, ignore_errors=True)
        report.steps.append("rolled-back")
        report.outcome = ROLLED_BACK

    def purge_source(self) -> tuple[MoveRecord, Path]:
        """Export the rows a finished move left in its source, then destroy them."""
        record = next((r for r in self.recorded_moves() if r.outcome == DONE), None)
        if record is None:
            raise MoveRefusedError(f"{self.tenant_id} has no finished move whose source to purge")
        directory = default_export_dir(self.state_dir / EXPORTS_DIR, self.tenant_id)
        export_local_tenant(self.local.servers, self.tenant_id, record.source_tier, directory)
        source_catalog = catalog_in_tier(self.catalog_path, self.tenant_id, record.source_tier)
        destroy(self.local, source_catalog.get(self.tenant_id), source_catalog)
        with self.journal(record.source_tier) as conn:
            record_move(conn, self.tenant_id, outcome=PURGED)
        return record, directory


def registry_status(conn: psycopg.Connection[Any], tenant_id: str) -> str | None:
    """The tenant's status in this host's registry (None: no row, or no registry)."""
    return next((e.status for e in read_registry(conn) if e.tenant_id == tenant_id), None)
