"""The pool database's migrations in AWS: the PoolDatabase resource names them (latest version
and fingerprint), so a deploy that adds one sends an Update, and the provisioner (carrying the
files, as its code asset does) applies what is pending as the pool's owner, every new table of
a tenant schema put under the tenant policies. A failing file fails the resource and the
rollback CloudFormation then sends leaves the database where it was."""

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lambda_src.core.errors import InvalidRequestError, TenantkitError
from lambda_src.migrations.apply import applied_migrations
from lambda_src.migrations.files import load_migrations
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import RequestType, provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import PoolMigrations, pool_database_properties
from lambda_src.provisioner.migrate import PoolSchema
from lambda_src.tenancy import POOL
from tenantkit.embedded_pg import RunningServer

from .pool_fixtures import aws, config, pool_server  # noqa: F401 (fixtures)

ITEMS = """\
CREATE TABLE items (
    tenant_id text NOT NULL,
    id bigint NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
"""
NOTES = "ALTER TABLE items ADD COLUMN note text;\n"
UNPROTECTABLE = "CREATE TABLE audit (id bigint PRIMARY KEY, what text);\n"
"""No tenant_id: the pool refuses it in a tenant schema."""


def event(
    request_type: RequestType, props: dict[str, Any], old: dict[str, Any] | None = None
) -> dict[str, Any]:
    physical_id = None if request_type == "Create" else "pool/tenantkit_pool"
    return provider_event(request_type, props, physical_id=physical_id, old_properties=old)


def props_for(
    aws: Any, directory: Path | None, schema: PoolSchema = PoolSchema(), **overrides: Any
) -> dict[str, Any]:
    """The PoolDatabase's properties as the pool stack synthesizes them from `directory`."""
    arn = aws.describe_secret(SecretId=POOL.secret_name)["ARN"]
    migrations = (
        None if directory is None else PoolMigrations.of(load_migrations(directory), schema)
    )
    settings: dict[str, Any] = {"iam_auth": False, "removal_policy": "retain", **overrides}
    return pool_database_properties(runtime_secret_arn=arn, migrations=migrations, **settings)


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "V1__items.sql").write_text(ITEMS)
    return directory


@pytest.fixture
def carrying(config: HandlerConfig, migrations: Path) -> HandlerConfig:
    """The pool host's provisioner with the migrations in its asset."""
    return dataclasses.replace(config, migrations_dir=migrations)


@pytest.fixture
def fresh_pool(aws: Any, config: HandlerConfig) -> None:
    """No pool database: each test deploys the pool from scratch."""
    props = props_for(aws, None, removal_policy="destroy")
    handle(event("Delete", props), config)


@pytest.fixture
def superuser(pool_server: RunningServer) -> Callable[[], psycopg.Connection[Any]]:
    """Opens a superuser connection to the pool database, for inspecting what was done."""

    def connect() -> psycopg.Connection[Any]:
        settings = pool_server.superuser_settings(POOL.database)
        return psycopg.connect(**settings.connect_kwargs(), autocommit=True)

    return connect


def versions(pool_server: RunningServer) -> list[int]:
    settings = pool_server.admin_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        return [a.version for a in applied_migrations(conn)]


def protection(superuser: Any, table: str) -> tuple[Any, ...] | None:
    """Owner, ENABLE and FORCE row-level security, the runtime's SELECT, and the policy count."""
    with superuser() as conn:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT c.relowner::regrole::text, c.relrowsecurity, c.relforcerowsecurity, "
            "has_table_privilege(%s, c.oid, 'SELECT'), "
            "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) "
            "FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (POOL.runtime_role, table),
        ).fetchone()


@pytest.mark.usefixtures("fresh_pool")
def test_a_pool_deployed_with_migrations_holds_them_its_new_tables_protected(
    aws: Any, carrying: HandlerConfig, migrations: Path, pool_server: RunningServer, superuser: Any
) -> None:
    props = props_for(aws, migrations)

    handle(event("Create", props), carrying)

    assert versions(pool_server) == [1]
    assert protection(superuser, "public.items") == (POOL.owner_role, True, True, True, 2)
    # a replay (CloudFormation may send the same Create again) changes nothing
    assert handle(event("Create", props), carrying)["Data"]["Changes"] == "0"
    assert versions(pool_server) == [1]


