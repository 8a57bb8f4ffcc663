"""The fleet rollout in AWS, with no AWS call in sight: which hosts migrate which tenants, the
input each host's `<host>-migrate` state machine gets (tenant_constructs/fleet_migration.py),
and what an ended execution says about each tenant.

Hosts are the ones with tenant databases: the bridge cluster (its catalog tenants) and each
silo tenant's own host. The pool database is no target here: its stack's deploy migrates it
(the PoolDatabase resource names the migrations), so it is reported as skipped with the
command that does it.

Waves follow the local semantics as far as separate state machines allow: the canary (by id,
or the first N targets of the whole fleet in catalog order) is wave 1 on the hosts that hold
it, and those hosts run first; the other hosts start only if the canary hosts stayed within
the failure budget, each with what is left of it. Inside one host the state machine counts
failures after each wave, as run_waves does.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lambda_src.tenancy import BRIDGE_HOST, HostNames

from ..catalog import Catalog, Tier
from .rollout import POOL_TARGET, Skipped
from .waves import APPLIED, FAILED, NOT_STARTED, Outcome, TargetResult, Wave, plan_waves

RUNNING = "running"
"""Still migrating when tenantctl stopped following (its --timeout): the execution goes on."""
UNKNOWN = "unknown"
"""The execution ended without saying (aborted, timed out, a Step Functions error)."""
POOL_BY_DEPLOY = (
    "the pool database is migrated by the pool stack's deploy (its PoolDatabase resource "
    "names the migrations): tenantctl deploy pool"
)
BUDGET_EXCEEDED = "FailureBudgetExceeded"
"""The Fail state's error when more tenants failed than the budget allows."""
SUCCEEDED = "SUCCEEDED"


@dataclass(frozen=True)
class RolloutHost:
    """A host whose state machine migrates some of the catalog's tenant databases."""

    name: str
    """HostNames.host: the stack, and the state machine's prefix."""
    tier: Tier
    tenants: tuple[str, ...]
    """In catalog order."""
    deploy: str
    """The tenantctl command that deploys the host (with its migrations and rollout)."""

    @property
    def state_machine(self) -> str:
        """`<host>-migrate`."""
        return HostNames(self.name).migration_state_machine


def rollout_hosts(
    catalog: Catalog, only: Sequence[str] = ()
) -> tuple[list[RolloutHost], list[Skipped]]:
    """The bridge cluster (if it has tenants to migrate), then each silo tenant's host, in
    catalog order; `only` keeps those tenants (a pool tenant's id stands for the pool, which
    is skipped: its deploy migrates it)."""
    wanted = [t for t in catalog.tenants if not only or t.id in only]
    bridge = tuple(t.id for t in wanted if t.tier == "bridge")
    hosts = (
        [RolloutHost(BRIDGE_HOST, "bridge", bridge, "tenantctl deploy bridge")] if bridge else []
    )
    hosts += [
        RolloutHost(t.names.silo_stack_name, "silo", (t.id,), f"tenantctl deploy {t.id}")
        for t in wanted
        if t.tier == "silo"
    ]
    skipped = (
        [Skipped(POOL_TARGET, "pool", POOL_BY_DEPLOY)]
        if any(t.tier == "pool" for t in wanted)
        else []
    )
    return hosts, skipped


@dataclass(frozen=True)
class HostPlan:
    """One host's waves, and whether it waits for the canary hosts."""

    host: RolloutHost
    waves: tuple[Wave, ...]
    phase: int
    """1: it holds a canary (or there is none), 2: it starts after the canary hosts."""


def plan_hosts(
    hosts: Sequence[RolloutHost],
    *,
    canary: Sequence[str] = (),
    canary_count: int = 0,
    group_size: int | None = None,
    parallelism: int = 4,
) -> list[HostPlan]:
    """Each host's waves from the same options as a local rollout (WavePlanError naming the
    option): the fleet's canary on the hosts that hold it, then the rest in groups."""
    fleet = [t for h in hosts for t in h.tenants]
    fleet_waves = plan_waves(
        fleet,
        canary=canary,
        canary_count=canary_count,
        group_size=group_size,
        parallelism=parallelism,
    )
    chosen = set(fleet_waves[0].targets) if (canary or canary_count) and fleet_waves else set()
    plans = []
    for host in hosts:
        own = [t for t in host.tenants if t in chosen]
        waves = plan_waves(
            list(host.tenants), canary=own, group_size=group_size, parallelism=parallelism
        )
        plans.append(HostPlan(host, waves, 1 if own or not chosen else 2))
    return plans


