"""What the provisioner reads from a server (what exists of a tenant or the pool, the registry)
and the advisory locks it takes; statements run through core.steps."""

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..core.connection import ConnectionSettings, RetryPolicy, connect
from ..core.steps import run_steps
from ..tenancy import POOL, POOL_MODES, PoolMode, TenantNames
from .plans.access import RDS_IAM_ROLE
from .plans.host import ADMIN_DATABASES, PROXY_MONITOR_ROLE, plan_host_hardening
from .plans.lifecycle import (
    HISTORY_TABLE,
    OBSERVE_REGISTRY,
    REGISTRY_TABLE,
    SELECT_HISTORY,
    SELECT_TENANTS,
    STATES,
    RegistryEntry,
    plan_registry,
)
from .plans.pool import ObservedPool
from .plans.pool_logins import OBSERVE_TENANT_LOGINS, is_pool_login
from .plans.pool_rls import MODE_TABLE, OBSERVE_PROTECTED_TABLES, SELECT_MODE
from .plans.tenant_database import ObservedTenant

log = logging.getLogger(__name__)

# What exists on a server: catalog reads, every value bound.
OBSERVE_ROLES = sql.SQL("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)")
OBSERVE_DATABASE = sql.SQL(
    "SELECT pg_get_userbyid(d.datdba), d.datconnlimit, "
    "coalesce((SELECT s.setconfig FROM pg_db_role_setting s "
    "          WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}') "
    "FROM pg_database d WHERE d.datname = %s"
)
OBSERVE_OWNED_IN_DATABASE = sql.SQL(
    "SELECT EXISTS (SELECT FROM pg_shdepend s "
    "JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.refobjid "
    "WHERE s.deptype = 'o' AND d.datname = %s AND r.rolname = ANY(%s))"
)
"""Whether any of the roles owns an object in the database (pg_shdepend is cluster-wide, so
the admin database can tell)."""
OBSERVE_RDS_IAM = sql.SQL("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)")
OBSERVE_POOL_DATABASE = sql.SQL("SELECT EXISTS (SELECT FROM pg_database WHERE datname = %s)")
OBSERVE_OPEN_ADMIN_DATABASES = sql.SQL(
    "SELECT datname FROM pg_database "
    "WHERE datname = ANY(%s) AND has_database_privilege('public', oid, 'CONNECT')"
)
OBSERVE_PROXY_MONITOR = sql.SQL(
    "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %(role)s) "
    "AND NOT has_database_privilege(%(role)s, 'postgres', 'CONNECT')"
)


@dataclass(frozen=True)
class AdvisoryLock:
    """What a session advisory lock serializes: `scope` (tenant, host, pool, pool-batch) and,
    for a tenant or a batch, which one. Tenant ids cannot contain ':', so a tenant named `host`
    or `pool-batch` never shares a key with the host's or a batch's lock."""

    scope: str
    name: str = ""

    @property
    def key(self) -> int:
        """A stable signed 64-bit key (pg_advisory_lock's argument)."""
        digest = hashlib.sha256(f"tenantkit:{self.scope}:{self.name}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)


def tenant_lock(tenant_id: str) -> AdvisoryLock:
    """Serializes all provisioning of one tenant."""
    return AdvisoryLock("tenant", tenant_id)


HOST_LOCK = AdvisoryLock("host")
"""Serializes the host-wide steps (hardening, creating the registry)."""
POOL_LOCK = AdvisoryLock("pool")
"""Serializes changes to the pool database itself."""


def pool_batch_lock(batch_id: str) -> AdvisoryLock:
    """Serializes the changes of one PoolTenants batch."""
    return AdvisoryLock("pool-batch", batch_id)


@contextmanager
def holding(conn: psycopg.Connection, lock: AdvisoryLock) -> Iterator[None]:
    """Hold a session advisory lock: concurrent runs that take the same lock go one by one."""
    conn.execute("SELECT pg_advisory_lock(%s)", (lock.key,))
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock.key,))


def observe_tenant(conn: psycopg.Connection, names: TenantNames) -> ObservedTenant:
    """Read what exists of a tenant: its roles, its database and that database's settings."""
    roles: dict[str, bool] = dict(conn.execute(OBSERVE_ROLES, (list(names.roles),)).fetchall())
    database = conn.execute(OBSERVE_DATABASE, (names.database,)).fetchone()
    rds_iam = conn.execute(OBSERVE_RDS_IAM, (RDS_IAM_ROLE,)).fetchone()
    logins = [names.login_role, names.iam_user]
    owned = conn.execute(OBSERVE_OWNED_IN_DATABASE, (names.database, logins)).fetchone()
    return ObservedTenant(
        login_enabled=roles,
        logins_own_objects=bool(owned and owned[0]),
        database_owner=database[0] if database else None,
        connection_limit=database[1] if database else None,
        database_settings=tuple(database[2]) if database else (),
        rds_iam_exists=bool(rds_iam and rds_iam[0]),
    )


