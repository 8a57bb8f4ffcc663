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
- bridge: one sample of every tenant database against an exact count(*) of their tables.
Database work is the blocks each reads (shared-buffer hits + reads, pg_statio_all_tables, read
by another session after the measured one closed): of the pool database's own tables and
indexes (the tenants' data), and of the catalogs beyond what an idle session reads.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lambda_src.core.connection import ConnectionSettings
from lambda_src.metering import sample_pool, sample_tenant_databases
from lambda_src.metering.sampler import ANALYZE_AFTER_FRACTION, exact_pool_rows
from lambda_src.tenancy import POOL

from ..catalog import parse_catalog
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


@contextmanager
def _measured(
    settings: ConnectionSettings, into: dict[str, Any], idle: int = 0
) -> Iterator[psycopg.Connection]:
    """A session of its own whose wall time and blocks (counted after it closed, when its
    statistics are flushed) go into `into`: `blocks`, of the database's own tables and
    indexes, and `catalog_blocks`, of the catalogs, less `idle` (what an idle session and the
    counting itself read)."""
    before = _blocks(settings)
    started = time.perf_counter()
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        yield conn
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
