"""A bridge or silo tenant's two logins share the application's objects, through the objects
role of its database, and nobody else does (real PostgreSQL, moto for the secret)."""

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.handler import handle
from lambda_src.tenancy import tenant_names
from tenantkit.embedded_pg import RunningServer

from .conftest import SecretFactory, create_event, properties, update_event

PASSWORD = "objects-role-password-17"
IAM_PASSWORD = "local-stand-in-for-an-iam-token-17"


@pytest.fixture
def tenant(
    tenant_id: str,
    make_secret: SecretFactory,
    config: HandlerConfig,
    superuser: psycopg.Connection,
) -> dict[str, str]:
    """A provisioned bridge/silo tenant whose IAM user also has a password: the embedded
    server cannot check IAM tokens, so a password stands in for one (authentication only; what
    the session may do comes from the roles, the same either way)."""
    props = properties(tenant_id, make_secret(tenant_id, PASSWORD))
    handle(create_event(props), config)
    iam_password(superuser, tenant_id)
    return props


def iam_password(superuser: psycopg.Connection, tenant_id: str) -> None:
    superuser.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(tenant_names(tenant_id).iam_user), sql.Literal(IAM_PASSWORD)
        )
    )


def as_login(
    server: RunningServer, tenant_id: str, which: str, db: str | None = None
) -> psycopg.Connection[Any]:
    """A session of the tenant's password login ('login') or IAM user ('iam')."""
    names = tenant_names(tenant_id)
    user, password = {
        "login": (names.login_role, PASSWORD),
        "iam": (names.iam_user, IAM_PASSWORD),
    }[which]
    settings = server.settings(user, password, db or names.database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


@pytest.fixture
def tenant_db(tenant_id: str, server: RunningServer) -> Iterator[psycopg.Connection[Any]]:
    """A superuser session in the tenant's database, for inspection."""
    settings = server.superuser_settings(tenant_names(tenant_id).database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        yield conn


def owner_of(conn: psycopg.Connection[Any], relation: str) -> str:
    row = conn.execute(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s::regclass", (relation,)
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(("creator", "other"), [("login", "iam"), ("iam", "login")])
def test_a_table_one_login_creates_the_other_reads_writes_and_alters(
    tenant: dict[str, str],
    tenant_id: str,
    server: RunningServer,
    tenant_db: psycopg.Connection[Any],
    creator: str,
    other: str,
) -> None:
    # GIVEN an application that creates its schema through one of the tenant's logins, as
    # plain SQL with no SET ROLE of its own
    with as_login(server, tenant_id, creator) as conn:
        conn.execute(
            "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text)"
        )
        conn.execute("CREATE VIEW note_bodies AS SELECT body FROM notes")
        conn.execute("INSERT INTO notes (body) VALUES ('from the creator')")
    # THEN the objects belong to the database's objects role, not to the login that made them
    objects = tenant_names(tenant_id).objects_role
    assert owner_of(tenant_db, "notes") == objects
    assert owner_of(tenant_db, "note_bodies") == objects
    # and the other login reads, writes (the identity's sequence too) and migrates them
    with as_login(server, tenant_id, other) as conn:
        assert conn.execute("SELECT body FROM note_bodies").fetchall() == [("from the creator",)]
        conn.execute("INSERT INTO notes (body) VALUES ('from the other')")
        conn.execute("UPDATE notes SET body = upper(body) WHERE id = 1")
        conn.execute("ALTER TABLE notes ADD COLUMN done boolean NOT NULL DEFAULT false")
        conn.execute("DELETE FROM notes WHERE body = 'from the other'")
        assert conn.execute("SELECT id, body, done FROM notes").fetchall() == [
            (1, "FROM THE CREATOR", False)
        ]
        # (who logged in is still the login; what it acts as is the objects role)
        names = tenant_names(tenant_id)
        login = names.login_role if other == "login" else names.iam_user
        assert conn.execute("SELECT session_user, current_user").fetchone() == (login, objects)


def test_another_tenants_logins_cannot_reach_the_objects_or_act_as_their_owner(
    tenant: dict[str, str],
    tenant_id: str,
    make_secret: SecretFactory,
    config: HandlerConfig,
    server: RunningServer,
    superuser: psycopg.Connection,
) -> None:
    # GIVEN a table of this tenant and a second tenant on the same server
    with as_login(server, tenant_id, "login") as conn:
        conn.execute("CREATE TABLE secrets_of_a (v text)")
    intruder = f"{tenant_id}x"
    handle(create_event(properties(intruder, make_secret(intruder, PASSWORD))), config)
    iam_password(superuser, intruder)
    objects = tenant_names(tenant_id).objects_role
    for which in ("login", "iam"):
        # WHEN either of its logins tries this tenant's database THEN it is refused
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            as_login(server, intruder, which, db=tenant_names(tenant_id).database)
        # and in its own database it cannot become this tenant's objects role
        with as_login(server, intruder, which) as conn, pytest.raises(errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(objects)))


def test_a_login_outside_the_objects_role_can_create_nothing_and_a_reset_returns_to_it(
    tenant: dict[str, str], tenant_id: str, server: RunningServer, tenant_db: psycopg.Connection
) -> None:
    # GIVEN a session of the password login
    with as_login(server, tenant_id, "login") as conn:
        # WHEN a pooler resets the session (PgBouncer's DISCARD ALL) THEN it is the objects
        # role again: the login's default, not a session SET that a reset would drop
        conn.execute("DISCARD ALL")
        conn.execute("CREATE TABLE after_reset (v int)")
        assert owner_of(tenant_db, "after_reset") == tenant_names(tenant_id).objects_role
        # WHEN it steps out of the objects role THEN it may neither create nor read there:
        # no object can come to be owned by a login (which would keep it from the other one)
        conn.execute("SET ROLE NONE")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.stray (v int)")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM public.after_reset")


def test_update_gives_objects_a_login_owns_from_before_to_the_objects_role(
    tenant: dict[str, str],
    tenant_id: str,
    config: HandlerConfig,
    server: RunningServer,
    tenant_db: psycopg.Connection,
) -> None:
    # GIVEN a table owned by the password login, as tenants provisioned before the objects
    # role have them
    names = tenant_names(tenant_id)
    tenant_db.execute("CREATE TABLE legacy (v int)")
    tenant_db.execute("INSERT INTO legacy VALUES (7)")
    tenant_db.execute(
        sql.SQL("ALTER TABLE legacy OWNER TO {}").format(sql.Identifier(names.login_role))
    )
    # WHEN the tenant is converged again (an Update)
    response = handle(update_event(tenant, tenant), config)
    # THEN the table is the objects role's, the change is counted, and the IAM login reads it
    assert owner_of(tenant_db, "legacy") == names.objects_role
    assert int(response["Data"]["Changes"]) > 0
    with as_login(server, tenant_id, "iam") as conn:
        assert conn.execute("SELECT v FROM legacy").fetchall() == [(7,)]
    # and a second Update has nothing left to do
    assert handle(update_event(tenant, tenant), config)["Data"]["Changes"] == "0"
