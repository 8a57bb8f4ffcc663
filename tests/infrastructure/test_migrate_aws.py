"""`tenantctl migrate apply --provision aws` against moto's Step Functions: the input each
host's `<host>-migrate` state machine is started with (exactly the planned waves), the
canary hosts first, following an execution to its end and reading each tenant's result from
its output or its failure's Cause, the refusals (a machine not deployed, a rollout already
running, no Region or credentials) and the timeout.

moto cannot run the real definition: it does not evaluate JSONata (the first test shows it).
So each host's machine here is a stand-in registered under the host's name, a JSONPath Pass
or Fail state that ends the execution with the very document the real Done or
BudgetExceeded state produces (`{"failed", "results"}`); what tenantctl sends, starts,
polls and reads is the real API traffic. The real definition's own shape is asserted by the
template tests (test_migration_bundling).
"""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from lambda_src.tenancy import BRIDGE_HOST
from tenant_constructs.fleet_migration import rollout_definition
from tenantkit.catalog import parse_catalog
from tenantkit.cli import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_INVALID, app
from tenantkit.migrate.aws_rollout import (
    HostPlan,
    execution_results,
    host_results,
    plan_hosts,
    rollout_hosts,
)
from tenantkit.migrate.waves import WavePlanError

runner = CliRunner()
REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/tenantkit-migrate"
BRIDGE_MACHINE = f"{BRIDGE_HOST}-migrate"
SILO_MACHINE = "tenantkit-silo-solo-migrate"
CATALOG = """\
schema:
  directory: migrations
tenants:
  - {id: alpha, tier: bridge}
  - {id: bravo, tier: bridge}
  - {id: charlie, tier: bridge}
  - {id: solo, tier: silo}
  - {id: shared-one, tier: pool}
"""
V1 = "CREATE TABLE items (tenant_id text NOT NULL, id bigint, PRIMARY KEY (tenant_id, id));\n"


def applied(tenant: str, versions: list[int], current: int) -> dict[str, Any]:
    """A tenant's result as the real state machine records a successful migrate request."""
    return {
        "tenant": tenant,
        "ok": True,
        "result": {"tenant": tenant, "applied": versions, "current": current},
    }


def failed(tenant: str, message: str) -> dict[str, Any]:
    """A tenant's result as the real state machine's Catch records the provisioner's error."""
    cause = {"errorMessage": message, "errorType": "TenantkitError", "stackTrace": ["..."]}
    return {"tenant": tenant, "ok": False, "error": "TenantkitError", "cause": json.dumps(cause)}


def succeeds_with(*results: dict[str, Any]) -> dict[str, Any]:
    """A stand-in ending as the real Done state does."""
    output = {"failed": sum(not r["ok"] for r in results), "results": list(results)}
    return {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "Result": output, "End": True}}}


def exceeds_budget_with(*results: dict[str, Any]) -> dict[str, Any]:
    """A stand-in ending as the real BudgetExceeded state does."""
    cause = {"failed": sum(not r["ok"] for r in results), "results": list(results)}
    fail = {"Type": "Fail", "Error": "FailureBudgetExceeded", "Cause": json.dumps(cause)}
    return {"StartAt": "BudgetExceeded", "States": {"BudgetExceeded": fail}}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def executing(aws_env: None) -> Iterator[Any]:
    """moto's Step Functions running the state machines it is given (JSONPath only)."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        yield boto3.client("stepfunctions", region_name=REGION)


@pytest.fixture
def static(aws_env: None) -> Iterator[Any]:
    """moto's Step Functions as it is by default: a started execution stays RUNNING."""
    with mock_aws():
        yield boto3.client("stepfunctions", region_name=REGION)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "tenants.yaml").write_text(CATALOG)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "V1__items.sql").write_text(V1)
    return tmp_path


def deploy(sfn: Any, name: str, definition: dict[str, Any]) -> str:
    return str(
        sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE)[
            "stateMachineArn"
        ]
    )


