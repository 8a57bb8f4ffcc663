"""Bad input and faults through `tenantctl migrate` on the embedded servers: a bad migrations
directory, a file failing half-way in one tenant of a wave, a tenant database that cannot be
reached, a second apply while one runs and the lock a killed apply leaves. Each is an error
naming the file or tenant; every database stays at its previous version or reaches the new
one, and `migrate status` says which."""

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from lambda_src.tenancy import tenant_names
from tenantkit.cli import EXIT_FAILED, EXIT_INVALID
from tenantkit.embedded_pg import EmbeddedPostgres
from tenantkit.migrate.apply_lock import APPLY_LOCK_FILE

from .migrate_cli import (
    applied_versions,
    as_superuser,
    by_target,
    copy_state,
    finished,
    gate_closed,
    gated,
    make_workdir,
    server_of,
    start_tenantctl,
    stop_servers,
    tenantctl,
    wait_until_gated,
)

CATALOG = """\
schema:
  directory: migrations
tenants:
  - id: alpha
    tier: bridge
  - id: bravo
    tier: bridge
  - id: charlie
    tier: bridge
  - id: solo
    tier: silo
"""
FLEET = ["alpha", "bravo", "charlie", "solo"]
V1 = """\
CREATE TABLE items (
    tenant_id text NOT NULL DEFAULT current_user,
    id bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
"""
V2_NOTES = """\
CREATE TABLE notes (
    tenant_id text NOT NULL DEFAULT current_user,
    id bigint NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
"""
V2_GATED = gated("INSERT INTO items (name) VALUES ('added by V2');\n")
"""Waits at the gate where the test holds it, then adds a row: applied twice, it adds two."""


@pytest.fixture
def workdir(pg_root: Path) -> Iterator[Path]:
    """The fleet's catalog with V1; the servers it starts are stopped afterwards."""
    root = make_workdir(pg_root, CATALOG, {"V1__items.sql": V1})
    yield root
    stop_servers(root)


@pytest.fixture(scope="module")
def provisioned(pg_root: Path) -> Iterator[Path]:
    """The catalog provisioned once for the module (every tenant database brought to V1 before
    it is active) and its servers stopped: `provision` copies it, so each test has a fleet of
    its own for a copy instead of a `tenantctl run` (about 15 s)."""
    root = make_workdir(pg_root, CATALOG, {"V1__items.sql": V1})
    try:
        code, result = tenantctl(root, "run")
        assert code == 0, result
    finally:
        stop_servers(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def provision(workdir: Path, provisioned: Path) -> None:
    """Give the test's work directory the provisioned fleet, and check it is at V1."""
    copy_state(provisioned, workdir)
    code, status = tenantctl(workdir, "migrate", "status")
    assert code == 0, status
    assert by_target(status, "current") == dict.fromkeys(FLEET, 1)


def database(tenant_id: str) -> str:
    return tenant_names(tenant_id).database


# --- bad input: refused before any server starts --------------------------------------------


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("misnamed directory", ["migration does not exist"]),
        ("two files with one version", ["V1__items.sql: version 1 is also V0001__again.sql"]),
        ("a non-SQL file", ["notes.txt: not a .sql file"]),
        ("a misnamed SQL file", ["V2_notes.sql: the name must be V<version>__<name>.sql"]),
    ],
)
def test_a_bad_migrations_directory_is_refused_by_every_command_naming_the_file(
    workdir: Path, case: str, named: list[str]
) -> None:
    # GIVEN a migrations directory with one mistake
    migrations = workdir / "migrations"
    if case == "misnamed directory":
        catalog = workdir / "tenants.yaml"
        catalog.write_text(
            catalog.read_text().replace("directory: migrations", "directory: migration")
        )
    elif case == "two files with one version":
        (migrations / "V0001__again.sql").write_text(V2_NOTES)
    elif case == "a non-SQL file":
        (migrations / "notes.txt").write_text("what V2 will do\n")
    else:
        (migrations / "V2_notes.sql").write_text(V2_NOTES)

    for command in ("plan", "apply", "status"):
        # WHEN any migrate command runs
        code, result = tenantctl(workdir, "migrate", command)

        # THEN it is refused naming the directory or file, before any server started
        assert code == EXIT_INVALID, (command, result)
        assert result["ok"] is False
        for text in named:
            assert text in result["error"], (command, result["error"])
    assert not (workdir / "state" / "pg").exists()


