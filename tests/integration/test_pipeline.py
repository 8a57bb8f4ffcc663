"""The onboarding pipeline as .github/workflows/onboard-tenant.yml runs it, for two pool tenants
onboarded one after the other: the same tenantctl commands in the same order, with `cdk deploy`
played by a stand-in for CloudFormation that updates the pool stack's PoolTenants batches
through the real provisioner on a real PostgreSQL and keeps the deployed stack in moto.

What it guards: a deploy of a catalog made before the first onboarding landed on main would
delete the first tenant's batch, and CloudFormation's Delete offboards it."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import pool_database_properties
from lambda_src.provisioner.postgres import read_registry
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS
from tenantkit.catalog import load_catalog
from tenantkit.cli import EXIT_INVALID, app, deploy_commands
from tenantkit.deployed_state import read_deployed
from tenantkit.deployment import DeployTarget
from tenantkit.embedded_pg import RunningServer
from tenantkit.synth import synth_templates

from .pool_fixtures import aws, config, pool_server  # noqa: F401 (fixtures)

runner = CliRunner()
ONBOARD = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "onboard-tenant.yml"

MAIN = """\
tenants:
  - id: existing
    tier: pool
"""


class CloudFormation:
    """`cdk deploy <stacks> --exclusively -c catalog=<file> ...` as CloudFormation would run it
    for the pool stack: the catalog's template synthesized, its PoolTenants resources compared
    by logical id with the deployed ones, and a Create, Update or Delete sent to the provisioner
    for each that differs. The deployed template's Metadata is kept in moto, where tenantctl
    reads what the stack holds."""

    def __init__(self, config: HandlerConfig) -> None:
        self.config = config
        self.client = boto3.client("cloudformation")
        self.batches: dict[str, tuple[str, dict[str, Any]]] = {}
        self.deploys: list[list[str]] = []
        self.deployed = False

    def run_cdk(self, argv: list[str], as_json: bool) -> int:
        self.deploys.append(argv)
        assert argv[:2] == ["cdk", "deploy"], argv
        assert argv[2:4] == [POOL.stack_name, "--exclusively"], argv
        catalog = next(a.split("=", 1)[1] for a in argv if a.startswith("catalog="))
        template = synth_templates(load_catalog(Path(catalog)), DeployTarget(tier="pool"))[
            POOL.stack_name
        ]
        self.apply(template)
        self.record(template)
        return 0

    def apply(self, template: dict[str, Any]) -> None:
        new = {
            logical_id: {k: v for k, v in r["Properties"].items() if k != "ServiceToken"}
            for logical_id, r in template["Resources"].items()
            if r["Type"] == "Custom::PoolTenants"
        }
        for logical_id, properties in new.items():
            if logical_id not in self.batches:
                response = handle(provider_event("Create", properties), self.config)
                self.batches[logical_id] = (response["PhysicalResourceId"], properties)
            elif self.batches[logical_id][1] != properties:
                physical_id, old = self.batches[logical_id]
                handle(
                    provider_event(
                        "Update", properties, physical_id=physical_id, old_properties=old
                    ),
                    self.config,
                )
                self.batches[logical_id] = (physical_id, properties)
        for logical_id in self.batches.keys() - new.keys():
            physical_id, old = self.batches.pop(logical_id)
            handle(provider_event("Delete", old, physical_id=physical_id), self.config)

    def record(self, template: dict[str, Any]) -> None:
        # moto cannot create the custom resources; the stack it keeps carries the template's
        # Metadata (the tenants it holds) beside one resource moto can create.
        placeholder = {
            "Type": "AWS::SSM::Parameter",
            "Properties": {"Name": "/test/pool-deployed", "Type": "String", "Value": "yes"},
        }
        body = json.dumps({"Metadata": template["Metadata"], "Resources": {"Pool": placeholder}})
        if self.deployed:
            self.client.update_stack(StackName=POOL.stack_name, TemplateBody=body)
        else:
            self.client.create_stack(StackName=POOL.stack_name, TemplateBody=body)
            self.deployed = True


@pytest.fixture
def cloudformation(
    aws: Any, config: HandlerConfig, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CloudFormation]:
    """The stand-in for `cdk deploy`, on a pool database provisioned before the first deploy."""
    arn = aws.describe_secret(SecretId=POOL.secret_name)["ARN"]
    properties = pool_database_properties(
        runtime_secret_arn=arn, iam_auth=True, removal_policy="retain"
    )
    handle(provider_event("Create", properties), config)
    fake = CloudFormation(config)
    monkeypatch.setattr(deploy_commands, "run_cdk", fake.run_cdk)
    # No stack of this account was ever deleted: the pool's runtime secret is in moto because
    # the handler reads it, not because a deleted stack retained it (nothing to take back).
    monkeypatch.setattr(deploy_commands, "take_back_retained", lambda *_a, **_k: [])
    yield fake
    if fake.deployed:
        fake.client.delete_stack(StackName=POOL.stack_name)


def statuses(server: RunningServer) -> dict[str, str]:
    """The pool registry: tenant -> status (the verify probes left out)."""
    with psycopg.connect(**server.admin_settings(POOL.database).connect_kwargs()) as conn:
        entries = read_registry(conn)
    return {e.tenant_id: e.status for e in entries if e.tenant_id not in PROBE_TENANT_IDS}


def tenantctl(checkout: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """A tenantctl command with --json on the checkout's tenants.yaml, as the workflow runs it."""
    result = runner.invoke(app, [*args, "--catalog", str(checkout / "tenants.yaml"), "--json"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, json.loads(result.stdout.splitlines()[-1])


def checkout(tmp_path: Path, name: str, main: Path) -> Path:
    """`actions/checkout` of main's tenants.yaml as it is now."""
    path = tmp_path / name
    path.mkdir()
    shutil.copy(main / "tenants.yaml", path / "tenants.yaml")
    return path


def onboard_catalog_job(tmp_path: Path, main: Path, tenant_id: str) -> Path:
    """The catalog job up to its commit: main checked out, the tenant added."""
    work = checkout(tmp_path, f"catalog-{tenant_id}", main)
    shutil.copy(work / "tenants.yaml", tmp_path / f"checked-out-{tenant_id}.yaml")
    code, result = tenantctl(work, "onboard", tenant_id, "--tier", "pool", "--provision", "none")
    assert code == 0, result
    return work


class Workflow:
    """Where onboard-tenant.yml lands a catalog change and what its deploy job checks out."""

    def __init__(self) -> None:
        jobs = yaml.safe_load(ONBOARD.read_text())["jobs"]
        scripts = "\n".join(s.get("run", "") for s in jobs["catalog"]["steps"])
        self.lands_on_main = "git push origin HEAD:main" in scripts
        checkout = next(
            s for s in jobs["deploy"]["steps"] if s.get("uses", "").startswith("actions/checkout@")
        )
        self.deploys_main = checkout.get("with", {}).get("ref") == "main"


def land_on_main(tmp_path: Path, work: Path, main: Path, tenant_id: str) -> None:
    """The catalog job's last step: the change pushed to main. If main moved since the job
    checked it out, the push is rejected; the job checks out main again, onboards again and
    pushes that."""
    if not Workflow().lands_on_main:
        return  # pushed to a branch of its own
    if (main / "tenants.yaml").read_text() != (
        tmp_path / f"checked-out-{tenant_id}.yaml"
    ).read_text():
        shutil.copy(main / "tenants.yaml", work / "tenants.yaml")
        code, result = tenantctl(
            work, "onboard", tenant_id, "--tier", "pool", "--provision", "none"
        )
        assert code == 0, result
    shutil.copy(work / "tenants.yaml", main / "tenants.yaml")


def deploy_job(
    tmp_path: Path, main: Path, tenant_id: str, *extra: str, branch: Path | None = None
) -> tuple[int, Any]:
    """The deploy job: the tenant's stacks deployed from what it checks out (main's latest, or
    the catalog job's commit `branch`)."""
    if branch is None or Workflow().deploys_main:
        branch = checkout(tmp_path, f"deploy-{tenant_id}", main)
    return tenantctl(branch, "deploy", tenant_id, "--require-approval", "never", *extra)


@pytest.mark.slow
def test_two_pool_onboardings_in_a_row_end_with_both_tenants_active(
    tmp_path: Path, cloudformation: CloudFormation, pool_server: RunningServer
) -> None:
    # GIVEN main's catalog deployed, and two onboardings dispatched together: both catalog jobs
    # check out the same main
    main = tmp_path / "main"
    main.mkdir()
    (main / "tenants.yaml").write_text(MAIN)
    code, result = deploy_job(tmp_path, main, "existing")
    assert code == 0, result
    first = onboard_catalog_job(tmp_path, main, "alpha")
    second = onboard_catalog_job(tmp_path, main, "beta")

    # WHEN the first lands on main and deploys main, then the second lands and deploys main
    land_on_main(tmp_path, first, main, "alpha")
    code, result = deploy_job(tmp_path, main, "alpha", branch=first)
    assert code == 0, result
    land_on_main(tmp_path, second, main, "beta")
    code, result = deploy_job(tmp_path, main, "beta", branch=second)
    assert code == 0, result

    # THEN both are active, main holds both and so does the deployed pool stack
    assert statuses(pool_server) == {"existing": "active", "alpha": "active", "beta": "active"}
    assert {t.id for t in load_catalog(main / "tenants.yaml").tenants} == {
        "existing",
        "alpha",
        "beta",
    }
    assert read_deployed([POOL.stack_name]) == {
        POOL.stack_name: frozenset({"existing", "alpha", "beta"})
    }
    assert len(cloudformation.deploys) == 3


@pytest.mark.slow
def test_deploying_a_catalog_that_lacks_a_deployed_pool_tenant_is_refused_naming_it(
    tmp_path: Path, cloudformation: CloudFormation, pool_server: RunningServer
) -> None:
    # GIVEN north onboarded and deployed from main, and south's branch made from the old main
    main = tmp_path / "main"
    main.mkdir()
    (main / "tenants.yaml").write_text(MAIN)
    stale = onboard_catalog_job(tmp_path, main, "south")
    first = onboard_catalog_job(tmp_path, main, "north")
    shutil.copy(first / "tenants.yaml", main / "tenants.yaml")
    code, result = tenantctl(checkout(tmp_path, "deploy-north", main), "deploy", "north")
    assert code == 0, result

    # WHEN south's branch is deployed as it is (the old workflow's path)
    code, refused = tenantctl(stale, "deploy", "south", "--require-approval", "never")

    # THEN the deploy is refused before cdk runs, naming north and the pool stack
    assert code == EXIT_INVALID
    assert refused["ok"] is False
    assert refused["dropped"] == [{"tenant": "north", "stack": POOL.stack_name}]
    assert "north" in refused["error"]
    assert POOL.stack_name in refused["error"]
    assert len(cloudformation.deploys) == 1
    assert statuses(pool_server)["north"] == "active"

    # AND a plan against the deployed stacks refuses it too
    code, planned = tenantctl(stale, "plan", "--deployed")
    assert code == EXIT_INVALID
    assert planned["dropped"] == [{"tenant": "north", "stack": POOL.stack_name}]

    # AND an explicit offboard of north may drop it, and only north
    code, offboarded = tenantctl(stale, "deploy", "south", "--offboard", "north")
    assert code == 0, offboarded
    assert statuses(pool_server)["north"] == "offboarded"
    assert statuses(pool_server)["south"] == "active"
