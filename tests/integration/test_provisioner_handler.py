"""The provisioner handler against a real PostgreSQL: Create / Update / Delete and replays."""

import threading
import time
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from lambda_src.core.connection import RDS_CA_BUNDLE_PATH, ConnectionSettings, RetryPolicy, connect
from lambda_src.core.errors import InvalidRequestError, TenantkitError
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.handler import handle
from lambda_src.tenancy import tenant_names
from tenantkit.embedded_pg import ADMIN_USER, RunningServer

from .conftest import SecretFactory, create_event, delete_event, properties, update_event

PASSWORD = "correct-horse-battery-staple-42"


def login(
    server: RunningServer, tenant_id: str, password: str = PASSWORD, db: str | None = None
) -> psycopg.Connection[Any]:
    names = tenant_names(tenant_id)
    settings = server.settings(names.login_role, password, db or names.database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


def roles_of(superuser: psycopg.Connection, tenant_id: str) -> dict[str, bool]:
    names = tenant_names(tenant_id)
    rows = superuser.execute(
        "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)", (list(names.roles),)
    ).fetchall()
    return dict(rows)


def database_exists(superuser: psycopg.Connection, tenant_id: str) -> bool:
    row = superuser.execute(
        "SELECT count(*) FROM pg_database WHERE datname = %s", (tenant_names(tenant_id).database,)
    ).fetchone()
    assert row is not None
    return bool(row[0] == 1)


@pytest.fixture
def created(tenant_id: str, make_secret: SecretFactory, config: HandlerConfig) -> dict[str, str]:
    """A tenant created once through the handler; yields its properties."""
    props = properties(tenant_id, make_secret(tenant_id, PASSWORD))
    handle(create_event(props), config)
    return props


# -- Create -------------------------------------------------------------------------------


def test_create_makes_a_database_owned_by_a_nologin_owner_role(
    created: dict[str, str], tenant_id: str, superuser: psycopg.Connection
) -> None:
    names = tenant_names(tenant_id)
    owner = superuser.execute(
        "SELECT pg_get_userbyid(datdba), datconnlimit FROM pg_database WHERE datname = %s",
        (names.database,),
    ).fetchone()
    assert owner == (names.owner_role, 5)
    assert roles_of(superuser, tenant_id) == {
        names.owner_role: False,
        names.objects_role: False,
        names.login_role: True,
        names.iam_user: True,
    }


def test_create_reports_physical_id_and_names(
    tenant_id: str, make_secret: SecretFactory, config: HandlerConfig
) -> None:
    response = handle(create_event(properties(tenant_id, make_secret(tenant_id, PASSWORD))), config)
    assert response["PhysicalResourceId"] == f"tenantdb/{tenant_id}"
    assert response["Data"]["DatabaseName"] == tenant_names(tenant_id).database
    assert response["Data"]["LoginRole"] == tenant_names(tenant_id).login_role
    assert response["Data"]["ObjectsRole"] == tenant_names(tenant_id).objects_role
    assert int(response["Data"]["Changes"]) > 0


def test_tenant_login_uses_the_password_from_its_secret(
    created: dict[str, str], server: RunningServer, tenant_id: str
) -> None:
    with login(server, tenant_id) as conn:
        row = conn.execute("SELECT session_user, current_database()").fetchone()
    names = tenant_names(tenant_id)
    assert row == (names.login_role, names.database)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        login(server, tenant_id, password="wrong")


def test_public_has_no_connect_or_temp_and_no_create_on_schema_public(
    created: dict[str, str], tenant_id: str, superuser: psycopg.Connection, server: RunningServer
) -> None:
    names = tenant_names(tenant_id)
    row = superuser.execute(
        "SELECT has_database_privilege('public', %s, 'CONNECT'),"
        "       has_database_privilege('public', %s, 'TEMP')",
        (names.database, names.database),
    ).fetchone()
    assert row == (False, False)
    with psycopg.connect(**server.superuser_settings(names.database).connect_kwargs()) as conn:
        schema = conn.execute(
            "SELECT has_schema_privilege('public', 'public', 'CREATE'),"
            "       has_schema_privilege('public', 'public', 'USAGE'),"
            "       pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
        ).fetchone()
    assert schema == (False, False, names.owner_role)


def test_tenant_can_create_tables_in_its_own_database(
    created: dict[str, str], server: RunningServer, tenant_id: str
) -> None:
    with login(server, tenant_id) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes VALUES (1, 'hello')")
        assert conn.execute("SELECT body FROM notes").fetchone() == ("hello",)


def test_statement_timeout_from_the_catalog_applies_in_the_tenant_database(
    created: dict[str, str], server: RunningServer, tenant_id: str
) -> None:
    with login(server, tenant_id) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("2s",)
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(5)")


def test_connection_limit_refuses_one_connection_too_many(
    created: dict[str, str], server: RunningServer, tenant_id: str
) -> None:
    conns = [login(server, tenant_id) for _ in range(5)]
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections"):
            login(server, tenant_id)
    finally:
        for conn in conns:
            conn.close()


def test_another_tenants_login_is_refused_by_this_database(
    tenant_id: str, make_secret: SecretFactory, config: HandlerConfig, server: RunningServer
) -> None:
    other = f"{tenant_id}-b"
    handle(create_event(properties(tenant_id, make_secret(tenant_id, PASSWORD))), config)
    handle(create_event(properties(other, make_secret(other, PASSWORD))), config)
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        login(server, other, db=tenant_names(tenant_id).database)


def test_create_replayed_converges_without_changes_or_duplicates(
    created: dict[str, str], tenant_id: str, config: HandlerConfig, superuser: psycopg.Connection
) -> None:
    response = handle(create_event(created), config)
    assert response["Data"]["Changes"] == "0"
    assert len(roles_of(superuser, tenant_id)) == 4
    assert database_exists(superuser, tenant_id)


def test_create_finishes_a_half_made_tenant(
    tenant_id: str,
    make_secret: SecretFactory,
    config: HandlerConfig,
    superuser: psycopg.Connection,
    server: RunningServer,
) -> None:
    # GIVEN a tenant whose earlier Create (as the admin) stopped after making the owner role
    names = tenant_names(tenant_id)
    with psycopg.connect(**server.admin_settings().connect_kwargs(), autocommit=True) as admin:
        admin.execute(
            psycopg.sql.SQL("CREATE ROLE {} NOLOGIN").format(
                psycopg.sql.Identifier(names.owner_role)
            )
        )
    # WHEN Create is replayed
    handle(create_event(properties(tenant_id, make_secret(tenant_id, PASSWORD))), config)
    # THEN the tenant is complete and usable
    assert database_exists(superuser, tenant_id)
    with login(server, tenant_id) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_concurrent_creates_of_one_tenant_end_with_one_tenant(
    tenant_id: str, make_secret: SecretFactory, config: HandlerConfig, superuser: psycopg.Connection
) -> None:
    props = properties(tenant_id, make_secret(tenant_id, PASSWORD))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            handle(create_event(props), config)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert database_exists(superuser, tenant_id)
    assert len(roles_of(superuser, tenant_id)) == 4


def test_iam_auth_requested_on_a_server_without_rds_iam_fails_before_any_change(
    tenant_id: str, make_secret: SecretFactory, config: HandlerConfig, superuser: psycopg.Connection
) -> None:
    superuser.execute("ALTER ROLE rds_iam RENAME TO rds_iam_hidden")
    try:
        with pytest.raises(InvalidRequestError, match="no rds_iam role"):
            handle(create_event(properties(tenant_id, make_secret(tenant_id, PASSWORD))), config)
    finally:
        superuser.execute("ALTER ROLE rds_iam_hidden RENAME TO rds_iam")
    assert roles_of(superuser, tenant_id) == {}


# -- Update -------------------------------------------------------------------------------


def test_update_applies_changed_settings_in_place_and_keeps_data(
    created: dict[str, str],
    tenant_id: str,
    config: HandlerConfig,
    server: RunningServer,
    superuser: psycopg.Connection,
) -> None:
    with login(server, tenant_id) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    new = {**created, "ConnectionLimit": "9", "StatementTimeoutMs": "0"}
    response = handle(update_event(new, created), config)
    assert response["PhysicalResourceId"] == f"tenantdb/{tenant_id}"
    limit = superuser.execute(
        "SELECT datconnlimit FROM pg_database WHERE datname = %s",
        (tenant_names(tenant_id).database,),
    ).fetchone()
    assert limit == (9,)
    with login(server, tenant_id) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert conn.execute("SELECT v FROM kept").fetchone() == (7,)


def test_renamed_tenant_gets_a_new_physical_id_and_the_old_data_is_retained(
    created: dict[str, str],
    tenant_id: str,
    make_secret: SecretFactory,
    config: HandlerConfig,
    server: RunningServer,
    superuser: psycopg.Connection,
) -> None:
    with login(server, tenant_id) as conn:
        conn.execute("CREATE TABLE kept (v int)")
    renamed = f"{tenant_id}-new"
    new = properties(renamed, make_secret(renamed, PASSWORD))
    response = handle(update_event(new, created), config)
    assert response["PhysicalResourceId"] == f"tenantdb/{renamed}"
    # CloudFormation then deletes the old physical id with the old properties.
    handle(delete_event(created), config)
    assert database_exists(superuser, renamed)
    assert database_exists(superuser, tenant_id)
    assert roles_of(superuser, tenant_id)[tenant_names(tenant_id).login_role] is False
    with psycopg.connect(
        **server.superuser_settings(tenant_names(tenant_id).database).connect_kwargs()
    ) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)


