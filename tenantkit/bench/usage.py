"""`tenantctl bench usage`: what metering costs against an exact count, and how close it is.

On a fresh embedded server: a pool of `pool_tenants` tenants holding `pool_rows` customers
(skewed: a few large tenants, many small ones, some with one row or none) and `bridge_tenants`
bridge tenants with `bridge_rows` customers each. Measured in one run:
- pool, exact: `count(*) ... GROUP BY tenant_id` of every protected table (what metering must
  not do on every sample);
- pool, metering with ANALYZE: the first sample, whose statistics are missing (the sampler
  analyzes tenant_id: the cost it pays once a table changed by ANALYZE_AFTER_FRACTION);
- pool, metering: the steady state, statistics fresh;
- pool, metering after churn: rows written by a few tenants since the ANALYZE (less than the
  threshold): the estimate is stale, and the bound must cover the error;
- pool, ANALYZE alone at tenant_id's statistics target 10,000, of the whole table
  (autovacuum's) and of tenant_id alone (the sampler's), and of the whole table at the default
  100, each twice, on the same data; how often each runs for a given write rate; tenant_id
  alone at targets 1,000 and 2,500 with metering's error after each; and metering at the
  default target (the tenants the shorter list lacks are counted) with the planner's own
  error at 100;
- bridge: one sample of every tenant database against an exact count(*) of their tables.
Database work is the blocks each reads (shared-buffer hits + reads, pg_statio_all_tables, read
by another session after the measured one closed): of the pool database's own tables and
indexes (the tenants' data), and of the catalogs beyond what an idle session reads.
"""

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lambda_src.core.connection import ConnectionSettings
from lambda_src.metering import TENANT_STATISTICS_TARGET, sample_pool, sample_tenant_databases
from lambda_src.metering.sampler import (
    ANALYZE_AFTER_FRACTION,
    ANALYZE_AFTER_ROWS,
    NO_TENANT,
    analyze_tenant_id,
    exact_pool_rows,
    planned_rows,
)
from lambda_src.provisioner.plans.pool_rls import split_qualified_name
from lambda_src.tenancy import POOL

from ..catalog import MeteringSettings, parse_catalog
from ..embedded_pg import EmbeddedPostgres, RunningServer
from ..local import LocalSecrets, provision_pool, provision_tenant_databases
from ..local_aws import local_aws
from ..synth import REPO_ROOT

TABLE = "public.customers"


@dataclass(frozen=True)
class UsageBenchConfig:
    """Sizes of one run."""

    pool_tenants: int = 1000
    pool_rows: int = 1_000_000
    bridge_tenants: int = 200
    bridge_rows: int = 200
    churn_tenants: int = 10
    """Tenants that write after the ANALYZE (the stale case)."""
    analyze_repeats: int = 2
    """ANALYZEs measured per statistics target (alternating targets)."""


DEFAULT_STATISTICS_TARGET = 100
"""PostgreSQL's default_statistics_target, what tenant_id would have without protect_table."""
WRITE_RATES = (1, 10, 100, 1000)
"""Rows written per second into the table for which the ANALYZE frequency is worked out."""
LOWER_TARGETS = (1000, 2500)
"""tenant_id statistics targets below tenantkit's at which the sampler's ANALYZE and the
estimate's error are measured too."""


_BLOCKS = sql.SQL(
    "SELECT coalesce(sum(blocks) FILTER (WHERE schemaname NOT IN "
    "('pg_catalog', 'information_schema', 'pg_toast')), 0)::bigint, "
    "coalesce(sum(blocks), 0)::bigint "
    "FROM (SELECT schemaname, coalesce(heap_blks_read, 0) + coalesce(heap_blks_hit, 0) "
    "+ coalesce(idx_blks_read, 0) + coalesce(idx_blks_hit, 0) + coalesce(toast_blks_read, 0) "
    "+ coalesce(toast_blks_hit, 0) + coalesce(tidx_blks_read, 0) + coalesce(tidx_blks_hit, 0) "
    "AS blocks FROM pg_statio_all_tables) b"
)
"""Blocks read or hit in shared buffers: of the database's own tables and indexes (the
tenants' data, the registry), and of every table including the catalogs."""


def _blocks(settings: ConnectionSettings) -> tuple[int, int]:
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        data, every = conn.execute(_BLOCKS).fetchone()  # type: ignore[misc]
        return int(data), int(every)


