"""`tenantctl bench move`: a pool tenant of N rows moved to the bridge by `tenantctl move`'s own
state machine, on a fresh local state directory (the sample schema: customers and invoices),
against a raw `COPY (SELECT ... WHERE tenant_id = ...) TO STDOUT` piped into `COPY ... FROM
STDIN` between the same two databases in the same run.

- total: the whole move (provision the target, freeze, copy, verify, switch, activate);
- freeze: from the source's suspension to the target's activation (the tenant cannot write);
- copy: the copy step (every table streamed from the source's COPY into the target's, hashed
  on the way), its rows/s against the raw pipe's (the raw pipe runs in a transaction that is
  rolled back, into the moved tenant's bridge database emptied inside that transaction);
- verify: every table read back from the target and compared, then the commit;
- the raw pipe in COPY's binary format too, interleaved with the text one, to show what the
  binary format would gain (the move streams text: see lambda_src/mobility/stream.py).

Then the freeze with the tenant's application writing, offline against --online: two more
tenants of the same size, each moved while a writer (the pool's runtime login, the tenant set
per transaction) inserts a customer and renames an earlier one in a loop; the writer's commits
during the move, and the freeze, are reported per variant.
"""

import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lambda_src.mobility.tables import BATCH_BYTES
from lambda_src.tenancy import POOL, tenant_names

from ..catalog import load_catalog
from ..local import LocalSession, local_session, pool_runtime_settings
from ..move import Move, provision

REPO_MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
TENANT = "mover"
NEIGHBOUR = "neighbour"
WRITTEN_OFFLINE = "mover-offline"
WRITTEN_ONLINE = "mover-online"
"""The tenants moved while their application writes (offline, then --online)."""
TABLES = ("customers", "invoices")
COLUMNS = {
    "customers": ("tenant_id", "customer_id", "name", "created_at"),
    "invoices": ("tenant_id", "invoice_id", "customer_id", "amount_cents", "issued_at"),
}


@dataclass(frozen=True)
class MoveBenchConfig:
    """How many rows the moved tenant has (a fifth customers, the rest invoices)."""

    rows: int = 100_000
    raw_repeats: int = 3


def _catalog_text() -> str:
    tenants = (TENANT, NEIGHBOUR, WRITTEN_OFFLINE, WRITTEN_ONLINE)
    return "schema:\n  directory: migrations\ntenants:\n" + "".join(
        f"  - id: {t}\n    tier: pool\n" for t in tenants
    )