# --- a migration failing half-way -----------------------------------------------------------


@pytest.mark.slow
def test_a_file_failing_half_way_in_one_tenant_of_a_wave_leaves_it_at_its_version(
    workdir: Path, provisioned: Path
) -> None:
    # GIVEN the fleet at V1, and V2 of two statements whose second fails in bravo only
    provision(workdir, provisioned)
    (workdir / "migrations" / "V2__tags.sql").write_text(
        "CREATE TABLE tags (tenant_id text NOT NULL DEFAULT current_user, id bigint NOT NULL,"
        " PRIMARY KEY (tenant_id, id));\n"
        "ALTER TABLE items ADD COLUMN note text;\n"
    )
    shared = server_of(workdir)
    with as_superuser(shared, database("bravo")) as conn:
        conn.execute("ALTER TABLE items ADD COLUMN note text")

    # WHEN applied with the three bridge tenants in one wave, all at once
    code, applied = tenantctl(
        workdir, "migrate", "apply", "--group-size", "3", "--parallelism", "3"
    )

    # THEN bravo fails naming itself, the file and the server's reason; the rest of its wave
    # reaches V2 and the next wave does not start
    assert code == EXIT_FAILED
    assert [w["targets"] for w in applied["waves"]] == [["alpha", "bravo", "charlie"], ["solo"]]
    assert by_target(applied, "status") == {
        "alpha": "applied",
        "bravo": "failed",
        "charlie": "applied",
        "solo": "not started",
    }
    error = by_target(applied, "error")["bravo"]
    assert error.startswith(
        "tenant bravo: migration V2__tags.sql failed, the database stays at version 1:"
    )
    assert 'column "note" of relation "items" already exists' in error
    # bravo holds nothing of V2: its first statement was rolled back with the second
    shared = server_of(workdir)  # the apply stopped the servers: started again
    with as_superuser(shared, database("bravo")) as conn:
        assert conn.execute("SELECT to_regclass('public.tags')").fetchone() == (None,)
    assert applied_versions(shared, database("bravo")) == [1]
    for tenant_id in ("alpha", "charlie"):
        assert applied_versions(shared, database(tenant_id)) == [1, 2]

    # and status says who is where, and why bravo is behind
    code, status = tenantctl(workdir, "migrate", "status")
    assert code == 0, status
    assert by_target(status, "current") == {"alpha": 2, "bravo": 1, "charlie": 2, "solo": 1}
    assert by_target(status, "pending") == {"alpha": [], "bravo": [2], "charlie": [], "solo": [2]}
    assert by_target(status, "last_error")["bravo"] == error
    assert by_target(status, "last_error")["solo"] is None  # not started: no failure of its own


# --- a tenant database that cannot be reached -----------------------------------------------


