"""tenantctl: `run` provisions the catalog locally and converges; bad input exits 2."""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tenantkit.cli import EXIT_INVALID, app

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


def test_run_provisions_every_bridge_and_silo_tenant(two_runs: tuple[dict[str, Any], ...]) -> None:
    first, _ = two_runs
    assert first["ok"] is True
    assert {t["tier"] for t in first["tenants"]} == {"bridge", "silo"}
    assert all(t["status"] == "ready" and t["changes"] > 0 for t in first["tenants"])


def test_run_proves_each_login_reaches_only_its_own_database(
    two_runs: tuple[dict[str, Any], ...],
) -> None:
    first, _ = two_runs
    count = len(first["tenants"])
    isolation = first["isolation"]
    assert isolation["own_database_ok"] == count
    assert isolation["cross_tenant_refused"] == count * (count - 1)
    assert isolation["cross_tenant_not_refused"] == []


def test_second_run_converges_to_the_same_summary_without_changes(
    two_runs: tuple[dict[str, Any], ...],
) -> None:
    first, second = two_runs

    def stable(summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in t.items() if k not in ("seconds", "changes")}
            for t in summary["tenants"]
        ]

    assert second["ok"] is True
    assert stable(second) == stable(first)
    assert all(t["changes"] == 0 for t in second["tenants"])
    assert second["isolation"] == first["isolation"]


def test_invalid_catalog_exits_2_naming_file_entry_and_field(tmp_path: Path) -> None:
    catalog = tmp_path / "tenants.yaml"
    catalog.write_text("tenants:\n  - id: acme\n    tier: bridge\n    connection_limit: -4\n")
    result = runner.invoke(app, ["run", "--catalog", str(catalog)])
    assert result.exit_code == EXIT_INVALID
    assert "tenants[0] (id 'acme'): connection_limit" in result.output


def test_names_shows_derived_names_and_refuses_hostile_ids() -> None:
    result = runner.invoke(app, ["names", "acme-corp", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["database"] == "tenant_acme_corp"
    hostile = runner.invoke(app, ["names", "x'; DROP TABLE t; --"])
    assert hostile.exit_code == EXIT_INVALID
    assert "invalid tenant id" in hostile.output


def test_validate_accepts_the_sample_catalog() -> None:
    result = runner.invoke(app, ["validate", "--catalog", str(REPO_ROOT / "tenants.yaml")])
    assert result.exit_code == 0
    assert "valid" in result.output
