"""Pure functions that plan the SQL of each request: observed state in, ordered steps out.

Nothing here touches a connection. Every identifier goes through psycopg.sql.Identifier and
every value is bound as a parameter; the only literals are integers already validated and a
SCRAM verifier (a salted hash, never the password itself), because DDL cannot take parameters.
"""

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from psycopg import sql

from ..core.steps import Step
from ..tenancy import TenantNames

RDS_IAM_ROLE = "rds_iam"


@dataclass(frozen=True)
class ObservedTenant:
    """What already exists of one tenant on the server."""

    login_enabled: Mapping[str, bool] = field(default_factory=dict)
    """Existing tenant roles -> whether each can log in."""
    database_owner: str | None = None
    """Owner of the tenant's database, None when the database does not exist."""
    connection_limit: int | None = None
    database_settings: tuple[str, ...] = ()
    """Per-database settings, e.g. ('statement_timeout=30000',)."""
    rds_iam_exists: bool = False

    @property
    def database_exists(self) -> bool:
        """Whether the tenant's database exists."""
        return self.database_owner is not None


# Observation queries: values bound, run by postgres.observe_tenant().
OBSERVE_ROLES = sql.SQL("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)")
OBSERVE_DATABASE = sql.SQL(
    "SELECT pg_get_userbyid(d.datdba), d.datconnlimit, "
    "coalesce((SELECT s.setconfig FROM pg_db_role_setting s "
    "          WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}') "
    "FROM pg_database d WHERE d.datname = %s"
)
OBSERVE_RDS_IAM = sql.SQL("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = %s)")


def advisory_lock_key(tenant_id: str) -> int:
    """A stable signed 64-bit key that serializes all provisioning of one tenant."""
    digest = hashlib.sha256(f"tenantkit:{tenant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _terminate_sessions(names: TenantNames, *, of_database: bool) -> Step:
    if of_database:
        return Step(
            f"end sessions in database {names.database}",
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()"
            ),
            (names.database,),
            changes=False,
        )
    return Step(
        f"end sessions of {names.tenant_id}'s login roles",
        sql.SQL(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = ANY(%s) AND pid <> pg_backend_pid()"
        ),
        ([names.login_role, names.iam_user],),
        changes=False,
    )


ADMIN_DATABASES = ("postgres", "template1")
OBSERVE_OPEN_ADMIN_DATABASES = sql.SQL(
    "SELECT datname FROM pg_database "
    "WHERE datname = ANY(%s) AND has_database_privilege('public', oid, 'CONNECT')"
)


def plan_host_hardening(open_databases: Sequence[str]) -> list[Step]:
    """Close what every new cluster leaves open: PUBLIC may connect to the admin databases.

    Needs the admin to own them (true of RDS's master user for postgres and template1); where it
    does not, PostgreSQL only warns and `tenantctl verify` reports the gap.
    """
    return [
        Step(
            f"revoke PUBLIC access to the {db} database",
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(_ident(db)),
        )
        for db in open_databases
    ]