@pytest.mark.slow
def test_a_tenant_database_refusing_connections_fails_alone_and_converges_once_it_accepts(
    workdir: Path, provisioned: Path
) -> None:
    # GIVEN the fleet at V1, V2 added, and bravo's database refusing every connection
    provision(workdir, provisioned)
    (workdir / "migrations" / "V2__notes.sql").write_text(V2_NOTES)
    shared = server_of(workdir)
    bravo = sql.Identifier(database("bravo"))
    with as_superuser(shared, "postgres") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(bravo))

    # WHEN applied two at a time with the default failure budget of 0
    code, applied = tenantctl(workdir, "migrate", "apply", "--group-size", "2")

    # THEN bravo fails, named, its version unknown; its wave's alpha applied; no later wave
    assert code == EXIT_FAILED
    assert by_target(applied, "status") == {
        "alpha": "applied",
        "bravo": "failed",
        "charlie": "not started",
        "solo": "not started",
    }
    error = by_target(applied, "error")["bravo"]
    assert error.startswith(f"tenant bravo: could not connect to {shared.host}:{shared.port}/")
    assert "is not currently accepting connections" in error
    assert error.endswith("its version is unknown until it can be read")
    assert by_target(applied, "current")["bravo"] is None
    assert "failure budget of 0" in applied["stopped"]

    # and status (exit 1: a database it could not read) names bravo and why
    code, status = tenantctl(workdir, "migrate", "status")
    assert code == EXIT_FAILED
    assert status["error"] == "could not read bravo"
    assert by_target(status, "current") == {"alpha": 2, "bravo": None, "charlie": 1, "solo": 1}
    assert "is not currently accepting connections" in by_target(status, "error")["bravo"]
    assert by_target(status, "last_error")["bravo"] == error

    # WHEN applied again tolerating one failure THEN the others converge past it
    code, applied = tenantctl(workdir, "migrate", "apply", "--failure-budget", "1")
    assert code == EXIT_FAILED
    assert by_target(applied, "status") == {
        "alpha": "applied",
        "bravo": "failed",
        "charlie": "applied",
        "solo": "applied",
    }
    assert applied["stopped"] is None
    assert by_target(applied, "applied") == {"alpha": [], "bravo": [], "charlie": [2], "solo": [2]}

    # WHEN bravo accepts connections again THEN status shows it at its previous version, and
    # the next apply brings it, alone, to V2 (applied once)
    with as_superuser(server_of(workdir), "postgres") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(bravo))
    code, status = tenantctl(workdir, "migrate", "status")
    assert code == 0, status
    assert by_target(status, "current") == {"alpha": 2, "bravo": 1, "charlie": 2, "solo": 2}
    assert by_target(status, "pending")["bravo"] == [2]
    code, converged = tenantctl(workdir, "migrate", "apply")
    assert code == 0, converged
    assert by_target(converged, "applied") == {"alpha": [], "bravo": [2], "charlie": [], "solo": []}
    assert applied_versions(server_of(workdir), database("bravo")) == [1, 2]


@pytest.mark.slow
def test_a_silo_server_stopped_during_the_rollout_fails_that_tenant_and_converges_later(
    workdir: Path, provisioned: Path
) -> None:
    # GIVEN the fleet at V1 and a V2 that waits at the gate in alpha (the canary)
    provision(workdir, provisioned)
    (workdir / "migrations" / "V2__gated.sql").write_text(V2_GATED)
    shared = server_of(workdir)
    with gate_closed(shared, database("alpha")):
        apply = start_tenantctl(workdir, "migrate", "apply", "--canary", "alpha")
        wait_until_gated(shared, database("alpha"), apply)
        # WHEN solo's server stops while the canary runs (after the apply read every status)
        EmbeddedPostgres(workdir / "state" / "silo-solo" / "pg").stop()
    code, applied, stderr = finished(apply)

    # THEN solo fails naming itself and its server; the rest of its wave reaches V2
    assert code == EXIT_FAILED, stderr
    assert by_target(applied, "status") == {
        "alpha": "applied",
        "bravo": "applied",
        "charlie": "applied",
        "solo": "failed",
    }
    error = by_target(applied, "error")["solo"]
    assert error.startswith("tenant solo: could not connect to ")
    assert f"/{database('solo')} " in error
    assert error.endswith("its version is unknown until it can be read")

    # WHEN status runs (it starts solo's server again) THEN solo is at its previous version
    code, status = tenantctl(workdir, "migrate", "status")
    assert code == 0, status
    assert by_target(status, "current") == {"alpha": 2, "bravo": 2, "charlie": 2, "solo": 1}
    assert by_target(status, "last_error")["solo"] == error

    # and the next apply converges it
    code, converged = tenantctl(workdir, "migrate", "apply")
    assert code == 0, converged
    assert by_target(converged, "applied") == {"alpha": [], "bravo": [], "charlie": [], "solo": [2]}