def _backend_cpu_seconds(conn: psycopg.Connection) -> float:
    """User + system CPU the connection's backend has used (the embedded server is local):
    less disturbed than wall time by the other work on a loaded machine."""
    pid = conn.info.backend_pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _measured(
    settings: ConnectionSettings, into: dict[str, Any], idle: int = 0
) -> Iterator[psycopg.Connection]:
    """A session of its own whose wall time, backend CPU time and blocks (counted after it
    closed, when its statistics are flushed) go into `into`: `blocks`, of the database's own
    tables and indexes, and `catalog_blocks`, of the catalogs, less `idle` (what an idle
    session and the counting itself read)."""
    before = _blocks(settings)
    started = time.perf_counter()
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        cpu = _backend_cpu_seconds(conn)
        yield conn
        into["cpu_seconds"] = round(_backend_cpu_seconds(conn) - cpu, 3)
    into["seconds"] = round(time.perf_counter() - started, 4)
    time.sleep(0.05)
    after = _blocks(settings)
    into["blocks"] = after[0] - before[0]
    into["catalog_blocks"] = max(after[1] - before[1] - into["blocks"] - idle, 0)


def _error(
    estimates: dict[str, int], bounds: dict[str, int], exact: dict[str, int]
) -> dict[str, Any]:
    errors = {t: abs(estimates[t] - exact.get(t, 0)) for t in estimates}
    large = [t for t in estimates if exact.get(t, 0) >= 100]
    return {
        "tenants": len(estimates),
        "max_abs_error_rows": max(errors.values(), default=0),
        "exact_tenants": sum(1 for e in errors.values() if e == 0),
        "max_rel_error_100_rows_or_more": round(
            max((errors[t] / exact[t] for t in large), default=0.0), 5
        ),
        "max_bound_rows": max(bounds.values(), default=0),
        "within_bound": sum(1 for t in estimates if errors[t] <= bounds[t]),
        "total_estimated": sum(estimates.values()),
        "total_exact": sum(exact.values()),
    }


def _load_pool(server: RunningServer, tenants: list[str], rows: int, label: str = "c") -> None:
    # Loaded as the superuser, past the policies: the benchmark meters, it does not test RLS.
    with psycopg.connect(
        **server.superuser_settings(POOL.database).connect_kwargs(), autocommit=True
    ) as conn:
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            "INSERT INTO customers (tenant_id, name) "
            "SELECT (%s::text[])[1 + floor(power(random(), 3) * %s)::int], %s || n "
            "FROM generate_series(1, %s) n",
            (tenants, len(tenants), label, rows),
        )


_READS = sql.SQL(
    "SELECT coalesce(sum(coalesce(heap_blks_read, 0) + coalesce(idx_blks_read, 0) "
    "+ coalesce(toast_blks_read, 0) + coalesce(tidx_blks_read, 0)), 0)::bigint, "
    "(SELECT blk_read_time FROM pg_stat_database WHERE datname = current_database()) "
    "FROM pg_statio_user_tables"
)
"""Blocks of the database's own tables that missed shared buffers, and the database's read
time (track_io_timing)."""


def _reads(settings: ConnectionSettings) -> tuple[int, float]:
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        blocks, ms = conn.execute(_READS).fetchone()  # type: ignore[misc]
        return int(blocks), float(ms or 0.0)


def _analyze(
    server: RunningServer, table: sql.Composable, target: int, idle: int, column: bool = False
) -> dict[str, Any]:
    """One ANALYZE of the whole table (autovacuum's, here as the pool owner) or, with `column`,
    the sampler's own of tenant_id alone (analyze_tenant_id), with tenant_id's statistics target
    set to `target` beforehand: wall time, the backend's CPU time, blocks (hits + reads), blocks
    read from outside shared buffers and their read time, and the most-common-values list it
    left."""
    superuser = server.superuser_settings(POOL.database)
    with psycopg.connect(**superuser.connect_kwargs(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN tenant_id SET STATISTICS {}").format(
                table, sql.Literal(target)
            )
        )
    reads_before = _reads(superuser)
    run: dict[str, Any] = {"statistics_target": target, "columns": "tenant_id" if column else "all"}
    with _measured(superuser, run, idle) as conn:
        # A superuser session (track_io_timing is a superuser setting), ANALYZE as the owner.
        conn.execute("SET track_io_timing = on")
        if column:
            oid = conn.execute("SELECT %s::regclass::oid", (TABLE,)).fetchone()[0]  # type: ignore[index]
            analyze_tenant_id(conn, oid, TABLE)
        else:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(POOL.owner_role)))
            conn.execute(sql.SQL("ANALYZE {}").format(table))
    reads_after = _reads(superuser)
    run["blocks_read"] = reads_after[0] - reads_before[0]
    run["read_ms"] = round(reads_after[1] - reads_before[1], 1)
    with psycopg.connect(**superuser.connect_kwargs(), autocommit=True) as conn:
        schema, name = split_qualified_name(TABLE)
        mcv, reltuples = conn.execute(
            "SELECT coalesce(array_length(most_common_vals::text::text[], 1), 0), "
            "(SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass) "
            "FROM pg_stats WHERE schemaname = %s AND tablename = %s AND attname = 'tenant_id'",
            (TABLE, schema, name),
        ).fetchone()  # type: ignore[misc]
    run["most_common_values"] = int(mcv)
    run["sample_rows"] = min(300 * target, int(reltuples))  # ANALYZE's rule
    return run


