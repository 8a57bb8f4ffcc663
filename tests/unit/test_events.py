"""Typed parsing of the events aws_cdk.custom_resources.Provider sends."""

import pytest

from lambda_src.core.errors import InvalidRequestError
from lambda_src.provisioner.events import parse_event
from lambda_src.provisioner.kinds import TenantDatabaseSettings, TenantDatabaseSpec

SETTINGS = TenantDatabaseSettings(connection_limit=10, statement_timeout_ms=1000)
PROPS = SETTINGS.properties(
    tenant_id="acme",
    password_secret_arn="arn:aws:secretsmanager:us-east-1:000000000000:secret:x",
)


def test_a_create_event_parses_into_its_kind_and_properties() -> None:
    event = parse_event({"RequestType": "Create", "ResourceProperties": PROPS})
    assert event.request_type == "Create"
    assert event.kind == "TenantDatabase"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"ResourceProperties": PROPS}, "RequestType must be one of"),
        ({"RequestType": "Replace", "ResourceProperties": PROPS}, "RequestType must be one of"),
        ({"RequestType": "Create"}, "ResourceProperties is missing"),
        (
            {"RequestType": "Update", "ResourceProperties": PROPS, "PhysicalResourceId": "p"},
            "must carry OldResourceProperties",
        ),
        ({"RequestType": "Delete", "ResourceProperties": PROPS}, "must carry PhysicalResourceId"),
    ],
)
def test_malformed_events_are_rejected_naming_the_field(
    event: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_event(event)


def test_properties_arrive_as_strings_and_parse_into_typed_values() -> None:
    spec = TenantDatabaseSpec.parse(PROPS)
    assert spec.settings == SETTINGS
    assert (spec.settings.connection_limit, spec.settings.statement_timeout_ms) == (10, 1000)
    assert spec.settings.iam_auth is True
    assert spec.names.database == "tenant_acme"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"ConnectionLimit": "0"}, "ConnectionLimit must be an integer 1..5000"),
        ({"ConnectionLimit": "ten"}, "ConnectionLimit must be an integer"),
        ({"ConnectionLimit": "1; DROP"}, "ConnectionLimit must be an integer"),
        ({"ConnectionLimit": "--5"}, "ConnectionLimit must be an integer"),
        ({"ConnectionLimit": "٣"}, "ConnectionLimit must be an integer"),
        ({"StatementTimeoutMs": "-1"}, "StatementTimeoutMs must be an integer"),
        ({"RemovalPolicy": "snapshot"}, "RemovalPolicy must be retain or destroy"),
        ({"IamAuth": "yes"}, "IamAuth must be true or false"),
        ({"PasswordSecretArn": "my-secret"}, "PasswordSecretArn must be an ARN"),
        ({"TenantId": "a'b"}, "TenantId: tenant id"),
    ],
)
def test_bad_property_values_are_rejected_naming_the_property(
    override: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        TenantDatabaseSpec.parse({**PROPS, **override})


def test_a_dsn_becomes_tls_settings_and_bad_dsns_say_what_is_missing() -> None:
    from pathlib import Path

    from lambda_src.core.connection import RDS_CA_BUNDLE_PATH, settings_from_dsn

    settings = settings_from_dsn(
        "host=db.example port=6543 dbname=p user=u sslmode=disable sslrootcert=/ca.pem",
        {"PGPASSWORD": "from-env"},
    )
    assert (settings.host, settings.port, settings.password) == ("db.example", 6543, "from-env")
    assert settings.connect_kwargs()["sslmode"] == "verify-full"  # never off, never unverified
    assert settings.ssl_root_cert == Path("/ca.pem")
    default = settings_from_dsn("host=db.example dbname=p user=u password=x sslmode=require")
    assert default.connect_kwargs()["sslmode"] == "verify-full"
    assert default.ssl_root_cert == RDS_CA_BUNDLE_PATH  # the shipped RDS CA bundle
    with pytest.raises(ValueError, match="needs host, password"):
        settings_from_dsn("dbname=p user=u", {})
    with pytest.raises(ValueError, match="not a libpq connection string"):
        settings_from_dsn("this is = not = valid", {})


def test_the_pool_verify_probes_property_is_true_unless_it_says_false() -> None:
    from lambda_src.provisioner.kinds.pool import PoolDatabaseSpec, pool_database_properties

    props = pool_database_properties(
        runtime_secret_arn="arn:aws:secretsmanager:x", iam_auth=True, removal_policy="retain"
    )
    assert PoolDatabaseSpec.parse(props).verify_probes is True
    # a pool deployed before the property existed keeps its probes
    legacy = {k: v for k, v in props.items() if k != "VerifyProbes"}
    assert PoolDatabaseSpec.parse(legacy).verify_probes is True
    assert PoolDatabaseSpec.parse({**props, "VerifyProbes": "false"}).verify_probes is False
    with pytest.raises(InvalidRequestError, match="VerifyProbes must be true or false"):
        PoolDatabaseSpec.parse({**props, "VerifyProbes": "off"})