def observe_pool(
    conn: psycopg.Connection, settings: ConnectionSettings, retry: RetryPolicy
) -> ObservedPool:
    """Read what exists of the pool: its roles (the tenants' logins too), whether its database
    exists and, if it does, the mode it records."""
    roles: dict[str, bool] = dict(conn.execute(OBSERVE_ROLES, (list(POOL.roles),)).fetchall())
    database = conn.execute(OBSERVE_POOL_DATABASE, (POOL.database,)).fetchone()
    rds_iam = conn.execute(OBSERVE_RDS_IAM, (RDS_IAM_ROLE,)).fetchone()
    exists = bool(database and database[0])
    return ObservedPool(
        login_enabled=roles,
        database_exists=exists,
        rds_iam_exists=bool(rds_iam and rds_iam[0]),
        mode=pool_mode(settings, retry) if exists else None,
        tenant_logins=tenant_logins(conn),
    )


def tenant_logins(conn: psycopg.Connection) -> dict[str, bool]:
    """Strict mode's tenant logins that exist (members of the runtime group) -> can log in."""
    rows = conn.execute(OBSERVE_TENANT_LOGINS, (POOL.runtime_role,)).fetchall()
    return {role: can_login for role, can_login in rows if is_pool_login(role)}


def rds_iam_exists(conn: psycopg.Connection) -> bool:
    """Whether the server has rds_iam (RDS and Aurora; the embedded server emulates it)."""
    row = conn.execute(OBSERVE_RDS_IAM, (RDS_IAM_ROLE,)).fetchone()
    return bool(row and row[0])


def observe_logins(conn: psycopg.Connection, roles: list[str]) -> dict[str, bool]:
    """Which of `roles` exist -> whether each can log in."""
    return dict(conn.execute(OBSERVE_ROLES, (roles,)).fetchall())


def pool_mode(settings: ConnectionSettings, retry: RetryPolicy) -> PoolMode:
    """The mode the pool database records: settable if it records none (made before modes)."""
    with connect(settings.for_database(POOL.database), retry) as conn:
        if conn.execute(OBSERVE_REGISTRY, (MODE_TABLE,)).fetchone() != (True,):
            return "settable"
        row = conn.execute(SELECT_MODE).fetchone()
    recorded = row[0] if row else "settable"
    return next(mode for mode in POOL_MODES if mode == recorded)


def protected_tables(settings: ConnectionSettings, retry: RetryPolicy) -> dict[str, list[str]]:
    """Tables under the pool's tenant policy -> the tables each references by foreign key."""
    with connect(settings.for_database(POOL.database), retry) as conn:
        rows = conn.execute(OBSERVE_PROTECTED_TABLES).fetchall()
    return {table: list(parents) for table, parents in rows}


def harden_host(
    conn: psycopg.Connection, settings: ConnectionSettings, retry: RetryPolicy
) -> list[str]:
    """Revoke PUBLIC's access to the admin databases, once per cluster, and let an RDS Proxy's
    monitoring role (once the proxy registered it) connect to `postgres`.

    Checked first (nothing to do after the first tenant) and done under a cluster-wide
    advisory lock: concurrent GRANT/REVOKE on one database fail with "tuple concurrently
    updated".
    """

    def observe() -> tuple[list[str], bool]:
        open_databases = conn.execute(OBSERVE_OPEN_ADMIN_DATABASES, (list(ADMIN_DATABASES),))
        still_open = [row[0] for row in open_databases]
        monitor = conn.execute(OBSERVE_PROXY_MONITOR, {"role": PROXY_MONITOR_ROLE}).fetchone()
        return still_open, bool(monitor and monitor[0])

    if observe() == ([], False):
        return []
    with holding(conn, HOST_LOCK):
        still_open, monitor_lacks_connect = observe()
        steps = plan_host_hardening(still_open, proxy_monitor_lacks_connect=monitor_lacks_connect)
        return run_steps(conn, settings, retry, steps)


OBSERVE_REGISTRY_STATES = sql.SQL(
    "SELECT coalesce((SELECT pg_get_constraintdef(k.oid) LIKE %s FROM pg_constraint k "
    "WHERE k.conname = 'tenants_status_check' AND k.conrelid = to_regclass(%s)), false)"
)
"""Whether the registry exists and its status check knows the newest state (bound: a LIKE
pattern, then the table)."""


def ensure_registry(
    conn: psycopg.Connection, settings: ConnectionSettings, retry: RetryPolicy
) -> list[str]:
    """Create the host's tenant registry in the admin database once, or bring one made before
    the newest lifecycle state up to it (under the host lock)."""
    if conn.execute(OBSERVE_REGISTRY_STATES, (f"%{STATES[-1]}%", REGISTRY_TABLE)).fetchone() == (
        True,
    ):
        return []
    with holding(conn, HOST_LOCK):
        run_steps(conn, settings, retry, plan_registry())  # idempotent: a race is harmless
    return ["create the tenant registry"]


def read_registry(conn: psycopg.Connection) -> list[RegistryEntry]:
    """Every row of the registry in the connection's database (none if it has no registry)."""
    if conn.execute(OBSERVE_REGISTRY, (REGISTRY_TABLE,)).fetchone() != (True,):
        return []
    return [RegistryEntry(*row) for row in conn.execute(SELECT_TENANTS)]


def read_history(conn: psycopg.Connection, tenant_id: str) -> list[RegistryEntry]:
    """A tenant's recorded transitions, oldest first (none if the database has no history)."""
    if conn.execute(OBSERVE_REGISTRY, (HISTORY_TABLE,)).fetchone() != (True,):
        return []
    return [RegistryEntry(*row) for row in conn.execute(SELECT_HISTORY, (tenant_id,))]
