"""The deployed fleet's registries, as `tenantctl list` and `status --provision aws` read them:
each database host's registry through the host's admin secret (Secrets Manager), over TLS
verify-full, with the provisioner's own connection code.

Which hosts there are follows from the catalog and the names the stacks use: the bridge cluster
(`tenantkit-bridge`), the pool cluster (`tenantkit-pool`, its registry in the pool database) and
one host per silo tenant (`tenantkit-silo-<id>`). A host that cannot be read (its secret missing
or refused, the server unreachable, its certificate not trusted, a timeout) is reported with the
reason; its catalog tenants are `unknown`, never `requested`.
"""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
import psycopg
from botocore.exceptions import BotoCoreError, NoRegionError

from lambda_src.core.connection import RetryPolicy, connect, first_line, settings_from_secret
from lambda_src.core.errors import TenantkitError
from lambda_src.core.secrets import read_secret_json
from lambda_src.provisioner.plans.lifecycle import RegistryEntry
from lambda_src.provisioner.postgres import read_history, read_registry
from lambda_src.tenancy import BRIDGE_HOST, POOL, PROBE_TENANT_IDS, HostNames

from .catalog import Catalog, Tenant, Tier
from .lifecycle import RecordedTenant

APPLICATION_NAME = "tenantctl"
CONNECT_TIMEOUT_S = 5
"""Per host: long enough for a cluster across a Region, short enough that a fleet with an
unreachable host still answers in seconds (libpq's minimum is 2)."""
PARALLEL_HOSTS = 8
"""Hosts read at once."""


def secrets_manager(region: str | None) -> Any:
    """A Secrets Manager client of the default credential chain, in `region` (None: the
    environment's or profile's Region); TenantkitError if there is no Region or profile."""
    try:
        return boto3.session.Session(region_name=region).client("secretsmanager")
    except NoRegionError:
        raise TenantkitError(
            "no AWS Region: pass --region or set AWS_REGION (or AWS_DEFAULT_REGION)"
        ) from None
    except (BotoCoreError, ValueError) as error:  # a profile that does not exist, a bad Region
        raise TenantkitError(f"cannot make a Secrets Manager client: {error}") from None


def tenant_host(tenant: Tenant) -> str:
    """The host (stack, cluster identifier) holding the tenant's registry row, as the stacks
    name it."""
    if tenant.tier == "silo":
        return tenant.names.silo_stack_name
    return BRIDGE_HOST if tenant.tier == "bridge" else POOL.stack_name


@dataclass(frozen=True)
class Host:
    """One database host whose registry is read."""

    name: str
    """The host's name (HostNames.host): its stack and cluster identifier."""
    tier: Tier
    database: str | None = None
    """Where its registry is: None for the admin secret's database (bridge, silo), the pool
    database for the pool."""
    only: str | None = None
    """A silo host's registry answers for its own tenant only."""
    needed: bool = True
    """Whether the catalog has tenants on it. A shared host it does not need may still be
    deployed (its tenants offboarded); one whose admin secret does not exist is left out."""

    @property
    def admin_secret_name(self) -> str:
        """`tenantkit/<host>/admin`, the secret the host's stack creates."""
        return HostNames(self.name).admin_secret_name


def fleet_hosts(catalog: Catalog) -> list[Host]:
    """The bridge and pool clusters, then one host per silo tenant of the catalog."""
    return [
        Host(BRIDGE_HOST, "bridge", needed=bool(catalog.in_tier("bridge"))),
        Host(POOL.stack_name, "pool", POOL.database, needed=bool(catalog.in_tier("pool"))),
        *(
            Host(tenant_host(t), "silo", only=t.id)
            for t in catalog.in_tier("silo")  # ids validated by the catalog
        ),
    ]


@dataclass(frozen=True)
class HostReading:
    """What one host's registry says, or why it could not be read."""

    host: Host
    entries: list[RegistryEntry] = field(default_factory=list)
    history: list[RegistryEntry] = field(default_factory=list)
    """The transitions of the tenant asked about (`status`), oldest first."""
    reason: str | None = None
    """Why the host could not be read (None: it was)."""
    endpoint: str | None = None
    """host:port from its admin secret."""
    absent: bool = False
    """A shared host the catalog does not need and whose admin secret does not exist."""