SIMULATED_HOURS = 500
"""Hours of steady writes simulated per write rate (an ANALYZE every few hours at 1 row/s)."""


def _simulate(
    rate: float,
    policy: str,
    *,
    sampler_rows: float,
    autovacuum_rows: float,
    schedule: int,
    naptime: int,
) -> tuple[float, float]:
    """Whole-table and tenant_id-only ANALYZEs per hour at `rate` rows per second, minute by
    minute: autovacuum analyzes the whole table when n_mod_since_analyze passes its rows (at
    every naptime); the sampler, at every schedule, refreshes tenant_id when more than its rows
    changed since tenant_id's statistics, by `policy`: "whole" (the whole table, as before),
    "column" (tenant_id alone, which leaves n_mod_since_analyze) or "sampler" (what it does:
    the whole table when autovacuum's would come before its next refresh)."""
    n_mod = since = 0.0
    whole = column = 0
    step = 60
    for second in range(step, SIMULATED_HOURS * 3600 + 1, step):
        n_mod += rate * step
        since += rate * step
        if second % naptime == 0 and n_mod > autovacuum_rows:
            n_mod = since = 0.0
            whole += 1
        if second % schedule == 0 and since > sampler_rows:
            if policy == "whole" or (
                policy == "sampler" and n_mod + sampler_rows >= autovacuum_rows
            ):
                n_mod = since = 0.0
                whole += 1
            else:
                since = 0.0
                column += 1
    return whole / SIMULATED_HOURS, column / SIMULATED_HOURS


def _analyze_schedule(
    server: RunningServer,
    reltuples: int,
    seconds_by_target: dict[int, float],
    column_seconds: float,
    exact_seconds: float,
) -> dict[str, Any]:
    """How often the table is analyzed for a given write rate, and at what CPU cost per hour
    (`seconds_by_target`: one whole-table ANALYZE per target; `column_seconds`: one of
    tenant_id alone at tenantkit's target), simulated (_simulate) for the sampler analyzing
    the whole table at every refresh (before), tenant_id alone at every refresh, and what it
    does now; `exact_seconds`: an exact count at every sample instead."""
    with psycopg.connect(
        **server.superuser_settings(POOL.database).connect_kwargs(), autocommit=True
    ) as conn:
        threshold, scale, naptime, options = conn.execute(
            "SELECT current_setting('autovacuum_analyze_threshold')::int, "
            "current_setting('autovacuum_analyze_scale_factor')::float8, "
            "extract(epoch FROM current_setting('autovacuum_naptime')::interval), "
            "(SELECT reloptions FROM pg_class WHERE oid = %s::regclass)",
            (TABLE,),
        ).fetchone()  # type: ignore[misc]
    for option in options or []:  # a table's own setting wins over the server's
        key, _, value = option.partition("=")
        if key == "autovacuum_analyze_threshold":
            threshold = int(value)
        elif key == "autovacuum_analyze_scale_factor":
            scale = float(value)
    schedule = MeteringSettings().schedule_minutes * 60
    sampler_rows = ANALYZE_AFTER_ROWS + ANALYZE_AFTER_FRACTION * reltuples
    autovacuum_rows = threshold + scale * reltuples
    full = seconds_by_target[TENANT_STATISTICS_TARGET]
    rates = []
    for rate in WRITE_RATES:
        entry: dict[str, Any] = {"rows_per_second": rate}
        for policy in ("whole", "column", "sampler"):
            whole, column = _simulate(
                rate,
                policy,
                sampler_rows=sampler_rows,
                autovacuum_rows=autovacuum_rows,
                schedule=schedule,
                naptime=int(naptime),
            )
            entry[policy] = {
                "whole_table_per_hour": round(whole, 2),
                "tenant_id_per_hour": round(column, 2),
                "cpu_seconds_per_hour": round(whole * full + column * column_seconds, 2),
            }
        whole = entry["whole"]["whole_table_per_hour"]
        entry["analyze_cpu_seconds_per_hour_target_100"] = round(
            whole * seconds_by_target[DEFAULT_STATISTICS_TARGET], 2
        )
        entry["exact_count_cpu_seconds_per_hour"] = round(3600 / schedule * exact_seconds, 2)
        rates.append(entry)
    return {
        "rows": reltuples,
        "sampler_rows": round(sampler_rows),
        "sampler_schedule_minutes": schedule // 60,
        "autovacuum_analyze_threshold": threshold,
        "autovacuum_analyze_scale_factor": scale,
        "autovacuum_naptime_seconds": int(naptime),
        "autovacuum_rows": round(autovacuum_rows),
        "simulated_hours": SIMULATED_HOURS,
        "by_write_rate": rates,
    }