class Writer(threading.Thread):
    """The tenant's application in a loop: insert a customer and rename an earlier one, one
    transaction each time, in the pool (the runtime login, the tenant set per transaction);
    once refused there (the tenant frozen) it tries the tenant's bridge database as its bridge
    login every 20 ms, as an application that follows the tenant's routing would, and writes
    there from its first success."""

    def __init__(self, local: LocalSession, tenant_id: str) -> None:
        super().__init__(daemon=True)
        self.local = local
        self.pool = pool_runtime_settings(local.shared, local.store)
        self.tenant_id = tenant_id
        self.stopping = threading.Event()
        self.commits: list[tuple[float, str]] = []
        """(perf_counter, "pool" | "bridge") of each commit."""
        self.refused = 0
        self.n = 0

    def bridge(self) -> Any:
        names = tenant_names(self.tenant_id)
        password = self.local.store.password(names.secret_name)  # KeyError: not made yet
        return self.local.shared.settings(names.login_role, password, names.database)

    def write(self, conn: psycopg.Connection, where: str) -> None:
        self.n += 1
        with conn.transaction():
            if where == "pool":
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (self.tenant_id,))
            conn.execute(
                "INSERT INTO customers (tenant_id, name) VALUES (%s, %s)",
                (self.tenant_id, f"live {self.n}"),
            )
            conn.execute(
                "UPDATE customers SET name = name || '*' WHERE tenant_id = %s AND name = %s",
                (self.tenant_id, f"live {self.n // 2}"),
            )
        self.commits.append((time.perf_counter(), where))

    def run(self) -> None:
        where = "pool"
        while not self.stopping.is_set():
            try:
                settings = self.pool if where == "pool" else self.bridge()
                with psycopg.connect(**settings.connect_kwargs()) as conn:
                    while not self.stopping.is_set():
                        self.write(conn, where)
            except (psycopg.Error, KeyError):
                self.refused += 1
                where = "bridge"
                time.sleep(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def _written_move(
    local: LocalSession,
    catalog_path: Path,
    state_dir: Path,
    tenant_id: str,
    online: bool,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Move `tenant_id` to the bridge while its writer runs; the freeze and what it wrote
    (writer_blocked_seconds: from its last commit in the pool to its first in the bridge, the
    time the application could not write)."""
    marks: dict[str, float] = {}

    def mark(step: str) -> None:
        marks[step] = time.perf_counter()
        progress(f"move {tenant_id}{' --online' if online else ''}: {step}")

    writer = Writer(local, tenant_id)
    writer.start()
    time.sleep(1.0)
    started = time.perf_counter()
    try:
        catalog = load_catalog(catalog_path)
        report = Move(local, catalog_path, state_dir, tenant_id).run(
            catalog, "bridge", mark, online=online
        )
        ended = time.perf_counter()
        time.sleep(1.0)  # the writer finds the bridge
    finally:
        writer.stop()
    during = [t for t, _ in writer.commits if started <= t <= ended]
    in_pool = [t for t, where in writer.commits if where == "pool"]
    in_bridge = [t for t, where in writer.commits if where == "bridge"]
    freeze = report.freeze_seconds or 0.0
    return {
        "tenant": tenant_id,
        "online": online,
        "rows": report.rows,
        "total_seconds": round(ended - started, 3),
        "freeze_seconds": round(freeze, 3),
        "freeze_steps_seconds": {
            "suspend": round(marks["copy"] - marks["freeze"], 3),
            "copy" if not online else "drain": round(marks["verify"] - marks["copy"], 3),
            "verify": round(marks["switch"] - marks["verify"], 3),
            "switch and activate": round((report.active_at or ended) - marks["switch"], 3),
        },
        "catch_up_seconds": round(marks["freeze"] - marks["catch-up"], 3) if online else None,
        "writer_commits_during_move": len(during),
        "writer_commits_before_freeze": len([t for t in during if t < marks["freeze"]]),
        "writer_refused": writer.refused,
        "writer_blocked_seconds": (
            round(min(in_bridge) - max(in_pool), 3) if in_pool and in_bridge else None
        ),
        "writer_commits_in_bridge": len(in_bridge),
        "replication": report.online,
    }


def _seed(conn: psycopg.Connection, tenant_id: str, rows: int) -> None:
    customers = rows // 5
    conn.execute(
        "INSERT INTO customers (tenant_id, name) "
        "SELECT %s, 'customer ' || g FROM generate_series(1, %s) g",
        (tenant_id, customers),
    )
    conn.execute(
        "INSERT INTO invoices (tenant_id, customer_id, amount_cents) "
        "SELECT c.tenant_id, c.customer_id, g * 100 FROM customers c, generate_series(1, 4) g "
        "WHERE c.tenant_id = %s",
        (tenant_id,),
    )
    # VACUUM as well: freshly bulk-loaded tables would be vacuumed by autovacuum during the
    # move (a pool table in use is not in that state), and the raw pipe after it would not.
    conn.execute("VACUUM (ANALYZE) customers")
    conn.execute("VACUUM (ANALYZE) invoices")


def _raw_pipe(
    source: psycopg.Connection, target: psycopg.Connection, binary: bool = False
) -> tuple[float, int]:
    """Seconds and rows of the raw COPY pipe, both tables, parents first; rolled back (rows:
    counted in the text format only, 0 in binary)."""
    rows = 0
    options = sql.SQL(" (FORMAT binary)" if binary else "")
    with target.transaction(force_rollback=True):
        target.execute("TRUNCATE invoices, customers")
        started = time.perf_counter()
        for table in TABLES:
            columns = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS[table])
            out = sql.SQL("COPY (SELECT {} FROM {} WHERE tenant_id = %s) TO STDOUT{}").format(
                columns, sql.Identifier(table), options
            )
            into = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
                sql.Identifier(table), columns, options
            )
            with (
                source.cursor().copy(out, (TENANT,)) as reading,
                target.cursor().copy(into) as writing,
            ):
                # in batches, as the move's stream passes them on (tables.BATCH_BYTES): a
                # write per row (the server sends a message per row) costs the client twice
                # the CPU, and the pipe is the yardstick
                batch = bytearray()
                for chunk in reading:
                    batch += chunk
                    if len(batch) >= BATCH_BYTES:
                        rows += 0 if binary else batch.count(b"\n")
                        writing.write(bytes(batch))
                        batch.clear()
                if batch:
                    rows += 0 if binary else batch.count(b"\n")
                    writing.write(bytes(batch))
        seconds = time.perf_counter() - started
    return seconds, rows


def run_move_bench(
    work_dir: Path, config: MoveBenchConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Provision the pool with two tenants, move one of `config.rows` rows to the bridge, time
    it, then time the raw pipe between the same databases."""
    catalog_path = work_dir / "tenants.yaml"
    catalog_path.write_text(_catalog_text())
    shutil.copytree(REPO_MIGRATIONS, work_dir / "migrations")
    state_dir = work_dir / "state"
    catalog = load_catalog(catalog_path)
    with local_session(state_dir, catalog) as local:
        progress("provisioning the pool")
        provision(local, catalog.get(TENANT), catalog)
        pool = local.shared.superuser_settings(POOL.database)
        progress(f"seeding {config.rows:,} rows for {TENANT} (and a neighbour)")
        with psycopg.connect(**pool.connect_kwargs(), autocommit=True) as conn:
            _seed(conn, TENANT, config.rows)
            _seed(conn, NEIGHBOUR, config.rows // 10)
            _seed(conn, WRITTEN_OFFLINE, config.rows)
            _seed(conn, WRITTEN_ONLINE, config.rows)

        marks: dict[str, float] = {}

        def mark(step: str) -> None:
            marks[step] = time.perf_counter()
            progress(f"move: {step}")

        started = time.perf_counter()
        report = Move(local, catalog_path, state_dir, TENANT).run(catalog, "bridge", mark)
        total = time.perf_counter() - started
        copy_seconds = marks["verify"] - marks["copy"]
        verify_seconds = marks["switch"] - marks["verify"]

        progress("raw COPY pipe, pool -> the tenant's bridge database")
        bridge = local.shared.superuser_settings(tenant_names(TENANT).database)
        raw, binary = [], []
        with (
            psycopg.connect(**pool.connect_kwargs()) as source,
            psycopg.connect(**bridge.connect_kwargs()) as target,
        ):
            for _ in range(config.raw_repeats):
                seconds, raw_rows = _raw_pipe(source, target)
                source.rollback()
                raw.append(seconds)
                binary.append(_raw_pipe(source, target, binary=True)[0])
                source.rollback()
        written = [
            _written_move(local, catalog_path, state_dir, tenant_id, online, progress)
            for tenant_id, online in ((WRITTEN_OFFLINE, False), (WRITTEN_ONLINE, True))
        ]
    raw_seconds = statistics.median(raw)
    binary_seconds = statistics.median(binary)
    copy_rate = report.rows / copy_seconds
    raw_rate = raw_rows / raw_seconds
    return {
        "tenant_rows": report.rows,
        "tables": {name: rows for name, (rows, _sha) in report.tables.items()},
        "total_seconds": round(total, 3),
        "freeze_seconds": round(report.freeze_seconds or 0.0, 3),
        "copy_seconds": round(copy_seconds, 3),
        "verify_seconds": round(verify_seconds, 3),
        "provision_target_seconds": round(marks["freeze"] - marks["provision-target"], 3),
        "copy_rows_per_second": round(copy_rate),
        "raw": {
            "rows": raw_rows,
            "median_seconds": round(raw_seconds, 3),
            "runs_seconds": [round(s, 3) for s in raw],
            "rows_per_second": round(raw_rate),
        },
        "raw_binary": {
            "median_seconds": round(binary_seconds, 3),
            "runs_seconds": [round(s, 3) for s in binary],
            "rows_per_second": round(raw_rows / binary_seconds),
            "vs_raw_text": round(raw_seconds / binary_seconds, 3),
        },
        "copy_vs_raw": round(copy_rate / raw_rate, 3),
        "target_ratio": 0.7,
        "with_writer": written,
        "online_freeze_target_seconds": 1.0,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "note": (
            "copy = each table streamed from the source's snapshot (COPY of the rows in key "
            "order, hashed as it passes) into the target's COPY FROM (WHERE tenant_id = the "
            "tenant: the tenant check), in the target's one transaction; verify = every table "
            "read back from the target and compared, then the commit; raw = the same rows piped "
            "COPY TO -> COPY FROM (no order, no hash, no check), text and binary"
        ),
    }