def execution_input(waves: Sequence[Wave], failure_budget: int) -> dict[str, Any]:
    """The state machine's input: `{"waves": [{"tenants", "parallelism"}], "failureBudget"}`."""
    return {
        "waves": [{"tenants": list(w.targets), "parallelism": w.parallelism} for w in waves],
        "failureBudget": failure_budget,
    }


def _json(text: object) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _failure_text(item: Mapping[str, Any]) -> str:
    """A tenant's failure as the provisioner said it: the Lambda error's message (its Cause is
    the function's error document), else Step Functions' error and cause."""
    cause = item.get("cause")
    document = _json(cause)
    if isinstance(document, dict) and isinstance(document.get("errorMessage"), str):
        return str(document["errorMessage"])
    error = item.get("error") or "failed"
    return f"{error}: {cause}" if cause else str(error)


def _outcome(item: Mapping[str, Any]) -> Outcome:
    if item.get("ok") is True:
        raw = item.get("result")
        result: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        applied = result.get("applied")
        current = result.get("current")
        return Outcome(
            tuple(int(v) for v in applied) if isinstance(applied, list) else (),
            int(current) if isinstance(current, int) else None,
        )
    return Outcome(error=_failure_text(item))


def execution_results(document: object) -> dict[str, Outcome] | None:
    """Tenant -> outcome from an execution's output or its FailureBudgetExceeded Cause (both
    `{"failed", "results"}`; a one-result list may come as the object itself, as JSONata
    gives a singleton); None if the document is not that (it cannot be read)."""
    parsed = _json(document)
    items = parsed.get("results") if isinstance(parsed, dict) and "results" in parsed else parsed
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("tenant"), str) for i in items
    ):
        return None
    return {i["tenant"]: _outcome(i) for i in items}


def host_results(
    plan: HostPlan, execution: Mapping[str, Any] | None, *, not_started: str | None = None
) -> list[TargetResult]:
    """Each of the host's tenants after its execution (`describe_execution`'s answer; None: it
    was not started, because of `not_started`)."""
    where = {t: w.number for w in plan.waves for t in w.targets}
    ordered = [t for w in plan.waves for t in w.targets]
    if execution is None:
        return [TargetResult(t, where[t], NOT_STARTED, reason=not_started) for t in ordered]
    status = str(execution.get("status"))
    if status == "RUNNING":
        reason = (
            f"execution {execution.get('executionArn')} was still running when tenantctl "
            "stopped following it; it goes on (tenantctl migrate status --provision aws)"
        )
        return [TargetResult(t, where[t], RUNNING, reason=reason) for t in ordered]
    document = execution.get("output") if status == SUCCEEDED else execution.get("cause")
    budget_exceeded = status == "FAILED" and execution.get("error") == BUDGET_EXCEEDED
    results = execution_results(document) if status == SUCCEEDED or budget_exceeded else None
    if results is None:
        reason = f"execution {status}"
        if execution.get("error"):
            reason += f": {execution.get('error')}"
        if execution.get("cause"):
            reason += f": {str(execution.get('cause'))[:500]}"
        reason += " (tenantctl migrate status --provision aws reads each database's version)"
        return [TargetResult(t, where[t], UNKNOWN, reason=reason) for t in ordered]
    stopped = (
        f"the rollout of {plan.host.name} stopped: more tenants failed than its failure budget"
        if budget_exceeded
        else "its execution did not report it"
    )
    rows = []
    for tenant in ordered:
        outcome = results.get(tenant)
        if outcome is None:
            rows.append(
                TargetResult(
                    tenant,
                    where[tenant],
                    NOT_STARTED if budget_exceeded else UNKNOWN,
                    reason=stopped,
                )
            )
        else:
            rows.append(
                TargetResult(tenant, where[tenant], APPLIED if outcome.ok else FAILED, outcome)
            )
    return rows
