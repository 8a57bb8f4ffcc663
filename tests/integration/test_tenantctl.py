"""tenantctl: `run` provisions the catalog locally and converges; bad input exits 2."""

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from lambda_src.core.environment import PGBOUNCER_BIN
from lambda_src.migrations.files import load_migrations
from lambda_src.provisioner.plans.pool_rls import ISOLATION_POLICY
from lambda_src.tenancy import POOL
from tenantkit.cli import EXIT_ENVIRONMENT, EXIT_INVALID, app
from tenantkit.embedded_pg import EmbeddedPostgres

REPO_ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def run_json(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["run", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def two_runs(pg_root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """`tenantctl run` twice on the sample catalog with one state directory."""
    state = pg_root / "tenantctl-state"
    args = ("--catalog", str(REPO_ROOT / "tenants.yaml"), "--state-dir", str(state))
    return run_json(*args), run_json(*args)


@pytest.mark.slow
def test_run_provisions_every_tenant_of_every_tier(two_runs: tuple[dict[str, Any], ...]) -> None:
    first, _ = two_runs
    assert first["ok"] is True
    by_id = {t["id"]: t for t in first["tenants"]}
    assert {t["tier"] for t in first["tenants"]} == {"bridge", "silo", "pool"}
    assert set(by_id) >= {"acme", "globex", "initech", "umbrella", "hooli", None}
    assert by_id[None]["resource"] == "pool database"
    assert {t["resource"] for t in first["tenants"] if t["id"] is not None} == {"tenant"}
    assert all(t["status"] == "ready" and t["changes"] > 0 for t in first["tenants"])
    assert by_id["umbrella"]["database"] == "tenantkit_pool"
    # a silo tenant's database lives on a server of its own; bridge and pool share one
    assert by_id["acme"]["server"] != by_id["globex"]["server"] == by_id["umbrella"]["server"]


@pytest.mark.slow
def test_run_attacks_every_tier_and_finds_no_leak(two_runs: tuple[dict[str, Any], ...]) -> None:
    first, _ = two_runs
    db_tenants = [t for t in first["tenants"] if t["tier"] in ("bridge", "silo")]
    count = len(db_tenants)
    verdict = first["verify"]
    assert verdict["leaks"] == []
    assert verdict["blocked"] == verdict["attacks"]
    # every login against every other database, plus the pool suite
    assert verdict["attacks"] >= count * (count - 1) + 20


@pytest.mark.slow
def test_run_samples_the_usage_of_every_tenant_it_provisioned(
    two_runs: tuple[dict[str, Any], ...],
) -> None:
    first, second = two_runs
    sampled = {t["tenant"]: t for h in first["usage"] for t in h["tenants"]}
    assert set(sampled) == {t["id"] for t in first["tenants"] if t["id"] is not None}
    assert all(h["reason"] is None for h in first["usage"])
    assert sampled["acme"]["storage_bytes"] > 0
    # the second run's sample has a previous one to take the deltas from
    again = {t["tenant"]: t for h in second["usage"] for t in h["tenants"]}
    assert again["globex"]["transactions"] is not None


@pytest.mark.slow
def test_second_run_converges_to_the_same_summary_without_changes(
    two_runs: tuple[dict[str, Any], ...],
) -> None:
    first, second = two_runs

    def stable(summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in t.items() if k not in ("seconds", "changes", "server")}
            for t in summary["tenants"]
        ]

    assert second["ok"] is True
    assert stable(second) == stable(first)
    assert all(t["changes"] == 0 for t in second["tenants"])
    assert second["verify"] == first["verify"]


@pytest.mark.slow
def test_run_brings_every_tenant_database_and_the_pool_to_the_newest_migration(
    two_runs: tuple[dict[str, Any], ...],
) -> None:
    # GIVEN the sample catalog's schema: section and its migrations
    latest = load_migrations(REPO_ROOT / "migrations")[-1].version
    first, second = two_runs
    # THEN every bridge and silo tenant, the pool database and so every pool tenant is at the
    # newest version after the first run, and still is (nothing applied again) after the second
    for summary in (first, second):
        assert summary["schema"] == {"directory": str(REPO_ROOT / "migrations"), "latest": latest}
        assert {t["id"]: t["schema_version"] for t in summary["tenants"]} == {
            t["id"]: latest for t in summary["tenants"]
        }
    assert next(t for t in second["tenants"] if t["id"] is None)["changes"] == 0


@pytest.mark.slow
def test_run_puts_the_pools_application_tables_under_the_tenant_policies(
    pg_root: Path, two_runs: Any
) -> None:
    # GIVEN the state the two runs left
    pg = EmbeddedPostgres(pg_root / "tenantctl-state" / "pg")
    settings = pg.start().superuser_settings(POOL.database)
    try:
        with psycopg.connect(**settings.connect_kwargs()) as conn:
            rows = conn.execute(
                "SELECT c.relname, c.relowner::regrole::text, c.relforcerowsecurity, "
                "EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = %s) "
                "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
                "AND c.relkind = 'r' ORDER BY 1",
                (ISOLATION_POLICY,),
            ).fetchall()
    finally:
        pg.stop()
    # THEN each table the migrations created in the tenant schema belongs to the pool's owner,
    # with FORCE row-level security and the tenant policy
    assert rows == [
        ("customers", POOL.owner_role, True, True),
        ("invoices", POOL.owner_role, True, True),
    ]


@pytest.mark.slow
def test_verify_reuses_the_provisioned_state_and_reports_json(pg_root: Path, two_runs: Any) -> None:
    state = pg_root / "tenantctl-state"
    result = runner.invoke(
        app,
        [
            "verify",
            "--json",
            "--catalog",
            str(REPO_ROOT / "tenants.yaml"),
            "--state-dir",
            str(state),
        ],
    )
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict == two_runs[1]["verify"]


def test_verify_before_any_run_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["verify", "--catalog", str(REPO_ROOT / "tenants.yaml"), "--state-dir", str(tmp_path)],
    )
    assert result.exit_code == EXIT_ENVIRONMENT
    assert "run `tenantctl run` first" in result.output


def test_invalid_catalog_exits_2_naming_file_entry_and_field(tmp_path: Path) -> None:
    catalog = tmp_path / "tenants.yaml"
    catalog.write_text("tenants:\n  - id: acme\n    tier: bridge\n    connection_limit: -4\n")
    result = runner.invoke(app, ["run", "--catalog", str(catalog)])
    assert result.exit_code == EXIT_INVALID
    assert "tenants[0] (id 'acme'): connection_limit" in result.output


def test_bench_rls_refuses_blocks_with_nothing_timed_and_touches_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "kept").write_text("not a benchmark's")
    args = ["bench", "rls", "--block-size", "5", "--block-warmup", "5", "--work-dir", str(work)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "rls.json")])
    assert result.exit_code == EXIT_INVALID
    assert "less than the block size (5), not 5" in result.output
    assert (work / "kept").exists()
    assert not (tmp_path / "rls.json").exists()


