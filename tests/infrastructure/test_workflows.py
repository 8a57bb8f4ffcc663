"""The GitHub Actions workflows: the pinned schema linter passes (and can fail), and the onboarding
workflow keeps its security properties (no script injection, least privilege, a gated deploy)."""

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
CI = WORKFLOWS_DIR / "ci.yml"
ONBOARD = WORKFLOWS_DIR / "onboard-tenant.yml"

# The linter as `make lint` runs it (check-jsonschema, pinned in requirements-dev.txt): the
# SchemaStore schema for workflows ships inside the package, so it needs no network.
LINT_ARGS = ["--builtin-schema", "vendor.github-workflows"]
MAKEFILE_LINT = "check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml"

# Contexts an outsider or a dispatcher controls; an expression over them inside a run: script is
# pasted into the shell before it runs (script injection). They must reach scripts through env:.
UNTRUSTED_IN_SCRIPT = re.compile(
    r"\$\{\{[^}]*\b(inputs|github\s*\.\s*event|github\s*\.\s*head_ref)\b", re.IGNORECASE
)


def lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *LINT_ARGS, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load(path: Path) -> dict[Any, Any]:
    workflow = yaml.safe_load(path.read_text())
    assert isinstance(workflow, dict), f"{path.name}: not a mapping"
    return workflow


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    """The `on:` section; YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True."""
    on = workflow[True] if True in workflow else workflow["on"]
    assert isinstance(on, dict)
    return on


def run_scripts(workflow: dict[Any, Any]) -> list[tuple[str, str]]:
    """(job id, script) for every run: step of every job."""
    return [
        (job_id, step["run"])
        for job_id, job in workflow["jobs"].items()
        for step in job.get("steps", [])
        if "run" in step
    ]


def writes(permissions: Any) -> set[str]:
    """The scopes a permissions block grants write on (`write-all` counts as every scope)."""
    if permissions == "write-all":
        return {"*"}
    if permissions in (None, "read-all"):
        return set()
    assert isinstance(permissions, dict), permissions
    return {scope for scope, level in permissions.items() if level == "write"}


def test_linter_is_the_pinned_one() -> None:
    pins = (REPO_ROOT / "requirements-dev.txt").read_text()
    assert f"check-jsonschema=={version('check-jsonschema')}\n" in pins


def test_make_lint_checks_the_workflows() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()

    def rule(target: str) -> str:
        return makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]

    assert MAKEFILE_LINT in rule("lint-quick")
    # both `make lint` and `make test` run it
    for target in ("lint", "test"):
        assert "lint-quick" in rule(target).splitlines()[0], target


def test_workflows_pass_the_linter() -> None:
    workflows = sorted(WORKFLOWS_DIR.glob("*.yml"))
    assert CI in workflows
    assert ONBOARD in workflows
    result = lint(*workflows)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        pytest.param(
            "    runs-on: ubuntu-latest\n    stepz:\n      - run: make test\n",
            "'stepz' was unexpected",
            id="unknown-job-key",
        ),
        pytest.param(
            "    runs-on: ubuntu-latest\n    permissions:\n      id-token: writ\n"
            "    steps:\n      - run: make test\n",
            "writ",
            id="invalid-permission-level",
        ),
        pytest.param(
            "    runs-on: [ubuntu-latest, {os: linux}]\n    steps:\n      - run: make test\n",
            "['runs-on']",
            id="invalid-runs-on",
        ),
    ],
)
def test_linter_rejects_a_broken_workflow(tmp_path: Path, broken: str, complaint: str) -> None:
    workflow = tmp_path / "broken.yml"
    workflow.write_text(f"name: broken\non: push\njobs:\n  build:\n{broken}")
    result = lint(workflow)
    assert result.returncode != 0, result.stdout
    assert complaint in result.stdout + result.stderr


@pytest.mark.parametrize("path", [CI, ONBOARD], ids=lambda p: p.name)
def test_no_untrusted_expression_in_run_scripts(path: Path) -> None:
    scripts = run_scripts(load(path))
    assert scripts, f"{path.name}: no run: steps found (the check would prove nothing)"
    for job_id, script in scripts:
        assert not UNTRUSTED_IN_SCRIPT.search(script), (
            f"{path.name}: job {job_id}: pass inputs through env:, not inside run: ({script!r})"
        )


def test_the_injection_check_catches_injection() -> None:
    for script in (
        'echo "${{ inputs.tenant_id }}"',
        "echo ${{inputs.tier}}",
        "echo ${{ github.event.inputs.tenant_id }}",
        "git switch -c onboard/${{ github.event.inputs['tenant_id'] }}",
    ):
        assert UNTRUSTED_IN_SCRIPT.search(script), script
    assert not UNTRUSTED_IN_SCRIPT.search('echo "$TENANT_ID" "${{ runner.temp }}"')


def test_onboard_inputs() -> None:
    dispatch = triggers(load(ONBOARD))
    assert set(dispatch) == {"workflow_dispatch"}
    inputs = dispatch["workflow_dispatch"]["inputs"]
    assert inputs["tenant_id"]["type"] == "string"
    assert inputs["tenant_id"]["required"] is True
    assert inputs["tier"]["type"] == "choice"
    assert inputs["tier"]["required"] is True
    assert inputs["tier"]["options"] == ["silo", "bridge", "pool"]
    assert inputs["deploy"]["type"] == "boolean"
    assert inputs["deploy"]["default"] is False


