"""The onboarding pipeline end to end on the embedded PostgreSQL: tenantctl onboard, list,
status, suspend, resume, offboard, deploy and plan, with their JSON and exit codes."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from lambda_src.tenancy import POOL, tenant_names
from tenantkit.cli import EXIT_INVALID, app
from tenantkit.embedded_pg import EmbeddedPostgres

runner = CliRunner()

CATALOG = """\
# Tenants of the onboarding tests. This comment must survive every edit.
defaults:
  bridge:
    connection_limit: 5
tenants:
  - id: first
    tier: bridge  # the first customer
  - id: shared-one
    tier: pool
"""


@pytest.fixture
def workdir(pg_root: Path) -> Path:
    """A catalog and a state directory of the test's own (the server user can traverse it)."""
    root = Path(tempfile.mkdtemp(prefix="onboarding-", dir=pg_root))
    root.chmod(0o711)
    (root / "tenants.yaml").write_text(CATALOG)
    return root


def tenantctl(workdir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run a tenantctl command with --json on the workdir's catalog and state."""
    result = runner.invoke(
        app,
        [*args, "--catalog", str(workdir / "tenants.yaml"), "--json"]
        + (["--state-dir", str(workdir / "state")] if args[0] not in ("deploy", "plan") else []),
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, json.loads(lines[-1]) if lines else {}


def admin_settings(workdir: Path, dbname: str = "postgres") -> Any:
    server = EmbeddedPostgres(workdir / "state" / "pg").start()
    return server.admin_settings(dbname)


def database_exists(workdir: Path, name: str) -> bool:
    with psycopg.connect(**admin_settings(workdir).connect_kwargs()) as conn:
        row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        return row.fetchone() == (1,)


@pytest.fixture
def stop_servers(workdir: Path) -> Any:
    yield
    EmbeddedPostgres(workdir / "state" / "pg").stop()


@pytest.mark.slow
def test_onboarding_a_bridge_tenant_adds_it_and_provisions_it_once(
    workdir: Path, stop_servers: None
) -> None:
    code, first = tenantctl(workdir, "onboard", "newco", "--tier", "bridge")
    assert code == 0, first
    assert first["catalog"] == "added"
    assert first["status"] == "active"
    assert first["changes"] > 0

    # a second onboarding of the same tenant changes nothing
    code, again = tenantctl(workdir, "onboard", "newco", "--tier", "bridge")
    assert code == 0
    assert again["catalog"] == "unchanged"
    assert again["changes"] == 0

    text = (workdir / "tenants.yaml").read_text()
    assert text.count("id: newco") == 1
    assert "This comment must survive every edit." in text
    assert "# the first customer" in text
    assert database_exists(workdir, tenant_names("newco").database)


@pytest.mark.parametrize(
    ("tenant_id", "tier", "message"),
    [
        ("Bad_Id", "bridge", "invalid tenant id"),
        ("x'; DROP DATABASE postgres; --", "pool", "invalid tenant id"),
        ("postgres", "bridge", "invalid tenant id"),
        ("first", "pool", "is in tier bridge"),
    ],
)
def test_a_refused_onboarding_leaves_the_catalog_untouched(
    workdir: Path, stop_servers: None, tenant_id: str, tier: str, message: str
) -> None:
    code, result = tenantctl(workdir, "onboard", tenant_id, "--tier", tier)

    assert code == EXIT_INVALID
    assert result["ok"] is False
    assert message in result["error"]
    assert (workdir / "tenants.yaml").read_text() == CATALOG


@pytest.mark.slow
def test_list_and_status_show_the_lifecycle(workdir: Path, stop_servers: None) -> None:
    tenantctl(workdir, "onboard", "newco", "--tier", "bridge")

    code, listed = tenantctl(workdir, "list")
    assert code == 0
    states = {t["id"]: t["status"] for t in listed["tenants"]}
    # `first` is in the catalog but was never provisioned here
    assert states == {"first": "requested", "shared-one": "requested", "newco": "active"}

    code, status = tenantctl(workdir, "status", "newco")
    assert code == 0
    assert [h["status"] for h in status["history"]] == ["provisioning", "active"]
    code, unknown = tenantctl(workdir, "status", "nobody")
    assert code == EXIT_INVALID
    assert "nobody" in unknown["error"]


@pytest.mark.slow
def test_suspend_and_resume_a_bridge_tenant(workdir: Path, stop_servers: None) -> None:
    tenantctl(workdir, "onboard", "newco", "--tier", "bridge")

    code, suspended = tenantctl(workdir, "suspend", "newco")
    assert code == 0
    assert suspended["status"] == "suspended"
    assert "suspended: true" in (workdir / "tenants.yaml").read_text()
    with psycopg.connect(**admin_settings(workdir).connect_kwargs()) as conn:
        row = conn.execute(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s",
            (tenant_names("newco").login_role,),
        ).fetchone()
    assert row == (False,)

    code, resumed = tenantctl(workdir, "resume", "newco")
    assert code == 0
    assert resumed["status"] == "active"
    assert "suspended" not in (workdir / "tenants.yaml").read_text()


@pytest.mark.slow
def test_offboarding_keeps_the_data_and_then_refuses_a_move_to_another_tier(
    workdir: Path, stop_servers: None
) -> None:
    tenantctl(workdir, "onboard", "newco", "--tier", "bridge")

    code, offboarded = tenantctl(workdir, "offboard", "newco")
    assert code == 0
    assert offboarded["data"] == "retained"
    assert offboarded["status"] == "offboarded"
    assert "newco" not in (workdir / "tenants.yaml").read_text()
    assert database_exists(workdir, tenant_names("newco").database)

    # its data is still in the bridge tier: it may not come back as a pool tenant
    before = (workdir / "tenants.yaml").read_text()
    code, moved = tenantctl(workdir, "onboard", "newco", "--tier", "pool")
    assert code == EXIT_INVALID
    assert "is in tier bridge (offboarded in the bridge registry" in moved["error"]
    assert (workdir / "tenants.yaml").read_text() == before
    # but it may come back where it was, with its data
    code, back = tenantctl(workdir, "onboard", "newco", "--tier", "bridge")
    assert code == 0
    assert back["status"] == "active"


@pytest.mark.slow
def test_offboarding_a_pool_tenant_with_destroy_data_leaves_only_its_history(
    workdir: Path, stop_servers: None
) -> None:
    code, onboarded = tenantctl(workdir, "onboard", "shared-one", "--tier", "pool")
    assert onboarded["status"] == "active"
    with psycopg.connect(**admin_settings(workdir, POOL.database).connect_kwargs()) as conn:
        conn.execute("SET ROLE tenantkit_pool_maintainer")
        conn.execute("INSERT INTO tenantkit_sample.projects VALUES ('shared-one', 1, 'doomed')")
        conn.commit()

    code, offboarded = tenantctl(workdir, "offboard", "shared-one", "--destroy-data")
    assert code == 0, offboarded
    assert offboarded["data"] == "destroyed"

    with psycopg.connect(**admin_settings(workdir, POOL.database).connect_kwargs()) as conn:
        conn.execute("SET ROLE tenantkit_pool_maintainer")
        left = conn.execute(
            "SELECT count(*) FROM tenantkit_sample.projects WHERE tenant_id = 'shared-one'"
        ).fetchone()
    assert left == (0,)
    code, status = tenantctl(workdir, "status", "shared-one")
    assert code == 0
    assert status["data_destroyed"] is True
    assert [h["status"] for h in status["history"]] == ["active", "offboarding", "offboarded"]


@pytest.mark.slow
def test_two_concurrent_onboardings_of_one_tenant_end_with_one_tenant(
    workdir: Path, stop_servers: None
) -> None:
    command = [
        str(Path(sys.executable).parent / "tenantctl"), "onboard", "rush", "--tier", "bridge",
        "--catalog", str(workdir / "tenants.yaml"), "--state-dir", str(workdir / "state"),
        "--json",
    ]  # fmt: skip
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in processes]

    assert [p.returncode for p in processes] == [0, 0], results
    outcomes = sorted(json.loads(out.decode().splitlines()[-1])["catalog"] for out, _ in results)
    assert outcomes == ["added", "unchanged"]
    assert (workdir / "tenants.yaml").read_text().count("id: rush") == 1
    with psycopg.connect(**admin_settings(workdir).connect_kwargs()) as conn:
        databases = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s",
            (tenant_names("rush").database,),
        ).fetchone()
        registered = conn.execute(
            "SELECT count(*) FROM tenantkit.tenants WHERE tenant_id = 'rush'"
        ).fetchone()
    assert databases == (1,)
    assert registered == (1,)


