"""pool.tenant_tables derived from the schema, on a real PostgreSQL: a PoolDatabase with the
application's migrations (which name the tenant schemas) protects every table in them on each
Create and Update, whoever created it, so a listed table there is fine whether or not it exists
yet, a listed table outside them is protected by name as before, and a table there that cannot
be protected fails the deploy naming it."""

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lambda_src.core.errors import TenantkitError
from lambda_src.migrations.files import load_migrations
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import PoolMigrations, pool_database_properties
from lambda_src.provisioner.migrate import PoolSchema
from lambda_src.provisioner.plans.pool_rls import ISOLATION_POLICY
from lambda_src.tenancy import POOL
from tenantkit.embedded_pg import RunningServer

from .pool_fixtures import aws, config, pool_server  # noqa: F401 (fixtures)

TENANT_TABLE = "(tenant_id text NOT NULL, id bigint NOT NULL, PRIMARY KEY (tenant_id, id))"


@pytest.fixture(scope="module")
def empty_migrations(tmp_path_factory: Any) -> Path:
    """The application's migrations directory, with no file yet: the deploys below protect
    tables made outside any migration."""
    return Path(tmp_path_factory.mktemp("pool-migrations"))


def deploy(
    aws: Any,
    config: HandlerConfig,
    migrations: Path,
    *,
    tenant_schemas: tuple[str, ...] = ("app",),
    shared_tables: tuple[str, ...] = (),
    tenant_tables: tuple[str, ...] = (),
) -> int:
    """A Create (CloudFormation's Update runs the same) of the PoolDatabase as the pool stack
    synthesizes it from a catalog with this schema: section; its changes."""
    schema = PoolSchema(tenant_schemas, shared_tables)
    props = pool_database_properties(
        runtime_secret_arn=aws.describe_secret(SecretId=POOL.secret_name)["ARN"],
        iam_auth=False,
        removal_policy="retain",
        tenant_tables=tenant_tables,
        migrations=PoolMigrations.of(load_migrations(migrations), schema),
    )
    carrying = dataclasses.replace(config, migrations_dir=migrations)
    return int(handle(provider_event("Create", props), carrying)["Data"]["Changes"])


@pytest.fixture
def admin(
    pool_server: RunningServer, aws: Any, config: HandlerConfig, empty_migrations: Path
) -> Iterator[Any]:
    """The provisioning admin in the pool database (provisioned first), with a clean schema
    `app` of its own, as the application's tables would be made outside a migration."""
    deploy(aws, config, empty_migrations, tenant_schemas=("public",))
    settings = pool_server.admin_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS app CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS shop CASCADE")
        conn.execute("CREATE SCHEMA app")
        yield conn
        conn.execute("DROP SCHEMA IF EXISTS app CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS shop CASCADE")


def protected(conn: Any) -> dict[str, bool]:
    """Each table of app and shop: whether it is under the tenant policy."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname, c.relforcerowsecurity AND EXISTS ("
        "  SELECT FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = %s) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname IN ('app', 'shop') AND c.relkind = 'r'",
        (ISOLATION_POLICY,),
    )
    return dict(rows.fetchall())


def runtime_rights(conn: Any, table: str) -> tuple[bool, bool]:
    """(may the runtime read it, may it insert into it)."""
    row = conn.execute(
        "SELECT has_table_privilege(%s, %s, 'SELECT'), has_table_privilege(%s, %s, 'INSERT')",
        (POOL.runtime_role, table, POOL.runtime_role, table),
    ).fetchone()
    return (bool(row[0]), bool(row[1]))


def test_a_listed_table_in_a_tenant_schema_need_not_exist_and_is_protected_once_it_does(
    aws: Any, config: HandlerConfig, admin: Any, empty_migrations: Path
) -> None:
    # GIVEN a catalog listing app.items (in its tenant schema app) before any migration made it
    catalog: dict[str, Any] = {"tenant_tables": ("app.items",)}
    # WHEN the pool is deployed THEN that is fine: nothing to protect yet
    assert deploy(aws, config, empty_migrations, **catalog) == 0
    # WHEN the table appears (a migration, or by hand) with another table of app beside it
    admin.execute(f"CREATE TABLE app.items {TENANT_TABLE}")
    admin.execute(f"CREATE TABLE app.notes {TENANT_TABLE}")
    # THEN the next deploy protects both, listed or not, and the one after changes nothing
    assert deploy(aws, config, empty_migrations, **catalog) == 2
    assert protected(admin) == {"app.items": True, "app.notes": True}
    assert deploy(aws, config, empty_migrations, **catalog) == 0


def test_a_listed_table_outside_the_tenant_schemas_is_protected_by_name_as_before(
    aws: Any, config: HandlerConfig, admin: Any, empty_migrations: Path
) -> None:
    # GIVEN a listed table outside the tenant schemas that does not exist
    catalog: dict[str, Any] = {"tenant_tables": ("shop.orders",)}
    # THEN the deploy fails naming it, as a listed table always did
    with pytest.raises(TenantkitError, match=r"shop\.orders"):
        deploy(aws, config, empty_migrations, **catalog)
    # and once it exists it is protected
    admin.execute(f"CREATE SCHEMA shop; CREATE TABLE shop.orders {TENANT_TABLE}")
    deploy(aws, config, empty_migrations, **catalog)
    assert protected(admin) == {"shop.orders": True}


def test_shared_tables_are_readable_by_the_runtime_and_writable_by_none(
    aws: Any, config: HandlerConfig, admin: Any, empty_migrations: Path
) -> None:
    admin.execute("CREATE TABLE app.countries (code text PRIMARY KEY)")
    shared = ("app.countries",)

    assert deploy(aws, config, empty_migrations, shared_tables=shared) == 1
    assert runtime_rights(admin, "app.countries") == (True, False)
    assert protected(admin) == {"app.countries": False}
    assert deploy(aws, config, empty_migrations, shared_tables=shared) == 0


def test_a_table_in_a_tenant_schema_that_cannot_be_protected_fails_the_deploy_naming_it(
    aws: Any, config: HandlerConfig, admin: Any, empty_migrations: Path
) -> None:
    # GIVEN one protectable table and one without tenant_id in the tenant schema
    admin.execute(f"CREATE TABLE app.items {TENANT_TABLE}")
    admin.execute("CREATE TABLE app.audit (id bigint PRIMARY KEY)")
    # WHEN the pool is deployed THEN it fails naming the table and the rule, and neither
    # table was changed (one transaction)
    with pytest.raises(TenantkitError, match=r"app\.audit is in a tenant schema.*tenant_id"):
        deploy(aws, config, empty_migrations)
    assert protected(admin) == {"app.audit": False, "app.items": False}
    # and declared shared (reference data), it deploys
    deploy(aws, config, empty_migrations, shared_tables=("app.audit",))
    assert protected(admin) == {"app.audit": False, "app.items": True}
    assert runtime_rights(admin, "app.audit") == (True, False)
