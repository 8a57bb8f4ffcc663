"""One `tenantctl migrate apply` at a time per state directory, and a second one refused at
once rather than queued behind the first (which may run for minutes, with other waves and
options than the second asked for).

The lock is an flock on `<state>/migrate-apply.lock`, so the kernel releases it when its
holder exits, however it exits: a killed apply never blocks the next one. The file also
records who holds it (pid, start time) for the refusal's message; a record left behind by a
killed apply is only a record (its flock is gone), and the next apply takes over and says
so. Each database's advisory lock (lambda_src/migrations/apply.py) still guards the files
themselves against any other migration run.
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from lambda_src.core.errors import TenantkitError

APPLY_LOCK_FILE = "migrate-apply.lock"
"""In the state directory: held by the running apply, recording its pid and start time."""


@dataclass(frozen=True)
class ApplyHolder:
    """The apply a lock file names."""

    pid: int
    started_at: str
    """ISO 8601, UTC, to the second."""

    def describe(self) -> str:
        """`pid 1234, started 2026-12-01T10:00:00+00:00`."""
        return f"pid {self.pid}, started {self.started_at}"

    def as_json(self) -> dict[str, object]:
        """The `--json` shape."""
        return {"pid": self.pid, "started_at": self.started_at}


class ApplyRunningError(TenantkitError):
    """Another apply holds the state directory's apply lock."""

    def __init__(self, path: Path, holder: ApplyHolder | None) -> None:
        who = holder.describe() if holder is not None else "its pid not recorded yet"
        super().__init__(
            f"another tenantctl migrate apply is running on this state directory ({who}; "
            f"lock {path}): nothing was touched; run apply again when it has finished"
        )
        self.holder = holder


def _read_holder(handle: IO[str]) -> ApplyHolder | None:
    handle.seek(0)
    try:
        record = json.loads(handle.read())
        return ApplyHolder(int(record["pid"]), str(record["started_at"]))
    except (ValueError, KeyError, TypeError):
        return None  # empty (no apply ran, or it finished) or not ours


@contextmanager
def holding_apply_lock(state_dir: Path) -> Iterator[ApplyHolder | None]:
    """Hold the state directory's apply lock, or raise ApplyRunningError naming its holder
    without waiting. Yields the holder of a lock left behind by an apply that did not finish
    (it was killed), which this one took over; None if there was none."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / APPLY_LOCK_FILE
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ApplyRunningError(path, _read_holder(handle)) from None
        try:
            stale = _read_holder(handle)
            mine = ApplyHolder(os.getpid(), datetime.now(UTC).isoformat(timespec="seconds"))
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(mine.as_json()))
            handle.flush()
            try:
                yield stale
            finally:
                handle.seek(0)
                handle.truncate()  # finished: nobody holds it
                handle.flush()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
