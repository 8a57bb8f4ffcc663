"""`tenantctl migrate apply|status|plan --provision aws`: the rollout on each host's own
`<host>-migrate` state machine (inside the VPC), started and followed from here, and the
deployed databases' schema versions read through the hosts' admin secrets.

apply: lint first (exit 2, nothing started); every host's state machine must be deployed (exit
3 naming the host and its deploy) and none may be running an execution (refused, exit 2,
naming it, as a second local apply is); then the hosts
holding the canary start, the others after them if the failure budget allows; each execution
is followed (describe_execution every --poll-interval, bounded by --timeout) and its end read
per tenant. The pool database is migrated by the pool stack's deploy and is reported skipped.
"""

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.table import Table

from lambda_src.core.connection import ssl_root_cert_from_env
from lambda_src.core.errors import TenantkitError
from lambda_src.migrations.files import Migration

from ..catalog import Catalog
from ..migrate.aws_api import (
    Followed,
    RolloutEnvironmentError,
    StepFunctions,
    aws_session,
    deployed_targets,
    execution_name,
    follow,
)
from ..migrate.aws_rollout import (
    UNKNOWN,
    HostPlan,
    RolloutHost,
    execution_input,
    host_results,
    plan_hosts,
    rollout_hosts,
)
from ..migrate.waves import APPLIED, FAILED, NOT_STARTED, Wave, WavePlanError
from .local_commands import progress
from .migrate_report import print_skipped, rollout_cells, status_json, statuses, version
from .output import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_INVALID, err, fail, out

AWS = {"provision": "aws"}


def _environment(error: TenantkitError, as_json: bool) -> NoReturn:
    fail(EXIT_ENVIRONMENT, str(error), as_json, provision="aws")


def _say(as_json: bool, text: str) -> None:
    """A line of progress on stderr (not with --json)."""
    if not as_json:
        err.print(text, highlight=False, soft_wrap=True)


def apply_aws(
    loaded: Catalog,
    directory: Path,
    migrations: Sequence[Migration],
    *,
    canary: Sequence[str],
    canary_count: int,
    group_size: int | None,
    parallelism: int,
    failure_budget: int,
    tenants: Sequence[str],
    region: str | None,
    timeout_s: int,
    poll_s: float,
    as_json: bool,
) -> None:
    """Start and follow each host's rollout (the module's docstring); report every tenant."""
    hosts, skipped = rollout_hosts(loaded, tenants)
    try:
        if failure_budget < 0:
            raise WavePlanError(f"--failure-budget must be 0 or more, not {failure_budget}")
        plans = plan_hosts(
            hosts,
            canary=canary,
            canary_count=canary_count,
            group_size=group_size,
            parallelism=parallelism,
        )
    except WavePlanError as error:
        fail(EXIT_INVALID, str(error), as_json, provision="aws")
    latest = migrations[-1].version if migrations else None
    started: dict[str, str] = {}
    outcome: dict[str, dict[str, Any]] = {}
    not_started: dict[str, str] = {}
    environment_error: str | None = None
    if plans:
        try:
            api = StepFunctions(aws_session(region))
            for plan in plans:
                api.require_deployed(plan.host)
            busy = [(plan.host, e) for plan in plans for e in api.running(plan.host)]
        except RolloutEnvironmentError as error:
            _environment(error, as_json)
        if busy:
            running = "; ".join(
                f"host {host.name}: execution {e['name']} ({e['executionArn']}, started "
                f"{e['startDate']:%Y-%m-%d %H:%M:%S %Z})"
                for host, e in busy
            )
            # As a second local apply is: refused at once (exit 2), naming what runs.
            fail(
                EXIT_INVALID,
                f"a rollout is already running, nothing was started: {running}; wait for it "
                "to end (tenantctl migrate status --provision aws) or stop it",
                as_json,
                label="refused",
                provision="aws",
            )
        deadline = time.monotonic() + timeout_s
        failures = 0
        for phase in (1, 2):
            batch = [p for p in plans if p.phase == phase]
            if not batch:
                continue
            if failures > failure_budget:
                for plan in batch:
                    not_started[plan.host.name] = (
                        f"the canary hosts' rollout had {failures} failure(s), more than the "
                        f"failure budget of {failure_budget}"
                    )
                continue
            try:
                followed = _run_phase(
                    api, batch, failure_budget - failures, deadline, poll_s, as_json, started
                )
            except RolloutEnvironmentError as error:
                environment_error = str(error)
                break
            outcome.update(followed.descriptions)
            failures += sum(
                r.status == FAILED
                for plan in batch
                for r in host_results(plan, outcome.get(plan.host.name))
            )
            if followed.timed_out:
                for plan in plans:
                    if plan.phase > phase:
                        not_started[plan.host.name] = f"--timeout of {timeout_s} s reached"
                break
    document = _apply_document(
        plans, directory, latest, started, outcome, not_started, skipped, failure_budget
    )
    if environment_error is not None:
        fail(
            EXIT_ENVIRONMENT,
            environment_error + _started_note(started),
            as_json,
            **document,
        )
    if not as_json:
        print_aws_rollout(document)
        print_skipped(skipped)
    if not document["ok"]:
        fail(EXIT_FAILED, _not_ok_message(document), as_json, label="migrate apply", **document)
    if as_json:
        print(json.dumps(document))