def tenantctl(workdir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    if args[0] == "apply" and "--timeout" not in args:
        args = (*args, "--timeout", "20")  # a regression fails the test, never hangs it
    result = runner.invoke(
        app,
        [
            "migrate",
            *args,
            "--provision",
            "aws",
            "--catalog",
            str(workdir / "tenants.yaml"),
            "--poll-interval",
            "0.05",
            "--json",
        ],
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.output  # --json is one document
    return result.exit_code, json.loads(lines[0])


def executions(sfn: Any, arn: str) -> list[dict[str, Any]]:
    listed = sfn.list_executions(stateMachineArn=arn)["executions"]
    return [sfn.describe_execution(executionArn=e["executionArn"]) for e in listed]


def by_target(document: dict[str, Any], field: str) -> dict[str, Any]:
    return {t["target"]: t[field] for t in document["targets"]}


def test_moto_cannot_run_the_real_definition_so_the_machines_here_are_stand_ins(
    executing: Any,
) -> None:
    # a tripwire: once moto evaluates JSONata, these tests should run the real definition
    function = "arn:aws:lambda:us-east-1:123456789012:function:tenantkit-bridge-provisioner"
    arn = deploy(executing, "real", rollout_definition(function))
    started = executing.start_execution(
        stateMachineArn=arn, input=json.dumps({"waves": [], "failureBudget": 0})
    )
    for _ in range(100):
        answer = executing.describe_execution(executionArn=started["executionArn"])
        if answer["status"] != "RUNNING":
            break
        time.sleep(0.05)
    assert answer["status"] == "FAILED"
    assert answer["error"] == "States.Runtime"


def test_apply_starts_each_host_with_its_planned_waves_the_canary_host_first(
    executing: Any, workdir: Path
) -> None:
    bridge = deploy(
        executing,
        BRIDGE_MACHINE,
        succeeds_with(
            applied("bravo", [1], 1), applied("alpha", [1], 1), applied("charlie", [], 1)
        ),
    )
    silo = deploy(executing, SILO_MACHINE, succeeds_with(applied("solo", [1], 1)))

    code, document = tenantctl(
        workdir, "apply", "--canary", "bravo", "--group-size", "1", "--parallelism", "2"
    )

    assert code == 0, document
    (bridge_run,) = executions(executing, bridge)
    (silo_run,) = executions(executing, silo)
    # exactly the planned waves: the canary alone, then groups of one, on the bridge cluster
    assert json.loads(bridge_run["input"]) == {
        "waves": [
            {"tenants": ["bravo"], "parallelism": 2},
            {"tenants": ["alpha"], "parallelism": 2},
            {"tenants": ["charlie"], "parallelism": 2},
        ],
        "failureBudget": 0,
    }
    assert json.loads(silo_run["input"]) == {
        "waves": [{"tenants": ["solo"], "parallelism": 2}],
        "failureBudget": 0,
    }
    # the silo holds no canary: it starts once the canary's host has ended
    assert silo_run["startDate"] >= bridge_run["stopDate"]
    assert [(h["host"], h["phase"], h["status"]) for h in document["hosts"]] == [
        (BRIDGE_HOST, 1, "SUCCEEDED"),
        ("tenantkit-silo-solo", 2, "SUCCEEDED"),
    ]
    assert by_target(document, "status") == dict.fromkeys(
        ["bravo", "alpha", "charlie", "solo"], "applied"
    )
    assert by_target(document, "wave") == {"bravo": 1, "alpha": 2, "charlie": 3, "solo": 1}
    assert by_target(document, "applied")["charlie"] == []
    assert set(by_target(document, "current").values()) == {1}
    (pool,) = document["skipped"]
    assert pool["target"] == "(pool)"
    assert "tenantctl deploy pool" in pool["reason"]


def test_a_rollout_over_its_budget_reports_each_failure_and_starts_no_later_host(
    executing: Any, workdir: Path
) -> None:
    message = (
        "tenant bravo: migration V1__items.sql failed, the database stays at version None: "
        'relation "items" already exists'
    )
    deploy(executing, BRIDGE_MACHINE, exceeds_budget_with(failed("bravo", message)))
    silo = deploy(executing, SILO_MACHINE, succeeds_with(applied("solo", [1], 1)))

    code, document = tenantctl(workdir, "apply", "--canary", "bravo")

    assert code == EXIT_FAILED
    assert by_target(document, "status") == {
        "bravo": "failed",
        "alpha": "not started",
        "charlie": "not started",
        "solo": "not started",
    }
    assert by_target(document, "error")["bravo"] == message
    assert "stopped" in by_target(document, "reason")["alpha"]
    assert (
        "1 failure(s), more than the failure budget of 0" in by_target(document, "reason")["solo"]
    )
    assert executions(executing, silo) == []
    assert "failed: bravo" in document["error"]


def test_a_tenant_failing_within_the_budget_is_reported_and_the_exit_is_1(
    executing: Any, workdir: Path
) -> None:
    deploy(
        executing,
        BRIDGE_MACHINE,
        succeeds_with(
            applied("alpha", [1], 1),
            failed("bravo", "tenant bravo: could not connect"),
            applied("charlie", [1], 1),
        ),
    )
    deploy(executing, SILO_MACHINE, succeeds_with(applied("solo", [1], 1)))

    code, document = tenantctl(workdir, "apply", "--failure-budget", "1")

    assert code == EXIT_FAILED
    assert by_target(document, "status")["bravo"] == "failed"
    assert by_target(document, "error")["bravo"] == "tenant bravo: could not connect"
    assert document["hosts"][0]["input"]["failureBudget"] == 1


def test_tenants_left_behind_the_directory_name_the_host_to_deploy(
    executing: Any, workdir: Path
) -> None:
    # the deployed provisioner carries V1 only; the directory has V2 too
    (workdir / "migrations" / "V2__notes.sql").write_text("ALTER TABLE items ADD COLUMN n text;\n")
    deploy(
        executing,
        BRIDGE_MACHINE,
        succeeds_with(*(applied(t, [], 1) for t in ("alpha", "bravo", "charlie"))),
    )
    deploy(executing, SILO_MACHINE, succeeds_with(applied("solo", [], 1)))

    code, document = tenantctl(workdir, "apply")

    assert code == EXIT_FAILED
    assert [s["host"] for s in document["stale_hosts"]] == [BRIDGE_HOST, "tenantkit-silo-solo"]
    assert "tenantctl deploy bridge" in document["error"]
    assert "tenantctl deploy solo" in document["error"]


def test_a_second_apply_is_refused_while_a_hosts_execution_is_running_naming_it(
    static: Any, workdir: Path
) -> None:
    bridge = deploy(static, BRIDGE_MACHINE, succeeds_with())
    deploy(static, SILO_MACHINE, succeeds_with())
    first = static.start_execution(stateMachineArn=bridge, name="first-rollout", input="{}")

    code, document = tenantctl(workdir, "apply")

    assert code == EXIT_INVALID  # refused, as a second local apply is
    assert "a rollout is already running, nothing was started" in document["error"]
    assert (
        f"host {BRIDGE_HOST}: execution first-rollout ({first['executionArn']}"
        in (document["error"])
    )
    assert [e["name"] for e in static.list_executions(stateMachineArn=bridge)["executions"]] == [
        "first-rollout"
    ]


def test_a_state_machine_not_deployed_is_exit_3_naming_the_host_and_the_deploy(
    static: Any, workdir: Path
) -> None:
    silo = deploy(static, SILO_MACHINE, succeeds_with())

    code, document = tenantctl(workdir, "apply")

    assert code == EXIT_ENVIRONMENT
    assert (
        f"host {BRIDGE_HOST}: state machine {BRIDGE_MACHINE} is not deployed" in (document["error"])
    )
    assert "tenantctl deploy bridge" in document["error"]
    assert static.list_executions(stateMachineArn=silo)["executions"] == []


def test_the_timeout_ends_the_following_and_the_hosts_after_the_canary_do_not_start(
    static: Any, workdir: Path
) -> None:
    deploy(static, BRIDGE_MACHINE, succeeds_with())
    silo = deploy(static, SILO_MACHINE, succeeds_with())

    code, document = tenantctl(workdir, "apply", "--canary", "alpha", "--timeout", "1")

    assert code == EXIT_FAILED
    statuses = by_target(document, "status")
    assert statuses == {
        "alpha": "running",
        "bravo": "running",
        "charlie": "running",
        "solo": "not started",
    }
    assert "--timeout of 1 s reached" in by_target(document, "reason")["solo"]
    assert executions(static, silo) == []


def test_without_a_canary_every_host_starts_at_once_and_the_timeout_reports_them_running(
    static: Any, workdir: Path
) -> None:
    bridge = deploy(static, BRIDGE_MACHINE, succeeds_with())
    silo = deploy(static, SILO_MACHINE, succeeds_with())

    code, document = tenantctl(workdir, "apply", "--timeout", "1")

    assert code == EXIT_FAILED
    assert by_target(document, "status") == dict.fromkeys(
        ["alpha", "bravo", "charlie", "solo"], "running"
    )
    (running,) = executions(static, bridge)
    assert running["executionArn"] in by_target(document, "reason")["alpha"]
    assert "goes on" in by_target(document, "reason")["alpha"]
    assert len(executions(static, silo)) == 1


def test_an_aborted_execution_leaves_its_tenants_unknown_pointing_at_status(static: Any) -> None:
    arn = deploy(static, BRIDGE_MACHINE, succeeds_with())
    started = static.start_execution(stateMachineArn=arn, name="stopped", input="{}")
    static.stop_execution(executionArn=started["executionArn"], error="Operator")
    catalog = parse_catalog({"tenants": [{"id": "alpha", "tier": "bridge"}]})
    (plan,) = plan_hosts(rollout_hosts(catalog)[0])

    (result,) = host_results(plan, static.describe_execution(executionArn=started["executionArn"]))

    assert result.status == "unknown"
    assert result.reason is not None
    assert "execution ABORTED" in result.reason
    assert "tenantctl migrate status --provision aws" in result.reason


def test_no_region_is_exit_3(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(workdir / "no-config"))

    code, document = tenantctl(workdir, "apply")

    assert code == EXIT_ENVIRONMENT
    assert "no AWS Region" in document["error"]


def test_no_credentials_is_exit_3_before_any_call(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(workdir / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)

    code, document = tenantctl(workdir, "apply")

    assert code == EXIT_ENVIRONMENT
    assert "no AWS credentials" in document["error"]


def test_a_lint_finding_refuses_before_anything_is_asked_of_aws(workdir: Path) -> None:
    (workdir / "migrations" / "V2__index.sql").write_text("CREATE INDEX i ON items (id);\n")

    code, document = tenantctl(workdir, "apply")

    assert code == EXIT_INVALID
    assert "no database was touched" in document["error"]


def test_bad_wave_options_are_refused_naming_the_option(workdir: Path) -> None:
    code, document = tenantctl(workdir, "apply", "--canary", "nobody")

    assert code == EXIT_INVALID
    assert "--canary names targets that are not in the rollout" in document["error"]


# -- the pure parts: hosts, waves, and an execution's end -------------------------------------


def test_the_hosts_are_the_bridge_cluster_then_each_silo_and_the_pool_is_skipped() -> None:
    catalog = parse_catalog(
        {
            "tenants": [
                {"id": "s1", "tier": "silo"},
                {"id": "b1", "tier": "bridge"},
                {"id": "p1", "tier": "pool"},
                {"id": "b2", "tier": "bridge"},
            ]
        }
    )

    hosts, skipped = rollout_hosts(catalog)

    assert [(h.name, h.tenants, h.state_machine) for h in hosts] == [
        (BRIDGE_HOST, ("b1", "b2"), f"{BRIDGE_HOST}-migrate"),
        ("tenantkit-silo-s1", ("s1",), "tenantkit-silo-s1-migrate"),
    ]
    assert [s.label for s in skipped] == ["(pool)"]
    assert rollout_hosts(catalog, ["b2"])[0][0].tenants == ("b2",)
    assert rollout_hosts(catalog, ["b2"])[1] == []


def test_a_canary_count_is_the_fleets_first_targets_and_their_hosts_go_first() -> None:
    catalog = parse_catalog(
        {
            "tenants": [
                {"id": "s1", "tier": "silo"},
                {"id": "b1", "tier": "bridge"},
                {"id": "b2", "tier": "bridge"},
                {"id": "s2", "tier": "silo"},
            ]
        }
    )
    hosts, _ = rollout_hosts(catalog)  # bridge (b1, b2), then s1, s2: the fleet's order

    plans = plan_hosts(hosts, canary_count=1, parallelism=3)

    assert [(p.host.name, p.phase, [w.targets for w in p.waves]) for p in plans] == [
        (BRIDGE_HOST, 1, [("b1",), ("b2",)]),
        ("tenantkit-silo-s1", 2, [("s1",)]),
        ("tenantkit-silo-s2", 2, [("s2",)]),
    ]
    assert all(w.parallelism == 3 for p in plans for w in p.waves)
    assert {p.phase for p in plan_hosts(hosts)} == {1}  # no canary: all at once
    with pytest.raises(WavePlanError, match="--group-size"):
        plan_hosts(hosts, group_size=0)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        # the whole document, and a single result as JSONata may give it
        (json.dumps({"failed": 0, "results": [applied("a", [1, 2], 2)]}), {"a": ((1, 2), 2)}),
        (json.dumps({"failed": 0, "results": applied("a", [], 2)}), {"a": ((), 2)}),
        # a cause of failures only (a rollout started by an older definition)
        (json.dumps(failed("a", "tenant a: boom")), {"a": "tenant a: boom"}),
        # a Step Functions error, not the provisioner's: its error and cause as they are
        (
            json.dumps(
                {"results": [{"tenant": "a", "ok": False, "error": "States.Timeout", "cause": ""}]}
            ),
            {"a": "States.Timeout"},
        ),
        ("not json", None),
        (json.dumps({"results": [{"no": "tenant"}]}), None),
    ],
)
def test_an_executions_document_is_read_per_tenant(document: str, expected: Any) -> None:
    results = execution_results(document)

    if expected is None:
        assert results is None
        return
    assert results is not None
    shown = {t: (o.applied, o.current) if o.ok else o.error for t, o in results.items()}
    assert shown == expected


def test_a_host_plan_places_every_tenant_in_its_wave_when_not_started() -> None:
    catalog = parse_catalog(
        {"tenants": [{"id": "aa", "tier": "bridge"}, {"id": "bb", "tier": "bridge"}]}
    )
    (plan,) = plan_hosts(rollout_hosts(catalog)[0], group_size=1)
    assert isinstance(plan, HostPlan)

    results = host_results(plan, None, not_started="because")

    assert [(r.target, r.wave, r.status, r.reason) for r in results] == [
        ("aa", 1, "not started", "because"),
        ("bb", 2, "not started", "because"),
    ]


def test_without_json_apply_prints_each_tenant_and_each_hosts_execution(
    executing: Any, workdir: Path
) -> None:
    deploy(
        executing,
        BRIDGE_MACHINE,
        succeeds_with(*(applied(t, [1], 1) for t in ("alpha", "bravo", "charlie"))),
    )
    deploy(executing, SILO_MACHINE, succeeds_with(applied("solo", [1], 1)))

    result = runner.invoke(
        app,
        [
            "migrate",
            "apply",
            "--provision",
            "aws",
            "--catalog",
            str(workdir / "tenants.yaml"),
            "--poll-interval",
            "0.05",
            "--timeout",
            "20",
        ],
        env={"COLUMNS": "200"},
    )

    assert result.exit_code == 0, result.output
    assert f"{BRIDGE_MACHINE}: SUCCEEDED, execution arn:aws:states:" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "charlie" in line)
    assert "applied" in row
    assert BRIDGE_HOST in row
    assert "skipped (pool) (pool): the pool database is migrated by the pool stack's deploy" in (
        " ".join(result.stdout.split())
    )
