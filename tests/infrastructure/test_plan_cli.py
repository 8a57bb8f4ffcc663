"""`tenantctl plan`: the catalog change against a baseline, stack sizes, quotas, refusals."""

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from tenantkit.cli import EXIT_INVALID, app

runner = CliRunner()

BASELINE = """\
tenants:
  - id: alpha
    tier: bridge
  - id: beta
    tier: pool
  - id: gamma
    tier: pool
"""


def plan(tmp_path: Path, catalog: str, *extra: str) -> tuple[int, dict[str, Any]]:
    (tmp_path / "base.yaml").write_text(BASELINE)
    (tmp_path / "tenants.yaml").write_text(catalog)
    result = runner.invoke(
        app,
        [
            "plan",
            "--catalog",
            str(tmp_path / "tenants.yaml"),
            "--baseline",
            str(tmp_path / "base.yaml"),
            "--json",
            *extra,
        ],
    )
    return result.exit_code, json.loads(result.stdout)


def test_plan_lists_added_removed_and_changed_tenants_and_sizes_every_stack(
    tmp_path: Path,
) -> None:
    catalog = BASELINE.replace("  - id: gamma\n    tier: pool\n", "") + (
        "  - id: delta\n    tier: silo\n"
    )
    catalog = catalog.replace(
        "id: alpha\n    tier: bridge", "id: alpha\n    tier: bridge\n    connection_limit: 7"
    )

    code, result = plan(tmp_path, catalog, "--offboard", "gamma")

    assert code == 0, result
    assert result["ok"] is True
    assert result["dropped"] == []
    assert result["tenants"]["added"] == [{"id": "delta", "tier": "silo"}]
    assert result["tenants"]["removed"] == [{"id": "gamma", "tier": "pool"}]
    assert result["tenants"]["changed"] == {"alpha": ["connection_limit"]}
    names = {s["name"] for s in result["stacks"]}
    assert names == {
        "tenantkit-bridge",
        "tenantkit-bridge-alpha",
        "tenantkit-pool",
        "tenantkit-silo",
        "tenantkit-silo-delta",
    }
    assert all(0 < s["resources"] < s["limit"] == 500 for s in result["stacks"])
    vpcs = next(q for q in result["quotas"] if q["quota"] == "VPCs per Region")
    assert vpcs == {"quota": "VPCs per Region", "used": 3, "default": 5, "exceeded": False}


def test_plan_refuses_a_tenant_moved_to_another_tier(tmp_path: Path) -> None:
    code, result = plan(
        tmp_path, BASELINE.replace("id: beta\n    tier: pool", "id: beta\n    tier: bridge")
    )

    assert code == EXIT_INVALID
    assert result["ok"] is False
    assert len(result["refused"]) == 1
    assert "tenant 'beta' is in tier pool" in result["refused"][0]
    assert "`tenantctl move beta --to bridge`" in result["refused"][0]


def test_plan_refuses_a_tenant_the_baseline_holds_unless_it_is_offboarded(tmp_path: Path) -> None:
    # GIVEN a catalog made before gamma was onboarded on the baseline (main)
    catalog = BASELINE.replace("  - id: gamma\n    tier: pool\n", "")

    # WHEN it is planned without saying gamma is meant to go
    code, result = plan(tmp_path, catalog)

    # THEN the plan is refused, naming gamma and the stack that holds it
    assert code == EXIT_INVALID
    assert result["ok"] is False
    assert result["dropped"] == [{"tenant": "gamma", "stack": "tenantkit-pool"}]
    assert any("tenantkit-pool holds gamma" in r for r in result["refused"])


def test_plan_refuses_offboarding_a_tenant_still_in_the_catalog(tmp_path: Path) -> None:
    code, result = plan(tmp_path, BASELINE, "--offboard", "gamma")

    assert code == EXIT_INVALID
    assert "--offboard gamma: still in" in result["error"]
