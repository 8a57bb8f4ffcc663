"""`tenantctl usage`: each host's per-tenant usage sampled (lambda_src.metering) and recorded in its
usage record, locally on the embedded servers or in AWS through each host's admin secret (as
`tenantctl list --provision aws` reads the registries). A host that cannot be read is reported
with the reason, never left out.
"""

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from lambda_src.core.connection import (
    ConnectionSettings,
    first_line,
    settings_from_secret,
)
from lambda_src.core.errors import TenantkitError
from lambda_src.core.secrets import read_secret_json
from lambda_src.metering import (
    PoolTableEstimate,
    TenantUsage,
)
from lambda_src.metering.host import sample_registry
from lambda_src.tenancy import POOL, Tier

from .fleet import CONNECT_TIMEOUT_S, PARALLEL_HOSTS, Host
from .local import LocalServers

APPLICATION_NAME = "tenantkit-metering"
"""How the sampler's sessions show in pg_stat_activity."""


@dataclass(frozen=True)
class HostUsage:
    """One host's sample, or why it could not be taken."""

    host: str
    tier: Tier
    endpoint: str | None = None
    usages: list[TenantUsage] = field(default_factory=list)
    tables: list[PoolTableEstimate] = field(default_factory=list)
    """The pool's: how each protected table's rows were estimated."""
    reason: str | None = None
    """Why the host could not be sampled (None: it was)."""

    def as_json(self) -> dict[str, Any]:
        """The host's part of `tenantctl usage --json`."""
        return {
            "host": self.host,
            "tier": self.tier,
            "endpoint": self.endpoint,
            "tenants": [u.as_json() for u in self.usages],
            "tables": [
                {
                    "table": t.table,
                    "rows": t.reltuples,
                    "bytes": t.bytes,
                    "modified_since_analyze": t.modified_since_analyze,
                    "analyzed": t.analyzed,
                    "analyzed_whole_table": t.analyzed_whole_table,
                    "from_statistics": t.from_statistics,
                    "counted": t.counted,
                    "sampled": t.sampled,
                }
                for t in self.tables
            ],
            "reason": self.reason,
        }


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO 8601 time (UTC unless it says otherwise) or an age such as 30m, 12h,
    7d; ValueError naming the accepted forms."""
    now = now or datetime.now(UTC)
    age = re.fullmatch(r"(\d{1,6})([mhd])", text.strip())
    if age:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[age.group(2)]
        return now - timedelta(**{unit: int(age.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected an ISO 8601 time (2026-12-01T09:00) or an age "
            "(30m, 12h, 7d)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def sample_host(
    host: Host,
    settings: ConnectionSettings,
    *,
    tenant_id: str | None = None,
    since: datetime | None = None,
    record: bool = True,
) -> HostUsage:
    """Sample one host as its admin (`settings`: the admin database's): the tenants its registry
    holds (`tenant_id` only, if given; a silo host answers for its own tenant), recorded in its
    usage record, with the record's peak and window (`since`). Every failure becomes the
    reading's reason, which never holds the password."""
    endpoint = f"{settings.host}:{settings.port}"
    settings = replace(settings, application_name=APPLICATION_NAME)
    registry = settings.for_database(host.database) if host.database else settings
    try:
        sample = sample_registry(
            settings,
            tier=host.tier,
            registry_database=host.database,
            only=host.only,
            tenant_id=tenant_id,
            since=since,
            record=record,
        )
    except TenantkitError as error:
        if f'database "{registry.dbname}" does not exist' in str(error) and host.tier == "pool":
            return HostUsage(host.name, host.tier, endpoint)  # no pool database: no tenants
        return HostUsage(
            host.name, host.tier, endpoint, reason=_redacted(str(error), settings.password)
        )
    except psycopg.Error as error:
        reason = f"could not sample {endpoint} as {settings.user}: {first_line(error)}"
        return HostUsage(
            host.name, host.tier, endpoint, reason=_redacted(reason, settings.password)
        )
    return HostUsage(host.name, host.tier, endpoint, sample.usages, sample.tables)


def _redacted(reason: str, password: str) -> str:
    return reason.replace(password, "********") if password else reason


def local_hosts(servers: LocalServers) -> list[tuple[Host, ConnectionSettings]]:
    """The embedded servers as hosts: the shared one's bridge registry and pool, and each silo
    tenant's own server (the servers must be running)."""
    shared = servers.server_for_pool().admin_settings()
    hosts = [
        (Host("bridge (local)", "bridge"), shared),
        (Host("pool (local)", "pool", POOL.database), shared),
    ]
    for tenant in sorted(servers.silos):
        hosts.append(
            (
                Host(f"silo {tenant} (local)", "silo", only=tenant),
                servers.running(tenant).admin_settings(),
            )
        )
    return hosts


def sample_deployed(
    hosts: Sequence[Host],
    secrets: Any,
    *,
    ssl_root_cert: Path,
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
    tenant_id: str | None = None,
    since: datetime | None = None,
) -> list[HostUsage]:
    """Sample every deployed host through its admin secret (TLS verify-full against
    `ssl_root_cert`), several at once; a shared host the catalog does not need and whose secret
    does not exist is left out, any other secret that cannot be read is the host's reason."""

    def one(host: Host) -> HostUsage | None:
        try:
            secret = read_secret_json(host.admin_secret_name, client=secrets)
            settings = settings_from_secret(
                secret, ssl_root_cert, application_name=APPLICATION_NAME
            )
        except TenantkitError as error:
            if not host.needed and str(error).endswith("ResourceNotFoundException"):
                return None
            return HostUsage(host.name, host.tier, reason=str(error))
        settings = replace(settings, connect_timeout_s=connect_timeout_s)
        return sample_host(host, settings, tenant_id=tenant_id, since=since)

    with ThreadPoolExecutor(max_workers=PARALLEL_HOSTS) as pool:
        readings = list(pool.map(one, hosts))
    return [r for r in readings if r is not None]