# -- Delete -------------------------------------------------------------------------------


def test_delete_retains_data_disables_login_and_ends_sessions(
    created: dict[str, str],
    tenant_id: str,
    config: HandlerConfig,
    server: RunningServer,
    superuser: psycopg.Connection,
) -> None:
    session = login(server, tenant_id)
    session.execute("CREATE TABLE kept (v int)")
    response = handle(delete_event(created), config)
    assert response["PhysicalResourceId"] == f"tenantdb/{tenant_id}"
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        login(server, tenant_id)
    assert database_exists(superuser, tenant_id)
    assert set(roles_of(superuser, tenant_id).values()) == {False}


def test_create_after_a_retained_delete_reattaches_the_data(
    created: dict[str, str], tenant_id: str, config: HandlerConfig, server: RunningServer
) -> None:
    with login(server, tenant_id) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    handle(delete_event(created), config)
    handle(create_event(created), config)
    with login(server, tenant_id) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (1,)


def test_delete_with_destroy_drops_database_and_roles_even_with_owned_objects(
    tenant_id: str,
    make_secret: SecretFactory,
    config: HandlerConfig,
    server: RunningServer,
    superuser: psycopg.Connection,
) -> None:
    props = properties(tenant_id, make_secret(tenant_id, PASSWORD), removal_policy="destroy")
    handle(create_event(props), config)
    session = login(server, tenant_id)
    session.execute("CREATE TABLE owned_by_login (v int)")
    handle(delete_event(props), config)
    assert not database_exists(superuser, tenant_id)
    assert roles_of(superuser, tenant_id) == {}
    session.close()


