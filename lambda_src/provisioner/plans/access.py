"""Steps on roles, logins and PUBLIC's access that the tenant-database and the pool plans share.

Every identifier goes through psycopg.sql.Identifier and every value is bound; the only literal
is a SCRAM verifier (a salted hash, never the password), because ALTER ROLE takes no parameters.
"""

from collections.abc import Iterable, Mapping, Sequence

from psycopg import sql

from ...core.errors import InvalidRequestError
from ...core.steps import Step

RDS_IAM_ROLE = "rds_iam"
"""RDS and Aurora accept IAM tokens, and refuse passwords, for members of this role."""


def require_rds_iam(iam_auth: bool, rds_iam_exists: bool) -> None:
    """Refuse IAM auth on a server without rds_iam (not RDS or Aurora) before any change."""
    if iam_auth and not rds_iam_exists:
        raise InvalidRequestError(
            "IamAuth is true but the server has no rds_iam role (is it RDS or Aurora?)"
        )


def create_role(
    role: str, existing: Mapping[str, bool], *, login: bool, what: str = "role"
) -> list[Step]:
    """Create `role` (LOGIN or NOLOGIN) unless it exists; an existing role is left as it is."""
    if role in existing:
        return []
    attribute = sql.SQL("LOGIN" if login else "NOLOGIN")
    return [
        Step(
            f"create {what} {role}",
            sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(role), attribute),
        )
    ]


def login_role(
    role: str, existing: Mapping[str, bool], *, enabled: bool, what: str = "login role"
) -> list[Step]:
    """Create a login role, or switch its login on or off to match `enabled`."""
    if role not in existing:
        return create_role(role, existing, login=enabled, what=what)
    if existing[role] != enabled:
        attribute = sql.SQL("LOGIN" if enabled else "NOLOGIN")
        verb = "re-enable" if enabled else "disable"
        return [
            Step(
                f"{verb} login of {role}",
                sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(role), attribute),
            )
        ]
    return []


def disable_logins(roles: Iterable[str], existing: Mapping[str, bool]) -> list[Step]:
    """NOLOGIN for those of `roles` that can log in now."""
    return [
        Step(
            f"disable login of {role}",
            sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)),
        )
        for role in roles
        if existing.get(role)
    ]


def set_password(role: str, verifier: str) -> Step:
    """Set a login's password from its secret, as a SCRAM verifier (never the password)."""
    return Step(
        f"set the password of {role} from its secret",
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)),
        changes=False,
    )


def iam_user(
    role: str, existing: Mapping[str, bool], *, iam_auth: bool, enabled: bool = True
) -> list[Step]:
    """With IAM auth: the user exists, logs in as `enabled` says and is granted rds_iam (which
    makes RDS accept IAM tokens for it and refuse its password). Without: it cannot log in."""
    if not iam_auth:
        return disable_logins([role], existing)
    return [
        *login_role(role, existing, enabled=enabled, what="IAM user"),
        Step(
            f"grant {RDS_IAM_ROLE} to {role}",
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(RDS_IAM_ROLE), sql.Identifier(role)),
            changes=False,
        ),
    ]


def act_as(*roles: str) -> Step:
    """Let the admin use `roles`' privileges: it must, to create a database owned by one, alter
    or drop its database, or drop what it owns. (PostgreSQL 16+: creating a role gives its
    creator only ADMIN OPTION, not membership.)"""
    return Step(
        f"let the admin act as {' and '.join(roles)}",
        sql.SQL("GRANT {} TO CURRENT_USER").format(
            sql.SQL(", ").join(sql.Identifier(role) for role in roles)
        ),
        changes=False,
    )


def end_sessions_of(roles: Sequence[str], whose: str) -> Step:
    """End the open sessions of `roles` (names bound as values)."""
    return Step(
        f"end sessions of {whose}",
        sql.SQL(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = ANY(%s) AND pid <> pg_backend_pid()"
        ),
        (list(roles),),
        changes=False,
    )


def end_sessions_in(database: str) -> Step:
    """End every other session connected to `database`."""
    return Step(
        f"end sessions in database {database}",
        sql.SQL(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()"
        ),
        (database,),
        changes=False,
    )


def revoke_public_access(database: str) -> Step:
    """New databases grant CONNECT and TEMP to PUBLIC: take both away."""
    return Step(
        f"revoke PUBLIC access to {database}",
        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)),
        changes=False,
    )


def lock_down_schema_public(database: str, owner: str) -> list[Step]:
    """Schema public of `database`: no access for PUBLIC (PostgreSQL < 15 grants it CREATE;
    revoked on every version), owned by `owner`."""
    return [
        Step(
            f"revoke PUBLIC access to schema public in {database}",
            sql.SQL("REVOKE ALL ON SCHEMA public FROM PUBLIC"),
            database=database,
            changes=False,
        ),
        Step(
            f"give schema public in {database} to {owner}",
            sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(owner)),
            database=database,
            changes=False,
        ),
    ]


def drop_database(database: str, owner: str) -> list[Step]:
    """Drop `database` (the admin acting as its owner), ending any session still in it."""
    return [
        act_as(owner),
        Step(
            f"drop database {database}",
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)),
            transactional=False,
        ),
    ]


def drop_roles(roles: Iterable[str]) -> list[Step]:
    """Drop each role. DROP OWNED needs the privileges of the role; it removes every grant that
    would keep DROP ROLE from succeeding."""
    steps: list[Step] = []
    for role in roles:
        steps += [
            act_as(role),
            Step(
                f"drop what {role} owns in the admin database",
                sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)),
                changes=False,
            ),
            Step(
                f"drop role {role}", sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role))
            ),
        ]
    return steps