@pytest.mark.slow
def test_run_refuses_a_tier_move_made_by_hand_before_provisioning_anything(
    workdir: Path, stop_servers: None
) -> None:
    tenantctl(workdir, "onboard", "newco", "--tier", "bridge")
    catalog = workdir / "tenants.yaml"
    catalog.write_text(
        catalog.read_text().replace("id: newco\n    tier: bridge", "id: newco\n    tier: pool")
    )

    code, refused = tenantctl(workdir, "run")

    assert code == EXIT_INVALID
    assert "run `tenantctl move newco --to pool`" in refused["error"]


def test_deploy_names_exactly_the_stacks_a_tenant_or_tier_needs(workdir: Path) -> None:
    code, tenant = tenantctl(workdir, "deploy", "first", "--dry-run")
    assert code == 0
    assert tenant["stacks"] == ["tenantkit-bridge-first"]
    assert tenant["command"][:4] == ["cdk", "deploy", "tenantkit-bridge-first", "--exclusively"]
    assert "tenant=first" in tenant["command"]

    code, tier = tenantctl(workdir, "deploy", "bridge", "--dry-run")
    assert tier["stacks"] == ["tenantkit-bridge", "tenantkit-bridge-first"]

    code, unknown = tenantctl(workdir, "deploy", "nobody", "--dry-run")
    assert code == EXIT_INVALID
    assert "'nobody' is not in" in unknown["error"]