@pytest.mark.parametrize("removal_policy", ["retain", "destroy"])
def test_delete_replayed_succeeds(
    removal_policy: str, tenant_id: str, make_secret: SecretFactory, config: HandlerConfig
) -> None:
    props = properties(tenant_id, make_secret(tenant_id, PASSWORD), removal_policy=removal_policy)
    handle(create_event(props), config)
    handle(delete_event(props), config)
    response = handle(delete_event(props), config)
    assert response["Data"]["Changes"] == "0"


def test_delete_of_a_tenant_that_never_existed_succeeds(
    tenant_id: str, config: HandlerConfig
) -> None:
    props = properties(tenant_id, "arn:aws:secretsmanager:us-east-1:0:secret:x")
    response = handle(delete_event(props), config)
    assert response["PhysicalResourceId"] == f"tenantdb/{tenant_id}"


# -- Bad input and failures ------------------------------------------------------------------

HOSTILE = [
    "acme'; DROP DATABASE postgres; --",
    'a"b',
    "a" * 33,
    "t" * 64,
    "ünïcode",
    "postgres",
    "template1",
    "UPPER",
]


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every connection attempt the handler makes (and refuse it)."""
    attempts: list[dict[str, Any]] = []

    def refuse(**kwargs: Any) -> Any:
        attempts.append(kwargs)
        raise AssertionError("the handler tried to connect")

    # psycopg.connect itself: whichever module opens a connection, it is seen here.
    monkeypatch.setattr(psycopg, "connect", refuse)
    return attempts


@pytest.mark.parametrize("hostile_id", HOSTILE)
@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_hostile_tenant_ids_are_rejected_before_any_sql(
    hostile_id: str,
    request_type: str,
    config: HandlerConfig,
    no_connections: list[dict[str, Any]],
) -> None:
    props = {**properties("acme", "arn:aws:secretsmanager:x"), "TenantId": hostile_id}
    event = create_event(props) if request_type == "Create" else update_event(props, props)
    with pytest.raises(InvalidRequestError, match="TenantId: tenant id"):
        handle(event, config)
    assert no_connections == []


@pytest.mark.parametrize("hostile_id", HOSTILE)
def test_delete_of_an_invalid_resource_is_a_no_op_without_sql(
    hostile_id: str, config: HandlerConfig, no_connections: list[dict[str, Any]]
) -> None:
    # Its Create was refused before any SQL, so nothing exists; failing would wedge the stack.
    props = {**properties("acme", "arn:aws:secretsmanager:x"), "TenantId": hostile_id}
    event = {**delete_event(props), "PhysicalResourceId": "whatever-cfn-holds"}
    assert handle(event, config) == {"PhysicalResourceId": "whatever-cfn-holds", "Data": {}}
    assert no_connections == []


def test_unknown_kind_is_rejected_naming_the_known_kinds(
    config: HandlerConfig, no_connections: list[dict[str, Any]]
) -> None:
    with pytest.raises(InvalidRequestError, match="unknown resource Kind 'Nope'; known kinds"):
        handle(create_event({"Kind": "Nope"}), config)


def test_unreachable_database_is_retried_a_bounded_number_of_times_then_fails(
    tenant_id: str, server: RunningServer
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings = ConnectionSettings(
        host="127.0.0.1", port=closed_port, user="x", password="y", connect_timeout_s=1
    )
    config = HandlerConfig(
        admin_settings=settings, retry=RetryPolicy(attempts=3, first_delay_s=0.05)
    )
    started = time.monotonic()
    with pytest.raises(TenantkitError, match=r"after 3 attempt\(s\)"):
        handle(create_event(properties(tenant_id, "arn:aws:secretsmanager:x")), config)
    assert time.monotonic() - started < 10


def test_wrong_admin_password_fails_at_once_without_retries(
    tenant_id: str, server: RunningServer
) -> None:
    settings = server.settings("tenantkit_admin", "not-the-password")
    config = HandlerConfig(admin_settings=settings, retry=RetryPolicy(attempts=5, first_delay_s=5))
    started = time.monotonic()
    with pytest.raises(TenantkitError, match=r"after 1 attempt\(s\).*authentication failed"):
        handle(create_event(properties(tenant_id, "arn:aws:secretsmanager:x")), config)
    assert time.monotonic() - started < 5


def test_a_server_the_shipped_rds_bundle_does_not_sign_is_refused_at_once(
    server: RunningServer,
) -> None:
    # GIVEN the admin's settings with the default CA bundle (the shipped RDS one), while the
    # embedded server's certificate is signed by its own local CA; retries with 5 s pauses
    settings = ConnectionSettings(
        host=server.host,
        port=server.port,
        user=ADMIN_USER,
        password=server.credentials.admin_password,
    )
    assert settings.connect_kwargs()["sslrootcert"] == str(RDS_CA_BUNDLE_PATH)
    slept: list[float] = []
    # WHEN the provisioner connects THEN TLS verification refuses it, with no retry
    with pytest.raises(TenantkitError, match=r"after 1 attempt\(s\).*certificate verify failed"):
        connect(settings, RetryPolicy(attempts=5, first_delay_s=5), sleep=slept.append)
    assert slept == []
    # and the same login with the server's own CA is let in (the control)
    with connect(replace(settings, ssl_root_cert=server.ca_cert), RetryPolicy()) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)


def test_a_failing_step_reports_which_step_and_never_the_password(
    tenant_id: str,
    make_secret: SecretFactory,
    config: HandlerConfig,
    superuser: psycopg.Connection,
) -> None:
    # GIVEN the tenant's database name is taken by a database the admin cannot touch
    names = tenant_names(tenant_id)
    superuser.execute(
        psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(names.database))
    )
    try:
        with pytest.raises(TenantkitError) as raised:
            handle(create_event(properties(tenant_id, make_secret(tenant_id, PASSWORD))), config)
        assert f"give database {names.database} to {names.owner_role}" in str(raised.value)
        assert PASSWORD not in str(raised.value)
    finally:
        superuser.execute(
            psycopg.sql.SQL("DROP DATABASE {}").format(psycopg.sql.Identifier(names.database))
        )


def test_missing_secret_fails_with_a_reason_naming_the_secret(
    tenant_id: str, secretsmanager: Any, config: HandlerConfig
) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tenantkit/none-AbCdEf"
    with pytest.raises(TenantkitError, match=r"could not read secret .*ResourceNotFound"):
        handle(create_event(properties(tenant_id, arn)), config)


def test_password_never_appears_in_server_logs_even_with_every_statement_logged(
    tenant_id: str,
    make_secret: SecretFactory,
    config: HandlerConfig,
    superuser: psycopg.Connection,
    embedded_pg: Any,
) -> None:
    superuser.execute("ALTER SYSTEM SET log_statement = 'all'")
    superuser.execute("SELECT pg_reload_conf()")
    try:
        handle(create_event(properties(tenant_id, make_secret(tenant_id, PASSWORD))), config)
    finally:
        superuser.execute("ALTER SYSTEM RESET log_statement")
        superuser.execute("SELECT pg_reload_conf()")
    log = embedded_pg.log_file.read_text()
    assert "SCRAM-SHA-256$" in log  # the statements were logged...
    assert PASSWORD not in log  # ...but only the verifier, never the password


def test_an_rds_proxy_monitor_role_gets_connect_on_postgres_and_public_does_not(
    tenant_id: str,
    make_secret: SecretFactory,
    config: HandlerConfig,
    superuser: psycopg.Connection,
) -> None:
    # GIVEN a host where RDS Proxy registered its monitoring role (as on RDS once a proxy
    # targets the cluster) and PUBLIC's CONNECT on postgres is revoked
    superuser.execute("CREATE ROLE rdsproxyadmin NOLOGIN")
    try:
        # WHEN a tenant is created (the provisioner hardens the host first)
        handle(create_event(properties(tenant_id, make_secret(tenant_id, PASSWORD))), config)

        # THEN the proxy's role may connect to postgres, PUBLIC still may not
        row = superuser.execute(
            "SELECT has_database_privilege('rdsproxyadmin', 'postgres', 'CONNECT'),"
            "       has_database_privilege('public', 'postgres', 'CONNECT')"
        ).fetchone()
        assert row == (True, False)
    finally:
        superuser.execute("REVOKE ALL ON DATABASE postgres FROM rdsproxyadmin")
        superuser.execute("DROP ROLE rdsproxyadmin")
