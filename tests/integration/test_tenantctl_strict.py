"""tenantctl with `pool: {mode: strict}` and the sample schema: run provisions each pool
tenant's own login and migrates the pool, and the strict attack suite passes, the table attacks
on the migrated tables included; suspend, resume and offboard act on the tenant's login; a
weakened table is reported by verify."""

import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from lambda_src.tenancy import POOL, tenant_names
from tenantkit.cli import EXIT_ENVIRONMENT, app, output
from tenantkit.local import LocalSecrets, LocalServers, pool_login_settings

runner = CliRunner()
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
CATALOG = """\
schema:
  directory: migrations
  tenant_schemas: [public]
pool:
  mode: strict
tenants:
  - id: umbrella
    tier: pool
  - id: hooli
    tier: pool
"""


def invoke(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def state(pg_root: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A strict pool provisioned by `tenantctl run`: catalog, state directory, run's JSON."""
    directory = pg_root / "tenantctl-strict"
    directory.mkdir()
    catalog = directory / "tenants.yaml"
    catalog.write_text(CATALOG)
    shutil.copytree(REPO_ROOT / "migrations", directory / "migrations")
    state_dir = directory / "state"
    return (
        catalog,
        state_dir,
        invoke("run", "--catalog", str(catalog), "--state-dir", str(state_dir)),
    )


def can_log_in(state_dir: Path, tenant: str) -> bool:
    """Whether the tenant's login gets in (False: refused as a disabled login)."""
    servers = LocalServers(state_dir, [])
    shared = servers.start()
    try:
        settings = pool_login_settings(shared, LocalSecrets(state_dir / "secrets.json"), tenant)
        with psycopg.connect(**settings.connect_kwargs()) as conn:
            seen = conn.execute("SELECT session_user").fetchone()
    except psycopg.OperationalError as error:
        refused = str(error)
    else:
        return seen == (tenant_names(tenant).pool_login,)
    finally:
        servers.stop()
    if "not permitted to log in" not in refused:
        raise AssertionError(f"refused for another reason: {refused}")
    return False


def test_run_gives_each_pool_tenant_its_login_and_every_strict_attack_is_blocked(
    state: tuple[Path, Path, dict[str, Any]],
) -> None:
    _, _, summary = state
    assert summary["ok"] is True
    by_id = {t["id"]: t for t in summary["tenants"]}
    assert by_id["umbrella"]["roles"] == ["tenant_umbrella_pool"]
    assert by_id["umbrella"]["secret"] == "tenantkit/umbrella/app"
    verdict = summary["verify"]
    assert verdict["leaks"] == []
    assert verdict["blocked"] == verdict["attacks"] >= 35
    assert summary["schema"]["latest"] == 3


def test_verify_runs_the_strict_table_attacks_on_every_migrated_table(
    state: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, state_dir, _ = state
    monkeypatch.setattr(output.out, "width", 400)  # every attack's name on one line
    result = runner.invoke(
        app, ["verify", "--catalog", str(catalog), "--state-dir", str(state_dir)]
    )
    assert result.exit_code == 0, result.output
    for table in ("public.customers", "public.invoices"):
        assert f"{table}: read another tenant's rows with the setting claiming it" in result.output
        assert f"{table}: insert a row into another tenant" in result.output


def test_suspend_and_resume_switch_the_tenants_login_off_and_on(
    state: tuple[Path, Path, dict[str, Any]],
) -> None:
    catalog, state_dir, _ = state
    args = ("--catalog", str(catalog), "--state-dir", str(state_dir))
    assert invoke("suspend", "hooli", *args)["status"] == "suspended"
    assert can_log_in(state_dir, "hooli") is False
    assert invoke("resume", "hooli", *args)["status"] == "active"
    assert can_log_in(state_dir, "hooli") is True


def test_offboard_disables_the_tenants_login_and_the_others_still_pass_verify(
    state: tuple[Path, Path, dict[str, Any]],
) -> None:
    catalog, state_dir, _ = state
    args = ("--catalog", str(catalog), "--state-dir", str(state_dir))
    assert invoke("offboard", "hooli", *args)["status"] == "offboarded"
    assert can_log_in(state_dir, "hooli") is False
    assert can_log_in(state_dir, "umbrella") is True
    verdict = invoke("verify", *args)
    assert verdict["leaks"] == []


def test_verify_dsn_of_a_strict_pool_says_it_needs_the_probe_logins(
    state: tuple[Path, Path, dict[str, Any]],
) -> None:
    _, state_dir, _ = state
    servers = LocalServers(state_dir, [])
    shared = servers.start()
    try:
        password = LocalSecrets(state_dir / "secrets.json").password(POOL.secret_name)
        dsn = (
            f"host={shared.host} port={shared.port} dbname={POOL.database} "
            f"user={POOL.login_role} password={password} sslrootcert={shared.ca_cert}"
        )
        result = runner.invoke(app, ["verify", "--json", "--dsn", dsn])
    finally:
        servers.stop()
    assert result.exit_code == EXIT_ENVIRONMENT, result.output
    assert "is strict: its attacks run as the probe tenants' own logins" in result.stdout


def test_verify_reports_a_table_weakened_by_a_permissive_policy(
    state: tuple[Path, Path, dict[str, Any]],
) -> None:
    catalog, state_dir, _ = state
    args = ["verify", "--catalog", str(catalog), "--state-dir", str(state_dir), "--json"]
    extra = (
        f"CREATE POLICY extra ON public.customers FOR SELECT TO {POOL.runtime_role} USING (true)"
    )
    with_superuser(state_dir, extra)
    try:
        result = runner.invoke(app, args)
    finally:
        with_superuser(state_dir, "DROP POLICY extra ON public.customers")
    assert result.exit_code == 1, result.output
    leaks = {leak["attack"] for leak in json.loads(result.stdout)["leaks"]}
    assert leaks == {
        "public.customers: read with the tenant context cleared",
        "public.customers: read another tenant's rows",
        "public.customers: read another tenant's rows with the setting claiming it",
    }
    assert runner.invoke(app, args).exit_code == 0  # repaired


def with_superuser(state_dir: Path, statement: str) -> None:
    """Run `statement` in the local pool database as the superuser."""
    servers = LocalServers(state_dir, [])
    shared = servers.start()
    try:
        settings = shared.superuser_settings(POOL.database)
        with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
            conn.execute(statement)
    finally:
        servers.stop()