def read_host(
    host: Host,
    secrets: Any,
    *,
    ssl_root_cert: Path,
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
    tenant_id: str | None = None,
) -> HostReading:
    """Read one host's registry (and `tenant_id`'s history) as its admin: the admin secret from
    `secrets` (a Secrets Manager client), one connection attempt, verify-full against
    `ssl_root_cert`. Every failure becomes the reading's `reason`, which never holds a secret."""
    try:
        secret = read_secret_json(host.admin_secret_name, client=secrets)
        settings = settings_from_secret(secret, ssl_root_cert, application_name=APPLICATION_NAME)
    except TenantkitError as error:
        if not host.needed and str(error).endswith("ResourceNotFoundException"):
            return HostReading(host, absent=True)
        return HostReading(host, reason=str(error))
    endpoint = f"{settings.host}:{settings.port}"
    settings = replace(settings, connect_timeout_s=connect_timeout_s)
    if host.database is not None:
        settings = settings.for_database(host.database)
    try:
        with connect(settings, RetryPolicy(attempts=1)) as conn:
            entries = read_registry(conn)
            history = read_history(conn, tenant_id) if tenant_id is not None else []
    except TenantkitError as error:  # connect's: the host, the user and the server's reason
        if f'database "{settings.dbname}" does not exist' in str(error) and host.tier == "pool":
            return HostReading(host, endpoint=endpoint)  # no pool database yet: no tenants
        return HostReading(host, reason=_redacted(str(error), settings.password), endpoint=endpoint)
    except psycopg.Error as error:
        reason = (
            f"could not read the registry on {endpoint}/{settings.dbname} as {settings.user}: "
            f"{first_line(error)}"
        )
        return HostReading(host, reason=_redacted(reason, settings.password), endpoint=endpoint)

    def kept(entry: RegistryEntry) -> bool:
        return host.only in (None, entry.tenant_id) and entry.tenant_id not in PROBE_TENANT_IDS

    return HostReading(
        host,
        [e for e in entries if kept(e)],
        [e for e in history if kept(e)],
        endpoint=endpoint,
    )


def _redacted(reason: str, password: str) -> str:
    # libpq does not put the password into its messages; make sure of it.
    return reason.replace(password, "********") if password else reason


@dataclass(frozen=True)
class FleetReading:
    """Every host's reading."""

    readings: list[HostReading]

    @property
    def recorded(self) -> list[RecordedTenant]:
        """Every tenant a registry that could be read holds."""
        return [
            RecordedTenant(e.tenant_id, r.host.tier, e.status, e.cause, e.at, r.host.name)
            for r in self.readings
            for e in r.entries
        ]

    @property
    def histories(self) -> dict[str, list[RegistryEntry]]:
        """Tier -> the asked-about tenant's transitions in that tier's registries."""
        found: dict[str, list[RegistryEntry]] = {}
        for r in self.readings:
            if r.history:
                found.setdefault(r.host.tier, []).extend(r.history)
        return found

    @property
    def unreachable(self) -> list[HostReading]:
        """The hosts that could not be read."""
        return [r for r in self.readings if r.reason is not None]

    def unknown(self, catalog: Catalog) -> dict[tuple[str, str], str]:
        """(tenant id, tier) -> host, for each catalog tenant whose host could not be read."""
        down = {r.host.name for r in self.unreachable}
        return {(t.id, t.tier): tenant_host(t) for t in catalog.tenants if tenant_host(t) in down}

    def unreachable_json(self) -> list[dict[str, str | None]]:
        """The `unreachable` list of the JSON output."""
        return [
            {
                "host": r.host.name,
                "tier": r.host.tier,
                "secret": r.host.admin_secret_name,
                "endpoint": r.endpoint,
                "reason": r.reason,
            }
            for r in self.unreachable
        ]


def read_fleet(
    hosts: Sequence[Host],
    secrets: Any,
    *,
    ssl_root_cert: Path,
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
    tenant_id: str | None = None,
) -> FleetReading:
    """Read every host's registry, several at once (each unreachable host costs up to the
    connect timeout); shared hosts nobody deployed are left out."""
    with ThreadPoolExecutor(max_workers=PARALLEL_HOSTS) as pool:
        readings = list(
            pool.map(
                lambda host: read_host(
                    host,
                    secrets,
                    ssl_root_cert=ssl_root_cert,
                    connect_timeout_s=connect_timeout_s,
                    tenant_id=tenant_id,
                ),
                hosts,
            )
        )
    return FleetReading([r for r in readings if not r.absent])
