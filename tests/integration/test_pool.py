"""The pool tier on a real PostgreSQL: PoolDatabase and PoolTenants through the handler, the
tenant context, the attack suite, and proof that the suite catches a broken pool."""

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from lambda_src.core.connection import ConnectionSettings
from lambda_src.core.errors import InvalidRequestError, TenantkitError
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import RequestType, provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import (
    pool_batch_of,
    pool_batches,
    pool_database_properties,
    pool_tenants_properties,
)
from lambda_src.provisioner.postgres import read_history, read_registry
from lambda_src.tenancy import POOL, InvalidTenantIdError
from lambda_src.tenant_runtime import TenantContextError, tenant_transaction
from tenantkit.embedded_pg import RunningServer
from tenantkit.verify import run_pool_attacks

from .pool_fixtures import PASSWORD, aws, config, pool_server  # noqa: F401 (fixtures)

PROJECTS = sql.SQL("{}.projects").format(sql.Identifier(POOL.sample_schema))


def event(
    request_type: RequestType, props: dict[str, Any], old: dict[str, Any] | None = None
) -> dict[str, Any]:
    physical_id = None if request_type == "Create" else "existing"
    return provider_event(request_type, props, physical_id=physical_id, old_properties=old)


def pool_props(aws: Any, **overrides: Any) -> dict[str, Any]:
    arn = aws.describe_secret(SecretId=POOL.secret_name)["ARN"]
    settings: dict[str, Any] = {
        "runtime_secret_arn": arn,
        "iam_auth": True,
        "removal_policy": "retain",
    }
    settings.update(overrides)
    return pool_database_properties(**settings)


@pytest.fixture(scope="module")
def pool(pool_server: RunningServer, aws: Any, config: HandlerConfig) -> ConnectionSettings:
    """The pool provisioned once; returns the runtime login's settings."""
    handle(event("Create", pool_props(aws)), config)
    return pool_server.settings(POOL.login_role, PASSWORD, POOL.database)


@pytest.fixture
def admin(
    pool_server: RunningServer, pool: ConnectionSettings
) -> Iterator[psycopg.Connection[Any]]:
    """The provisioning admin inside the pool database."""
    settings = pool_server.admin_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def superuser(
    pool_server: RunningServer, pool: ConnectionSettings
) -> Iterator[psycopg.Connection[Any]]:
    settings = pool_server.superuser_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def runtime(pool: ConnectionSettings) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(**pool.connect_kwargs(), autocommit=True) as conn:
        yield conn


def registry(superuser: psycopg.Connection[Any]) -> dict[str, tuple[str, str]]:
    rows = superuser.execute(
        "SELECT tenant_id, status, registered_by FROM tenantkit.tenants"
    ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def register(config: HandlerConfig, tenants: list[tuple[str, str]]) -> None:
    for batch, entries in pool_batches(tenants).items():  # type: ignore[arg-type]
        handle(event("Create", pool_tenants_properties(batch, entries)), config)


def rows_of(runtime: psycopg.Connection[Any], tenant: str) -> list[tuple[Any, ...]]:
    with tenant_transaction(runtime, tenant):
        return runtime.execute(
            sql.SQL("SELECT project_id, name FROM {} ORDER BY project_id").format(PROJECTS)
        ).fetchall()


def insert_project(runtime: psycopg.Connection[Any], tenant: str, project_id: int) -> None:
    with tenant_transaction(runtime, tenant):
        runtime.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(PROJECTS),
            (tenant, project_id, f"project {project_id}"),
        )


# -- PoolDatabase ------------------------------------------------------------------------------


def test_pool_create_replayed_converges_without_changes(
    pool: ConnectionSettings, aws: Any, config: HandlerConfig
) -> None:
    response = handle(event("Create", pool_props(aws)), config)
    assert response["PhysicalResourceId"] == "pool/tenantkit_pool"
    assert response["Data"]["Changes"] == "0"


def test_runtime_login_is_not_owner_not_bypassrls_and_has_no_temp(
    superuser: psycopg.Connection[Any],
) -> None:
    row = superuser.execute(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, "
        "       has_database_privilege(rolname, current_database(), 'TEMP'), "
        "       pg_has_role(rolname, %s, 'MEMBER') "
        "  FROM pg_roles WHERE rolname = %s",
        (POOL.owner_role, POOL.login_role),
    ).fetchone()
    assert row == (False, False, False, False, False, False)