def test_bench_rls_without_pgbouncer_fails_saying_so_and_touches_nothing(tmp_path: Path) -> None:
    # GIVEN no PgBouncer where the bench looks for one
    work = tmp_path / "work"
    work.mkdir()
    (work / "kept").write_text("not a benchmark's")
    args = ["bench", "rls", "--work-dir", str(work), "--out", str(tmp_path / "rls.json")]
    env = {PGBOUNCER_BIN: str(tmp_path / "no-pgbouncer")}
    # WHEN the default run (PgBouncer variants included) is asked for
    result = runner.invoke(app, args, env=env)
    # THEN it fails as an environment problem, says what to do, and leaves everything as it was
    assert result.exit_code == EXIT_ENVIRONMENT
    assert "no-pgbouncer: no such file" in result.output
    assert "--no-pgbouncer" in result.output
    assert (work / "kept").exists()
    assert not (tmp_path / "rls.json").exists()


def test_names_shows_derived_names_and_refuses_hostile_ids() -> None:
    result = runner.invoke(app, ["names", "acme-corp", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["database"] == "tenant_acme_corp"
    hostile = runner.invoke(app, ["names", "x'; DROP TABLE t; --"])
    assert hostile.exit_code == EXIT_INVALID
    assert "invalid tenant id" in hostile.output


def test_validate_says_which_listed_pool_tables_a_tenant_schema_makes_redundant(
    tmp_path: Path,
) -> None:
    # GIVEN a catalog listing a pool table inside its tenant schema and one outside
    catalog = tmp_path / "tenants.yaml"
    catalog.write_text(
        "schema: {directory: migrations, tenant_schemas: [app], shared_tables: [app.codes]}\n"
        "pool: {tenant_tables: [app.items, shop.orders]}\ntenants: []\n"
    )
    # WHEN it is validated THEN it is valid, and the one inside is named as derived
    result = runner.invoke(app, ["validate", "--catalog", str(catalog)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "every table of the tenant schemas app is put under the tenant policies" in (
        result.output
    )
    assert "but the shared app.codes" in result.output
    assert "pool.tenant_tables: app.items is in a tenant schema" in result.output
    assert "shop.orders" not in result.output
    as_json = runner.invoke(app, ["validate", "--catalog", str(catalog), "--json"])
    assert json.loads(as_json.stdout)["pool_tables"] == {
        "tenant_schemas": ["app"],
        "shared": ["app.codes"],
        "listed": ["app.items", "shop.orders"],
        "derived": ["app.items"],
    }


def test_validate_accepts_the_sample_catalog() -> None:
    result = runner.invoke(app, ["validate", "--catalog", str(REPO_ROOT / "tenants.yaml")])
    assert result.exit_code == 0
    assert "valid" in result.output
