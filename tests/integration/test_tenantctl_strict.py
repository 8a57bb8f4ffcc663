"""tenantctl with `pool: {mode: strict}` and the sample schema: run provisions each pool
tenant's own login and migrates the pool, and the strict attack suite passes, the table attacks
on the migrated tables included; suspend, resume and offboard act on the tenant's login; a
weakened table is reported by verify."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from lambda_src.tenancy import POOL, PROBE_TENANT_IDS, tenant_names
from tenantkit.cli import EXIT_ENVIRONMENT, EXIT_INVALID, app, output
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


@pytest.fixture
def remote(state: tuple[Path, Path, dict[str, Any]]) -> Iterator[dict[str, str]]:
    """The local strict pool reached as a remote one: libpq connection strings of the runtime
    login ("runtime") and of each probe tenant's own login (by tenant id), server running
    (restarted per test: a local command stops it, and a restart may change its port)."""
    _, state_dir, _ = state
    servers = LocalServers(state_dir, [])
    shared = servers.start()
    store = LocalSecrets(state_dir / "secrets.json")

    def dsn(user: str, password: str) -> str:
        return (
            f"host={shared.host} port={shared.port} dbname={POOL.database} "
            f"user={user} password={password} sslrootcert={shared.ca_cert}"
        )

    dsns = {"runtime": dsn(POOL.login_role, store.password(POOL.secret_name))}
    for tenant in PROBE_TENANT_IDS:
        names = tenant_names(tenant, allow_probes=True)
        dsns[tenant] = dsn(names.pool_login, store.password(names.secret_name))
    try:
        yield dsns
    finally:
        servers.stop()


def verify_dsn(remote: dict[str, str], *probes: str, extra: tuple[str, ...] = ()) -> Any:
    args = ["verify", "--json", "--dsn", remote["runtime"], *extra]
    for tenant in probes:
        args += ["--probe-dsn", remote[tenant]]
    return runner.invoke(app, args)


def test_verify_dsn_with_every_probe_login_runs_what_local_verify_runs(
    state: tuple[Path, Path, dict[str, Any]], remote: dict[str, str]
) -> None:
    result = verify_dsn(remote, *PROBE_TENANT_IDS)
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["complete"] is True
    assert verdict["leaks"] == []
    assert verdict["not_run"] == []
    # the same attacks as `tenantctl verify` on the catalog (which has pool tenants only), the
    # migrated tables' found under the tenant policy
    catalog, state_dir, _ = state
    local = invoke("verify", "--catalog", str(catalog), "--state-dir", str(state_dir))
    assert verdict["attacks"] == verdict["blocked"] == local["attacks"]


def test_verify_dsn_of_a_strict_pool_without_probe_logins_is_incomplete_not_a_pass(
    remote: dict[str, str],
) -> None:
    result = verify_dsn(remote)
    assert result.exit_code == EXIT_ENVIRONMENT, result.output
    verdict = json.loads(result.stdout)
    # what needs no probe login ran and was blocked; everything else is listed as not run,
    # saying which login it needs; nothing is counted as blocked that did not run
    assert verdict["complete"] is False
    assert verdict["leaks"] == []
    assert verdict["blocked"] + len(verdict["not_run"]) == verdict["attacks"]
    assert verdict["blocked"] >= 10
    not_run = {a["attack"] for a in verdict["not_run"]}
    assert {
        "set_config to another tenant",
        "log in as an offboarded tenant",
        "public.customers: read another tenant's rows",
    } <= not_run
    assert "read without any tenant context" not in not_run
    assert all(
        "needs the probe login tenant_tenantkit-probe-" in a["detail"] for a in verdict["not_run"]
    )
    assert "incomplete: " in verdict["error"]


def test_verify_dsn_without_the_offboarded_probes_login_leaves_only_its_attack_unrun(
    remote: dict[str, str],
) -> None:
    a, b, gone = PROBE_TENANT_IDS
    result = verify_dsn(remote, a, b)
    assert result.exit_code == EXIT_ENVIRONMENT, result.output
    verdict = json.loads(result.stdout)
    assert [x["attack"] for x in verdict["not_run"]] == ["log in as an offboarded tenant"]
    assert tenant_names(gone, allow_probes=True).pool_login in verdict["not_run"][0]["detail"]


def test_verify_dsn_refuses_a_probe_dsn_that_is_not_a_probe_login(remote: dict[str, str]) -> None:
    wrong = remote[PROBE_TENANT_IDS[0]].replace(
        "tenant_tenantkit-probe-a_pool", "tenant_umbrella_pool"
    )
    result = runner.invoke(
        app, ["verify", "--json", "--dsn", remote["runtime"], "--probe-dsn", wrong]
    )
    assert result.exit_code == EXIT_INVALID, result.output
    assert "'tenant_umbrella_pool' is not a probe tenant's login" in result.stdout
    alone = runner.invoke(app, ["verify", "--json", "--probe-dsn", remote[PROBE_TENANT_IDS[0]]])
    assert alone.exit_code == EXIT_INVALID
    assert "go with --dsn" in alone.stdout


def test_verify_dsn_with_probe_iam_logs_in_as_the_probe_login_with_a_minted_token(
    remote: dict[str, str],
) -> None:
    # The embedded server has no IAM authentication: the token is refused, for the probe login
    result = verify_dsn(remote, extra=("--probe-iam",))
    assert result.exit_code == EXIT_ENVIRONMENT, result.output
    error = json.loads(result.stdout)["error"]
    assert 'password authentication failed for user "tenant_tenantkit-probe-a_pool"' in error


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