def test_every_sample_table_has_enable_and_force_rls_and_the_policy(
    superuser: psycopg.Connection[Any],
) -> None:
    rows = superuser.execute(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
        "       pg_get_userbyid(c.relowner), "
        "       array_agg(p.polname ORDER BY p.polname) "
        "  FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid "
        " WHERE c.relnamespace = %s::regnamespace GROUP BY c.oid",
        (POOL.sample_schema,),
    ).fetchall()
    assert sorted(rows) == [
        ("projects", True, True, POOL.owner_role, ["tenantkit_isolation", "tenantkit_maintenance"]),
        ("tasks", True, True, POOL.owner_role, ["tenantkit_isolation", "tenantkit_maintenance"]),
    ]


def test_policy_evaluates_the_setting_once_and_uses_the_tenant_index(
    runtime: psycopg.Connection[Any],
) -> None:
    with tenant_transaction(runtime, "tenantkit-probe-a", allow_probes=True):
        # The sample table is tiny; forbid the sequential scan to see whether the index *can*
        # serve the policy's condition (it cannot when the setting is compared per row).
        runtime.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in runtime.execute(
                sql.SQL("EXPLAIN SELECT * FROM {} WHERE project_id = 1").format(PROJECTS)
            )
        )
    # PostgreSQL 16 names the InitPlan's result $0; 17 writes (InitPlan 1).col1
    initplan = "(InitPlan 1).col1" if "(InitPlan 1).col1" in plan else "$0"
    assert "InitPlan 1" in plan
    assert "Index Scan using projects_" in plan
    assert f"Index Cond: (tenant_id = {initplan})" in plan or (
        f"Index Cond: ((tenant_id = {initplan})" in plan
    )


def test_the_registry_lookup_stays_index_only_because_autovacuum_is_told_to_keep_up(
    runtime: psycopg.Connection[Any], superuser: psycopg.Connection[Any]
) -> None:
    # Every statement of every tenant looks the tenant up in the registry. Left to the
    # default thresholds, autovacuum never vacuums a registry of under 1,000 tenants and each
    # lookup also visits the heap; the pool sets thresholds a few changes deep instead.
    (options,) = superuser.execute(
        "SELECT reloptions FROM pg_class WHERE oid = 'tenantkit.tenants'::regclass"
    ).fetchone() or (None,)
    assert set(options or []) >= {
        "autovacuum_vacuum_threshold=20",
        "autovacuum_vacuum_scale_factor=0.01",
        "autovacuum_vacuum_insert_threshold=20",
        "autovacuum_vacuum_insert_scale_factor=0.01",
    }
    # What autovacuum does after those changes. A pass may leave the page not yet all-visible
    # (PostgreSQL 17 after an update, say, or while another test's session still holds a
    # snapshot older than the last change); a later pass sets it.
    deadline = time.monotonic() + 10
    while True:
        superuser.execute("VACUUM tenantkit.tenants")
        pages, all_visible = superuser.execute(
            "SELECT relpages, relallvisible FROM pg_class WHERE oid = 'tenantkit.tenants'::regclass"
        ).fetchone() or (0, -1)
        if pages == all_visible:
            break
        holders = superuser.execute(
            "SELECT usename, application_name, state FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_xmin IS NOT NULL "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
        assert time.monotonic() < deadline, f"VACUUM cannot set the page all-visible: {holders}"
        time.sleep(0.2)
    with tenant_transaction(runtime, "tenantkit-probe-a", allow_probes=True):
        runtime.execute("SET LOCAL enable_seqscan = off")  # a few test tenants: force the index
        plan = "\n".join(
            row[0]
            for row in runtime.execute(
                sql.SQL(
                    "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                    "SELECT * FROM {} WHERE project_id = 1"
                ).format(PROJECTS)
            )
        )
    assert "Index Only Scan using tenants_active" in plan
    assert "Heap Fetches: 0" in plan


def test_users_own_table_is_protected_when_listed(
    aws: Any,
    config: HandlerConfig,
    admin: psycopg.Connection[Any],
    runtime: psycopg.Connection[Any],
) -> None:
    admin.execute("CREATE SCHEMA IF NOT EXISTS shop")
    admin.execute(
        "CREATE TABLE IF NOT EXISTS shop.orders (tenant_id text NOT NULL, order_id bigint "
        "GENERATED ALWAYS AS IDENTITY, total numeric, PRIMARY KEY (tenant_id, order_id))"
    )
    admin.execute(
        "CREATE OR REPLACE VIEW shop.big_orders AS SELECT * FROM shop.orders WHERE total > 100"
    )
    props = pool_props(aws, tenant_tables=["shop.orders"], tenant_views=["shop.big_orders"])
    handle(event("Update", props, pool_props(aws)), config)
    register(config, [("shop-a", "retain"), ("shop-b", "retain")])
    for tenant, total in (("shop-a", 500), ("shop-b", 700)):
        with tenant_transaction(runtime, tenant):
            runtime.execute(
                "INSERT INTO shop.orders (tenant_id, total) VALUES (%s, %s)", (tenant, total)
            )
    with tenant_transaction(runtime, "shop-a"):
        seen = runtime.execute("SELECT tenant_id, total FROM shop.big_orders").fetchall()
    assert seen == [("shop-a", 500)]
    options = admin.execute(
        "SELECT reloptions FROM pg_class WHERE oid = 'shop.big_orders'::regclass"
    ).fetchone()
    assert options == (["security_invoker=true"],)


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        (
            "CREATE TABLE bad.no_tenant (id int PRIMARY KEY)",
            "needs a column tenant_id text NOT NULL",
        ),
        (
            "CREATE TABLE bad.loose_unique (tenant_id text NOT NULL, id int, email text UNIQUE, "
            "PRIMARY KEY (tenant_id, id))",
            "must lead with tenant_id",
        ),
        (
            "CREATE TABLE bad.id_first (tenant_id text NOT NULL, id int, "
            "PRIMARY KEY (id, tenant_id))",
            "must lead with tenant_id",
        ),
        ("CREATE TABLE bad.no_key (tenant_id text NOT NULL, v int)", "needs a primary key"),
    ],
)
def test_protecting_a_table_that_could_leak_through_keys_is_refused(
    ddl: str,
    message: str,
    aws: Any,
    config: HandlerConfig,
    admin: psycopg.Connection[Any],
) -> None:
    admin.execute("DROP SCHEMA IF EXISTS bad CASCADE")
    admin.execute("CREATE SCHEMA bad")
    admin.execute(ddl)
    table = "bad." + ddl.split("bad.")[1].split(" ")[0]
    with pytest.raises(TenantkitError, match=message):
        handle(event("Create", pool_props(aws, tenant_tables=[table])), config)
    admin.execute("DROP SCHEMA bad CASCADE")