def _run_phase(
    api: StepFunctions,
    batch: Sequence[HostPlan],
    budget: int,
    deadline: float,
    poll_s: float,
    as_json: bool,
    started: dict[str, str],
) -> Followed:
    """Start each host's execution, then follow them all."""
    executions: dict[str, tuple[RolloutHost, str]] = {}
    for plan in batch:
        arn = api.start(plan.host, execution_name(), execution_input(plan.waves, budget))
        started[plan.host.name] = arn
        executions[plan.host.name] = (plan.host, arn)
        _say(as_json, f"started {plan.host.state_machine}: {arn}")

    with progress(len(executions), "migrating in AWS", as_json, lambda host: host.name) as done:

        def ended(host: RolloutHost, answer: dict[str, Any]) -> None:
            done(host)
            _say(as_json, f"{host.state_machine}: {answer.get('status')}")

        return follow(api, executions, deadline=deadline, poll_s=poll_s, ended=ended)


def _started_note(started: dict[str, str]) -> str:
    if not started:
        return " (nothing was started)"
    return " (started, and running on in AWS: " + ", ".join(started.values()) + ")"


def _apply_document(
    plans: Sequence[HostPlan],
    directory: Path,
    latest: int | None,
    started: dict[str, str],
    outcome: dict[str, dict[str, Any]],
    not_started: dict[str, str],
    skipped: Sequence[Any],
    failure_budget: int,
) -> dict[str, Any]:
    hosts_json = []
    targets_json = []
    behind: list[str] = []
    for plan in plans:
        name = plan.host.name
        answer = outcome.get(name)
        if answer is None and name in started:  # started, never described (an error)
            answer = {"status": UNKNOWN, "executionArn": started[name]}
        reason = not_started.get(name, "not started: an earlier host's error")
        results = host_results(plan, answer, not_started=reason)
        hosts_json.append(
            {
                "host": name,
                "tier": plan.host.tier,
                "state_machine": plan.host.state_machine,
                "phase": plan.phase,
                "execution": started.get(name),
                "status": (answer or {}).get("status", NOT_STARTED),
                "error": (answer or {}).get("error"),
                "input": execution_input(plan.waves, failure_budget),
            }
        )
        for r in results:
            targets_json.append({**r.as_json(), "tier": plan.host.tier, "host": name})
            current = r.outcome.current if r.outcome else None
            if r.status == APPLIED and latest is not None and (current or 0) < latest:
                behind.append(name)
    stale = sorted(set(behind))
    ok = all(t["status"] == APPLIED for t in targets_json) and not stale
    return {
        "ok": ok,
        **AWS,
        "directory": str(directory),
        "latest": latest,
        "hosts": hosts_json,
        "targets": targets_json,
        "stale_hosts": [
            {
                "host": p.host.name,
                "reason": (
                    f"its provisioner carries older migrations than {directory} (newest "
                    f"{latest}): deploy it (`{p.host.deploy}`), then apply again"
                ),
            }
            for p in plans
            if p.host.name in stale
        ],
        "skipped": [s.as_json() for s in skipped],
    }


def _not_ok_message(document: dict[str, Any]) -> str:
    by_status: dict[str, list[str]] = {}
    for t in document["targets"]:
        if t["status"] != APPLIED:
            by_status.setdefault(t["status"], []).append(t["target"])
    parts = [f"{status}: {', '.join(names)}" for status, names in by_status.items()]
    parts += [f"{s['host']}: {s['reason']}" for s in document["stale_hosts"]]
    return "; ".join(parts)


def print_aws_rollout(document: dict[str, Any]) -> None:
    """Each tenant's result and each host's execution."""
    table = Table(
        title=f"migrate apply --provision aws: {document['directory']} "
        f"(latest {version(document['latest'])})"
    )
    for column in ("target", "tier", "host", "wave", "result", "applied", "version"):
        table.add_column(column)
    for t in document["targets"]:
        table.add_row(t["target"], t["tier"], t["host"], str(t["wave"]), *rollout_cells(t))
    out.print(table)
    for host in document["hosts"]:
        out.print(
            f"{host['state_machine']}: {host['status']}"
            + (f" ({host['error']})" if host["error"] else "")
            + (f", execution {host['execution']}" if host["execution"] else ""),
            highlight=False,
            soft_wrap=True,
        )
    for stale in document["stale_hosts"]:
        out.print(f"{stale['host']}: {stale['reason']}", highlight=False, soft_wrap=True)


