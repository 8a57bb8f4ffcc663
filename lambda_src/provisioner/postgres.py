"""The one module of the provisioner that talks to PostgreSQL (psycopg 3)."""

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import sql

from ..tenancy import POOL, TenantNames
from .config import ConnectionSettings, RetryPolicy
from .errors import ProvisioningError
from .lifecycle import (
    HISTORY_TABLE,
    OBSERVE_REGISTRY,
    REGISTRY_TABLE,
    SELECT_HISTORY,
    SELECT_TENANTS,
    RegistryEntry,
    plan_registry,
)
from .plan import (
    ADMIN_DATABASES,
    OBSERVE_DATABASE,
    OBSERVE_OPEN_ADMIN_DATABASES,
    OBSERVE_RDS_IAM,
    OBSERVE_ROLES,
    RDS_IAM_ROLE,
    ObservedTenant,
    Step,
    advisory_lock_key,
    plan_host_hardening,
)
from .pool_plan import OBSERVE_POOL_DATABASE, OBSERVE_PROTECTED_TABLES, ObservedPool

log = logging.getLogger(__name__)

# Connection failures that retrying cannot fix: fail at once with the server's reason.
_PERMANENT_FAILURES = ("authentication failed", "SSL error", "certificate", "does not exist")

# Provisioning waits at most this long for another provisioning run of the same tenant.
LOCK_TIMEOUT_MS = 120_000


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def connect(
    settings: ConnectionSettings,
    retry: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> psycopg.Connection:
    """Open an autocommit connection, retrying connection errors with bounded backoff.

    A cluster that is starting, failing over or resuming from zero capacity refuses connections
    for a while; anything else (bad password, missing database) fails just the same on retry.
    """
    delays = retry.delays()
    for attempt in range(1, retry.attempts + 1):
        try:
            return psycopg.connect(
                **settings.connect_kwargs(),
                autocommit=True,
                options=f"-c lock_timeout={LOCK_TIMEOUT_MS}",
            )
        except psycopg.OperationalError as error:
            reason = _first_line(error)
            if attempt == retry.attempts or any(p in reason for p in _PERMANENT_FAILURES):
                raise ProvisioningError(
                    f"could not connect to {settings.host}:{settings.port}/{settings.dbname} "
                    f"as {settings.user} after {attempt} attempt(s): {reason}"
                ) from None
            delay = delays[attempt - 1]
            log.warning(
                "connect attempt %d/%d to %s:%s failed (%s); retrying in %.1fs",
                attempt,
                retry.attempts,
                settings.host,
                settings.port,
                reason,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def tenant_lock(conn: psycopg.Connection, tenant_id: str) -> Iterator[None]:
    """Hold the tenant's session advisory lock: concurrent runs for one tenant go one by one."""
    key = advisory_lock_key(tenant_id)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def observe_tenant(conn: psycopg.Connection, names: TenantNames) -> ObservedTenant:
    """Read what exists of a tenant: its roles, its database and that database's settings."""
    roles: dict[str, bool] = dict(conn.execute(OBSERVE_ROLES, (list(names.roles),)).fetchall())
    database = conn.execute(OBSERVE_DATABASE, (names.database,)).fetchone()
    rds_iam = conn.execute(OBSERVE_RDS_IAM, (RDS_IAM_ROLE,)).fetchone()
    return ObservedTenant(
        login_enabled=roles,
        database_owner=database[0] if database else None,
        connection_limit=database[1] if database else None,
        database_settings=tuple(database[2]) if database else (),
        rds_iam_exists=bool(rds_iam and rds_iam[0]),
    )


def observe_pool(conn: psycopg.Connection) -> ObservedPool:
    """Read what exists of the pool: its roles and whether its database exists."""
    roles: dict[str, bool] = dict(conn.execute(OBSERVE_ROLES, (list(POOL.roles),)).fetchall())
    database = conn.execute(OBSERVE_POOL_DATABASE, (POOL.database,)).fetchone()
    rds_iam = conn.execute(OBSERVE_RDS_IAM, (RDS_IAM_ROLE,)).fetchone()
    return ObservedPool(
        login_enabled=roles,
        database_exists=bool(database and database[0]),
        rds_iam_exists=bool(rds_iam and rds_iam[0]),
    )


def protected_tables(settings: ConnectionSettings, retry: RetryPolicy) -> dict[str, list[str]]:
    """Tables under the pool's tenant policy -> the tables each references by foreign key."""
    with connect(settings.for_database(POOL.database), retry) as conn:
        rows = conn.execute(OBSERVE_PROTECTED_TABLES).fetchall()
    return {table: list(parents) for table, parents in rows}


_HOST_LOCK = "host"


def harden_host(
    conn: psycopg.Connection, settings: ConnectionSettings, retry: RetryPolicy
) -> list[str]:
    """Revoke PUBLIC's access to the admin databases, once per cluster.

    Checked first (nothing to do after the first tenant) and done under a cluster-wide
    advisory lock: concurrent GRANT/REVOKE on one database fail with "tuple concurrently
    updated".
    """
    query = OBSERVE_OPEN_ADMIN_DATABASES
    if not conn.execute(query, (list(ADMIN_DATABASES),)).fetchall():
        return []
    with tenant_lock(conn, _HOST_LOCK):
        still_open = [row[0] for row in conn.execute(query, (list(ADMIN_DATABASES),))]
        return run_steps(conn, settings, retry, plan_host_hardening(still_open))


def ensure_registry(
    conn: psycopg.Connection, settings: ConnectionSettings, retry: RetryPolicy
) -> list[str]:
    """Create the host's tenant registry in the admin database once (under the host lock)."""
    if conn.execute(OBSERVE_REGISTRY, (REGISTRY_TABLE,)).fetchone() == (True,):
        return []
    with tenant_lock(conn, _HOST_LOCK):
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


def scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """Hash a password into a SCRAM-SHA-256 verifier on the client (libpq), as psql's \\password.

    Only the verifier is ever sent, so the password never appears in SQL text or server logs.
    """
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return verifier.decode()


def _groups(steps: Sequence[Step]) -> list[list[Step]]:
    """Consecutive steps for one database and one role run in one transaction; a step that
    cannot run in a transaction (CREATE/DROP DATABASE) runs alone."""
    groups: list[list[Step]] = []
    for step in steps:
        previous = groups[-1][-1] if groups else None
        if (
            previous is not None
            and step.transactional
            and previous.transactional
            and (step.database, step.role) == (previous.database, previous.role)
        ):
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def run_steps(
    conn: psycopg.Connection,
    settings: ConnectionSettings,
    retry: RetryPolicy,
    steps: Sequence[Step],
) -> list[str]:
    """Run steps in order (admin database on `conn`, others on a connection to their database).

    Consecutive steps share a transaction (one commit instead of one per statement; all or
    nothing). Returns the descriptions of the steps that changed something. A failing step
    raises ProvisioningError naming it; committed groups stay done and a replay converges.
    """
    changed: list[str] = []
    others: dict[str, psycopg.Connection] = {}
    try:
        for group in _groups(steps):
            first = group[0]
            target = conn
            if first.database is not None and first.database != settings.dbname:
                if first.database not in others:
                    others[first.database] = connect(settings.for_database(first.database), retry)
                target = others[first.database]
            done: list[str] = []
            step = first
            try:
                if not first.transactional:
                    rowcount = target.execute(first.statement, first.params or None).rowcount
                    done += _changed(first, rowcount)
                else:
                    with target.transaction():
                        if first.role is not None:
                            target.execute(
                                sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(first.role))
                            )
                        for step in group:
                            rowcount = target.execute(step.statement, step.params or None).rowcount
                            done += _changed(step, rowcount)
            except psycopg.Error as error:
                raise ProvisioningError(
                    f"step '{step.description}' failed: {_first_line(error)}"
                ) from None
            for step in group:
                log.info("done: %s", step.description)
            changed += done
    finally:
        for other in others.values():
            other.close()
    return changed


def _changed(step: Step, rowcount: int) -> list[str]:
    if step.changes and (rowcount > 0 or not step.changes_only_if_rows):
        return [step.description]
    return []