def test_table_names_are_validated_before_any_sql(aws: Any, config: HandlerConfig) -> None:
    with pytest.raises(InvalidRequestError, match=r"is not a \[schema\.\]name identifier"):
        handle(event("Create", pool_props(aws, tenant_tables=["x'); DROP TABLE y; --"])), config)


# -- PoolTenants -------------------------------------------------------------------------------


def test_registered_tenants_see_only_their_own_rows(
    pool: ConnectionSettings, config: HandlerConfig, runtime: psycopg.Connection[Any]
) -> None:
    register(config, [("red", "retain"), ("blue", "retain")])
    insert_project(runtime, "red", 10)
    insert_project(runtime, "blue", 20)
    assert rows_of(runtime, "red") == [(10, "project 10")]
    assert rows_of(runtime, "blue") == [(20, "project 20")]


def test_batches_are_stable_per_tenant_and_bounded() -> None:
    assert pool_batch_of("acme") == pool_batch_of("acme")
    batches = pool_batches([(f"t{n}", "retain") for n in range(1000)])
    assert len(batches) <= 32
    assert sum(len(entries) for entries in batches.values()) == 1000


def test_removing_a_tenant_from_its_batch_keeps_its_rows_and_denies_it(
    config: HandlerConfig, runtime: psycopg.Connection[Any], superuser: psycopg.Connection[Any]
) -> None:
    batch = pool_batch_of("keepme")
    entries = [{"Id": "keepme", "RemovalPolicy": "retain"}]
    handle(event("Create", pool_tenants_properties(batch, entries)), config)
    insert_project(runtime, "keepme", 1)
    handle(
        event(
            "Update", pool_tenants_properties(batch, []), pool_tenants_properties(batch, entries)
        ),
        config,
    )
    assert registry(superuser)["keepme"][0] == "offboarded"
    assert rows_of(runtime, "keepme") == []
    kept = superuser.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = 'keepme'").format(PROJECTS)
    ).fetchone()
    assert kept == (1,)
    # Onboarding it again brings its rows back.
    handle(
        event(
            "Update", pool_tenants_properties(batch, entries), pool_tenants_properties(batch, [])
        ),
        config,
    )
    assert rows_of(runtime, "keepme") == [(1, "project 1")]