# --- a second apply while one runs ----------------------------------------------------------


@pytest.mark.slow
def test_a_second_apply_while_one_runs_is_refused_at_once_and_nothing_applies_twice(
    workdir: Path, provisioned: Path
) -> None:
    # GIVEN the fleet at V1 and an apply held inside V2 (at the gate in alpha, one at a time)
    provision(workdir, provisioned)
    (workdir / "migrations" / "V2__gated.sql").write_text(V2_GATED)
    shared = server_of(workdir)
    with gate_closed(shared, database("alpha")):
        first = start_tenantctl(workdir, "migrate", "apply", "--parallelism", "1")
        wait_until_gated(shared, database("alpha"), first)

        # WHEN a second apply starts, as a process of its own
        code, second, _ = finished(start_tenantctl(workdir, "migrate", "apply"))

        # THEN it is refused (exit 2) naming the running apply, while that one still waits
        assert code == EXIT_INVALID, second
        assert second["running"]["pid"] == first.pid
        assert f"pid {first.pid}, started {second['running']['started_at']}" in second["error"]
        assert "nothing was touched" in second["error"]
        assert first.poll() is None

    # WHEN the gate opens THEN the first apply finishes, every database at V2
    code, applied, stderr = finished(first)
    assert code == 0, stderr
    assert by_target(applied, "applied") == {key: [2] for key in FLEET}
    assert applied["stale_lock"] is None

    # and V2 ran once in every database: one row added, one record
    for tenant_id in FLEET:
        server = server_of(workdir, "solo" if tenant_id == "solo" else None)
        with as_superuser(server, database(tenant_id)) as conn:
            added = conn.execute("SELECT count(*) FROM items WHERE name = 'added by V2'")
            assert added.fetchone() == (1,), tenant_id
        assert applied_versions(server, database(tenant_id)) == [1, 2]
    # the lock is free: the next apply runs (and has nothing to do)
    code, again = tenantctl(workdir, "migrate", "apply")
    assert code == 0, again
    assert by_target(again, "applied") == {key: [] for key in FLEET}


HOLD_THE_APPLY_LOCK = """\
import sys, time
from pathlib import Path
from tenantkit.migrate.apply_lock import holding_apply_lock
with holding_apply_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_the_lock_of_a_killed_apply_does_not_block_the_next_one(workdir: Path) -> None:
    (workdir / "tenants.yaml").write_text(
        "schema:\n  directory: migrations\ntenants:\n  - id: alpha\n    tier: bridge\n"
    )
    code, onboarded = tenantctl(workdir, "onboard", "alpha", "--tier", "bridge")
    assert code == 0, onboarded
    # GIVEN a process holding the apply lock
    state = workdir / "state"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_APPLY_LOCK, str(state)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        code, refused = tenantctl(workdir, "migrate", "apply")
        assert code == EXIT_INVALID
        assert refused["running"]["pid"] == holder.pid

        # WHEN it is killed (its record stays in the lock file)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert f'"pid": {holder.pid}' in (state / APPLY_LOCK_FILE).read_text()

    # THEN the next apply takes the lock over, says whose it was, and runs
    code, applied = tenantctl(workdir, "migrate", "apply")
    assert code == 0, applied
    assert applied["stale_lock"]["pid"] == holder.pid
    assert by_target(applied, "current") == {"alpha": 1}
    assert (state / APPLY_LOCK_FILE).read_text() == ""  # released: nobody holds it
