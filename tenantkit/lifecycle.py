"""The tenant lifecycle as tenantctl sees it locally: what each host's registry recorded, joined
with the catalog, and the checks an onboarding must pass before it touches anything.

The registries are the provisioner's (lambda_src/provisioner/plans/lifecycle.py): the shared
embedded server's admin database for bridge tenants, its pool database for pool tenants, and
each silo tenant's own server. A catalog tenant no registry knows is `requested`; one whose
host could not be read (the deployed fleet's, tenantkit.fleet) is `unknown`.
"""

import fcntl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from lambda_src.core.connection import ConnectionSettings
from lambda_src.provisioner.plans.lifecycle import MOVED, MOVING, RegistryEntry
from lambda_src.provisioner.postgres import read_history, read_registry
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS

from .catalog import Catalog, Tier
from .catalog_edit import tier_move_message
from .local import LocalServers

REQUESTED = "requested"
"""In the catalog, not yet in any registry: provisioning (or a deploy) has not run."""
UNKNOWN = "unknown"
"""In the catalog, on a host whose registry could not be read (tenantctl list --provision aws)."""


@contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Serialize tenantctl's local operations on one state directory: they start and stop the
    same embedded servers."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def local_silo_ids(state_dir: Path, catalog: Catalog) -> list[str]:
    """Silo tenants with a local server: the catalog's and any left on disk by an earlier one."""
    ids = [t.id for t in catalog.in_tier("silo")]
    for server_dir in sorted(state_dir.glob("silo-*/pg")):
        tenant_id = server_dir.parent.name.removeprefix("silo-")
        if tenant_id not in ids:
            ids.append(tenant_id)
    return ids


@dataclass(frozen=True)
class RecordedTenant:
    """A tenant as one registry recorded it."""

    tenant_id: str
    tier: Tier
    status: str
    cause: str | None
    since: datetime
    server: str


@dataclass(frozen=True)
class _Registry:
    tier: Tier
    settings: ConnectionSettings
    server: str
    only: str | None = None
    """A silo server's registry answers for its own tenant only."""


def _registries(servers: LocalServers) -> list[_Registry]:
    shared = servers.server_for_pool()
    where = f"{shared.host}:{shared.port}"
    registries = [
        _Registry("bridge", shared.admin_settings(), where),
        _Registry("pool", shared.admin_settings(POOL.database), where),
    ]
    for tenant_id in servers.silos:
        silo = servers.running(tenant_id)
        registries.append(
            _Registry("silo", silo.admin_settings(), f"{silo.host}:{silo.port}", tenant_id)
        )
    return registries


def _query(
    registry: _Registry, read: Callable[[psycopg.Connection], list[RegistryEntry]]
) -> list[RegistryEntry]:
    try:
        with psycopg.connect(**registry.settings.connect_kwargs(), autocommit=True) as conn:
            entries = read(conn)
    except psycopg.OperationalError as error:
        if "does not exist" in str(error):  # no pool database yet
            return []
        raise
    return [e for e in entries if registry.only in (None, e.tenant_id)]


def recorded_tenants(servers: LocalServers) -> list[RecordedTenant]:
    """Every tenant every local registry holds (the servers must be running)."""
    return [
        RecordedTenant(e.tenant_id, registry.tier, e.status, e.cause, e.at, registry.server)
        for registry in _registries(servers)
        for e in _query(registry, read_registry)
        if e.tenant_id not in PROBE_TENANT_IDS  # tenantctl verify's own, never a customer
    ]


def histories(servers: LocalServers, tenant_id: str) -> dict[str, list[RegistryEntry]]:
    """Tier -> the transitions that tier's registry recorded for the tenant, oldest first; a
    destroyed tenant's history outlives its row."""
    found: dict[str, list[RegistryEntry]] = {}
    for registry in _registries(servers):
        entries = _query(registry, lambda conn: read_history(conn, tenant_id))
        if entries:
            found.setdefault(registry.tier, []).extend(entries)
    return found


def tier_moves(wanted: Sequence[tuple[str, str]], recorded: Sequence[RecordedTenant]) -> list[str]:
    """Messages for each (tenant id, tier) whose tenant a registry holds in another tier: its
    data is there (an offboarded tenant's too, unless it was destroyed). The rows a finished
    move left (`moved`) are no claim on the tenant; a move still `moving` must be finished
    first."""
    problems = []
    for tenant_id, tier in wanted:
        for row in recorded:
            if row.tenant_id != tenant_id or row.tier == tier or row.status == MOVED:
                continue
            if row.status == MOVING:
                problems.append(
                    f"tenant {tenant_id!r} is being moved out of {row.tier} (an interrupted "
                    f"move): run `tenantctl move {tenant_id}` to finish or roll it back first"
                )
            else:
                where = f"{row.status} in the {row.tier} registry on {row.server}"
                problems.append(tier_move_message(tenant_id, row.tier, tier, where))
    return problems


@dataclass(frozen=True)
class TenantStatus:
    """One tenant as `tenantctl list` and `status` show it."""

    tenant_id: str
    tier: str
    in_catalog: bool
    status: str
    cause: str | None = None
    since: datetime | None = None
    server: str | None = None
    data_destroyed: bool = False
    """Offboarded with --destroy-data (or removal_policy destroy): only the history is left."""

    def as_json(self) -> dict[str, object]:
        """The JSON shape of `--json` output."""
        return {
            "id": self.tenant_id,
            "tier": self.tier,
            "in_catalog": self.in_catalog,
            "status": self.status,
            "cause": self.cause,
            "since": self.since.isoformat() if self.since else None,
            "server": self.server,
            "data_destroyed": self.data_destroyed,
        }


def tenant_statuses(
    catalog: Catalog,
    recorded: Sequence[RecordedTenant],
    unknown: Mapping[tuple[str, str], str] | None = None,
) -> list[TenantStatus]:
    """Catalog tenants (recorded or requested) in catalog order, then tenants only a registry
    still knows (offboarded, or removed from the catalog by hand). `unknown` maps (tenant id,
    tier) to the host whose registry could not be read: those tenants are `unknown`."""
    by_id = {(r.tenant_id, r.tier): r for r in recorded}
    statuses = []
    for tenant in catalog.tenants:
        row = by_id.pop((tenant.id, tenant.tier), None)
        host = (unknown or {}).get((tenant.id, tenant.tier))
        if row is None and host is not None:
            cause = f"the registry on {host} could not be read"
            statuses.append(TenantStatus(tenant.id, tenant.tier, True, UNKNOWN, cause, None, host))
        elif row is None:
            statuses.append(TenantStatus(tenant.id, tenant.tier, True, REQUESTED))
        else:
            statuses.append(
                TenantStatus(
                    tenant.id, tenant.tier, True, row.status, row.cause, row.since, row.server
                )
            )
    for row in sorted(by_id.values(), key=lambda r: (r.tenant_id, r.tier)):
        statuses.append(
            TenantStatus(
                row.tenant_id, row.tier, False, row.status, row.cause, row.since, row.server
            )
        )
    return statuses