def test_destroy_deletes_the_tenants_rows_from_every_protected_table(
    config: HandlerConfig, runtime: psycopg.Connection[Any], superuser: psycopg.Connection[Any]
) -> None:
    batch = pool_batch_of("goner")
    entries = [{"Id": "goner", "RemovalPolicy": "destroy"}]
    handle(event("Create", pool_tenants_properties(batch, entries)), config)
    insert_project(runtime, "goner", 1)
    with tenant_transaction(runtime, "goner"):
        runtime.execute(
            "INSERT INTO tenantkit_sample.tasks VALUES ('goner', 1, 1, 'child row', false)"
        )
    response = handle(event("Delete", pool_tenants_properties(batch, entries)), config)
    assert int(response["Data"]["Changes"]) >= 3  # tasks, projects, registry
    assert "goner" not in registry(superuser)
    left = superuser.execute(
        "SELECT (SELECT count(*) FROM tenantkit_sample.tasks WHERE tenant_id = 'goner') + "
        "       (SELECT count(*) FROM tenantkit_sample.projects WHERE tenant_id = 'goner')"
    ).fetchone()
    assert left == (0,)


def test_a_suspended_pool_tenant_keeps_its_rows_and_sees_none_until_resumed(
    config: HandlerConfig, runtime: psycopg.Connection[Any], superuser: psycopg.Connection[Any]
) -> None:
    batch = pool_batch_of("napper")
    active = [{"Id": "napper", "RemovalPolicy": "retain"}]
    suspended = [{"Id": "napper", "RemovalPolicy": "retain", "Suspended": "true"}]
    handle(event("Create", pool_tenants_properties(batch, active)), config)
    insert_project(runtime, "napper", 1)

    handle(
        event(
            "Update",
            pool_tenants_properties(batch, suspended),
            pool_tenants_properties(batch, active),
        ),
        config,
    )

    assert registry(superuser)["napper"][0] == "suspended"
    assert rows_of(runtime, "napper") == []
    with pytest.raises(errors.InsufficientPrivilege):  # WITH CHECK refuses its writes
        insert_project(runtime, "napper", 2)
    handle(
        event(
            "Update",
            pool_tenants_properties(batch, active),
            pool_tenants_properties(batch, suspended),
        ),
        config,
    )
    assert rows_of(runtime, "napper") == [(1, "project 1")]


def test_pool_destroy_leaves_the_history_of_the_tenant(
    config: HandlerConfig, admin: psycopg.Connection[Any]
) -> None:
    batch = pool_batch_of("brief")
    entries = [{"Id": "brief", "RemovalPolicy": "destroy"}]
    handle(event("Create", pool_tenants_properties(batch, entries)), config)

    handle(event("Delete", pool_tenants_properties(batch, entries)), config)

    assert "brief" not in {entry.tenant_id for entry in read_registry(admin)}
    history = [entry.status for entry in read_history(admin, "brief")]
    assert history == ["active", "offboarding", "offboarded"]


def test_a_tenant_moved_to_another_batch_is_not_offboarded_by_the_old_one(
    config: HandlerConfig, superuser: psycopg.Connection[Any]
) -> None:
    entries = [{"Id": "mover", "RemovalPolicy": "retain"}]
    handle(event("Create", pool_tenants_properties("batch-90", entries)), config)
    handle(event("Create", pool_tenants_properties("batch-91", entries)), config)
    handle(event("Delete", pool_tenants_properties("batch-90", entries)), config)
    assert registry(superuser)["mover"] == ("active", "batch-91")


@pytest.mark.usefixtures("pool")  # its database: tests of a module may run on any worker
def test_register_replayed_changes_nothing(config: HandlerConfig) -> None:
    entries = [{"Id": "steady", "RemovalPolicy": "retain"}]
    props = pool_tenants_properties(pool_batch_of("steady"), entries)
    handle(event("Create", props), config)
    assert handle(event("Create", props), config)["Data"]["Changes"] == "0"


@pytest.mark.parametrize(
    "entries",
    [
        [{"Id": "ok-one"}, {"Id": "x'); DELETE FROM tenantkit.tenants; --"}],
        [{"Id": "tenantkit-probe-a"}],
        [{"Id": "dup"}, {"Id": "dup"}],
        [{"Id": "ok", "RemovalPolicy": "shred"}],
    ],
)
def test_a_bad_batch_is_rejected_whole_before_any_sql(
    entries: list[dict[str, str]], config: HandlerConfig, superuser: psycopg.Connection[Any]
) -> None:
    with pytest.raises(InvalidRequestError, match=r"Tenants\[\d\]"):
        handle(event("Create", pool_tenants_properties("batch-01", entries)), config)
    assert "ok-one" not in registry(superuser)