def plan_converge(
    names: TenantNames,
    observed: ObservedTenant,
    *,
    connection_limit: int,
    statement_timeout_ms: int,
    iam_auth: bool,
    password_verifier: str | None,
    suspended: bool = False,
) -> list[Step]:
    """Steps that bring a tenant's database and roles to the desired state from any start.

    Used for Create, for replays of Create and for Update: every step is either skipped because
    the observed state already matches, or is a no-op when repeated. A suspended tenant keeps
    everything but its logins: they are disabled and their sessions ended.
    """
    steps: list[Step] = []
    db, owner, login, iam = names.database, names.owner_role, names.login_role, names.iam_user
    roles = observed.login_enabled

    if owner not in roles:
        steps.append(
            Step(
                f"create owner role {owner}",
                sql.SQL("CREATE ROLE {} NOLOGIN").format(_ident(owner)),
            )
        )
    # The admin must be able to SET ROLE to the owner to create, alter and drop its database.
    steps.append(
        Step(
            f"let the admin act as {owner}",
            sql.SQL("GRANT {} TO CURRENT_USER").format(_ident(owner)),
            changes=False,
        )
    )

    login_roles = [login]
    steps += _login_role(login, roles, enabled=not suspended, what="login role")
    if password_verifier is not None:
        steps.append(
            Step(
                f"set the password of {login} from its secret",
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    _ident(login), sql.Literal(password_verifier)
                ),
                changes=False,
            )
        )

    if iam_auth:
        login_roles.append(iam)
        steps += _login_role(iam, roles, enabled=not suspended, what="IAM user")
        # rds_iam makes RDS accept IAM tokens for this user and refuse its password.
        steps.append(
            Step(
                f"grant {RDS_IAM_ROLE} to {iam}",
                sql.SQL("GRANT {} TO {}").format(_ident(RDS_IAM_ROLE), _ident(iam)),
                changes=False,
            )
        )
    elif roles.get(iam):
        steps.append(
            Step(f"disable IAM user {iam}", sql.SQL("ALTER ROLE {} NOLOGIN").format(_ident(iam)))
        )

    limit = sql.Literal(int(connection_limit))
    if not observed.database_exists:
        steps.append(
            Step(
                f"create database {db}",
                sql.SQL("CREATE DATABASE {} OWNER {} CONNECTION LIMIT {}").format(
                    _ident(db), _ident(owner), limit
                ),
                transactional=False,
            )
        )
    else:
        if observed.database_owner != owner:
            steps.append(
                Step(
                    f"give database {db} to {owner}",
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(_ident(db), _ident(owner)),
                )
            )
        if observed.connection_limit != connection_limit:
            steps.append(
                Step(
                    f"set connection limit of {db} to {connection_limit}",
                    sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(_ident(db), limit),
                )
            )

    wanted_timeout = f"statement_timeout={statement_timeout_ms}" if statement_timeout_ms else None
    current_timeout = next(
        (s for s in observed.database_settings if s.startswith("statement_timeout=")), None
    )
    if wanted_timeout != current_timeout:
        if wanted_timeout:
            statement: sql.Composed = sql.SQL(
                "ALTER DATABASE {} SET statement_timeout = {}"
            ).format(_ident(db), sql.Literal(int(statement_timeout_ms)))
        else:
            statement = sql.SQL("ALTER DATABASE {} RESET statement_timeout").format(_ident(db))
        steps.append(Step(f"set statement_timeout of {db} to {statement_timeout_ms} ms", statement))

    grantees = sql.SQL(", ").join(_ident(role) for role in login_roles)
    steps += [
        # New databases grant CONNECT and TEMP to PUBLIC: only the tenant's own roles keep them.
        Step(
            f"revoke PUBLIC access to {db}",
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(_ident(db)),
            changes=False,
        ),
        Step(
            f"grant CONNECT, TEMPORARY on {db} to the tenant's logins",
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(_ident(db), grantees),
            changes=False,
        ),
        # PostgreSQL < 15 grants CREATE on schema public to PUBLIC; revoke it on every version.
        Step(
            f"revoke PUBLIC access to schema public in {db}",
            sql.SQL("REVOKE ALL ON SCHEMA public FROM PUBLIC"),
            database=db,
            changes=False,
        ),
        Step(
            f"give schema public in {db} to {owner}",
            sql.SQL("ALTER SCHEMA public OWNER TO {}").format(_ident(owner)),
            database=db,
            changes=False,
        ),
        Step(
            f"grant USAGE, CREATE on schema public in {db} to the tenant's logins",
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(grantees),
            database=db,
            changes=False,
        ),
    ]
    if suspended:
        steps.append(_terminate_sessions(names, of_database=False))
    return steps


def _login_role(role: str, roles: Mapping[str, bool], *, enabled: bool, what: str) -> list[Step]:
    """Create a tenant login role, or switch its login on or off to match `enabled`."""
    attribute = sql.SQL("LOGIN" if enabled else "NOLOGIN")
    if role not in roles:
        return [
            Step(
                f"create {what} {role}",
                sql.SQL("CREATE ROLE {} {}").format(_ident(role), attribute),
            )
        ]
    if roles[role] != enabled:
        verb = "re-enable" if enabled else "disable"
        return [
            Step(
                f"{verb} login of {role}",
                sql.SQL("ALTER ROLE {} {}").format(_ident(role), attribute),
            )
        ]
    return []


def plan_retain(names: TenantNames, observed: ObservedTenant) -> list[Step]:
    """Offboard keeping every object: logins disabled, open sessions ended, data untouched."""
    steps = [
        Step(f"disable login of {role}", sql.SQL("ALTER ROLE {} NOLOGIN").format(_ident(role)))
        for role in (names.login_role, names.iam_user)
        if observed.login_enabled.get(role)
    ]
    steps.append(_terminate_sessions(names, of_database=False))
    return steps


def plan_destroy(names: TenantNames, observed: ObservedTenant) -> list[Step]:
    """Drop the tenant's database and roles: only for an explicit `destroy` removal policy."""
    steps = plan_retain(names, observed)
    existing: Sequence[str] = [role for role in names.roles if role in observed.login_enabled]
    if observed.database_exists:
        steps += [
            _terminate_sessions(names, of_database=True),
            Step(
                f"let the admin act as {names.owner_role}",
                sql.SQL("GRANT {} TO CURRENT_USER").format(_ident(names.owner_role)),
                changes=False,
            ),
            Step(
                f"drop database {names.database}",
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(names.database)),
                transactional=False,
            ),
        ]
    for role in existing:
        # DROP OWNED needs the privileges of the role; it removes any grant that would keep
        # DROP ROLE from succeeding.
        steps += [
            Step(
                f"let the admin act as {role}",
                sql.SQL("GRANT {} TO CURRENT_USER").format(_ident(role)),
                changes=False,
            ),
            Step(
                f"drop what {role} owns in the admin database",
                sql.SQL("DROP OWNED BY {}").format(_ident(role)),
                changes=False,
            ),
            Step(f"drop role {role}", sql.SQL("DROP ROLE IF EXISTS {}").format(_ident(role))),
        ]
    return steps
