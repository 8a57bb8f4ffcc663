"""Single-user rotation against a real PostgreSQL and moto's Secrets Manager."""

import json
import logging
import uuid
from typing import Any

import psycopg
import pytest

from lambda_src.core.environment import SSL_ROOT_CERT
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.handler import handle
from lambda_src.rotation.handler import STEPS, RotationError, on_event, rotate
from lambda_src.tenancy import tenant_names
from lambda_src.tenant_runtime import AccessConfig, Pattern, TenantDataAccess
from tenantkit.embedded_pg import RunningServer

from .conftest import create_event, properties, update_event


@pytest.fixture
def tenant_secret(
    tenant_id: str, secretsmanager: Any, server: RunningServer, config: HandlerConfig
) -> str:
    """A provisioned tenant whose secret has the attached (RDS) format; returns its ARN."""
    names = tenant_names(tenant_id)
    value = {
        "engine": "postgres",
        "host": server.host,
        "port": server.port,
        "username": names.login_role,
        "password": "first-password-0",
        "dbname": names.database,
    }
    arn = str(
        secretsmanager.create_secret(Name=names.secret_name, SecretString=json.dumps(value))["ARN"]
    )
    handle(create_event(properties(tenant_id, arn)), config)
    return arn


def current(secretsmanager: Any, arn: str, stage: str = "AWSCURRENT") -> dict[str, Any]:
    value: dict[str, Any] = json.loads(
        secretsmanager.get_secret_value(SecretId=arn, VersionStage=stage)["SecretString"]
    )
    return value


def can_log_in(server: RunningServer, secret: dict[str, Any]) -> bool:
    settings = server.settings(secret["username"], secret["password"], secret["dbname"])
    try:
        with psycopg.connect(**settings.connect_kwargs()) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def run_rotation(arn: str, server: RunningServer, token: str | None = None) -> str:
    token = token or str(uuid.uuid4())
    for step in STEPS:
        rotate({"SecretId": arn, "ClientRequestToken": token, "Step": step}, server.ca_cert)
    return token


def test_rotation_changes_the_password_and_keeps_clients_working(
    tenant_secret: str, secretsmanager: Any, server: RunningServer
) -> None:
    before = current(secretsmanager, tenant_secret)
    run_rotation(tenant_secret, server)
    after = current(secretsmanager, tenant_secret)
    assert after["password"] != before["password"]
    assert {k: v for k, v in after.items() if k != "password"} == {
        k: v for k, v in before.items() if k != "password"
    }
    # A client that reads the secret for each new connection logs in; the old password is dead.
    assert can_log_in(server, after)
    assert not can_log_in(server, before)
    assert current(secretsmanager, tenant_secret, "AWSPREVIOUS") == before


def test_every_step_replayed_converges(
    tenant_secret: str, secretsmanager: Any, server: RunningServer
) -> None:
    token = str(uuid.uuid4())
    for step in STEPS:
        event = {"SecretId": tenant_secret, "ClientRequestToken": token, "Step": step}
        rotate(event, server.ca_cert)
        rotate(event, server.ca_cert)  # Secrets Manager retries steps
    assert can_log_in(server, current(secretsmanager, tenant_secret))


def test_a_rotation_interrupted_after_set_secret_finishes_on_retry(
    tenant_secret: str, secretsmanager: Any, server: RunningServer
) -> None:
    token = str(uuid.uuid4())
    for step in STEPS[:2]:
        rotate(
            {"SecretId": tenant_secret, "ClientRequestToken": token, "Step": step}, server.ca_cert
        )
    # The database has the pending password; AWSCURRENT still holds the old one.
    assert not can_log_in(server, current(secretsmanager, tenant_secret))
    run_rotation(tenant_secret, server, token)
    assert can_log_in(server, current(secretsmanager, tenant_secret))


def can_log_in_as(role: str, superuser: psycopg.Connection) -> bool:
    row = superuser.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,))
    return bool(row.fetchone() == (True,))


