"""One host sampled as its admin: the tenants its registry holds, their usage recorded in its
usage record. What `tenantctl usage` and the host's scheduled metering function both run."""

from dataclasses import dataclass, field
from datetime import datetime

from ..core.connection import ConnectionSettings, RetryPolicy, connect
from ..provisioner.postgres import pool_mode, read_registry
from ..tenancy import PROBE_TENANT_IDS, tenant_names
from .record import read_usage, record_usage
from .sampler import PoolTableEstimate, TenantUsage, sample_pool, sample_tenant_databases


@dataclass(frozen=True)
class HostSample:
    """The usages of one host's tenants and, for the pool, how each table was estimated."""

    usages: list[TenantUsage]
    tables: list[PoolTableEstimate] = field(default_factory=list)


def sample_registry(
    settings: ConnectionSettings,
    *,
    tier: str,
    registry_database: str | None = None,
    only: str | None = None,
    tenant_id: str | None = None,
    since: datetime | None = None,
    record: bool = True,
) -> HostSample:
    """Sample the host `settings` reach as its admin (its admin database): the tenants of the
    registry in `registry_database` (None: the admin database; the pool's: the pool database),
    `only`'s on a silo host, `tenant_id`'s if given; with `record`, written to the usage record
    there and read back with the record's peak and window (`since`). Raises TenantkitError
    (cannot connect) or psycopg.Error."""
    registry = settings.for_database(registry_database) if registry_database else settings
    retry = RetryPolicy(attempts=1)
    with connect(registry, retry) as conn:
        tenants = sorted(
            e.tenant_id
            for e in read_registry(conn)
            if e.tenant_id not in PROBE_TENANT_IDS
            and only in (None, e.tenant_id)
            and tenant_id in (None, e.tenant_id)
        )
        tables: list[PoolTableEstimate] = []
        if tier == "pool":
            usages, tables = sample_pool(conn, tenants, mode=pool_mode(settings, retry))
        else:
            usages = sample_tenant_databases(
                conn,
                {t: tenant_names(t).database for t in tenants},
                tier=tier,
                connect_to=lambda db: connect(settings.for_database(db), retry),
            )
        if record:
            usages = read_usage(conn, record_usage(conn, usages), since)
    return HostSample(usages, tables)