def _analyze_cost(
    server: RunningServer,
    config: UsageBenchConfig,
    tenants: list[str],
    counted: dict[str, int],
    idle: int,
    exact_seconds: float,
) -> dict[str, Any]:
    """The sampler's tenant_id ANALYZE at lower targets, each followed by metering (which must
    not analyze again) and its error; then ANALYZE at tenantkit's target (whole table and
    tenant_id alone) and at the default, alternately, on unchanged data; then metering and the
    planner's own estimate at the default target. Leaves tenantkit's target set again
    (statistics of the default's ANALYZE until the next one)."""
    table = sql.Identifier(*split_qualified_name(TABLE))
    targets = (TENANT_STATISTICS_TARGET, DEFAULT_STATISTICS_TARGET)
    settings = server.admin_settings(POOL.database)
    # The ANALYZE sessions are the superuser's, whose idle session reads other catalog blocks.
    superuser_idle: dict[str, Any] = {}
    with _measured(server.superuser_settings(POOL.database), superuser_idle) as conn:
        conn.execute("SET track_io_timing = on")
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(POOL.owner_role)))
    superuser_idle_blocks = superuser_idle["catalog_blocks"]
    lower: dict[str, Any] = {}
    for target in LOWER_TARGETS:
        run = _analyze(server, table, target, superuser_idle_blocks, column=True)
        after: dict[str, Any] = {}
        with _measured(settings, after, idle) as conn:
            usages, tables = sample_pool(conn, tenants, mode="settable")
        run["metering"] = {
            **after,
            "analyzed": [t.table for t in tables if t.analyzed],
            "counted_tenants": max((t.counted for t in tables if t.table == TABLE), default=0),
            "error": _error(
                {u.tenant_id: u.table_rows[TABLE] for u in usages},
                {u.tenant_id: u.rows_error_bound for u in usages},
                counted,
            ),
        }
        lower[f"column_target_{target}"] = run
    kinds = (
        (TENANT_STATISTICS_TARGET, False),
        (TENANT_STATISTICS_TARGET, True),
        (DEFAULT_STATISTICS_TARGET, False),
    )
    runs: dict[tuple[int, bool], list[dict[str, Any]]] = {k: [] for k in kinds}
    for _ in range(config.analyze_repeats):
        for target, column in kinds:
            runs[target, column].append(
                _analyze(server, table, target, superuser_idle_blocks, column=column)
            )
    # At the default target (the last ANALYZE): the sampler counts the tenants the list lacks.
    metering: dict[str, Any] = {}
    with _measured(settings, metering, idle) as conn:
        usages, tables = sample_pool(conn, tenants, mode="settable")
    metering["analyzed"] = [t.table for t in tables if t.analyzed]
    metering["counted_tenants"] = max((t.counted for t in tables if t.table == TABLE), default=0)
    metering["error"] = _error(
        {u.tenant_id: u.table_rows[TABLE] for u in usages},
        {u.tenant_id: u.rows_error_bound for u in usages},
        counted,
    )
    # What the planner alone says at the default target: a tenant outside the 100-value list
    # gets the same average share as every other outsider.
    with (
        psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn,
        conn.transaction(),
    ):
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(POOL.maintainer_role)))
        _whole, planned = planned_rows(conn, table, [NO_TENANT, *tenants])
    planner = {t: round(e) for t, e in zip(tenants, planned[1:], strict=True)}
    planner_error = _error(planner, dict.fromkeys(tenants, 0), counted)
    del planner_error["max_bound_rows"], planner_error["within_bound"]
    with psycopg.connect(
        **server.superuser_settings(POOL.database).connect_kwargs(), autocommit=True
    ) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN tenant_id SET STATISTICS {}").format(
                table, sql.Literal(TENANT_STATISTICS_TARGET)
            )
        )

    def summary(kind: tuple[int, bool]) -> dict[str, Any]:
        measured = runs[kind]
        best = min(measured, key=lambda r: r["cpu_seconds"])
        return {
            **best,
            "runs_seconds": [r["seconds"] for r in measured],
            "runs_cpu_seconds": [r["cpu_seconds"] for r in measured],
        }

    by_target = {f"target_{t}": summary((t, False)) for t in targets}
    column_only = summary((TENANT_STATISTICS_TARGET, True))
    reltuples = sum(counted.values())
    return {
        **by_target,
        f"column_target_{TENANT_STATISTICS_TARGET}": column_only,
        **lower,
        "cpu_ratio": round(
            by_target[f"target_{targets[0]}"]["cpu_seconds"]
            / max(by_target[f"target_{targets[1]}"]["cpu_seconds"], 1e-3),
            1,
        ),
        "column_cpu_ratio": round(
            by_target[f"target_{targets[0]}"]["cpu_seconds"]
            / max(column_only["cpu_seconds"], 1e-3),
            1,
        ),
        "metering_target_100": metering,
        "planner_error_target_100": planner_error,
        "schedule": _analyze_schedule(
            server,
            reltuples,
            {t: by_target[f"target_{t}"]["cpu_seconds"] for t in targets},
            column_only["cpu_seconds"],
            exact_seconds,
        ),
    }


