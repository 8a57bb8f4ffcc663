"""Tenant-id rules and physical-name derivation."""

import pytest

from lambda_src.tenancy import (
    MAX_TENANT_ID_LENGTH,
    HostNames,
    InvalidTenantIdError,
    tenant_names,
    validate_tenant_id,
)

HOSTILE_IDS = [
    pytest.param("acme'; DROP DATABASE postgres; --", id="sql-injection"),
    pytest.param('acme"', id="double-quote"),
    pytest.param("acme'", id="single-quote"),
    pytest.param("acme;", id="semicolon"),
    pytest.param("ac me", id="space"),
    pytest.param("acme\x00", id="nul-byte"),
    pytest.param("acme\n", id="newline"),
    pytest.param("a" * (MAX_TENANT_ID_LENGTH + 1), id="too-long"),
    pytest.param("a" * 64, id="64-bytes"),
    pytest.param("ünïcode", id="unicode"),
    pytest.param("acme\u200b", id="zero-width-space"),
    pytest.param("Acme", id="uppercase"),
    pytest.param("a", id="too-short"),
    pytest.param("", id="empty"),
    pytest.param("1acme", id="leading-digit"),
    pytest.param("-acme", id="leading-hyphen"),
    pytest.param("acme-", id="trailing-hyphen"),
    pytest.param("ac--me", id="double-hyphen"),
    pytest.param("ac_me", id="underscore"),
    pytest.param("ac.me", id="dot"),
    pytest.param("${aws:username}", id="iam-policy-variable"),
    pytest.param("postgres", id="reserved-postgres"),
    pytest.param("template0", id="reserved-template0"),
    pytest.param("template1", id="reserved-template1"),
    pytest.param("rdsadmin", id="reserved-rdsadmin"),
    pytest.param("public", id="reserved-public"),
    pytest.param("pool", id="reserved-tier-pool"),  # would share the pool's secret name
    pytest.param("bridge", id="reserved-tier-bridge"),
    pytest.param("pg-stats", id="reserved-prefix-pg"),
    pytest.param("aws-acme", id="reserved-prefix-aws"),
]


@pytest.mark.parametrize("tenant_id", HOSTILE_IDS)
def test_hostile_and_invalid_ids_are_rejected_with_the_value_named(tenant_id: str) -> None:
    with pytest.raises(InvalidTenantIdError, match="tenant id"):
        validate_tenant_id(tenant_id)


@pytest.mark.parametrize("value", [None, 42, b"acme", ["acme"]])
def test_non_string_ids_are_rejected(value: object) -> None:
    with pytest.raises(InvalidTenantIdError, match="must be a string"):
        validate_tenant_id(value)


@pytest.mark.parametrize("tenant_id", ["acme", "a1", "acme-corp", "x-1-y", "a" * 32])
def test_valid_slugs_are_accepted(tenant_id: str) -> None:
    assert validate_tenant_id(tenant_id) == tenant_id


def test_error_message_names_the_rule_broken() -> None:
    with pytest.raises(InvalidTenantIdError, match="reserved"):
        validate_tenant_id("postgres")
    with pytest.raises(InvalidTenantIdError, match="2 to 32 characters long, not 33"):
        validate_tenant_id("a" * 33)


def test_names_are_derived_deterministically_from_the_tenant_id() -> None:
    names = tenant_names("acme-corp")
    assert names.database == "tenant_acme_corp"
    assert names.owner_role == "tenant_acme_corp_owner"
    assert names.login_role == "tenant_acme_corp_app"
    assert names.iam_user == "tenant_acme-corp_iam"  # keeps the id as a session tag spells it
    assert names.pool_login == "tenant_acme-corp_pool"  # so does a strict pool's login
    assert names.secret_name == "tenantkit/acme-corp/app"
    assert names.silo_stack_name == "tenantkit-silo-acme-corp"
    assert tenant_names("acme-corp") == names


def test_longest_tenant_id_yields_postgres_identifiers_within_63_bytes() -> None:
    names = tenant_names("a" * MAX_TENANT_ID_LENGTH)
    for name in (names.database, *names.roles, names.pool_login):
        assert len(name.encode()) <= 63, name


def test_probe_tenants_have_names_only_when_asked_for() -> None:
    with pytest.raises(InvalidTenantIdError, match="reserved"):
        tenant_names("tenantkit-probe-a")
    assert tenant_names("tenantkit-probe-a", allow_probes=True).pool_login == (
        "tenant_tenantkit-probe-a_pool"
    )


def test_stack_name_of_longest_id_is_a_valid_cloudformation_stack_name() -> None:
    name = tenant_names("a" * MAX_TENANT_ID_LENGTH).silo_stack_name
    assert len(name) <= 128
    assert name.replace("-", "").isalnum()


def test_the_longest_silo_hosts_function_names_fit_lambdas_64_characters() -> None:
    host = HostNames(tenant_names("a" * MAX_TENANT_ID_LENGTH).silo_stack_name)
    for name in (host.mobility_function, host.provisioner_function, host.rotation_function):
        assert len(name) <= 64, name
    assert host.mobility_function == f"tenantkit-silo-{'a' * MAX_TENANT_ID_LENGTH}-mobility"


def test_distinct_ids_never_share_a_database_name() -> None:
    # Hyphens become underscores, and underscores are not allowed in ids: no collisions.
    assert tenant_names("a-b").database != tenant_names("ab").database
    with pytest.raises(InvalidTenantIdError):
        tenant_names("a_b")


def test_names_refuse_an_invalid_id() -> None:
    with pytest.raises(InvalidTenantIdError):
        tenant_names("x'; DROP ROLE postgres; --")