def test_offboarding_in_aws_deploys_the_removal_policy_before_deleting_the_stack(
    workdir: Path,
) -> None:
    code, result = runner_json(
        workdir, "offboard", "first", "--provision", "aws", "--destroy-data", "--dry-run"
    )
    assert code == 0
    steps = [s["step"] for s in result["steps"]]
    # destroying the data takes an export through the bridge host's function first
    assert steps[0] == "export first through tenantkit-bridge-mobility into its bucket"
    assert steps[1].startswith("set removal_policy: destroy")
    assert result["steps"][2]["command"][:3] == ["cdk", "deploy", "tenantkit-bridge-first"]
    assert result["steps"][3]["command"][:3] == ["cdk", "destroy", "tenantkit-bridge-first"]
    assert steps[4].startswith("remove it from")
    # a dry run changes nothing
    assert (workdir / "tenants.yaml").read_text() == CATALOG

    # --no-export: no export step
    code, result = runner_json(
        workdir,
        "offboard",
        "first",
        "--provision",
        "aws",
        "--destroy-data",
        "--no-export",
        "--dry-run",
    )
    assert code == 0
    assert result["steps"][0]["step"].startswith("set removal_policy: destroy")


def runner_json(workdir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, [*args, "--catalog", str(workdir / "tenants.yaml"), "--json"])
    return result.exit_code, json.loads(result.stdout.splitlines()[-1])


def test_onboarding_with_provision_none_only_edits_the_catalog(workdir: Path) -> None:
    code, result = tenantctl(workdir, "onboard", "later", "--tier", "pool", "--provision", "none")

    assert code == 0
    assert result == {
        "ok": True,
        "tenant": "later",
        "tier": "pool",
        "catalog": "added",
        "provision": "none",
    }
    assert "id: later" in (workdir / "tenants.yaml").read_text()
    assert not (workdir / "state").exists()
