"""tenantkit.migrate.apply_lock: one apply per state directory, a second refused naming the
first, and a record a killed apply left behind taken over (the processes themselves are in
tests/integration/test_migrate_faults.py)."""

import json
import os
from pathlib import Path

import pytest

from tenantkit.migrate.apply_lock import (
    APPLY_LOCK_FILE,
    ApplyHolder,
    ApplyRunningError,
    holding_apply_lock,
)


def test_a_second_holder_is_refused_at_once_naming_the_first(tmp_path: Path) -> None:
    # flock locks belong to an open file: a second open conflicts, even in one process
    with (
        holding_apply_lock(tmp_path),
        pytest.raises(ApplyRunningError) as refused,
        holding_apply_lock(tmp_path),
    ):
        pass

    assert refused.value.holder is not None
    assert refused.value.holder.pid == os.getpid()
    assert f"pid {os.getpid()}, started " in str(refused.value)
    assert str(tmp_path / APPLY_LOCK_FILE) in str(refused.value)


def test_a_finished_holder_leaves_the_lock_free_and_unrecorded(tmp_path: Path) -> None:
    with holding_apply_lock(tmp_path) as stale:
        assert stale is None
        recorded = json.loads((tmp_path / APPLY_LOCK_FILE).read_text())
        assert recorded["pid"] == os.getpid()

    assert (tmp_path / APPLY_LOCK_FILE).read_text() == ""
    with holding_apply_lock(tmp_path) as stale:
        assert stale is None


def test_the_record_of_a_holder_that_did_not_finish_is_taken_over(tmp_path: Path) -> None:
    # GIVEN the record a killed apply leaves (its flock went with it)
    gone = ApplyHolder(pid=999_999_999, started_at="2026-12-01T10:00:00+00:00")
    (tmp_path / APPLY_LOCK_FILE).write_text(json.dumps(gone.as_json()))

    with holding_apply_lock(tmp_path) as stale:
        assert stale == gone
        assert json.loads((tmp_path / APPLY_LOCK_FILE).read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("text", ["", "not json", '{"pid": "x"}', "[]"])
def test_a_lock_file_without_a_usable_record_is_no_obstacle(tmp_path: Path, text: str) -> None:
    (tmp_path / APPLY_LOCK_FILE).write_text(text)

    with holding_apply_lock(tmp_path) as stale:
        assert stale is None
