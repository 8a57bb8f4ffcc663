"""Strict mode's tenant logins: one database login per pool tenant, the tenant the policies see.

Each pool tenant of a strict pool has a login of its own, TenantNames.pool_login
(`tenant_<id>_pool`), a member of the runtime group and nothing else: the isolation policy
reads the tenant from session_user (pool_rls.LOGIN_TENANT). It authenticates with IAM (granted
rds_iam, which makes RDS accept IAM tokens for it and refuse passwords) unless its batch entry
names a password secret (a server without IAM authentication: the embedded one). The login is
what the registry's status no longer has to say per statement: an active tenant's login can
log in; a suspended or offboarded tenant's cannot, and its sessions are ended once that is
committed, so no connection opened before outlives it; a purged tenant's login is dropped.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from psycopg import sql

from ...core.steps import Step
from ...tenancy import PG_NAME_PREFIX, POOL, POOL_LOGIN_SUFFIX
from .access import RDS_IAM_ROLE, set_password


@dataclass(frozen=True)
class TenantLogin:
    """What one tenant's login should be."""

    role: str
    """TenantNames.pool_login of the tenant."""
    enabled: bool
    """Whether it may log in (the tenant is active)."""
    password_verifier: str | None = None
    """A SCRAM verifier of the password in the tenant's secret; None: IAM authentication."""


def is_pool_login(role: str) -> bool:
    """Whether `role` has the shape of a tenant's pool login (the shape LOGIN_TENANT reads)."""
    return (
        role.startswith(PG_NAME_PREFIX)
        and role.endswith(POOL_LOGIN_SUFFIX)
        and len(role) > len(PG_NAME_PREFIX) + len(POOL_LOGIN_SUFFIX)
    )


def _roles(roles: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(role) for role in roles)


def plan_tenant_logins(logins: Sequence[TenantLogin], existing: Mapping[str, bool]) -> list[Step]:
    """Steps that give each tenant its login as `logins` says, from any start (`existing`:
    roles that exist -> whether each can log in). Sessions of logins disabled here are ended
    by plan_end_sessions, after these steps have committed."""
    if not logins:
        return []
    steps: list[Step] = []
    for login in logins:
        attribute = sql.SQL("LOGIN" if login.enabled else "NOLOGIN")
        if login.role not in existing:
            steps.append(
                Step(
                    f"create pool login {login.role}",
                    sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(login.role), attribute),
                )
            )
        elif existing[login.role] != login.enabled:
            verb = "re-enable" if login.enabled else "disable"
            steps.append(
                Step(
                    f"{verb} login of {login.role}",
                    sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(login.role), attribute),
                )
            )
    roles = [login.role for login in logins]
    steps.append(
        Step(
            f"make {len(roles)} pool login(s) members of {POOL.runtime_role}",
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(POOL.runtime_role), _roles(roles)),
            changes=False,
        )
    )
    iam = [login.role for login in logins if login.password_verifier is None]
    if iam:
        steps.append(
            Step(
                f"grant {RDS_IAM_ROLE} to {len(iam)} pool login(s)",
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(RDS_IAM_ROLE), _roles(iam)),
                changes=False,
            )
        )
    steps += [
        set_password(login.role, login.password_verifier)
        for login in logins
        if login.password_verifier is not None
    ]
    return steps


def plan_disable_logins(roles: Sequence[str], existing: Mapping[str, bool]) -> list[Step]:
    """NOLOGIN for those of `roles` that can log in now."""
    enabled = [role for role in roles if existing.get(role)]
    return [
        Step(
            f"disable login of {role}",
            sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)),
        )
        for role in enabled
    ]


def plan_end_sessions(roles: Sequence[str]) -> list[Step]:
    """End every session of `roles`. Not inside a transaction: it runs after the steps before
    it have committed, so a login disabled there cannot reconnect once its session ends."""
    if not roles:
        return []
    return [
        Step(
            f"end the sessions of {len(roles)} pool login(s)",
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = ANY(%s) AND pid <> pg_backend_pid()"
            ),
            (list(roles),),
            changes=False,
            transactional=False,
        )
    ]


def plan_drop_logins(roles: Sequence[str], existing: Mapping[str, bool]) -> list[Step]:
    """Drop the logins of purged tenants (they own nothing and hold no privilege of their own:
    their runtime group membership goes with them)."""
    return [
        Step(
            f"drop pool login {role}",
            sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)),
        )
        for role in roles
        if role in existing
    ]


OBSERVE_TENANT_LOGINS = sql.SQL(
    "SELECT r.rolname, r.rolcanlogin FROM pg_roles r "
    "JOIN pg_auth_members m ON m.member = r.oid "
    "JOIN pg_roles g ON g.oid = m.roleid AND g.rolname = %s"
)
"""The members of the runtime group (the caller keeps those of the pool-login shape)."""
