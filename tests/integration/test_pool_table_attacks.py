"""The pool's table attacks on a real PostgreSQL: every table a migration created in a tenant
schema is attacked (probe rows written and rolled back), each attack reports a leak against a
table broken on purpose, and a table the suite cannot write a probe row into is a failure."""

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from lambda_src.core.connection import ConnectionSettings
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import pool_database_properties
from lambda_src.provisioner.plans.pool_rls import TENANT_CONDITION
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS
from tenantkit.embedded_pg import RunningServer
from tenantkit.verify import run_pool_attacks
from tenantkit.verify.tables import TABLE_ATTACKS

from .pool_fixtures import PASSWORD, aws, config, pool_server  # noqa: F401 (fixtures)
from .table_attack_fixtures import SCHEMAS, SHARED, VICTIM, migrate_pool

A, B, _ = PROBE_TENANT_IDS


@pytest.fixture(scope="module")
def runtime(
    pool_server: RunningServer, aws: Any, config: HandlerConfig, tmp_path_factory: Any
) -> ConnectionSettings:
    """The pool provisioned, then migrated as the pool migration runs (as the pool's owner, new
    tables of `app` protected inside the migration's transaction); the runtime login."""
    arn = aws.describe_secret(SecretId=POOL.secret_name)["ARN"]
    properties = pool_database_properties(
        runtime_secret_arn=arn, iam_auth=False, removal_policy="retain"
    )
    handle(provider_event("Create", properties), config)
    migrate_pool(pool_server, tmp_path_factory.mktemp("pool-migrations"))
    return pool_server.settings(POOL.login_role, PASSWORD, POOL.database)


@pytest.fixture
def superuser(
    pool_server: RunningServer, runtime: ConnectionSettings
) -> Iterator[psycopg.Connection[Any]]:
    settings = pool_server.superuser_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        yield conn


