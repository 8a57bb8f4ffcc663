"""Fleet rollouts in waves with fake appliers: no database, only the wave semantics."""

import threading
import time

import pytest

from tenantkit.migrate.waves import (
    APPLIED,
    FAILED,
    NOT_STARTED,
    Outcome,
    TargetResult,
    WavePlanError,
    plan_waves,
    run_waves,
)

TARGETS = [f"t{n}" for n in range(1, 11)]


class Applier:
    """An apply_one that fails the `failing` targets and records what it was called with."""

    def __init__(self, failing: frozenset[str] = frozenset(), delay: float = 0.0) -> None:
        self.failing = failing
        self.delay = delay
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, target: str) -> Outcome:
        with self._lock:
            self.calls.append(target)
        time.sleep(self.delay)
        if target in self.failing:
            return Outcome(current=1, error=f"{target}: relation already exists")
        return Outcome(applied=(2, 3), current=3)


def statuses(result_targets: tuple[TargetResult, ...]) -> dict[str, str]:
    return {t.target: t.status for t in result_targets}


def test_the_canary_comes_first_then_groups_in_target_order() -> None:
    waves = plan_waves(TARGETS, canary=["t5", "t2"], group_size=3, parallelism=2)

    assert [(w.name, w.targets) for w in waves] == [
        ("canary", ("t2", "t5")),
        ("wave 2", ("t1", "t3", "t4")),
        ("wave 3", ("t6", "t7", "t8")),
        ("wave 4", ("t9", "t10")),
    ]
    assert {w.parallelism for w in waves} == {2}


def test_a_canary_count_takes_the_first_targets_and_the_rest_is_one_wave() -> None:
    waves = plan_waves(TARGETS, canary_count=2)

    assert [w.targets for w in waves] == [("t1", "t2"), tuple(TARGETS[2:])]


