"""The provisioner with the application's migrations (HandlerConfig.migrations_dir, what the
bundled asset gives it in AWS): a new tenant database is brought to the newest version before
the tenant is active, a failing migration leaves it `failed` with the file and the cause until a
retry resumes, and a migrate request (the fleet rollout's) brings one tenant up."""

import dataclasses
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lambda_src.core.errors import InvalidRequestError, TenantkitError
from lambda_src.migrations.apply import database_status
from lambda_src.migrations.files import load_migrations
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.postgres import read_registry
from lambda_src.tenancy import tenant_names
from tenantkit.embedded_pg import RunningServer

from .conftest import SecretFactory, create_event, properties, update_event

PASSWORD = "provisioner-migrations-password-1"


def write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    write(directory, "V0001__items.sql", "CREATE TABLE items (id bigint PRIMARY KEY, name text);\n")
    write(directory, "V0002__price.sql", "ALTER TABLE items ADD COLUMN price_cents bigint;\n")
    return directory


@pytest.fixture
def migrating(config: HandlerConfig, migrations: Path) -> HandlerConfig:
    return dataclasses.replace(config, migrations_dir=migrations)


def registry(server: RunningServer, tenant_id: str) -> tuple[str, str | None]:
    with psycopg.connect(**server.admin_settings().connect_kwargs(), autocommit=True) as conn:
        (entry,) = [e for e in read_registry(conn) if e.tenant_id == tenant_id]
    return entry.status, entry.cause


def version(server: RunningServer, tenant_id: str, migrations: Path) -> int | None:
    settings = server.admin_settings(tenant_names(tenant_id).database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        return database_status(conn, load_migrations(migrations)).current


def test_a_new_tenant_is_at_the_newest_version_when_it_becomes_active(
    tenant_id: str,
    make_secret: SecretFactory,
    migrating: HandlerConfig,
    migrations: Path,
    server: RunningServer,
) -> None:
    response = handle(
        create_event(properties(tenant_id, make_secret(tenant_id, PASSWORD))), migrating
    )

    assert registry(server, tenant_id) == ("active", None)
    assert version(server, tenant_id, migrations) == 2
    assert int(response["Data"]["Changes"]) >= 2
    # the application's login uses what the migrations made
    names = tenant_names(tenant_id)
    settings = server.settings(names.login_role, PASSWORD, names.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        conn.execute("INSERT INTO items VALUES (1, 'a', 250)")
        assert conn.execute("SELECT price_cents FROM items").fetchone() == (250,)


def test_a_failing_migration_leaves_the_tenant_failed_and_a_retry_resumes(
    tenant_id: str,
    make_secret: SecretFactory,
    migrating: HandlerConfig,
    migrations: Path,
    server: RunningServer,
) -> None:
    write(migrations, "V0003__broken.sql", "ALTER TABLE no_such_table ADD COLUMN x int;\n")
    props = properties(tenant_id, make_secret(tenant_id, PASSWORD))

    with pytest.raises(TenantkitError, match=r"V0003__broken.sql failed.*version 2.*no_such_table"):
        handle(create_event(props), migrating)

    status, cause = registry(server, tenant_id)
    assert status == "failed"
    assert cause is not None
    assert "V0003__broken.sql" in cause
    assert version(server, tenant_id, migrations) == 2  # the good files stay applied
    # fixed (a new file, the broken one never applied): the retry resumes and activates
    (migrations / "V0003__broken.sql").write_text("ALTER TABLE items ADD COLUMN x int;\n")
    handle(update_event(props, props), migrating)
    assert registry(server, tenant_id) == ("active", None)
    assert version(server, tenant_id, migrations) == 3


def test_a_migrate_request_brings_one_tenant_to_the_newest_version(
    tenant_id: str,
    make_secret: SecretFactory,
    config: HandlerConfig,
    migrating: HandlerConfig,
    migrations: Path,
    server: RunningServer,
) -> None:
    # GIVEN a tenant created before the application had migrations
    handle(create_event(properties(tenant_id, make_secret(tenant_id, PASSWORD))), config)
    assert version(server, tenant_id, migrations) is None

    result = handle({"tenantkit": "migrate", "tenant": tenant_id}, migrating)

    assert result == {"tenant": tenant_id, "applied": [1, 2], "current": 2}
    again = handle({"tenantkit": "migrate", "tenant": tenant_id}, migrating)
    assert again == {"tenant": tenant_id, "applied": [], "current": 2}


@pytest.mark.parametrize(
    ("tenant", "refused"),
    [("Robert'); DROP TABLE x;--", "tenant"), (None, "tenant")],
)
def test_a_migrate_request_for_a_bad_tenant_id_is_refused_before_any_sql(
    tenant: Any, refused: str, migrating: HandlerConfig
) -> None:
    broken = dataclasses.replace(migrating, admin_settings=None, admin_secret_arn="arn:never-read")
    with pytest.raises(InvalidRequestError, match=refused):
        handle({"tenantkit": "migrate", "tenant": tenant}, broken)


def test_a_migrate_request_to_a_provisioner_without_migrations_says_so(
    tenant_id: str, config: HandlerConfig
) -> None:
    with pytest.raises(InvalidRequestError, match="carries no migrations"):
        handle({"tenantkit": "migrate", "tenant": tenant_id}, config)
