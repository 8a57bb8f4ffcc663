"""Tenant lifecycle recorded by the provisioner in the host's registry, against a real
PostgreSQL: provisioning -> active <-> suspended -> offboarding -> offboarded, and failed with
its cause kept."""

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from lambda_src.core.errors import TenantkitError
from lambda_src.core.steps import run_steps
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.plans.lifecycle import plan_record, plan_registry
from lambda_src.provisioner.postgres import read_history, read_registry
from lambda_src.tenancy import (
    MAX_TENANT_ID_LENGTH,
    MIN_TENANT_ID_LENGTH,
    InvalidTenantIdError,
    tenant_names,
    validate_tenant_id,
)
from tenantkit.embedded_pg import RunningServer

from .conftest import SecretFactory, create_event, delete_event, properties, update_event

PASSWORD = "lifecycle-password-123"


@pytest.fixture
def admin(server: RunningServer) -> Any:
    with psycopg.connect(**server.admin_settings().connect_kwargs(), autocommit=True) as conn:
        yield conn


def status_of(admin: psycopg.Connection, tenant_id: str) -> str | None:
    rows = {entry.tenant_id: entry.status for entry in read_registry(admin)}
    return rows.get(tenant_id)


def history_of(admin: psycopg.Connection, tenant_id: str) -> list[str]:
    return [entry.status for entry in read_history(admin, tenant_id)]


