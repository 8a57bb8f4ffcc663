"""tenantctl move --online on the embedded servers: a pool tenant moved to the bridge by logical
replication while a writer keeps inserting and updating its rows keeps every row (the writes
made during the copy too), and leaves no slot, publication, subscription or login behind; a
move killed while the subscription copies rolls back on the next run with nothing left; a
move --online into the pool is refused before anything changes."""

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lambda_src.mobility.replication import NAME_PREFIX
from lambda_src.tenancy import POOL, tenant_names
from tenantkit.local import LocalSecrets, pool_runtime_settings
from tenantkit.move import FAULT_ENV, FAULT_EXIT
from tenantkit.move_online import CATCH_UP_FAULT

from .migrate_cli import (
    TENANTCTL,
    as_superuser,
    cli_args,
    copy_state,
    make_workdir,
    one_document,
    server_of,
    stop_servers,
    tenantctl,
)
from .mobility_data import V1, bystanders, digests, positions, rows_of, seed
from .test_move import CATALOG, OTHERS, provisioned, statuses, tier_in_catalog


@pytest.fixture(scope="module")
def template(pg_root: Path) -> Path:
    """The provisioned work directory (test_move's fleet), its servers stopped."""
    root = provisioned(pg_root)
    stop_servers(root)
    return root


@pytest.fixture
def workdir(pg_root: Path, template: Path) -> Iterator[Path]:
    root = make_workdir(pg_root, CATALOG, {"V1__vaults.sql": V1})
    shutil.copy(template / "tenants.yaml", root / "tenants.yaml")
    copy_state(template, root)
    try:
        yield root
    finally:
        stop_servers(root)


def replication_left(workdir: Path) -> dict[str, list[Any]]:
    """Every slot, publication, subscription and move login on the shared server."""
    with as_superuser(server_of(workdir), POOL.database) as conn:
        return {
            "slots": conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall(),
            "publications": conn.execute("SELECT pubname FROM pg_publication").fetchall(),
            "subscriptions": conn.execute("SELECT subname FROM pg_subscription").fetchall(),
            "logins": conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (NAME_PREFIX,)
            ).fetchall(),
        }


NOTHING_LEFT: dict[str, list[Any]] = {
    "slots": [],
    "publications": [],
    "subscriptions": [],
    "logins": [],
}


