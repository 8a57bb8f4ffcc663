"""The local fleet a migration rollout walks: one target per bridge or silo tenant database on
the embedded servers and one for the pool database, each migrated as the owner of the
application's objects: a tenant database through the provisioner's handler (the migrate request
the AWS rollout sends per tenant), the pool database through the provisioner's migrate_pool
(what the PoolDatabase resource runs in AWS when a deploy brings new migrations).

Who is a target follows from the catalog and the local registries: a tenant provisioned and not
offboarded (active or suspended: a suspended tenant keeps its data, so it keeps its schema too).
The pool is one target, migrated once for all its tenants, as the pool's owner role.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from lambda_src.core.connection import ConnectionSettings, RetryPolicy, first_line
from lambda_src.core.errors import TenantkitError
from lambda_src.migrations.apply import DatabaseStatus, database_status
from lambda_src.migrations.files import Migration
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.migrate import MIGRATE_REQUEST, PoolSchema, migrate_pool, pool_failure
from lambda_src.provisioner.plans.lifecycle import ACTIVE, OFFBOARDED, SUSPENDED
from lambda_src.tenancy import POOL, TIERS_WITH_TENANT_DATABASES

from ..catalog import Catalog, CatalogError, Tenant
from ..lifecycle import recorded_tenants
from ..local import LocalServers
from .waves import FleetResult, Outcome

POOL_TARGET = "(pool)"
"""How a rollout names the pool database: it is no tenant (tenant ids cannot hold parentheses)."""
LAST_APPLY_FILE = "migrate-last.json"
"""In the state directory: what the last `tenantctl migrate apply` did to each target."""
_MIGRATED_STATUSES = (ACTIVE, SUSPENDED)


@dataclass(frozen=True)
class MigrationTarget:
    """One database a rollout migrates."""

    label: str
    """The tenant id, or POOL_TARGET."""
    tier: str
    database: str
    role: str
    """The role the files run as: the tenant's objects role, or the pool's owner."""
    settings: ConnectionSettings
    """The admin, connected to the target database."""
    pool_schema: PoolSchema | None = None
    """The pool's: which new tables go under the tenant policies, which are shared."""


@dataclass(frozen=True)
class Skipped:
    """A catalog tenant that is not migrated, and why."""

    label: str
    tier: str
    reason: str

    def as_json(self) -> dict[str, str]:
        """The `--json` shape."""
        return {"target": self.label, "tier": self.tier, "reason": self.reason}


def tenant_target(tenant: Tenant, servers: LocalServers) -> MigrationTarget:
    """A bridge or silo tenant's database as a rollout target (its server must be running)."""
    names = tenant.names
    settings = servers.server_for(tenant).admin_settings(names.database)
    return MigrationTarget(tenant.id, tenant.tier, names.database, names.objects_role, settings)


def pool_target(catalog: Catalog, servers: LocalServers) -> MigrationTarget:
    """The pool database as a rollout target: migrated as the pool's owner, each new table of a
    tenant schema put under the tenant policies (the catalog must have a schema: section)."""
    schema = catalog.schema
    if schema is None:
        raise CatalogError(f"{catalog.source}: no schema: section (directory of migrations)")
    settings = servers.server_for_pool().admin_settings(POOL.database)
    return MigrationTarget(
        POOL_TARGET, "pool", POOL.database, POOL.owner_role, settings, schema.pool_schema
    )


def local_targets(
    catalog: Catalog, servers: LocalServers, only: Sequence[str] = ()
) -> tuple[list[MigrationTarget], list[Skipped]]:
    """The bridge and silo tenants' databases in catalog order, then the pool database (once,
    if a pool tenant is provisioned); `only` keeps those tenants (a pool tenant's id stands for
    the pool). Servers must be running."""
    status = {(r.tenant_id, r.tier): r.status for r in recorded_tenants(servers)}
    targets: list[MigrationTarget] = []
    skipped: list[Skipped] = []
    for tenant in catalog.tenants:
        if (only and tenant.id not in only) or tenant.tier not in TIERS_WITH_TENANT_DATABASES:
            continue
        recorded = status.get((tenant.id, tenant.tier))
        if recorded in _MIGRATED_STATUSES:
            targets.append(tenant_target(tenant, servers))
        elif recorded != OFFBOARDED:
            why = "not provisioned yet" if recorded is None else f"its status is {recorded}"
            skipped.append(Skipped(tenant.id, tenant.tier, f"{why}: provision it first"))
    pool = [t for t in catalog.in_tier("pool") if not only or t.id in only]
    if pool:
        if any(status.get((t.id, "pool")) in _MIGRATED_STATUSES for t in pool):
            targets.append(pool_target(catalog, servers))
        else:
            skipped.append(Skipped(POOL_TARGET, "pool", "no pool tenant is provisioned yet"))
    return targets, skipped