def test_a_suspended_tenants_rotations_succeed_keep_it_suspended_and_resume_logs_in_with_awscurrent(
    tenant_secret: str,
    tenant_id: str,
    secretsmanager: Any,
    server: RunningServer,
    config: HandlerConfig,
    superuser: psycopg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a suspended tenant (its logins are NOLOGIN)
    active = properties(tenant_id, tenant_secret)
    suspended = properties(tenant_id, tenant_secret, suspended=True)
    handle(update_event(suspended, active), config)
    login = tenant_names(tenant_id).login_role
    assert not can_log_in_as(login, superuser)
    # WHEN two scheduled rotations run all four steps (sixty days of suspension)
    with caplog.at_level(logging.INFO, logger="lambda_src.rotation.handler"):
        tokens = [run_rotation(tenant_secret, server) for _ in range(2)]
    # THEN both succeeded (each promoted its version), testSecret said why it passed, and the
    # tenant is still suspended
    passed = [r for r in caplog.records if r.getMessage().startswith("testSecret:")]
    assert len(passed) == 2
    assert all("may not log in (suspended): passed" in r.getMessage() for r in passed)
    versions = secretsmanager.describe_secret(SecretId=tenant_secret)["VersionIdsToStages"]
    assert "AWSCURRENT" in versions[tokens[1]]
    assert "AWSPREVIOUS" in versions[tokens[0]]
    assert not can_log_in_as(login, superuser)
    assert not can_log_in(server, current(secretsmanager, tenant_secret))
    # WHEN the tenant is resumed THEN its login works with AWSCURRENT
    handle(update_event(active, suspended), config)
    assert can_log_in(server, current(secretsmanager, tenant_secret))
    # and the next rotation changes the password again
    before = current(secretsmanager, tenant_secret)
    run_rotation(tenant_secret, server)
    after = current(secretsmanager, tenant_secret)
    assert after["password"] != before["password"]
    assert can_log_in(server, after)
    assert not can_log_in(server, before)


def silo_secret_access(tenant_id: str, server: RunningServer) -> TenantDataAccess:
    """The runtime library as a silo-secret function of `tenant_id` uses it."""
    config = AccessConfig(
        pattern=Pattern.SILO_SECRET,
        silo_tenant=tenant_id,
        region="us-east-1",
        ssl_root_cert=server.ca_cert,
    )
    return TenantDataAccess(config)


def test_the_runtime_logs_in_between_set_secret_and_finish_secret_with_the_pending_password(
    tenant_secret: str, tenant_id: str, secretsmanager: Any, server: RunningServer
) -> None:
    # GIVEN a function that has logged in once (its password is cached) and one that has not
    cached, cold = silo_secret_access(tenant_id, server), silo_secret_access(tenant_id, server)
    with cached.connection(tenant_id):
        pass
    # WHEN a rotation has run createSecret and setSecret only
    token = str(uuid.uuid4())
    for step in STEPS[:2]:
        rotate(
            {"SecretId": tenant_secret, "ClientRequestToken": token, "Step": step}, server.ca_cert
        )
    # (the window is real: the database has the pending password, AWSCURRENT the old one)
    assert not can_log_in(server, current(secretsmanager, tenant_secret))
    assert can_log_in(server, current(secretsmanager, tenant_secret, "AWSPENDING"))
    # THEN both log in through the library (AWSCURRENT refused, AWSPENDING tried next)
    login = tenant_names(tenant_id).login_role
    for access in (cached, cold):
        with access.connection(tenant_id) as conn:
            assert conn.execute("SELECT session_user").fetchone() == (login,)
    # and keep logging in once the rotation finishes
    for step in STEPS[2:]:
        rotate(
            {"SecretId": tenant_secret, "ClientRequestToken": token, "Step": step}, server.ca_cert
        )
    for access in (cached, cold, silo_secret_access(tenant_id, server)):
        with access.connection(tenant_id) as conn:
            assert conn.execute("SELECT session_user").fetchone() == (login,)


def test_the_runtime_gives_up_with_the_servers_refusal_when_no_version_logs_in(
    tenant_secret: str, tenant_id: str, server: RunningServer, superuser: psycopg.Connection
) -> None:
    # GIVEN a login whose password matches no version of its secret (and no rotation pending)
    superuser.execute(
        psycopg.sql.SQL("ALTER ROLE {} PASSWORD 'changed-behind-its-back'").format(
            psycopg.sql.Identifier(tenant_names(tenant_id).login_role)
        )
    )
    attempts: list[str] = []

    def counting_connect(**kwargs: Any) -> psycopg.Connection[Any]:
        attempts.append(kwargs["password"])
        return psycopg.connect(**kwargs)

    config = silo_secret_access(tenant_id, server).config
    access = TenantDataAccess(config, connect=counting_connect)
    # WHEN the runtime connects THEN the server's authentication failure is what it raises,
    # after one attempt: the secret read again holds the same password, and none is pending
    with (
        pytest.raises(psycopg.OperationalError, match="password authentication failed"),
        access.connection(tenant_id),
    ):
        pass
    assert attempts == ["first-password-0"]


def test_rotation_with_the_default_bundle_refuses_a_server_it_does_not_sign(
    tenant_secret: str, secretsmanager: Any, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the rotation Lambda's environment with no CA bundle variable (the shipped RDS
    # bundle) and a database whose certificate a local CA signed
    monkeypatch.delenv(SSL_ROOT_CERT, raising=False)
    before = current(secretsmanager, tenant_secret)
    token = str(uuid.uuid4())

    def step(name: str) -> dict[str, str]:
        return {"SecretId": tenant_secret, "ClientRequestToken": token, "Step": name}

    on_event(step("createSecret"), None)  # its suspension probe fails the same way: a new password
    # WHEN setSecret connects THEN TLS verification refuses it at the first attempt, the
    # reason is in the error, and the password is unchanged
    with pytest.raises(
        RotationError,
        match=r"can log in \(AWSCURRENT: .*after 1 attempt\(s\).*certificate verify failed",
    ):
        on_event(step("setSecret"), None)
    assert can_log_in(server, before)
    # and with the server's own CA the same rotation goes through (the control)
    for name in STEPS[1:]:
        rotate(step(name), server.ca_cert)
    assert can_log_in(server, current(secretsmanager, tenant_secret))
    assert not can_log_in(server, before)


def test_a_pending_version_that_points_elsewhere_is_refused(
    tenant_secret: str, secretsmanager: Any, server: RunningServer
) -> None:
    token = str(uuid.uuid4())
    pending = {**current(secretsmanager, tenant_secret), "host": "evil.example", "password": "x"}
    secretsmanager.put_secret_value(
        SecretId=tenant_secret,
        ClientRequestToken=token,
        SecretString=json.dumps(pending),
        VersionStages=["AWSPENDING"],
    )
    with pytest.raises(RotationError, match="changes host"):
        rotate(
            {"SecretId": tenant_secret, "ClientRequestToken": token, "Step": "setSecret"},
            server.ca_cert,
        )


def test_steps_of_an_unknown_version_or_a_bad_event_are_refused(
    tenant_secret: str, server: RunningServer
) -> None:
    with pytest.raises(RotationError, match="does not exist"):
        rotate(
            {"SecretId": tenant_secret, "ClientRequestToken": "nope", "Step": "setSecret"},
            server.ca_cert,
        )
    with pytest.raises(RotationError, match="known Step"):
        rotate({"SecretId": tenant_secret, "ClientRequestToken": "t", "Step": "dropSecret"})


def test_the_password_never_reaches_the_server_log(
    tenant_secret: str, secretsmanager: Any, server: RunningServer, embedded_pg: Any
) -> None:
    with psycopg.connect(**server.superuser_settings().connect_kwargs(), autocommit=True) as su:
        su.execute("ALTER SYSTEM SET log_statement = 'all'")
        su.execute("SELECT pg_reload_conf()")
        try:
            run_rotation(tenant_secret, server)
        finally:
            su.execute("ALTER SYSTEM RESET log_statement")
            su.execute("SELECT pg_reload_conf()")
    password = current(secretsmanager, tenant_secret)["password"]
    log = embedded_pg.log_file.read_text()
    assert "ALTER ROLE CURRENT_USER PASSWORD 'SCRAM-SHA-256$" in log
    assert password not in log


def test_every_rotation_log_line_is_json_with_the_step_and_whose_secret_and_no_password(
    tenant_secret: str,
    tenant_id: str,
    secretsmanager: Any,
    server: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the rotation Lambda's entry point, verifying against the server's CA
    monkeypatch.setenv(SSL_ROOT_CERT, str(server.ca_cert))
    capsys.readouterr()
    token = str(uuid.uuid4())
    # WHEN a whole rotation runs through it
    for step in STEPS:
        on_event({"SecretId": tenant_secret, "ClientRequestToken": token, "Step": step}, None)
    # THEN each line is JSON naming its step, the secret and the tenant it belongs to
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert {record["step"] for record in records} == set(STEPS)
    for record in records:
        assert record["service"] == "tenantkit-rotation"
        assert (record["secret"], record["owner"]) == (tenant_secret, tenant_id)
    new_password = current(secretsmanager, tenant_secret)["password"]
    assert new_password not in "\n".join(lines)
    assert "first-password-0" not in "\n".join(lines)
