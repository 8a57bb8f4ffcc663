"""tenantctl migrate plan, apply and status on the embedded servers: a fleet of bridge tenants,
a silo tenant and the pool brought to the newest migration in waves, a failure that stops the
rollout, convergence, a tenant onboarded later, drift and bad directories."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lambda_src.tenancy import POOL, tenant_names
from tenantkit.cli import EXIT_FAILED, EXIT_INVALID, app
from tenantkit.embedded_pg import EmbeddedPostgres
from tenantkit.local import LocalSecrets

from .migrate_cli import by_target, make_workdir, runner, stop_servers, tenantctl

CATALOG = """\
schema:
  directory: migrations
tenants:
  - id: alpha
    tier: bridge
  - id: bravo
    tier: bridge
  - id: charlie
    tier: bridge
  - id: solo
    tier: silo
  - id: shared-one
    tier: pool
"""
V1 = """\
CREATE TABLE items (
    tenant_id text NOT NULL DEFAULT current_user,
    id bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
"""
FLEET = ["alpha", "bravo", "charlie", "solo", "(pool)"]
"""The rollout's targets: the tenant databases in catalog order, then the pool database."""
V2 = """\
CREATE TABLE notes (
    tenant_id text NOT NULL DEFAULT current_user,
    id bigint NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
"""
"""Protectable in the pool (led by tenant_id), like every table a tenant schema gets there."""


@pytest.fixture
def workdir(pg_root: Path) -> Iterator[Path]:
    """A catalog with a migrations directory and a state directory of the test's own; the
    servers it starts are stopped afterwards."""
    root = make_workdir(pg_root, CATALOG, {"V1__items.sql": V1})
    yield root
    stop_servers(root)


def server_of(workdir: Path, tenant_id: str) -> Any:
    data = workdir / "state" / ("pg" if tenant_id != "solo" else "silo-solo/pg")
    return EmbeddedPostgres(data).start()


def as_login(workdir: Path, tenant_id: str) -> psycopg.Connection:
    names = tenant_names(tenant_id)
    password = LocalSecrets(workdir / "state" / "secrets.json").password(names.secret_name)
    settings = server_of(workdir, tenant_id).settings(names.login_role, password, names.database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


def as_superuser(workdir: Path, tenant_id: str) -> psycopg.Connection:
    settings = server_of(workdir, tenant_id).superuser_settings(tenant_names(tenant_id).database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


@pytest.mark.slow
def test_a_fleet_is_migrated_in_waves_stops_on_a_failure_and_converges(workdir: Path) -> None:
    # GIVEN a fleet provisioned before the application had migrations, then one migration
    v1 = workdir / "migrations" / "V1__items.sql"
    v1.unlink()
    run = runner.invoke(
        app,
        ["run", "--catalog", str(workdir / "tenants.yaml"), "--state-dir", str(workdir / "state")],
    )
    assert run.exit_code == 0, run.output
    v1.write_text(V1)

    # WHEN the rollout is planned THEN every tenant database has V1 pending
    code, plan = tenantctl(workdir, "migrate", "plan")
    assert code == 0, plan
    assert by_target(plan, "pending") == {key: [1] for key in FLEET}
    assert by_target(plan, "current") == dict.fromkeys(FLEET)
    assert by_target(plan, "tier")["solo"] == "silo"
    assert plan["lint"] == []

    # WHEN applied with a canary THEN the canary is wave 1 and every database is at V1
    code, applied = tenantctl(workdir, "migrate", "apply", "--canary", "bravo", "--group-size", "2")
    assert code == 0, applied
    assert [w["targets"] for w in applied["waves"]] == [
        ["bravo"],
        ["alpha", "charlie"],
        ["solo", "(pool)"],
    ]
    assert by_target(applied, "applied") == {key: [1] for key in FLEET}
    # the tenant's login uses the table the migration created (owned by its objects role)
    for tenant_id in ("alpha", "solo"):
        with as_login(workdir, tenant_id) as conn:
            conn.execute("INSERT INTO items (name) VALUES ('first')")
            assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)
            owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'items'")
            assert owner.fetchone() == (tenant_names(tenant_id).objects_role,)

    # in the pool the new table belongs to the pool's owner and is under the tenant policies:
    # FORCE row-level security, the isolation policy, the runtime's grants
    pool = server_of(workdir, "alpha").superuser_settings(POOL.database)
    with psycopg.connect(**pool.connect_kwargs()) as conn:
        row = conn.execute(
            "SELECT c.relowner::regrole::text, c.relrowsecurity, c.relforcerowsecurity, "
            "has_table_privilege(%s, c.oid, 'SELECT'), "
            "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) "
            "FROM pg_class c WHERE c.oid = 'public.items'::regclass",
            (POOL.runtime_role,),
        ).fetchone()
    assert row == (POOL.owner_role, True, True, True, 2)

    # a second apply is a no-op
    code, again = tenantctl(workdir, "migrate", "apply")
    assert code == 0
    assert by_target(again, "applied") == {key: [] for key in FLEET}

    # GIVEN V2 and a tenant where it cannot run (a table by that name made by hand)
    (workdir / "migrations" / "V2__notes.sql").write_text(V2)
    with as_superuser(workdir, "bravo") as conn:
        conn.execute("CREATE TABLE notes (x int)")
    # WHEN applied one at a time with the default budget of 0
    code, failed = tenantctl(workdir, "migrate", "apply", "--group-size", "2", "--parallelism", "1")
    # THEN bravo fails naming its database and file, the rest of its wave and later waves wait
    assert code == EXIT_FAILED
    assert failed["ok"] is False
    assert by_target(failed, "status") == {
        "alpha": "applied",
        "bravo": "failed",
        "charlie": "not started",
        "solo": "not started",
        "(pool)": "not started",
    }
    assert by_target(failed, "current") == {
        "alpha": 2,
        "bravo": 1,
        "charlie": None,
        "solo": None,
        "(pool)": None,
    }
    error = by_target(failed, "error")["bravo"]
    assert "tenant bravo: migration V2__notes.sql failed, the database stays at version 1" in error
    assert "already exists" in error
    assert failed["waves_run"] == 1
    assert "failure budget of 0" in failed["stopped"]

    # status says who is where and why bravo is behind
    code, status = tenantctl(workdir, "migrate", "status")
    assert code == 0
    assert by_target(status, "current") == {
        "alpha": 2,
        "bravo": 1,
        "charlie": 1,
        "solo": 1,
        "(pool)": 1,
    }
    assert by_target(status, "pending") == {
        "alpha": [],
        "bravo": [2],
        "charlie": [2],
        "solo": [2],
        "(pool)": [2],
    }
    assert "already exists" in by_target(status, "last_error")["bravo"]
    assert status["at_latest"] == 1

    # WHEN the conflict is removed THEN the next apply converges, V2 once everywhere
    with as_superuser(workdir, "bravo") as conn:
        conn.execute("DROP TABLE notes")
    code, converged = tenantctl(workdir, "migrate", "apply")
    assert code == 0, converged
    assert by_target(converged, "applied") == {
        "alpha": [],
        "bravo": [2],
        "charlie": [2],
        "solo": [2],
        "(pool)": [2],
    }
    assert set(by_target(converged, "current").values()) == {2}

    # WHEN a tenant is onboarded after the rollout THEN it is at the newest version when it
    # becomes active (the provisioner applies the migrations), and the next apply has nothing
    code, onboarded = tenantctl(workdir, "onboard", "delta", "--tier", "bridge")
    assert code == 0, onboarded
    assert onboarded["status"] == "active"
    code, plan = tenantctl(workdir, "migrate", "plan")
    assert by_target(plan, "current")["delta"] == 2
    assert by_target(plan, "pending")["delta"] == []
    code, caught_up = tenantctl(workdir, "migrate", "apply", "--tenant", "delta")
    assert code == 0, caught_up
    assert by_target(caught_up, "applied") == {"delta": []}

    # WHEN an applied file is edited THEN plan and apply refuse, naming the tenants and file
    (workdir / "migrations" / "V1__items.sql").write_text(V1 + "-- edited\n")
    code, drifted = tenantctl(workdir, "migrate", "plan")
    assert code == EXIT_INVALID
    assert "V1__items.sql" in by_target(drifted, "drift")["alpha"][0]
    code, refused = tenantctl(workdir, "migrate", "apply")
    assert code == EXIT_INVALID
    assert "drift, no database was touched" in refused["error"]
    assert "alpha" in refused["error"]
    assert "V1__items.sql" in refused["error"]


@pytest.mark.slow
def test_one_tenant_with_drift_refuses_the_whole_rollout(workdir: Path) -> None:
    (workdir / "tenants.yaml").write_text(
        "schema:\n  directory: migrations\ntenants:\n"
        "  - id: alpha\n    tier: bridge\n  - id: bravo\n    tier: bridge\n"
    )
    code, result = tenantctl(workdir, "onboard", "alpha", "--tier", "bridge")
    assert code == 0, result
    code, result = tenantctl(workdir, "migrate", "apply")
    assert code == 0, result  # bravo is not provisioned yet: skipped
    assert result["skipped"] == [
        {"target": "bravo", "tier": "bridge", "reason": "not provisioned yet: provision it first"}
    ]
    # GIVEN V1 edited after alpha applied it, then bravo onboarded (with the edited V1: no
    # drift of its own), and V2 added
    (workdir / "migrations" / "V1__items.sql").write_text(V1.replace("name", "title"))
    code, result = tenantctl(workdir, "onboard", "bravo", "--tier", "bridge")
    assert code == 0, result
    (workdir / "migrations" / "V2__notes.sql").write_text(V2)

    code, refused = tenantctl(workdir, "migrate", "apply")

    assert code == EXIT_INVALID
    assert "alpha: V1 (V1__items.sql) changed after it was applied" in refused["error"]
    assert "bravo" not in refused["error"]
    # bravo, which has no drift, was not touched either; status says which one drifted
    code, status = tenantctl(workdir, "migrate", "status")
    assert by_target(status, "current") == {"alpha": 1, "bravo": 1}
    assert by_target(status, "pending") == {"alpha": [2], "bravo": [2]}
    drift = by_target(status, "drift")
    assert drift["bravo"] == []
    assert len(drift["alpha"]) == 1
    assert drift["alpha"][0].startswith("V1 (V1__items.sql) changed after it was applied")


def test_a_missing_migrations_directory_is_refused_naming_it(workdir: Path) -> None:
    (workdir / "migrations" / "V1__items.sql").unlink()
    (workdir / "migrations").rmdir()

    for command in ("plan", "apply", "status"):
        code, result = tenantctl(workdir, "migrate", command)

        assert code == EXIT_INVALID
        assert result["ok"] is False
        assert f"migrations directory {workdir / 'migrations'} does not exist" in result["error"]
    assert not (workdir / "state" / "pg").exists()  # refused before any server started


def test_a_catalog_without_a_schema_section_is_refused(workdir: Path) -> None:
    (workdir / "tenants.yaml").write_text("tenants: []\n")

    code, result = tenantctl(workdir, "migrate", "plan")

    assert code == EXIT_INVALID
    assert "no schema: section" in result["error"]


def test_a_lint_finding_refuses_the_apply_before_any_database(workdir: Path) -> None:
    (workdir / "migrations" / "V2__index.sql").write_text(
        "CREATE INDEX items_name ON items (name);\n"
    )

    code, result = tenantctl(workdir, "migrate", "apply")

    assert code == EXIT_INVALID
    assert "no database was touched" in result["error"]
    assert [(f["file"], f["rule"]) for f in result["lint"]] == [
        ("V2__index.sql", "require-concurrent-index-creation")
    ]
    assert not (workdir / "state" / "pg").exists()


def test_bad_wave_options_are_refused_naming_the_option(workdir: Path) -> None:
    (workdir / "tenants.yaml").write_text("schema:\n  directory: migrations\ntenants: []\n")

    code, result = tenantctl(workdir, "migrate", "apply", "--canary", "nobody")

    assert code == EXIT_INVALID
    assert "--canary names targets that are not in the rollout" in result["error"]


POOL_ONLY = """\
schema:
  directory: migrations
  shared_tables: [countries]
tenants:
  - id: shared-one
    tier: pool
"""


def test_a_pool_migration_whose_table_cannot_be_protected_is_refused_and_rolled_back(
    workdir: Path,
) -> None:
    (workdir / "tenants.yaml").write_text(POOL_ONLY)
    code, result = tenantctl(workdir, "onboard", "shared-one", "--tier", "pool")
    assert code == 0, result
    # GIVEN a migration that makes a table with no tenant_id in the tenant schema, and one
    # declared shared (reference data)
    (workdir / "migrations" / "V2__countries.sql").write_text(
        "CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);\n"
    )
    (workdir / "migrations" / "V3__audit.sql").write_text(
        "CREATE TABLE audit (id bigint PRIMARY KEY, what text);\n"
    )

    code, applied = tenantctl(workdir, "migrate", "apply")

    # THEN V1 (items) and V2 (shared) apply, V3 is refused naming the table and the rule
    assert code == EXIT_FAILED
    assert by_target(applied, "current") == {"(pool)": 2}
    error = by_target(applied, "error")["(pool)"]
    assert "V3__audit.sql creates public.audit" in error
    assert "tenant_id" in error
    pool = server_of(workdir, "shared-one").superuser_settings(POOL.database)
    with psycopg.connect(**pool.connect_kwargs()) as conn:
        assert conn.execute("SELECT to_regclass('public.audit')").fetchone() == (None,)
        # the shared table: the runtime reads it and cannot write it
        rights = conn.execute(
            "SELECT has_table_privilege(%s, 'public.countries', 'SELECT'), "
            "has_table_privilege(%s, 'public.countries', 'INSERT')",
            (POOL.runtime_role, POOL.runtime_role),
        ).fetchone()
    assert rights == (True, False)


@pytest.mark.slow
def test_run_fails_the_pool_on_a_refused_migration_and_registers_its_tenants_once_fixed(
    workdir: Path,
) -> None:
    # GIVEN a pool-only catalog whose first migration makes a table the pool cannot protect
    (workdir / "tenants.yaml").write_text(POOL_ONLY)
    v1 = workdir / "migrations" / "V1__items.sql"
    v1.write_text("CREATE TABLE items (id bigint PRIMARY KEY, name text);\n")

    # WHEN the catalog is provisioned
    code, failed = tenantctl(workdir, "run")

    # THEN the pool database fails naming the file, the table and the rule, and no pool
    # tenant is registered on a pool without the application's schema
    assert code == EXIT_FAILED
    rows = {t["id"]: t for t in failed["tenants"]}
    assert list(rows) == [None]
    assert rows[None]["status"] == "failed"
    assert "V1__items.sql creates public.items" in rows[None]["error"]
    assert "tenant_id" in rows[None]["error"]

    # WHEN the file (rolled back, so never applied: no drift) is fixed and run again
    v1.write_text(V1)
    code, fixed = tenantctl(workdir, "run")

    # THEN the pool is at V1 and its tenant is registered at that version
    assert code == 0, fixed
    assert {t["id"]: (t["status"], t["schema_version"]) for t in fixed["tenants"]} == {
        None: ("ready", 1),
        "shared-one": ("ready", 1),
    }
