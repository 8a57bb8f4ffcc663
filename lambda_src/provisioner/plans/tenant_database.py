"""The SQL of a bridge or silo tenant's database and roles: observed state in, ordered steps out.

Nothing here touches a connection. Identifiers go through psycopg.sql.Identifier, values are
bound; the only literals are integers already validated and a SCRAM verifier.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from psycopg import sql

from ...core.steps import Step
from ...tenancy import TenantNames
from ..settings import TenantDatabaseSettings
from .access import (
    act_as,
    create_role,
    disable_logins,
    drop_database,
    drop_roles,
    end_sessions_in,
    end_sessions_of,
    iam_user,
    lock_down_schema_public,
    login_role,
    revoke_public_access,
    set_password,
)


@dataclass(frozen=True)
class ObservedTenant:
    """What already exists of one tenant on the server."""

    login_enabled: Mapping[str, bool] = field(default_factory=dict)
    """Existing tenant roles -> whether each can log in."""
    logins_own_objects: bool = False
    """The login or the IAM user owns objects in the tenant's database (made before the
    objects role owned the application's objects)."""
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


def _end_login_sessions(names: TenantNames) -> Step:
    return end_sessions_of([names.login_role, names.iam_user], f"{names.tenant_id}'s login roles")


def plan_converge(
    names: TenantNames,
    observed: ObservedTenant,
    settings: TenantDatabaseSettings,
    *,
    password_verifier: str | None,
) -> list[Step]:
    """Steps that bring a tenant's database and roles to the desired state from any start.

    Used for Create, for replays of Create and for Update: every step is either skipped because
    the observed state already matches, or is a no-op when repeated. A suspended tenant keeps
    everything but its logins: they are disabled and their sessions ended.
    """
    db, owner, login, iam = names.database, names.owner_role, names.login_role, names.iam_user
    objects = names.objects_role
    roles = observed.login_enabled
    suspended, iam_auth = settings.suspended, settings.iam_auth
    connection_limit, statement_timeout_ms = (
        settings.connection_limit,
        settings.statement_timeout_ms,
    )
    steps = [
        *create_role(owner, roles, login=False, what="owner role"),
        *create_role(objects, roles, login=False, what="owner role of the application's objects"),
        act_as(owner, objects),
        *login_role(login, roles, enabled=not suspended),
    ]
    if password_verifier is not None:
        steps.append(set_password(login, password_verifier))
    steps += iam_user(iam, roles, iam_auth=iam_auth, enabled=not suspended)
    login_roles = [login, iam] if iam_auth else [login]
    # The IAM user exists without IAM auth if it was created before (kept, NOLOGIN).
    present_logins = [login, iam] if iam_auth or iam in roles else [login]

    limit = sql.Literal(int(connection_limit))
    if not observed.database_exists:
        steps.append(
            Step(
                f"create database {db}",
                sql.SQL("CREATE DATABASE {} OWNER {} CONNECTION LIMIT {}").format(
                    sql.Identifier(db), sql.Identifier(owner), limit
                ),
                transactional=False,
            )
        )
    else:
        if observed.database_owner != owner:
            steps.append(
                Step(
                    f"give database {db} to {owner}",
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(db), sql.Identifier(owner)
                    ),
                )
            )
        if observed.connection_limit != connection_limit:
            steps.append(
                Step(
                    f"set connection limit of {db} to {connection_limit}",
                    sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                        sql.Identifier(db), limit
                    ),
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
            ).format(sql.Identifier(db), sql.Literal(int(statement_timeout_ms)))
        else:
            statement = sql.SQL("ALTER DATABASE {} RESET statement_timeout").format(
                sql.Identifier(db)
            )
        steps.append(Step(f"set statement_timeout of {db} to {statement_timeout_ms} ms", statement))

    grantees = sql.SQL(", ").join(sql.Identifier(role) for role in login_roles)
    steps += [
        # Only the tenant's own roles keep CONNECT and TEMP.
        revoke_public_access(db),
        Step(
            f"grant CONNECT, TEMPORARY on {db} to the tenant's logins",
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(db), grantees
            ),
            changes=False,
        ),
        *objects_role_members(names, login_roles, present_logins, observed.logins_own_objects),
        *lock_down_schema_public(db, owner),
        *objects_role_schema(names, present_logins, observed.logins_own_objects),
    ]
    if suspended:
        steps.append(_end_login_sessions(names))
    return steps


def objects_role_members(
    names: TenantNames, login_roles: list[str], present_logins: list[str], reassign: bool
) -> list[Step]:
    """Each login's sessions in the tenant's database start as its objects role: a login may
    SET that role but does not inherit its privileges, so whatever either login creates there
    belongs to the objects role (the README says why not default privileges). For objects a
    login owns from before, the admin needs the logins' privileges too."""
    db, objects = names.database, names.objects_role
    logins = sql.SQL(", ").join(sql.Identifier(role) for role in login_roles)
    steps = [
        Step(
            f"let the tenant's logins act as {objects}",
            sql.SQL("GRANT {} TO {} WITH INHERIT FALSE, SET TRUE").format(
                sql.Identifier(objects), logins
            ),
            changes=False,
        ),
        *(
            Step(
                f"start {role}'s sessions in {db} as {objects}",
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET role = {}").format(
                    sql.Identifier(role), sql.Identifier(db), sql.Identifier(objects)
                ),
                changes=False,
            )
            for role in login_roles
        ),
    ]
    return steps + ([act_as(*present_logins)] if reassign else [])


def objects_role_schema(
    names: TenantNames, present_logins: list[str], reassign: bool
) -> list[Step]:
    """In the tenant's database only the objects role may use and create in schema public, and
    it owns what the logins owned from before."""
    db, objects = names.database, names.objects_role
    present = sql.SQL(", ").join(sql.Identifier(role) for role in present_logins)
    steps = [
        Step(
            f"grant USAGE, CREATE on schema public in {db} to {objects}",
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(objects)),
            database=db,
            changes=False,
        ),
        # Tenants provisioned before the objects role granted these to the logins themselves.
        Step(
            f"revoke the logins' own privileges on schema public in {db}",
            sql.SQL("REVOKE ALL ON SCHEMA public FROM {}").format(present),
            database=db,
            changes=False,
        ),
    ]
    if reassign:
        steps.append(
            Step(
                f"give what the tenant's logins own in {db} to {objects}",
                sql.SQL("REASSIGN OWNED BY {} TO {}").format(present, sql.Identifier(objects)),
                database=db,
            )
        )
    return steps


def plan_retain(names: TenantNames, observed: ObservedTenant) -> list[Step]:
    """Offboard keeping every object: logins disabled, open sessions ended, data untouched."""
    return [
        *disable_logins((names.login_role, names.iam_user), observed.login_enabled),
        _end_login_sessions(names),
    ]


def plan_destroy(names: TenantNames, observed: ObservedTenant) -> list[Step]:
    """Drop the tenant's database and roles: only for an explicit `destroy` removal policy."""
    steps = plan_retain(names, observed)
    if observed.database_exists:
        steps += [end_sessions_in(names.database), *drop_database(names.database, names.owner_role)]
    return steps + drop_roles(role for role in names.roles if role in observed.login_enabled)