def table_results(runtime: ConnectionSettings, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """Table -> attack -> (blocked, detail) of the pool suite's table attacks."""
    found: dict[str, dict[str, Any]] = {}
    for result in run_pool_attacks(runtime, **kwargs):
        table, sep, attack = result.attack.partition(": ")
        if sep and attack in TABLE_ATTACKS:
            found.setdefault(table, {})[attack] = (result.blocked, result.detail)
    return found


def test_every_table_a_migration_created_is_attacked_and_every_attack_is_blocked(
    runtime: ConnectionSettings, superuser: psycopg.Connection[Any]
) -> None:
    # WHEN the pool suite runs with the catalog's tenant schema and shared tables
    results = table_results(runtime, tenant_schemas=SCHEMAS, shared_tables=SHARED)

    # THEN both tenant tables get every table attack, all blocked; the shared table none
    assert sorted(results) == ["app.customers", "app.orders"]
    for table, attacks in results.items():
        assert sorted(attacks) == sorted(TABLE_ATTACKS), table
        assert {a: r for a, r in attacks.items() if not r[0]} == {}, table
    # and the probe rows the attacks wrote were all rolled back
    counts = superuser.execute(
        "SELECT (SELECT count(*) FROM app.customers), (SELECT count(*) FROM app.orders)"
    ).fetchone()
    assert counts == (0, 0)


def test_without_the_catalog_the_protected_tables_are_still_found(
    runtime: ConnectionSettings,
) -> None:
    # `tenantctl verify --dsn` knows no catalog: the tables under the tenant policy are attacked
    assert sorted(table_results(runtime)) == ["app.customers", "app.orders"]


def insert_only_a_tenant_id(runtime: ConnectionSettings, tenant: str) -> psycopg.Error:
    """What the server answers tenant A inserting into app.orders a row of `tenant` that holds
    only a tenant_id (its other columns are NOT NULL without defaults)."""
    with psycopg.connect(**runtime.connect_kwargs(), autocommit=True) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT set_config(%s, %s, true)", (POOL.tenant_setting, A))
                conn.execute("INSERT INTO app.orders (tenant_id) VALUES (%s)", (tenant,))
        except psycopg.Error as error:
            return error
    raise AssertionError("the insert succeeded")


def test_the_policy_refuses_another_tenants_row_before_not_null_is_checked(
    runtime: ConnectionSettings,
) -> None:
    # WHEN A inserts a row holding only a tenant_id, another tenant's and then its own
    other, own = insert_only_a_tenant_id(runtime, B), insert_only_a_tenant_id(runtime, A)
    # THEN another tenant's id is refused by the policy's WITH CHECK, and only its own id gets
    # as far as the NOT NULL constraints: the generic insert attack is a valid probe
    assert isinstance(other, errors.InsufficientPrivilege)
    assert "row-level security policy" in str(other)
    assert isinstance(own, errors.NotNullViolation)


POLICY = "tenantkit_isolation"
EVERY_ATTACK = set(TABLE_ATTACKS)
BREAKAGES = [
    pytest.param(
        [VICTIM, f"GRANT SELECT, INSERT, UPDATE, DELETE ON app.victims TO {POOL.runtime_role}"],
        EVERY_ATTACK,
        id="never-protected-in-a-tenant-schema",
    ),
    pytest.param(
        [
            VICTIM,
            "CALL tenantkit.protect_table('app.victims')",
            "ALTER TABLE app.victims DISABLE ROW LEVEL SECURITY",
        ],
        EVERY_ATTACK,
        id="rls-disabled",
    ),
    pytest.param(
        [
            VICTIM,
            "CALL tenantkit.protect_table('app.victims')",
            f"DROP POLICY {POLICY} ON app.victims",
            f"CREATE POLICY {POLICY} ON app.victims TO {POOL.runtime_role} "
            f"USING ({TENANT_CONDITION}) WITH CHECK (true)",
        ],
        # moving a row is still refused: an UPDATE with a WHERE checks the new row against the
        # policy's USING as well
        {"insert a row into another tenant"},
        id="policy-without-check",
    ),
    pytest.param(
        [
            VICTIM,
            "CALL tenantkit.protect_table('app.victims')",
            f"DROP POLICY {POLICY} ON app.victims",
            f"CREATE POLICY {POLICY} ON app.victims TO {POOL.runtime_role} "
            f"USING (true) WITH CHECK ({TENANT_CONDITION})",
        ],
        {
            "read with the tenant context cleared",
            "read another tenant's rows",
            "delete another tenant's rows",
        },
        id="policy-that-reads-everyone",
    ),
    pytest.param(
        [
            VICTIM,
            "CALL tenantkit.protect_table('app.victims')",
            f"DROP POLICY {POLICY} ON app.victims",
            f"CREATE POLICY {POLICY} ON app.victims TO {POOL.runtime_role} USING (true) "
            "WITH CHECK (tenant_id <> 'nobody')",
        ],
        EVERY_ATTACK,
        id="policy-that-admits-everyone",
    ),
]


@pytest.mark.parametrize(("breakage", "expected_leaks"), BREAKAGES)
def test_each_table_attack_reports_a_leak_on_a_table_broken_on_purpose(
    breakage: list[str],
    expected_leaks: set[str],
    runtime: ConnectionSettings,
    superuser: psycopg.Connection[Any],
) -> None:
    # GIVEN a table in the tenant schema, broken as the parameter says
    for statement in breakage:
        superuser.execute(statement)
    try:
        # WHEN the suite runs with the catalog's tenant schema
        results = table_results(runtime, tenant_schemas=SCHEMAS, shared_tables=SHARED)
        victims = superuser.execute("SELECT count(*) FROM app.victims").fetchone()
    finally:
        superuser.execute("DROP TABLE app.victims")
    # THEN exactly the attacks the breakage lets through report leaks, on that table only, and
    # what they wrote was rolled back
    leaks = {attack for attack, (blocked, _) in results["app.victims"].items() if not blocked}
    assert leaks == expected_leaks
    assert all(
        blocked for t in ("app.customers", "app.orders") for blocked, _ in results[t].values()
    )
    assert victims == (0,)


def test_every_table_attack_is_shown_to_catch_some_breakage() -> None:
    caught: set[str] = set()
    for param in BREAKAGES:
        leaks = param.values[1]
        assert isinstance(leaks, set)
        caught |= leaks
    assert caught == EVERY_ATTACK


def test_a_table_no_probe_row_fits_is_reported_as_not_attacked_rather_than_blocked(
    runtime: ConnectionSettings, superuser: psycopg.Connection[Any]
) -> None:
    # GIVEN a protected table whose CHECK refuses the value the suite writes into a text column
    superuser.execute(VICTIM.replace("note text NOT NULL", "note text NOT NULL CHECK (note = 'x')"))
    superuser.execute("CALL tenantkit.protect_table('app.victims')")
    try:
        results = table_results(runtime, tenant_schemas=SCHEMAS)
    finally:
        superuser.execute("DROP TABLE app.victims")
    # THEN every attack on it fails (each writes its probe rows first), saying it could not run
    # and why
    failed = {a: detail for a, (blocked, detail) in results["app.victims"].items() if not blocked}
    assert set(failed) == EVERY_ATTACK
    assert all("cannot attack app.victims: no probe row of" in d for d in failed.values())
    assert all("CheckViolation" in d for d in failed.values())


def test_a_tenant_schema_table_the_runtime_may_not_touch_is_blocked(
    runtime: ConnectionSettings, superuser: psycopg.Connection[Any]
) -> None:
    # GIVEN a table made by hand in the tenant schema, with no grant to the runtime
    superuser.execute(VICTIM)
    superuser.execute("INSERT INTO app.victims VALUES (%s, 1, 'real row')", (B,))
    try:
        results = table_results(runtime, tenant_schemas=SCHEMAS)
    finally:
        superuser.execute("DROP TABLE app.victims")
    # THEN the runtime is refused everything there: every attack is blocked
    assert {a: blocked for a, (blocked, _) in results["app.victims"].items()} == dict.fromkeys(
        EVERY_ATTACK, True
    )
    assert all("permission denied" in d for _, d in results["app.victims"].values())