@pytest.mark.usefixtures("fresh_pool")
def test_a_deploy_that_adds_a_migration_changes_the_property_and_applies_only_that_file(
    aws: Any, carrying: HandlerConfig, migrations: Path, pool_server: RunningServer
) -> None:
    old = props_for(aws, migrations)
    handle(event("Create", old), carrying)
    (migrations / "V2__notes.sql").write_text(NOTES)
    new = props_for(aws, migrations)

    response = handle(event("Update", new, old), carrying)

    # the property CloudFormation compares changed: the deploy sends the pool an Update
    assert new["Migrations"]["Latest"] == "2"
    assert new["Migrations"]["Fingerprint"] != old["Migrations"]["Fingerprint"]
    assert versions(pool_server) == [1, 2]
    assert response["Data"]["Changes"] == "1"  # "migrated tenantkit_pool to version 2"


@pytest.mark.usefixtures("fresh_pool")
def test_a_failing_migration_fails_the_deploy_and_its_rollback_keeps_the_pool_where_it_was(
    aws: Any, carrying: HandlerConfig, migrations: Path, pool_server: RunningServer, superuser: Any
) -> None:
    before = props_for(aws, migrations)
    handle(event("Create", before), carrying)
    (migrations / "V2__audit.sql").write_text(UNPROTECTABLE)
    after = props_for(aws, migrations)

    with pytest.raises(TenantkitError) as failed:
        handle(event("Update", after, before), carrying)

    message = str(failed.value)
    assert "migration V2__audit.sql failed, the database stays at version 1" in message
    assert "public.audit" in message
    assert "tenant_id" in message
    assert versions(pool_server) == [1]
    assert protection(superuser, "public.audit") is None  # rolled back with its file
    # CloudFormation rolls back: an Update to the old properties while the function still
    # carries the new files (it is rolled back after the resource that depends on it)
    rollback = handle(event("Update", before, after), carrying)
    assert rollback["Data"]["Changes"] == "0"
    assert versions(pool_server) == [1]


@pytest.mark.usefixtures("fresh_pool")
def test_a_rollback_after_the_migration_succeeded_keeps_it_and_succeeds(
    aws: Any, carrying: HandlerConfig, migrations: Path, pool_server: RunningServer
) -> None:
    # GIVEN a deploy whose pool migration succeeded and a later resource of it failed
    before = props_for(aws, migrations)
    handle(event("Create", before), carrying)
    (migrations / "V2__notes.sql").write_text(NOTES)
    after = props_for(aws, migrations)
    handle(event("Update", after, before), carrying)

    # WHEN CloudFormation rolls the pool back to the older fingerprint
    rollback = handle(event("Update", before, after), carrying)

    # THEN the rollback succeeds and V2 stays (a migration is never reverted)
    assert rollback["Data"]["Changes"] == "0"
    assert versions(pool_server) == [1, 2]


@pytest.mark.usefixtures("fresh_pool")
def test_an_edited_applied_file_fails_the_deploy_as_drift_and_the_rollback_succeeds(
    aws: Any, carrying: HandlerConfig, migrations: Path, pool_server: RunningServer
) -> None:
    before = props_for(aws, migrations)
    handle(event("Create", before), carrying)
    (migrations / "V1__items.sql").write_text(ITEMS + "-- edited after it was applied\n")
    after = props_for(aws, migrations)

    with pytest.raises(TenantkitError, match=r"drifted.*V1 \(V1__items.sql\) changed"):
        handle(event("Update", after, before), carrying)
    rollback = handle(event("Update", before, after), carrying)

    assert rollback["Data"]["Changes"] == "0"
    assert versions(pool_server) == [1]


@pytest.mark.usefixtures("fresh_pool")
def test_a_listed_tenant_table_may_be_one_a_migration_creates(
    aws: Any, carrying: HandlerConfig, migrations: Path, superuser: Any
) -> None:
    (migrations / "V2__shop.sql").write_text(
        "CREATE SCHEMA shop;\n"
        "CREATE TABLE shop.orders (tenant_id text NOT NULL, id bigint NOT NULL, "
        "PRIMARY KEY (tenant_id, id));\n"
    )
    # shop is not a tenant schema: only pool.tenant_tables protects the table, after the files
    props = props_for(aws, migrations, tenant_tables=["shop.orders"])

    handle(event("Create", props), carrying)

    assert protection(superuser, "shop.orders") == (POOL.owner_role, True, True, True, 2)


