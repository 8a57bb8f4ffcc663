"""A fleet rollout in waves, with no database in sight: which targets go in which wave (a canary
first, then groups), and running the waves with a bounded thread pool, stopping once more
targets failed than the failure budget allows (checked after each wave, as the host's state
machine in AWS does).

A target is a label (a tenant id, `(pool)`); `apply_one(target)` does the work and returns its
Outcome. An exception it raises is that target's failure, never the rollout's crash.
"""

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

CANARY = "canary"

APPLIED = "applied"
"""The target's pending migrations ran (possibly none: it was up to date)."""
FAILED = "failed"
NOT_STARTED = "not started"


class WavePlanError(ValueError):
    """The wave options do not fit the targets; the message names the option."""


@dataclass(frozen=True)
class Wave:
    """Targets applied together, at most `parallelism` at a time."""

    number: int
    """1 for the first wave (the canary, if there is one)."""
    name: str
    """`canary`, or `wave <number>`."""
    targets: tuple[str, ...]
    parallelism: int


@dataclass(frozen=True)
class Outcome:
    """What applying to one target did: the versions it applied and where it now is, or why
    it failed (with the version it stayed at)."""

    applied: tuple[int, ...] = ()
    current: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the target reached the end of its migrations."""
        return self.error is None


@dataclass(frozen=True)
class TargetResult:
    """One target after the rollout."""

    target: str
    wave: int
    status: str
    """applied, failed or not started."""
    outcome: Outcome | None = None
    """None when not started."""
    reason: str | None = None
    """Why it was not started."""

    def as_json(self) -> dict[str, object]:
        """The `--json` shape of one target."""
        outcome = self.outcome or Outcome()
        return {
            "target": self.target,
            "wave": self.wave,
            "status": self.status,
            "applied": list(outcome.applied),
            "current": outcome.current,
            "error": outcome.error,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class FleetResult:
    """Every target's result in wave order (the canary first, then the given order), and how
    far the waves got."""

    targets: tuple[TargetResult, ...]
    waves: tuple[Wave, ...]
    waves_run: int
    stopped: str | None
    """Why the rollout stopped: more targets failed than the budget allows (None: it did not)."""

    @property
    def failed(self) -> tuple[TargetResult, ...]:
        """The targets that failed."""
        return tuple(t for t in self.targets if t.status == FAILED)

    @property
    def ok(self) -> bool:
        """Every target applied."""
        return all(t.status == APPLIED for t in self.targets)


def plan_waves(
    targets: Sequence[str],
    *,
    canary: Sequence[str] = (),
    canary_count: int = 0,
    group_size: int | None = None,
    parallelism: int = 4,
) -> tuple[Wave, ...]:
    """The waves: the canary (the `canary` targets, or the first `canary_count`) first, then
    the rest in their order, `group_size` per wave (None: all in one wave)."""
    if len(set(targets)) != len(targets):
        raise WavePlanError("a target is listed twice")
    if canary and canary_count:
        raise WavePlanError("give --canary or --canary-count, not both")
    if canary_count < 0:
        raise WavePlanError(f"--canary-count must be 0 or more, not {canary_count}")
    if group_size is not None and group_size < 1:
        raise WavePlanError(f"--group-size must be 1 or more, not {group_size}")
    if parallelism < 1:
        raise WavePlanError(f"--parallelism must be 1 or more, not {parallelism}")
    unknown = [t for t in canary if t not in targets]
    if unknown:
        raise WavePlanError(f"--canary names targets that are not in the rollout: {unknown}")
    chosen = set(canary) if canary else set(targets[:canary_count])
    first = [t for t in targets if t in chosen]
    rest = [t for t in targets if t not in chosen]
    size = group_size or max(len(rest), 1)
    groups = ([first] if first else []) + [rest[i : i + size] for i in range(0, len(rest), size)]
    return tuple(
        Wave(n, CANARY if first and n == 1 else f"wave {n}", tuple(group), parallelism)
        for n, group in enumerate(groups, start=1)
    )


def _outcome_of(apply_one: Callable[[str], Outcome], target: str) -> Outcome:
    try:
        return apply_one(target)
    except Exception as error:  # one target's failure, whatever it is
        return Outcome(error=str(error) or type(error).__name__)


def run_waves(
    waves: Sequence[Wave],
    apply_one: Callable[[str], Outcome],
    *,
    failure_budget: int = 0,
    progress: Callable[[TargetResult], None] = lambda _result: None,
) -> FleetResult:
    """Run the waves in order, each at most its parallelism at a time. A started wave runs
    every one of its targets; after each wave the failures so far are counted, and more than
    `failure_budget` stops the rollout: no later wave starts. The host's state machine in AWS
    (tenant_constructs/fleet_migration.py) does the same, so a canary or a small
    `group_size` is what bounds how many databases one bad migration reaches. `progress`
    hears of each target as it finishes (on this thread)."""
    if failure_budget < 0:
        raise WavePlanError(f"--failure-budget must be 0 or more, not {failure_budget}")
    results: dict[str, TargetResult] = {}
    failures = 0
    waves_run = 0
    stopped: str | None = None
    for wave in waves:
        if stopped is not None:
            for target in wave.targets:
                results[target] = TargetResult(target, wave.number, NOT_STARTED, reason=stopped)
            continue
        waves_run += 1
        queue = list(wave.targets)
        running: dict[Future[Outcome], str] = {}
        with ThreadPoolExecutor(max_workers=wave.parallelism) as pool:
            while queue or running:
                while queue and len(running) < wave.parallelism:
                    target = queue.pop(0)
                    running[pool.submit(_outcome_of, apply_one, target)] = target
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: wave.targets.index(running[f])):
                    target = running.pop(future)
                    outcome = future.result()
                    status = APPLIED if outcome.ok else FAILED
                    results[target] = TargetResult(target, wave.number, status, outcome)
                    progress(results[target])
                    if not outcome.ok:
                        failures += 1
        if failures > failure_budget:
            stopped = (
                f"stopped after the {wave.name}: {failures} failed, more than the failure "
                f"budget of {failure_budget}"
            )
    ordered = [t for wave in waves for t in wave.targets]
    return FleetResult(tuple(results[t] for t in ordered), tuple(waves), waves_run, stopped)
