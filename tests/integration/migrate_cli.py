"""What the `tenantctl migrate` tests share: a work directory of their own (a catalog, its
migrations directory and a state directory), tenantctl run on it in-process or as a process
of its own, and the test's own look into the embedded servers it provisioned."""

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from typer.testing import CliRunner

from tenantkit.cli import app
from tenantkit.embedded_pg import EmbeddedPostgres, RunningServer

runner = CliRunner()

TENANTCTL = Path(sys.executable).parent / "tenantctl"


def make_workdir(pg_root: Path, catalog: str, migrations: dict[str, str]) -> Path:
    """A directory the server user can traverse with `tenants.yaml` and `migrations/`."""
    root = Path(tempfile.mkdtemp(prefix="migrate-", dir=pg_root))
    root.chmod(0o711)
    (root / "tenants.yaml").write_text(catalog)
    (root / "migrations").mkdir()
    for name, text in migrations.items():
        (root / "migrations" / name).write_text(text)
    return root


def stop_servers(workdir: Path) -> None:
    """Stop every embedded server the work directory's state holds (their data stays)."""
    for data in (workdir / "state").glob("**/pg"):
        EmbeddedPostgres(data).stop()


def copy_state(source: Path, workdir: Path) -> None:
    """Give `workdir` a copy of `source`'s state directory (its servers stopped): the same
    fleet, on data directories of its own. `cp -a` keeps the server user's ownership and the
    0700 modes PostgreSQL insists on."""
    state = source / "state"
    moved = [p for p in state.glob("**/pg") if p.is_symlink()]
    # A server kept elsewhere (a closed parent directory) would be shared, not copied.
    assert not moved, f"servers outside the state directory cannot be copied: {moved}"
    assert not list(state.glob("**/postmaster.pid")), f"{source}: its servers still run"
    subprocess.run(["cp", "-a", str(state), str(workdir / "state")], check=True)


def cli_args(workdir: Path, *args: str) -> list[str]:
    """A tenantctl command line with --json on the workdir's catalog and state."""
    return [
        *args,
        "--catalog",
        str(workdir / "tenants.yaml"),
        "--state-dir",
        str(workdir / "state"),
        "--json",
    ]


def one_document(stdout: str) -> dict[str, Any]:
    """The JSON document of a --json command (exactly one)."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout  # --json is one document
    document: dict[str, Any] = json.loads(lines[0])
    return document


def tenantctl(workdir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run a tenantctl command in this process; its exit code and JSON document."""
    result = runner.invoke(app, cli_args(workdir, *args))
    return result.exit_code, one_document(result.stdout)


def start_tenantctl(workdir: Path, *args: str) -> subprocess.Popen[str]:
    """Start a tenantctl command as a process of its own (a second user at the terminal)."""
    return subprocess.Popen(
        [str(TENANTCTL), *cli_args(workdir, *args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    """Wait for a started tenantctl: its exit code, JSON document and stderr."""
    stdout, stderr = process.communicate(timeout=180)
    return process.returncode, one_document(stdout), stderr


def by_target(document: dict[str, Any], field: str) -> dict[str, Any]:
    """One field of every target of a migrate document, by target."""
    return {t["target"]: t[field] for t in document["targets"]}


def server_of(workdir: Path, silo: str | None = None) -> RunningServer:
    """The shared server (bridge and pool), or a silo tenant's own; started if it is not."""
    data = workdir / "state" / (f"silo-{silo}/pg" if silo else "pg")
    return EmbeddedPostgres(data).start()


def as_superuser(server: RunningServer, database: str) -> psycopg.Connection:
    """An autocommit superuser connection, for looking at what a migration did."""
    settings = server.superuser_settings(database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


def applied_versions(server: RunningServer, database: str) -> list[int]:
    """The versions a database's tracking table records, in order (each once, or twice)."""
    with as_superuser(server, database) as conn:
        rows = conn.execute(
            "SELECT version FROM tenantkit_schema.applied_migrations ORDER BY version"
        )
        return [int(row[0]) for row in rows]


GATE_KEY = 4242
"""The advisory lock a gated migration waits for (advisory locks are per database)."""
_GATE = f"""\
-- the test's gate: waits, in a database where the test holds advisory lock {GATE_KEY}
SET LOCAL lock_timeout = '120s';
SELECT pg_advisory_xact_lock({GATE_KEY});
"""


def gated(statements: str) -> str:
    """A migration that first waits at the gate (in a database where the test holds it), so
    an apply stays inside the file until the test opens it, then runs `statements`."""
    return _GATE + statements


@contextmanager
def gate_closed(server: RunningServer, database: str) -> Iterator[None]:
    """Hold the gate in `database` (a gated migration there waits) until the block ends."""
    with as_superuser(server, database) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))


def wait_until_gated(
    server: RunningServer, database: str, process: subprocess.Popen[str] | None = None
) -> None:
    """Return once a session in `database` waits at the gate (fail if `process` ends first)."""
    deadline = time.monotonic() + 120
    with as_superuser(server, "postgres") as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event_type = 'Lock' AND wait_event = 'advisory' "
                "AND query LIKE %s",
                (database, f"%pg_advisory_xact_lock({GATE_KEY})%"),
            ).fetchone()
            if waiting == (1,):
                return
            if process is not None and process.poll() is not None:
                raise AssertionError(f"tenantctl ended before the gate: {process.communicate()}")
            time.sleep(0.05)
    raise AssertionError(f"no migration reached the gate in {database}")
