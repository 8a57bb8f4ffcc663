"""tenantctl deploy and offboard --provision aws read the deployed stacks (moto CloudFormation)
and refuse, before cdk runs, a catalog that would drop a tenant a deployed stack holds."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from lambda_src.tenancy import POOL
from tenantkit.cli import EXIT_ENVIRONMENT, EXIT_INVALID, app, deploy_commands, lifecycle_commands
from tenantkit.deployment import TENANTS_METADATA

runner = CliRunner()

CATALOG = """\
tenants:
  - id: alpha
    tier: pool
  - id: beta
    tier: pool
"""


@pytest.fixture
def cloudformation() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudformation")


@pytest.fixture
def cdk_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every cdk command tenantctl would run (none runs)."""
    runs: list[list[str]] = []

    def run_cdk(argv: list[str], as_json: bool) -> int:
        runs.append(argv)
        return 0

    monkeypatch.setattr(deploy_commands, "run_cdk", run_cdk)
    monkeypatch.setattr(lifecycle_commands, "run_cdk", run_cdk)
    return runs


def deployed_pool(client: Any, *tenants: str) -> None:
    """A pool stack deployed holding `tenants` (moto cannot create the custom resources; the
    template's tenant list is what tenantctl reads)."""
    parameter = {"Name": "/test/pool", "Type": "String", "Value": "deployed"}
    template = {
        "Metadata": {TENANTS_METADATA: sorted(tenants)},
        "Resources": {"Pool": {"Type": "AWS::SSM::Parameter", "Properties": parameter}},
    }
    client.create_stack(StackName=POOL.stack_name, TemplateBody=json.dumps(template))


def tenantctl(tmp_path: Path, catalog: str, *args: str) -> Any:
    (tmp_path / "tenants.yaml").write_text(catalog)
    return runner.invoke(app, [*args, "--catalog", str(tmp_path / "tenants.yaml")])


def test_a_deploy_that_would_drop_a_pool_tenant_is_refused_naming_it_and_the_stack(
    tmp_path: Path, cloudformation: Any, cdk_runs: list[list[str]]
) -> None:
    deployed_pool(cloudformation, "alpha", "beta", "gamma")

    result = tenantctl(tmp_path, CATALOG, "deploy", "alpha")

    assert result.exit_code == EXIT_INVALID
    assert "stack tenantkit-pool holds gamma" in result.stderr
    assert "--offboard" in result.stderr
    assert cdk_runs == []


def test_an_explicit_offboard_may_drop_that_tenant_only(
    tmp_path: Path, cloudformation: Any, cdk_runs: list[list[str]]
) -> None:
    deployed_pool(cloudformation, "alpha", "beta", "gamma", "delta")

    refused = tenantctl(tmp_path, CATALOG, "deploy", "pool", "--offboard", "gamma", "--json")
    allowed = tenantctl(
        tmp_path, CATALOG, "deploy", "pool", "--offboard", "gamma", "--offboard", "delta", "--json"
    )

    assert refused.exit_code == EXIT_INVALID
    assert json.loads(refused.stdout)["dropped"] == [{"tenant": "delta", "stack": "tenantkit-pool"}]
    assert allowed.exit_code == 0, allowed.stdout
    assert json.loads(allowed.stdout)["offboard"] == ["gamma", "delta"]
    assert len(cdk_runs) == 1


def test_a_deploy_whose_deployed_stacks_cannot_be_read_does_not_run(
    tmp_path: Path, cloudformation: Any, cdk_runs: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)

    result = tenantctl(tmp_path, CATALOG, "deploy", "alpha", "--json")

    assert result.exit_code == EXIT_ENVIRONMENT
    assert "cannot read stack tenantkit-pool" in json.loads(result.stdout)["error"]
    assert cdk_runs == []


def test_offboarding_a_pool_tenant_in_aws_drops_it_and_no_other(
    tmp_path: Path, cloudformation: Any, cdk_runs: list[list[str]]
) -> None:
    # GIVEN a deployed pool holding gamma, which this catalog (made before gamma landed) lacks
    deployed_pool(cloudformation, "alpha", "beta", "gamma")

    # WHEN alpha is offboarded with it, and then with a catalog that holds gamma
    stale = tenantctl(tmp_path, CATALOG, "offboard", "alpha", "--provision", "aws", "--json")
    current = CATALOG + "  - id: gamma\n    tier: pool\n"
    result = tenantctl(tmp_path, current, "offboard", "alpha", "--provision", "aws", "--json")

    # THEN the first deploys nothing (its first deploy would drop gamma); the second deploys
    # twice (the removal policy, then the pool without alpha) and alpha leaves the catalog
    assert stale.exit_code == EXIT_INVALID
    assert json.loads(stale.stdout)["dropped"] == [{"tenant": "gamma", "stack": "tenantkit-pool"}]
    assert result.exit_code == 0, result.stdout
    assert [argv[1] for argv in cdk_runs] == ["deploy", "deploy"]
    assert "id: alpha" not in (tmp_path / "tenants.yaml").read_text()