# -- the runtime tenant context ------------------------------------------------------------------


def test_tenant_transaction_refuses_an_invalid_id_before_sending_anything(
    runtime: psycopg.Connection[Any],
) -> None:
    with pytest.raises(InvalidTenantIdError), tenant_transaction(runtime, "x' OR '1'='1"):
        pass
    assert runtime.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_tenant_transaction_needs_an_idle_connection(pool: ConnectionSettings) -> None:
    with psycopg.connect(**pool.connect_kwargs()) as conn:  # not autocommit
        conn.execute("SELECT 1")
        with (
            pytest.raises(TenantContextError, match="idle connection"),
            tenant_transaction(conn, "red"),
        ):
            pass


def test_tenant_transaction_restores_autocommit_and_leaves_no_setting(
    pool: ConnectionSettings, config: HandlerConfig
) -> None:
    register(config, [("red", "retain")])
    with psycopg.connect(**pool.connect_kwargs()) as conn:
        assert conn.autocommit is False
        with tenant_transaction(conn, "red"):
            value = conn.execute("SELECT current_setting(%s)", (POOL.tenant_setting,)).fetchone()
        assert value == ("red",)
        assert conn.autocommit is False
        after = conn.execute("SELECT current_setting(%s, true)", (POOL.tenant_setting,)).fetchone()
        conn.rollback()
    assert after == ("",)


def test_a_failed_statement_rolls_the_tenant_transaction_back(
    runtime: psycopg.Connection[Any], config: HandlerConfig
) -> None:
    register(config, [("red", "retain")])
    insert = sql.SQL("INSERT INTO {} VALUES ('red', 555, %s)").format(PROJECTS)

    def insert_twice() -> None:
        with tenant_transaction(runtime, "red"):
            runtime.execute(insert, ("a",))
            runtime.execute(insert, ("b",))

    with pytest.raises(errors.UniqueViolation):
        insert_twice()
    assert (555, "a") not in rows_of(runtime, "red")
    assert runtime.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# -- the attack suite --------------------------------------------------------------------------


def test_every_attack_on_a_provisioned_pool_is_blocked(pool: ConnectionSettings) -> None:
    results = run_pool_attacks(pool)
    assert len(results) >= 20
    leaks = [(r.attack, r.detail) for r in results if not r.blocked]
    assert leaks == []
    # a settable pool: the attacks of both modes and its own; none it does not block by design
    names = {r.attack for r in results}
    assert "read through a SECURITY DEFINER function owned by the app" in names
    assert "context survives COMMIT on a reused connection" in names
    assert "set_config to another tenant" not in names


BREAKAGES = [
    pytest.param(
        ["ALTER TABLE tenantkit_sample.projects DISABLE ROW LEVEL SECURITY"],
        {"read without any tenant context", "select another tenant's rows by WHERE tenant_id"},
        id="rls-disabled",
    ),
    pytest.param(
        [f"ALTER ROLE {POOL.login_role} BYPASSRLS"],
        {
            "read without any tenant context",
            "runtime login is a superuser, BYPASSRLS or a table owner",
        },
        id="runtime-bypassrls",
    ),
    pytest.param(
        [
            "DROP POLICY tenantkit_isolation ON tenantkit_sample.projects",
            "CREATE POLICY tenantkit_isolation ON tenantkit_sample.projects TO "
            f"{POOL.runtime_role} USING (tenant_id = current_setting('app.tenant_id', true)) "
            "WITH CHECK (true)",
        ],
        {
            "read as an offboarded tenant whose rows are retained",
            "insert a row into another tenant",
        },
        id="naive-policy-without-registry-or-check",
    ),
    pytest.param(
        ["GRANT TEMPORARY ON DATABASE tenantkit_pool TO tenantkit_pool_runtime"],
        {"create a temporary function"},
        id="temp-granted",
    ),
    pytest.param(
        [
            "ALTER VIEW tenantkit_sample.open_tasks SET (security_invoker = false)",
            "ALTER VIEW tenantkit_sample.open_tasks OWNER TO postgres",
        ],
        {"read through a view"},
        id="view-as-owner",
    ),
    pytest.param(
        ["ALTER FUNCTION tenantkit_sample.projects_as_owner() OWNER TO postgres"],
        {"read through a SECURITY DEFINER function owned by the app"},
        id="definer-function-of-a-superuser",
    ),
]