def login(server: RunningServer, tenant_id: str) -> psycopg.Connection[Any]:
    names = tenant_names(tenant_id)
    settings = server.settings(names.login_role, PASSWORD, names.database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


@pytest.fixture
def props(tenant_id: str, make_secret: SecretFactory) -> dict[str, str]:
    return properties(tenant_id, make_secret(tenant_id, PASSWORD))


def test_create_records_provisioning_then_active(
    props: dict[str, str], tenant_id: str, config: HandlerConfig, admin: psycopg.Connection
) -> None:
    handle(create_event(props), config)

    assert status_of(admin, tenant_id) == "active"
    assert history_of(admin, tenant_id) == ["provisioning", "active"]


def test_a_replayed_create_adds_nothing_to_the_history(
    props: dict[str, str], tenant_id: str, config: HandlerConfig, admin: psycopg.Connection
) -> None:
    handle(create_event(props), config)

    handle(create_event(props), config)

    assert history_of(admin, tenant_id) == ["provisioning", "active"]


def test_suspending_keeps_the_data_and_refuses_the_login_until_resumed(
    props: dict[str, str],
    tenant_id: str,
    config: HandlerConfig,
    admin: psycopg.Connection,
    server: RunningServer,
) -> None:
    handle(create_event(props), config)
    with login(server, tenant_id) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('kept')")
    session = login(server, tenant_id)

    # WHEN the catalog marks the tenant suspended
    suspended = {**props, "Suspended": "true"}
    handle(update_event(suspended, props), config)

    # THEN it is recorded, its open session is gone and a new login is refused
    assert status_of(admin, tenant_id) == "suspended"
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        login(server, tenant_id)

    # WHEN resumed THEN the data is there again
    handle(update_event(props, suspended), config)
    assert status_of(admin, tenant_id) == "active"
    with login(server, tenant_id) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    # (each change runs as provisioning until it is done)
    assert history_of(admin, tenant_id) == [
        *("provisioning", "active"),
        *("provisioning", "suspended"),
        *("provisioning", "active"),
    ]


def test_offboarding_with_retain_records_offboarded_and_keeps_the_row(
    props: dict[str, str], tenant_id: str, config: HandlerConfig, admin: psycopg.Connection
) -> None:
    handle(create_event(props), config)

    handle(delete_event(props), config)

    assert status_of(admin, tenant_id) == "offboarded"
    assert history_of(admin, tenant_id)[-2:] == ["offboarding", "offboarded"]


def test_offboarding_with_destroy_forgets_the_tenant_but_keeps_its_history(
    tenant_id: str, make_secret: SecretFactory, config: HandlerConfig, admin: psycopg.Connection
) -> None:
    props = properties(tenant_id, make_secret(tenant_id, PASSWORD), removal_policy="destroy")
    handle(create_event(props), config)

    handle(delete_event(props), config)
    handle(delete_event(props), config)  # a replay records nothing more

    assert status_of(admin, tenant_id) is None
    assert history_of(admin, tenant_id) == ["provisioning", "active", "offboarding", "offboarded"]


def test_a_failed_step_is_recorded_with_its_cause_and_kept_after_a_retry(
    props: dict[str, str],
    tenant_id: str,
    config: HandlerConfig,
    admin: psycopg.Connection,
    superuser: psycopg.Connection,
) -> None:
    # GIVEN a database of the tenant's name that the admin does not own (and cannot take)
    database = tenant_names(tenant_id).database
    superuser.execute(f'CREATE DATABASE "{database}"')

    with pytest.raises(TenantkitError, match="must be owner of database") as failure:
        handle(create_event(props), config)

    entry = next(e for e in read_registry(admin) if e.tenant_id == tenant_id)
    assert entry.status == "failed"
    assert entry.cause == str(failure.value)
    assert PASSWORD not in str(entry.cause)

    # WHEN an operator fixes the cause and the request is retried
    superuser.execute(f'ALTER DATABASE "{database}" OWNER TO {config.admin_settings.user}')  # type: ignore[union-attr]
    handle(create_event(props), config)

    # THEN the tenant is active and the history still says why it failed
    assert status_of(admin, tenant_id) == "active"
    failed = [e for e in read_history(admin, tenant_id) if e.status == "failed"]
    assert [e.cause for e in failed] == [str(failure.value)]


def test_tenant_logins_cannot_read_the_registry(
    props: dict[str, str], tenant_id: str, config: HandlerConfig, server: RunningServer
) -> None:
    handle(create_event(props), config)
    names = tenant_names(tenant_id)

    # The registry lives in the admin database, which tenant logins may not even connect to.
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(**server.settings(names.login_role, PASSWORD, "postgres").connect_kwargs())


OLD_REGISTRY = """
CREATE SCHEMA tenantkit;
CREATE TABLE tenantkit.tenants (
    tenant_id text PRIMARY KEY,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'offboarded')),
    registered_by text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    status_changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tenantkit.tenants (tenant_id, registered_by) VALUES ('elder', 'batch-01');
"""


def test_a_registry_from_before_the_lifecycle_is_read_and_brought_up_to_date(
    server: RunningServer, admin: psycopg.Connection, config: HandlerConfig
) -> None:
    # GIVEN a registry as the first pool releases made it (no cause, two states, no history)
    database = f"upgrade_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    settings = server.admin_settings(database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        conn.execute(OLD_REGISTRY)

        # THEN tenantctl can read it as it is
        assert [(e.tenant_id, e.status, e.cause) for e in read_registry(conn)] == [
            ("elder", "active", None)
        ]
        assert read_history(conn, "elder") == []

        # WHEN the provisioner converges it THEN every lifecycle state can be recorded
        assert config.admin_settings is not None
        run_steps(conn, settings, config.retry, plan_registry())
        run_steps(
            conn,
            settings,
            config.retry,
            [plan_record(["elder"], "suspended", registered_by="batch-01")],
        )
        assert [e.status for e in read_registry(conn)] == ["suspended"]
        assert [e.status for e in read_history(conn, "elder")] == ["suspended"]


@pytest.mark.parametrize(
    ("tenant_id", "valid"),
    [
        ("a" * MIN_TENANT_ID_LENGTH, True),
        ("a" * MAX_TENANT_ID_LENGTH, True),
        ("a" * (MIN_TENANT_ID_LENGTH - 1), False),
        ("a" * (MAX_TENANT_ID_LENGTH + 1), False),
        ("Upper", False),
        ("two--hyphens", False),
    ],
)
def test_the_registry_refuses_what_the_tenant_id_rules_refuse(
    admin: psycopg.Connection, config: HandlerConfig, tenant_id: str, valid: bool
) -> None:
    # The registry's CHECK is derived from the id rules: it agrees with validate_tenant_id.
    try:
        validate_tenant_id(tenant_id)
        assert valid
    except InvalidTenantIdError:
        assert not valid
    assert config.admin_settings is not None
    run_steps(admin, config.admin_settings, config.retry, plan_registry())
    step = plan_record([tenant_id], "offboarded", registered_by="test")
    try:
        if valid:
            run_steps(admin, config.admin_settings, config.retry, [step])
            assert status_of(admin, tenant_id) == "offboarded"
        else:
            with pytest.raises(TenantkitError, match="tenants_tenant_id_check"):
                run_steps(admin, config.admin_settings, config.retry, [step])
    finally:
        admin.execute("DELETE FROM tenantkit.tenants WHERE tenant_id = %s", (tenant_id,))