class Writer(threading.Thread):
    """The tenant's application: inserts a vault and updates an earlier one, as the pool's
    runtime login with the tenant set per transaction, as fast as it can; a refused write
    (the tenant frozen) is retried until stop()."""

    def __init__(self, workdir: Path, tenant_id: str) -> None:
        super().__init__(daemon=True)
        server = server_of(workdir)
        store = LocalSecrets(workdir / "state" / "secrets.json")
        self.settings = pool_runtime_settings(server, store)
        self.tenant_id = tenant_id
        self.stopping = threading.Event()
        self.written: dict[str, str] = {}
        """name -> note of each vault the writer committed (the last note it set)."""
        self.committed_at: list[float] = []
        self.refused = 0

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            try:
                with psycopg.connect(**self.settings.connect_kwargs()) as conn:
                    while not self.stopping.is_set():
                        n += 1
                        name = f"written {n}"
                        with conn.transaction():
                            conn.execute(
                                "SELECT set_config('app.tenant_id', %s, true)", (self.tenant_id,)
                            )
                            conn.execute(
                                "INSERT INTO vaults (tenant_id, name, note) VALUES (%s, %s, 'new')",
                                (self.tenant_id, name),
                            )
                            earlier = f"written {max(1, n // 2)}"
                            updated = conn.execute(
                                "UPDATE vaults SET note = %s WHERE tenant_id = %s AND name = %s",
                                (f"updated at {n}", self.tenant_id, earlier),
                            ).rowcount
                        self.written[name] = "new"
                        if updated:
                            self.written[earlier] = f"updated at {n}"
                        self.committed_at.append(time.monotonic())
            except psycopg.Error:
                self.refused += 1
                time.sleep(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def vaults_in(workdir: Path, tenant_id: str, tier: str) -> dict[str, str | None]:
    database = POOL.database if tier == "pool" else tenant_names(tenant_id).database
    with as_superuser(server_of(workdir), database) as conn:
        return dict(
            conn.execute(
                "SELECT name, note FROM vaults WHERE tenant_id = %s", (tenant_id,)
            ).fetchall()
        )


@pytest.mark.slow
def test_an_online_move_keeps_every_row_written_while_it_copies(workdir: Path) -> None:
    others = bystanders(workdir, OTHERS, but="")
    seeded = vaults_in(workdir, "mover", "pool")

    # GIVEN the tenant's application writing all along
    writer = Writer(workdir, "mover")
    writer.start()
    time.sleep(0.5)
    started = time.monotonic()
    try:
        # WHEN it is moved to the bridge --online
        process = subprocess.run(
            [str(TENANTCTL), *cli_args(workdir, "move", "mover", "--to", "bridge", "--online")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        writer.stop()
    moved = one_document(process.stdout)

    # THEN it moved, verified, and every write the application committed is in the bridge:
    # those made while the subscription copied and caught up too
    assert process.returncode == 0, (moved, process.stderr)
    assert moved["online"]["catch_up_seconds"] > 0
    during = [t for t in writer.committed_at if t > started]
    assert len(during) > 10, "the writer wrote nothing during the move"
    at_bridge = vaults_in(workdir, "mover", "bridge")
    assert at_bridge == vaults_in(workdir, "mover", "pool")
    assert {n: at_bridge.get(n) for n in writer.written} == writer.written
    assert set(seeded) <= set(at_bridge)
    assert digests(workdir, "mover", "bridge") == digests(workdir, "mover", "pool")
    assert {t["name"]: (t["rows"], t["sha256"]) for t in moved["tables"]} == digests(
        workdir, "mover", "bridge"
    )
    # the bridge's sequences continue after the rows it holds
    with as_superuser(server_of(workdir), tenant_names("mover").database) as conn:
        top = conn.execute("SELECT max(vault_id) FROM vaults").fetchone()
    assert top is not None
    assert positions(workdir, "mover", "bridge")["vaults"] >= top[0]
    assert tier_in_catalog(workdir, "mover") == "bridge"
    assert statuses(workdir, "mover") == {"pool": "moved", "bridge": "active"}
    assert bystanders(workdir, OTHERS, but="") == others
    # and nothing of the replication is left: no slot holds the pool's WAL
    assert replication_left(workdir) == NOTHING_LEFT
    # and the subscription's connection string (the login's password) is not in the log
    log = (workdir / "state" / "pg" / "server.log").read_text()
    assert "CREATE SUBSCRIPTION" not in log
    assert "password=" not in log


@pytest.mark.slow
def test_an_online_move_between_servers_bridge_to_silo_keeps_every_row(workdir: Path) -> None:
    rows = rows_of(workdir, "bridge-bystander", "bridge")
    sums = digests(workdir, "bridge-bystander", "bridge")
    at = positions(workdir, "bridge-bystander", "bridge")

    # WHEN a bridge tenant is moved --online to a silo (the subscription on the silo's own
    # server, reaching the shared one over TLS verify-full)
    code, moved = tenantctl(workdir, "move", "bridge-bystander", "--to", "silo", "--online")

    # THEN every row, checksum and sequence position is there, and no server keeps any of it
    assert code == 0, moved
    assert rows_of(workdir, "bridge-bystander", "silo") == rows
    assert digests(workdir, "bridge-bystander", "silo") == sums
    assert positions(workdir, "bridge-bystander", "silo") == at
    assert statuses(workdir, "bridge-bystander") == {"bridge": "moved", "silo": "active"}
    assert replication_left(workdir) == NOTHING_LEFT
    silo = tenant_names("bridge-bystander").database
    with as_superuser(server_of(workdir, "bridge-bystander"), silo) as conn:
        assert conn.execute("SELECT subname FROM pg_subscription").fetchall() == []
        assert conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall() == []


@pytest.mark.slow
def test_an_online_move_killed_while_it_copies_rolls_back_with_no_slot_left(
    workdir: Path,
) -> None:
    rows = rows_of(workdir, "mover", "pool")
    seed(workdir, "mover", "pool", 200)  # enough rows that the copy is still going
    rows = rows_of(workdir, "mover", "pool")

    # WHEN the move is killed while the subscription copies
    process = subprocess.run(
        [str(TENANTCTL), *cli_args(workdir, "move", "mover", "--to", "bridge", "--online")],
        env={**os.environ, FAULT_ENV: CATCH_UP_FAULT},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert process.returncode == FAULT_EXIT, process.stdout + process.stderr
    left = replication_left(workdir)
    assert left["slots"], left  # the kill left the replication running
    assert left["subscriptions"], left

    # THEN the next run rolls it back: the source active with its rows, no bridge copy, and
    # no slot, publication, subscription or login
    code, resumed = tenantctl(workdir, "move", "mover")
    assert code == 0, resumed
    assert resumed["outcome"] == "rolled-back"
    assert statuses(workdir, "mover") == {"pool": "active"}
    assert tier_in_catalog(workdir, "mover") == "pool"
    assert rows_of(workdir, "mover", "pool") == rows
    assert replication_left(workdir) == NOTHING_LEFT

    # and the tenant can still be moved online
    code, moved = tenantctl(workdir, "move", "mover", "--to", "bridge", "--online")
    assert code == 0, moved
    assert rows_of(workdir, "mover", "bridge") == rows
    assert replication_left(workdir) == NOTHING_LEFT


@pytest.mark.slow
def test_a_catch_up_that_fails_rolls_back_and_drops_the_replication(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = rows_of(workdir, "mover", "pool")
    # GIVEN a catch-up that cannot finish in time
    monkeypatch.setenv("TENANTKIT_MOVE_ONLINE_TIMEOUT", "0")

    code, failed = tenantctl(workdir, "move", "mover", "--to", "bridge", "--online")

    # THEN it failed, rolled back, and left nothing
    assert code == 1, failed
    assert "rolled back" in failed["error"]
    assert "did not" in failed["error"]
    assert statuses(workdir, "mover") == {"pool": "active"}
    assert rows_of(workdir, "mover", "pool") == rows
    assert replication_left(workdir) == NOTHING_LEFT


@pytest.mark.slow
def test_an_online_move_into_the_pool_is_refused_and_changes_nothing(workdir: Path) -> None:
    before = bystanders(workdir, {"mover": "pool", **OTHERS}, but="")

    code, refused = tenantctl(workdir, "move", "bridge-bystander", "--to", "pool", "--online")

    assert code == 2, refused
    assert "--online" in refused["error"]
    assert "row-level security" in refused["error"]
    assert "without --online" in refused["error"]
    assert tier_in_catalog(workdir, "bridge-bystander") == "bridge"
    assert statuses(workdir, "bridge-bystander") == {"bridge": "active"}
    assert bystanders(workdir, {"mover": "pool", **OTHERS}, but="") == before
    assert replication_left(workdir) == NOTHING_LEFT


@pytest.mark.slow
def test_an_online_move_to_a_server_that_logs_ddl_is_refused(workdir: Path) -> None:
    # GIVEN a target server that writes DDL statements into its log
    with as_superuser(server_of(workdir), "postgres") as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'ddl'")
        conn.execute("SELECT pg_reload_conf()")

    code, refused = tenantctl(workdir, "move", "mover", "--to", "bridge", "--online")

    # THEN the move is refused (the subscription's statement holds a password), nothing made
    assert code == 2, refused
    assert "log_statement = ddl" in refused["error"]
    assert statuses(workdir, "mover") == {"pool": "active"}
    assert replication_left(workdir) == NOTHING_LEFT