def test_onboard_inputs_reach_scripts_through_env() -> None:
    jobs = load(ONBOARD)["jobs"]
    for job in jobs.values():
        assert job["env"]["TENANT_ID"] == "${{ inputs.tenant_id }}"
    assert jobs["catalog"]["env"]["TIER"] == "${{ inputs.tier }}"
    scripts = "\n".join(script for _, script in run_scripts(load(ONBOARD)))
    assert 'tenantctl onboard "$TENANT_ID" --tier "$TIER" --provision none --json' in scripts
    assert 'tenantctl deploy "$TENANT_ID" --require-approval never --json' in scripts


def test_onboard_least_privilege() -> None:
    workflow = load(ONBOARD)
    assert writes(workflow.get("permissions")) == set()
    jobs = workflow["jobs"]
    for job_id, job in jobs.items():
        assert "permissions" in job, f"job {job_id} must say which permissions it needs"
    assert writes(jobs["catalog"]["permissions"]) == {"contents"}


def test_onboard_deploy_is_gated() -> None:
    jobs = load(ONBOARD)["jobs"]
    deploy = jobs["deploy"]
    environment = deploy["environment"]
    name = environment["name"] if isinstance(environment, dict) else environment
    assert name == "production"
    assert deploy["needs"] in ("catalog", ["catalog"])
    assert "inputs.deploy" in deploy["if"]
    assert deploy["permissions"] == {"id-token": "write", "contents": "read"}
    credentials = [
        step
        for step in deploy["steps"]
        if str(step.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")
    ]
    assert len(credentials) == 1
    assert credentials[0]["with"]["role-to-assume"] == "${{ vars.TENANTKIT_DEPLOY_ROLE_ARN }}"
    assert "aws-access-key-id" not in credentials[0]["with"]


def test_ci_workflow() -> None:
    workflow = load(CI)
    assert set(triggers(workflow)) == {"push", "pull_request"}
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    job = workflow["jobs"]["synth-and-snapshot"]
    assert job["runs-on"] == "ubuntu-latest"
    assert [script for _, script in run_scripts(workflow)][-1] == "make test"


@pytest.mark.parametrize("path", [CI, ONBOARD], ids=lambda p: p.name)
def test_workflows_install_nothing_beside_make_setup(path: Path) -> None:
    # make setup brings every tool, PostgreSQL included (pinned npm build): no apt, no sudo,
    # so CI runs the server version the templates deploy, not the runner's.
    for job_id, script in run_scripts(load(path)):
        assert "apt-get" not in script, (job_id, script)
        assert "sudo" not in script, (job_id, script)


def checkout_ref(job: dict[str, Any]) -> Any:
    steps = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert len(steps) == 1, steps
    return steps[0].get("with", {}).get("ref")


def test_onboard_lands_on_main_and_deploys_only_main() -> None:
    # A catalog on another branch lacks the tenants onboarded since it was made: deploying it
    # would offboard them. Both jobs run on main only and check out main's latest.
    jobs = load(ONBOARD)["jobs"]
    main_only = "github.ref == 'refs/heads/main'"
    assert jobs["catalog"]["if"] == main_only
    assert main_only in jobs["deploy"]["if"]
    assert checkout_ref(jobs["catalog"]) == "main"
    assert checkout_ref(jobs["deploy"]) == "main"
    scripts = "\n".join(script for _, script in run_scripts(load(ONBOARD)))
    assert "git push origin HEAD:main" in scripts
    assert scripts.count("git push") == 1
    # a rejected push is retried on main's new latest, onboarding the tenant again there
    land = next(s for job, s in run_scripts(load(ONBOARD)) if "git push" in s)
    retry = land.split("git push origin HEAD:main", 1)[1]
    assert "git reset --hard origin/main" in retry
    assert 'tenantctl onboard "$TENANT_ID" --tier "$TIER" --provision none --json' in retry


@pytest.mark.parametrize("tier", ["silo", "bridge", "pool"])
def test_onboard_deploys_queue_per_stack_across_runs(tmp_path: Path, tier: str) -> None:
    from tenantkit.catalog import load_catalog
    from tenantkit.deployment import tenant_stacks

    concurrency = load(ONBOARD)["jobs"]["deploy"]["concurrency"]
    assert concurrency["cancel-in-progress"] is False
    # The group names the one stack a tenant's deploy touches (every pool tenant's: the pool
    # stack), whichever run it is in.
    assert concurrency["group"] == (
        "tenantkit-deploy-${{ inputs.tier == 'pool' && 'tenantkit-pool' || "
        "format('tenantkit-{0}-{1}', inputs.tier, inputs.tenant_id) }}"
    )
    evaluated = "tenantkit-pool" if tier == "pool" else f"tenantkit-{tier}-newco"
    (tmp_path / "tenants.yaml").write_text(f"tenants:\n  - id: newco\n    tier: {tier}\n")
    tenant = load_catalog(tmp_path / "tenants.yaml").get("newco")
    assert tenant_stacks(tenant) == (evaluated,)