@pytest.mark.parametrize(("breakage", "expected_leaks"), BREAKAGES)
def test_the_suite_reports_leaks_when_isolation_is_broken(
    breakage: list[str],
    expected_leaks: set[str],
    pool: ConnectionSettings,
    aws: Any,
    config: HandlerConfig,
    superuser: psycopg.Connection[Any],
) -> None:
    for statement in breakage:
        superuser.execute(statement)
    try:
        leaks = {r.attack for r in run_pool_attacks(pool) if not r.blocked}
    finally:
        superuser.execute(f"ALTER ROLE {POOL.login_role} NOBYPASSRLS")
        superuser.execute("REVOKE TEMPORARY ON DATABASE tenantkit_pool FROM tenantkit_pool_runtime")
        superuser.execute(f"ALTER VIEW tenantkit_sample.open_tasks OWNER TO {POOL.owner_role}")
        superuser.execute(
            f"ALTER FUNCTION tenantkit_sample.projects_as_owner() OWNER TO {POOL.owner_role}"
        )
        handle(event("Create", pool_props(aws)), config)  # the provisioner repairs the rest
    assert expected_leaks <= leaks
    repaired = run_pool_attacks(pool)
    assert all(r.blocked for r in repaired)


def test_verify_cli_attacks_a_pool_given_only_a_dsn(pool: ConnectionSettings) -> None:
    from typer.testing import CliRunner

    from tenantkit.cli import app

    dsn = (
        f"host={pool.host} port={pool.port} dbname={pool.dbname} user={pool.user} "
        f"password={pool.password} sslrootcert={pool.ssl_root_cert}"
    )
    result = CliRunner().invoke(app, ["verify", "--json", "--dsn", dsn])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["attacks"] >= 20
    assert verdict["leaks"] == []


def test_verify_dsn_without_sslrootcert_verifies_against_the_rds_bundle_and_is_refused(
    pool: ConnectionSettings,
) -> None:
    from typer.testing import CliRunner

    from tenantkit.cli import app

    # GIVEN a DSN that names no CA (so the shipped RDS bundle) and asks for sslmode=require,
    # for a server whose certificate a local CA signed
    dsn = (
        f"host={pool.host} port={pool.port} dbname={pool.dbname} user={pool.user} "
        f"password={pool.password} sslmode=require"
    )
    # WHEN verify runs THEN it cannot connect and says so: no attack is reported as a leak
    result = CliRunner().invoke(app, ["verify", "--json", "--dsn", dsn])
    assert result.exit_code == 3, result.output
    verdict = json.loads(result.stdout)
    assert "cannot connect to the pool" in verdict["error"]
    assert "certificate verify failed" in verdict["error"]
    assert "leaks" not in verdict


def test_runtime_attacks_are_blocked_and_a_pool_without_reset_is_caught(
    pool: ConnectionSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tenantkit.verify import run_runtime_attacks
    from tenantkit.verify import runtime as runtime_attacks

    results = run_runtime_attacks(pool)
    assert len(results) == 11
    assert [r.attack for r in results if not r.blocked] == []
    monkeypatch.setattr(runtime_attacks, "reset_pooled_connection", lambda conn: None)
    leaks = [r.attack for r in run_runtime_attacks(pool) if not r.blocked]
    assert leaks == ["tenant setting left on a pooled connection"]


# -- offboarding the whole pool (last: it changes the module's pool) -----------------------------


def test_deleting_the_pool_with_retain_disables_the_logins_and_keeps_everything(
    pool: ConnectionSettings, aws: Any, config: HandlerConfig, superuser: psycopg.Connection[Any]
) -> None:
    handle(event("Delete", pool_props(aws)), config)
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(**pool.connect_kwargs())
    assert superuser.execute("SELECT count(*) > 0 FROM tenantkit.tenants").fetchone() == (True,)
    handle(event("Create", pool_props(aws)), config)  # reattach
    with psycopg.connect(**pool.connect_kwargs()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_deleting_the_pool_with_destroy_drops_database_and_roles(
    pool_server: RunningServer, pool: ConnectionSettings, aws: Any, config: HandlerConfig
) -> None:
    handle(event("Delete", pool_props(aws, removal_policy="destroy")), config)
    with psycopg.connect(**pool_server.superuser_settings().connect_kwargs()) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM pg_database WHERE datname = %s), "
            "       (SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s))",
            (POOL.database, list(POOL.roles)),
        ).fetchone()
    assert left == (0, 0)