def _connect(target: MigrationTarget) -> psycopg.Connection:
    try:
        return psycopg.connect(**target.settings.connect_kwargs(), autocommit=True)
    except psycopg.OperationalError as error:
        raise ConnectionError(
            f"cannot connect to {target.database} on {target.settings.host}:"
            f"{target.settings.port}: {first_line(error)}"
        ) from None


def read_status(target: MigrationTarget, migrations: Sequence[Migration]) -> DatabaseStatus:
    """Where the target stands against the migrations (read only)."""
    with _connect(target) as conn:
        return database_status(conn, migrations)


def apply_target(
    target: MigrationTarget, migrations: Sequence[Migration], directory: Path
) -> Outcome:
    """Apply the pending migrations to one target. A tenant database goes through the
    provisioner's own handler with the migrate request the AWS rollout sends
    ({"tenantkit": "migrate", "tenant": id}); the pool database through the provisioner's
    migrate_pool as the pool's owner, as its PoolDatabase resource does in AWS. A failed file
    is the outcome's error, naming the tenant (or the pool database) and the file; the engine
    rolled it back. A database that cannot be reached is the outcome's error too, naming it."""
    retry = RetryPolicy(attempts=2, first_delay_s=0.5)
    if target.pool_schema is not None:
        try:
            result = migrate_pool(target.settings, migrations, target.pool_schema, retry)
        except TenantkitError as error:  # its text names the database
            return _unfinished(target, migrations, str(error))
        except psycopg.Error as error:  # the connection lost between files
            return _unfinished(target, migrations, f"{target.database}: {first_line(error)}")
        return Outcome(result.applied, result.current, pool_failure(result))
    config = HandlerConfig(
        admin_settings=target.settings.for_database("postgres"),
        retry=retry,
        migrations_dir=directory,
    )
    try:
        response = handle({"tenantkit": MIGRATE_REQUEST, "tenant": target.label}, config)
    except TenantkitError as error:
        return _unfinished(target, migrations, str(error))
    return Outcome(tuple(response["applied"]), response["current"])


def _unfinished(target: MigrationTarget, migrations: Sequence[Migration], error: str) -> Outcome:
    """A failed target's outcome, at the version its database says it is at now; if it cannot
    be read (it is unreachable), the error says the version is unknown rather than none."""
    try:
        current = read_status(target, migrations).current
    except Exception:  # the reason it failed is the error already reported
        return Outcome((), None, f"{error}; its version is unknown until it can be read")
    return Outcome((), current, error)


def schema_versions(
    targets: Sequence[MigrationTarget], migrations: Sequence[Migration]
) -> dict[str, int | None]:
    """Target label -> the version its database is at (None: nothing applied, or it could
    not be read), read from each tracking table as `tenantctl migrate status` reads it."""
    versions: dict[str, int | None] = {}
    for target in targets:
        try:
            versions[target.label] = read_status(target, migrations).current
        except (ConnectionError, psycopg.Error):
            versions[target.label] = None
    return versions


def write_last_apply(state_dir: Path, result: FleetResult, tiers: dict[str, str]) -> None:
    """Record what this apply did to each target (`tenantctl migrate status` shows it)."""
    document = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "stopped": result.stopped,
        "targets": [{**t.as_json(), "tier": tiers[t.target]} for t in result.targets],
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LAST_APPLY_FILE
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(document, indent=2))
    partial.replace(path)  # never a half-written record


def read_last_apply(state_dir: Path) -> dict[str, Any] | None:
    """The last apply's record, or None if there was none (or it cannot be read)."""
    try:
        document = json.loads((state_dir / LAST_APPLY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None