def _pool(
    server: RunningServer, config: UsageBenchConfig, tenants: list[str], log: Callable[[str], None]
) -> dict[str, Any]:
    settings = server.admin_settings(POOL.database)
    baseline: dict[str, Any] = {}
    with _measured(settings, baseline):
        pass
    idle = baseline["catalog_blocks"]
    exact: dict[str, Any] = {}
    with _measured(settings, exact, idle) as conn:
        counted = exact_pool_rows(conn, TABLE)
    first: dict[str, Any] = {}
    with _measured(settings, first, idle) as conn:
        usages, tables = sample_pool(conn, tenants, mode="settable")
    first["analyzed"] = [t.table for t in tables if t.analyzed]
    first["analyzed_whole_table"] = [t.table for t in tables if t.analyzed_whole_table]
    first["error"] = _error(
        {u.tenant_id: u.table_rows[TABLE] for u in usages},
        {u.tenant_id: u.rows_error_bound for u in usages},
        counted,
    )
    steady: dict[str, Any] = {}
    with _measured(settings, steady, idle) as conn:
        usages, tables = sample_pool(conn, tenants, mode="settable")
    steady["analyzed"] = [t.table for t in tables if t.analyzed]
    steady["counted_tenants"] = max((t.counted for t in tables if t.table == TABLE), default=0)
    steady["error"] = _error(
        {u.tenant_id: u.table_rows[TABLE] for u in usages},
        {u.tenant_id: u.rows_error_bound for u in usages},
        counted,
    )
    # Churn below the threshold: the statistics are stale, the bound must hold.
    churn_rows = int(config.pool_rows * ANALYZE_AFTER_FRACTION / 2)
    log(f"pool: {churn_rows:,} rows written by {config.churn_tenants} tenants after the ANALYZE")
    _load_pool(server, tenants[-config.churn_tenants :], churn_rows, label="churn")
    time.sleep(1.1)  # the writer's table statistics reach the cumulative statistics
    stale: dict[str, Any] = {}
    with _measured(settings, stale, idle) as conn:
        usages, tables = sample_pool(conn, tenants, mode="settable")
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        counted = exact_pool_rows(conn, TABLE)
    stale["analyzed"] = [t.table for t in tables if t.analyzed]
    stale["error"] = _error(
        {u.tenant_id: u.table_rows[TABLE] for u in usages},
        {u.tenant_id: u.rows_error_bound for u in usages},
        counted,
    )
    log(
        f"pool: ANALYZE (tenant_id) at {', '.join(map(str, LOWER_TARGETS))}; ANALYZE at "
        f"{TENANT_STATISTICS_TARGET} (whole table, tenant_id) and 100; metering at 100"
    )
    analyze = _analyze_cost(server, config, tenants, counted, idle, exact["cpu_seconds"])
    return {
        "tenants": len(tenants),
        "rows": config.pool_rows,
        "idle_session_catalog_blocks": idle,
        "exact_count": exact,
        "metering_with_analyze": first,
        "metering": steady,
        "metering_after_churn": stale,
        "ratio_blocks": round(exact["blocks"] / max(steady["blocks"], 1), 1),
        "ratio_all_blocks": round(
            (exact["blocks"] + exact["catalog_blocks"])
            / max(steady["blocks"] + steady["catalog_blocks"], 1),
            1,
        ),
        "ratio_seconds": round(exact["seconds"] / max(steady["seconds"], 1e-6), 1),
        "ratio_blocks_with_analyze": round(exact["blocks"] / max(first["blocks"], 1), 2),
        "analyze": analyze,
    }