def test_without_a_canary_or_groups_there_is_one_wave() -> None:
    assert [w.targets for w in plan_waves(TARGETS)] == [tuple(TARGETS)]
    assert plan_waves([]) == ()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"canary": ["nobody"]}, "--canary names targets that are not in the rollout"),
        ({"canary": ["t1"], "canary_count": 1}, "not both"),
        ({"group_size": 0}, "--group-size"),
        ({"parallelism": 0}, "--parallelism"),
        ({"canary_count": -1}, "--canary-count"),
    ],
)
def test_bad_wave_options_are_refused_naming_the_option(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(WavePlanError, match=message):
        plan_waves(TARGETS, **options)  # type: ignore[arg-type]


def test_every_target_applies_when_nothing_fails() -> None:
    apply_one = Applier()
    result = run_waves(plan_waves(TARGETS, canary_count=1, group_size=4), apply_one)

    assert result.ok
    assert result.stopped is None
    assert result.waves_run == 4
    assert sorted(apply_one.calls) == sorted(TARGETS)
    assert all(t.outcome == Outcome((2, 3), 3) for t in result.targets)


def test_a_failure_in_the_canary_stops_everything_else() -> None:
    apply_one = Applier(frozenset({"t1"}))
    result = run_waves(plan_waves(TARGETS, canary_count=1, group_size=3), apply_one)

    assert apply_one.calls == ["t1"]
    assert result.waves_run == 1
    assert statuses(result.targets) == {"t1": FAILED} | {t: NOT_STARTED for t in TARGETS[1:]}
    assert result.failed[0].outcome == Outcome(current=1, error="t1: relation already exists")
    assert result.stopped is not None
    assert "canary" in result.stopped
    assert all(t.reason == result.stopped for t in result.targets if t.status == NOT_STARTED)


def test_a_failure_in_wave_two_with_budget_zero_finishes_wave_two_and_skips_wave_three() -> None:
    # wave 1: t1 (canary), wave 2: t2 t3 t4, wave 3: t5.. ; one at a time, t3 fails.
    apply_one = Applier(frozenset({"t3"}))
    waves = plan_waves(TARGETS[:7], canary_count=1, group_size=3, parallelism=1)
    result = run_waves(waves, apply_one, failure_budget=0)

    assert result.waves_run == 2
    assert statuses(result.targets) == {
        "t1": APPLIED,
        "t2": APPLIED,
        "t3": FAILED,
        "t4": APPLIED,  # a started wave runs whole, as the state machine's Map does
        "t5": NOT_STARTED,
        "t6": NOT_STARTED,
        "t7": NOT_STARTED,
    }
    assert result.stopped is not None
    assert "after the wave 2" in result.stopped
    assert [t.wave for t in result.targets] == [1, 2, 2, 2, 3, 3, 3]


def test_a_started_wave_runs_every_target_even_after_a_failure() -> None:
    # t1 fails fast while t2 is still running: t2, t3 and t4 (one wave) all run.
    def apply_one(target: str) -> Outcome:
        if target == "t1":
            raise RuntimeError("boom")
        time.sleep(0.05)
        return Outcome((1,), 1)

    result = run_waves(plan_waves(TARGETS[:4], parallelism=2), apply_one)

    assert statuses(result.targets) == {
        "t1": FAILED,
        "t2": APPLIED,
        "t3": APPLIED,
        "t4": APPLIED,
    }
    assert result.stopped is not None


def test_a_failure_budget_of_two_stops_after_the_wave_of_the_third_failure() -> None:
    apply_one = Applier(frozenset({"t2", "t4", "t6", "t8"}))
    waves = plan_waves(TARGETS, group_size=2, parallelism=1)
    result = run_waves(waves, apply_one, failure_budget=2)

    assert statuses(result.targets) == {
        "t1": APPLIED,
        "t2": FAILED,
        "t3": APPLIED,
        "t4": FAILED,
        "t5": APPLIED,
        "t6": FAILED,  # the third failure, more than the budget: its wave is the last
        "t7": NOT_STARTED,
        "t8": NOT_STARTED,
        "t9": NOT_STARTED,
        "t10": NOT_STARTED,
    }
    assert result.waves_run == 3
    assert result.stopped is not None
    assert "3 failed" in result.stopped


def test_failures_within_the_budget_do_not_stop_the_rollout() -> None:
    result = run_waves(
        plan_waves(TARGETS, group_size=3), Applier(frozenset({"t1", "t9"})), failure_budget=2
    )

    assert result.stopped is None
    assert result.waves_run == 4
    assert [t.target for t in result.failed] == ["t1", "t9"]
    assert not result.ok


@pytest.mark.parametrize("parallelism", [1, 3])
def test_parallelism_bounds_the_concurrent_calls(parallelism: int) -> None:
    active = 0
    highest = 0
    lock = threading.Lock()

    def apply_one(target: str) -> Outcome:
        nonlocal active, highest
        with lock:
            active += 1
            highest = max(highest, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return Outcome((1,), 1)

    result = run_waves(plan_waves(TARGETS, parallelism=parallelism), apply_one)

    assert result.ok
    assert highest == parallelism


def test_an_exception_in_apply_one_is_that_targets_failure_with_its_message() -> None:
    def apply_one(target: str) -> Outcome:
        if target == "t2":
            raise ConnectionError("could not connect to tenant_t2")
        return Outcome((1,), 1)

    result = run_waves(plan_waves(TARGETS[:3], parallelism=1), apply_one, failure_budget=5)

    assert statuses(result.targets) == {"t1": APPLIED, "t2": FAILED, "t3": APPLIED}
    assert result.failed[0].outcome == Outcome(error="could not connect to tenant_t2")


def test_progress_hears_of_every_finished_target_and_results_keep_wave_order() -> None:
    heard: list[str] = []
    waves = plan_waves(TARGETS, canary=["t7"], parallelism=4)
    result = run_waves(waves, Applier(delay=0.01), progress=lambda t: heard.append(t.target))

    assert sorted(heard) == sorted(TARGETS)
    assert heard[0] == "t7"  # the canary finished before any other started
    assert [t.target for t in result.targets] == ["t7", *(t for t in TARGETS if t != "t7")]


def test_a_negative_failure_budget_is_refused() -> None:
    with pytest.raises(WavePlanError, match="--failure-budget"):
        run_waves(plan_waves(TARGETS), Applier(), failure_budget=-1)
