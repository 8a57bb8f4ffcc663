"""on_event, the Lambda entry point: configuration from the environment, admin from a secret."""

import json
from pathlib import Path
from typing import Any

import pytest

from lambda_src.core import connection as connection_module
from lambda_src.core.connection import RDS_CA_BUNDLE_PATH, ConnectionSettings
from lambda_src.core.environment import ADMIN_SECRET_ARN, CONNECT_ATTEMPTS, SSL_ROOT_CERT
from lambda_src.core.errors import TenantkitError
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.handler import on_event
from tenantkit.embedded_pg import ADMIN_USER, RunningServer

from .conftest import SecretFactory, create_event, properties


def admin_secret(secretsmanager: Any, server: RunningServer) -> str:
    """The admin secret in the format RDS generates for a cluster."""
    value = {
        "engine": "postgres",
        "host": server.host,
        "port": server.port,
        "username": ADMIN_USER,
        "password": server.credentials.admin_password,
        "dbname": "postgres",
    }
    try:
        created = secretsmanager.create_secret(Name="admin", SecretString=json.dumps(value))
    except secretsmanager.exceptions.ResourceExistsException:  # an earlier test's, the same
        return str(secretsmanager.describe_secret(SecretId="admin")["ARN"])
    return str(created["ARN"])


def test_on_event_reads_the_admin_secret_and_provisions_with_verify_full(
    secretsmanager: Any,
    server: RunningServer,
    make_secret: SecretFactory,
    tenant_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ADMIN_SECRET_ARN, admin_secret(secretsmanager, server))
    monkeypatch.setenv(SSL_ROOT_CERT, str(server.ca_cert))
    response = on_event(create_event(properties(tenant_id, make_secret(tenant_id, "pw"))), None)
    assert response["PhysicalResourceId"] == f"tenantdb/{tenant_id}"


def test_verify_full_refuses_a_server_whose_certificate_the_bundle_does_not_sign(
    secretsmanager: Any,
    server: RunningServer,
    tenant_id: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tenantkit.tls import write_server_tls

    other_ca = write_server_tls(tmp_path, tmp_path).ca_cert
    monkeypatch.setenv(ADMIN_SECRET_ARN, admin_secret(secretsmanager, server))
    monkeypatch.setenv(SSL_ROOT_CERT, str(other_ca))
    monkeypatch.setenv(CONNECT_ATTEMPTS, "1")
    with pytest.raises(TenantkitError, match=r"after 1 attempt\(s\).*SSL error"):
        on_event(create_event(properties(tenant_id, "arn:aws:secretsmanager:x")), None)


def test_configuration_errors_name_the_variable() -> None:
    with pytest.raises(TenantkitError, match=f"{ADMIN_SECRET_ARN} is not set"):
        HandlerConfig.from_env({})
    with pytest.raises(TenantkitError, match=f"{SSL_ROOT_CERT}: no CA bundle"):
        HandlerConfig.from_env({ADMIN_SECRET_ARN: "arn", SSL_ROOT_CERT: "nope.pem"})
    with pytest.raises(TenantkitError, match=f"{CONNECT_ATTEMPTS} must be 1..20"):
        HandlerConfig.from_env({ADMIN_SECRET_ARN: "arn", CONNECT_ATTEMPTS: "0"})


def test_without_a_ca_bundle_the_shipped_rds_bundle_is_used_with_verify_full() -> None:
    config = HandlerConfig.from_env({ADMIN_SECRET_ARN: "arn"})
    assert config.ssl_root_cert == RDS_CA_BUNDLE_PATH
    default = ConnectionSettings(host="h", port=5432, user="u", password="p")
    assert (default.connect_kwargs()["sslmode"], default.connect_kwargs()["sslrootcert"]) == (
        "verify-full",
        str(RDS_CA_BUNDLE_PATH),
    )
    other = ConnectionSettings(host="h", port=5432, user="u", password="p", ssl_root_cert=Path("x"))
    assert (other.connect_kwargs()["sslmode"], other.connect_kwargs()["sslrootcert"]) == (
        "verify-full",
        "x",
    )


def test_a_missing_shipped_bundle_fails_closed_naming_make_setup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(connection_module, "RDS_CA_BUNDLE_PATH", tmp_path / "rds-ca-bundle.pem")
    with pytest.raises(TenantkitError, match=r"RDS CA bundle .* is missing \(run `make setup`"):
        HandlerConfig.from_env({ADMIN_SECRET_ARN: "arn"})


def test_on_event_with_the_default_bundle_refuses_a_server_it_does_not_sign_at_once(
    secretsmanager: Any, server: RunningServer, tenant_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the Lambda's environment with no CA bundle variable (the shipped RDS bundle) and
    # the default 6 connection attempts, and a server whose certificate a local CA signed
    monkeypatch.setenv(ADMIN_SECRET_ARN, admin_secret(secretsmanager, server))
    monkeypatch.delenv(SSL_ROOT_CERT, raising=False)
    monkeypatch.delenv(CONNECT_ATTEMPTS, raising=False)
    # WHEN the provisioner runs THEN the connection is refused on the first attempt
    with pytest.raises(TenantkitError, match=r"after 1 attempt\(s\).*certificate verify failed"):
        on_event(create_event(properties(tenant_id, "arn:aws:secretsmanager:x")), None)


def test_admin_secret_missing_fields_is_reported_without_values(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch, tenant_id: str
) -> None:
    arn = secretsmanager.create_secret(
        Name="bad-admin", SecretString=json.dumps({"host": "h", "password": "s3cr3t-value"})
    )["ARN"]
    monkeypatch.setenv(ADMIN_SECRET_ARN, arn)
    with pytest.raises(TenantkitError, match="admin secret lacks field") as raised:
        on_event(create_event(properties(tenant_id, "arn:aws:secretsmanager:x")), None)
    assert "s3cr3t-value" not in str(raised.value)


def test_every_log_line_is_json_with_the_requests_keys_and_no_secret(
    secretsmanager: Any,
    server: RunningServer,
    make_secret: SecretFactory,
    tenant_id: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the Lambda's entry point, as in AWS (a fresh function logger)
    monkeypatch.setenv(ADMIN_SECRET_ARN, admin_secret(secretsmanager, server))
    monkeypatch.setenv(SSL_ROOT_CERT, str(server.ca_cert))
    password = "log-me-never-0123456789"
    # WHEN a tenant is created
    on_event(create_event(properties(tenant_id, make_secret(tenant_id, password))), None)
    # THEN every line is a JSON object carrying the kind, the tenant and the logical resource id
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) > 5  # the request, each step, each change
    records = [json.loads(line) for line in lines]
    for record in records:
        assert record["service"] == "tenantkit-provisioner"
        assert (record["kind"], record["tenant"]) == ("TenantDatabase", tenant_id)
        assert record["logical_resource_id"] == "Tenant"
        assert record["request_type"] == "Create"
    assert any(r["message"].startswith("done: create database") for r in records)
    assert any(r["name"].startswith("lambda_src.core.steps") for r in records)
    assert password not in "\n".join(lines)
    assert server.credentials.admin_password not in "\n".join(lines)