def read_deployed_rows(
    loaded: Catalog,
    migrations: Sequence[Migration],
    *,
    region: str | None,
    connect_timeout: int,
    tenants: Sequence[str],
    as_json: bool,
) -> list[dict[str, Any]]:
    """Each deployed target's status (status_json rows, in catalog order, the pool last), read
    as its host's admin; a host whose secret cannot be read gives its targets' error. Exit 3
    with no Region or CA bundle."""
    try:
        session = aws_session(region)
        ssl_root_cert = ssl_root_cert_from_env(os.environ)
        deployed = deployed_targets(
            loaded,
            session,
            ssl_root_cert=ssl_root_cert,
            connect_timeout_s=connect_timeout,
            only=tenants,
        )
    except TenantkitError as error:
        _environment(error, as_json)
    rows = {
        t.label: status_json(t, s)
        for t, s in zip(deployed.targets, statuses(deployed.targets, migrations), strict=True)
    }
    for label, (tier, database, reason) in deployed.unreadable.items():
        rows[label] = {
            "target": label,
            "tier": tier,
            "database": database,
            "current": None,
            "pending": [],
            "drift": [],
            "error": f"its host's admin secret could not be read: {reason}",
        }
    order = [t.id for t in loaded.tenants if t.tier != "pool"] + ["(pool)"]
    return [rows[label] for label in order if label in rows]


def last_rollouts(
    loaded: Catalog, region: str | None, tenants: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each host's newest execution (or why it cannot be told), and tenant -> the error of
    its failure in that execution."""
    hosts, _ = rollout_hosts(loaded, tenants)
    rollouts: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    try:
        api = StepFunctions(aws_session(region))
    except RolloutEnvironmentError as error:
        return [{"host": h.name, "error": str(error)} for h in hosts], errors
    for host in hosts:
        try:
            answer = api.last_execution(host)
        except RolloutEnvironmentError as error:
            rollouts.append({"host": host.name, "error": str(error)})
            continue
        entry: dict[str, Any] = {
            "host": host.name,
            "state_machine": host.state_machine,
            "execution": None,
            "status": None,
            "started": None,
            "stopped": None,
            "error": None,
        }
        if answer is not None:
            entry.update(
                execution=answer.get("executionArn"),
                status=answer.get("status"),
                started=_when(answer.get("startDate")),
                stopped=_when(answer.get("stopDate")),
                error=answer.get("error"),
            )
            for r in host_results(_plan_of(host, answer), answer):
                if r.status == FAILED and r.outcome is not None and r.outcome.error:
                    errors[r.target] = r.outcome.error
        rollouts.append(entry)
    return rollouts, errors


def _when(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else None


def _plan_of(host: RolloutHost, answer: dict[str, Any]) -> HostPlan:
    """The waves an execution was started with (its input), to place each tenant in one."""
    try:
        document = json.loads(str(answer.get("input") or "{}"))
        waves = tuple(
            Wave(n, f"wave {n}", tuple(w["tenants"]), int(w.get("parallelism", 1)))
            for n, w in enumerate(document.get("waves", []), start=1)
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        waves = ()
    return HostPlan(host, waves, 1)


def status_aws(
    loaded: Catalog,
    directory: Path,
    migrations: Sequence[Migration],
    *,
    region: str | None,
    connect_timeout: int,
    tenants: Sequence[str],
    as_json: bool,
) -> dict[str, Any]:
    """The deployed fleet's versions, pending migrations and drift, and each host's last
    rollout (the cause of a tenant's failure in it, if the tenant is still behind)."""
    rows = read_deployed_rows(
        loaded,
        migrations,
        region=region,
        connect_timeout=connect_timeout,
        tenants=tenants,
        as_json=as_json,
    )
    rollouts, errors = last_rollouts(loaded, region, tenants)
    for row in rows:
        behind = bool(row["error"]) or bool(row["pending"])
        row["last_error"] = errors.get(row["target"]) if behind else None
    latest = migrations[-1].version if migrations else None
    at_latest = [r for r in rows if not r["error"] and not r["pending"] and not r["drift"]]
    return {
        "ok": len(at_latest) == len(rows),
        **AWS,
        "directory": str(directory),
        "latest": latest,
        "at_latest": len(at_latest),
        "targets": rows,
        "rollouts": rollouts,
        "skipped": [],
    }


def print_rollouts(rollouts: Sequence[dict[str, Any]]) -> None:
    """One line per host: its last rollout, or why it cannot be told."""
    for r in rollouts:
        if r.get("state_machine") is None:
            text = f"{r['host']}: last rollout unknown: {r['error']}"
        elif r["execution"] is None:
            text = f"{r['state_machine']}: never run"
        else:
            text = f"{r['state_machine']}: last execution {r['status']}, started {r['started']}"
            text += f" ({r['error']})" if r["error"] else ""
        out.print(text, highlight=False, soft_wrap=True)