@pytest.mark.usefixtures("fresh_pool")
def test_shared_tables_of_the_property_are_readable_and_not_writable(
    aws: Any, carrying: HandlerConfig, migrations: Path, superuser: Any
) -> None:
    (migrations / "V2__countries.sql").write_text(
        "CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);\n"
    )
    props = props_for(aws, migrations, PoolSchema(("public",), ("countries",)))

    handle(event("Create", props), carrying)

    with superuser() as conn:
        rights = conn.execute(
            "SELECT has_table_privilege(%s, 'public.countries', 'SELECT'), "
            "has_table_privilege(%s, 'public.countries', 'INSERT')",
            (POOL.runtime_role, POOL.runtime_role),
        ).fetchone()
    assert rights == (True, False)


@pytest.mark.usefixtures("fresh_pool")
def test_a_shared_table_a_migration_opened_to_writers_is_closed_to_them(
    aws: Any, carrying: HandlerConfig, migrations: Path, superuser: Any
) -> None:
    # GIVEN a migration that makes a shared table and grants writes on it to PUBLIC and to the
    # pool's own logins (the runtime, and its login directly)
    (migrations / "V2__countries.sql").write_text(
        "CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);\n"
        "GRANT ALL ON countries TO PUBLIC;\n"
        f"GRANT INSERT, TRUNCATE ON countries TO {POOL.runtime_role}, {POOL.login_role};\n"
    )
    props = props_for(aws, migrations, PoolSchema(("public",), ("countries",)))

    # WHEN the pool database is created with it
    handle(event("Create", props), carrying)

    # THEN the runtime and its login may read the table and no one but its owner may write it
    with superuser() as conn:
        rights = conn.execute(
            "SELECT has_table_privilege(%s, 'public.countries', 'SELECT'), "
            "has_table_privilege(%s, 'public.countries', 'INSERT, UPDATE, DELETE, TRUNCATE'), "
            "has_table_privilege(%s, 'public.countries', 'INSERT, UPDATE, DELETE, TRUNCATE'), "
            "has_table_privilege('public', 'public.countries', 'INSERT, UPDATE, DELETE, TRUNCATE')",
            (POOL.runtime_role, POOL.runtime_role, POOL.login_role),
        ).fetchone()
    assert rights == (True, False, False, False)


@pytest.mark.usefixtures("fresh_pool")
def test_a_resource_naming_other_migrations_than_the_provisioner_carries_is_refused(
    aws: Any, config: HandlerConfig, carrying: HandlerConfig, migrations: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "V1__items.sql").write_text(ITEMS + "-- another catalog's file\n")
    props = props_for(aws, other)

    with pytest.raises(TenantkitError, match="not the ones this resource names"):
        handle(event("Create", props), carrying)
    with pytest.raises(InvalidRequestError, match="this provisioner carries none"):
        handle(event("Create", props), config)


@pytest.mark.parametrize(
    ("migrations_property", "refused"),
    [
        ("V2", "must be an object"),
        ({"Latest": "two"}, "Migrations.Latest must be a version number"),
        ({"Latest": "2", "Fingerprint": "abc"}, "Migrations.Fingerprint must be a sha256"),
        (
            {"Latest": "2", "Fingerprint": "a" * 64, "TenantSchemas": ["x; DROP"]},
            "Migrations.TenantSchemas must be a list of schema names",
        ),
        (
            {
                "Latest": "2",
                "Fingerprint": "a" * 64,
                "TenantSchemas": ["public"],
                "SharedTables": ["x'); --"],
            },
            "SharedTables",
        ),
    ],
)
def test_a_bad_migrations_property_is_refused_before_any_sql(
    migrations_property: Any, refused: str, aws: Any, carrying: HandlerConfig, migrations: Path
) -> None:
    props = {**props_for(aws, migrations), "Migrations": migrations_property}
    unreachable = dataclasses.replace(
        carrying, admin_settings=None, admin_secret_arn="arn:never-read"
    )

    with pytest.raises(InvalidRequestError, match=refused):
        handle(event("Create", props), unreachable)