def _bridge(server: RunningServer, tenants: list[str], rows: int) -> dict[str, Any]:
    databases = {t: "tenant_" + t.replace("-", "_") for t in tenants}
    admin = server.admin_settings()

    def connect_to(db: str) -> psycopg.Connection:
        return psycopg.connect(**admin.for_database(db).connect_kwargs(), autocommit=True)

    for database in databases.values():
        with psycopg.connect(
            **server.superuser_settings(database).connect_kwargs(), autocommit=True
        ) as conn:
            conn.execute(
                "INSERT INTO customers (tenant_id, name) SELECT 'x', 'c' || n "
                "FROM generate_series(1, %s) n",
                (rows,),
            )
    time.sleep(1.1)
    started = time.perf_counter()
    with connect_to("postgres") as conn:
        usages = sample_tenant_databases(conn, databases, tier="bridge", connect_to=connect_to)
    metering = time.perf_counter() - started
    started = time.perf_counter()
    exact = {}
    for tenant, database in databases.items():
        with connect_to(database) as conn:
            exact[tenant] = int(
                conn.execute("SELECT count(*) FROM public.customers").fetchone()[0]  # type: ignore[index]
            )
    counting = time.perf_counter() - started
    return {
        "tenants": len(tenants),
        "rows_per_tenant": rows,
        "metering_seconds": round(metering, 3),
        "metering_ms_per_tenant": round(metering * 1000 / len(tenants), 2),
        "exact_count_seconds": round(counting, 3),
        "rows_match": sum(1 for u in usages if u.table_rows.get(TABLE) == exact[u.tenant_id]),
    }


def run_usage_bench(
    root: Path, config: UsageBenchConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Start a fresh embedded server in `root`, load it, measure, return the results."""
    pg = EmbeddedPostgres(root / "pg", durable=False)
    server = pg.start()
    pool_ids = [f"use-{n:05d}" for n in range(config.pool_tenants)]
    bridge_ids = [f"br-{n:04d}" for n in range(config.bridge_tenants)]
    catalog = parse_catalog(
        {
            "schema": {"directory": str(REPO_ROOT / "migrations"), "tenant_schemas": ["public"]},
            "tenants": [{"id": t, "tier": "pool"} for t in pool_ids]
            + [{"id": t, "tier": "bridge"} for t in bridge_ids],
        },
        source=str(REPO_ROOT / "tenants.yaml"),
    )
    try:
        with local_aws():
            store = LocalSecrets(root / "secrets.json")
            progress(f"pool: {config.pool_tenants} tenants registered")
            results = provision_pool(
                list(catalog.in_tier("pool")),
                server,
                store,
                migrations_dir=catalog.application_migrations,
                pool_schema=catalog.schema.pool_schema,  # type: ignore[union-attr]
            )
            progress(f"bridge: {config.bridge_tenants} tenant databases")
            results += provision_tenant_databases(
                list(catalog.in_tier("bridge")),
                lambda _t: server,
                store,
                migrations_dir=catalog.application_migrations,
            )
            failed = [r.label for r in results if not r.ok]
            if failed:
                raise RuntimeError(f"provisioning failed: {', '.join(failed[:5])}")
            progress(f"pool: {config.pool_rows:,} rows loaded")
            _load_pool(server, pool_ids, config.pool_rows)
            progress("pool: exact count, metering with ANALYZE, metering, after churn")
            pool = _pool(server, config, pool_ids, progress)
            progress(f"bridge: {config.bridge_rows} rows each, metering vs count(*)")
            bridge = _bridge(server, bridge_ids, config.bridge_rows)
    finally:
        pg.destroy()
    return {"config": asdict(config), "pool": pool, "bridge": bridge}
