"""`tenantctl bench migrate`: what the migration engine costs per tenant database, and how a
fleet rollout's wall time falls with parallelism, on a fresh durable embedded PostgreSQL with
bridge tenants and the pool.

- overhead: for each bridge tenant, on one open admin connection to its database, the same
  few statements applied raw (BEGIN, the SQL, COMMIT) and through `apply_migrations` (advisory
  lock, status and drift check, role check, SET ROLE and timeouts, the tracking row),
  interleaved tenant by tenant, each side creating tables of its own names; twice: the first
  apply of a database also creates its tracking table, the second is a later migration. The
  pool database the same way, once each (it is one database), its engine side as `tenantctl
  migrate apply` runs it: as the pool's owner, every new table put under the tenant policies
  (protect_new_tables) in the file's transaction;
- fleet: every tenant database and the pool brought to a new migration, connecting to each as
  the provisioner (the pool: as `tenantctl migrate apply`) does, with 1, 2, 4 and 8 at once (a
  new migration file per level, so each level applies exactly one file per database, as a real
  rollout does); the pool's time is reported on its own.
"""

import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lambda_src.core.connection import RetryPolicy, connect
from lambda_src.migrations.apply import apply_migrations
from lambda_src.migrations.files import Migration, load_migrations
from lambda_src.migrations.pool import UNPROTECTED_TABLES, protect_new_tables
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.migrate import PoolSchema
from lambda_src.provisioner.plans.pool_rls import ISOLATION_POLICY
from lambda_src.tenancy import POOL

from ..catalog import Tenant, parse_catalog
from ..embedded_pg import EmbeddedPostgres, RunningServer
from ..local import LocalSecrets, handler_config, provision_pool, tenant_database_event
from ..local_aws import local_aws
from ..migrate.rollout import POOL_TARGET, MigrationTarget, apply_target

STATEMENTS = """\
CREATE TABLE {name}_orders (
    tenant_id text NOT NULL DEFAULT current_user,
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer text NOT NULL,
    total_cents bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX {name}_orders_created ON {name}_orders (tenant_id, created_at);
ALTER TABLE {name}_orders ADD COLUMN note text;
"""
"""A typical small migration: a table, an index on it, a new nullable column. Its keys lead
with tenant_id, so the same file runs in the pool, where every table must (protect_table)."""
TENANT_SCHEMAS = ("public",)
"""The pool's tenant schemas (the catalog's default)."""


@dataclass(frozen=True)
class MigrateBenchConfig:
    """Sizes of one run."""

    bridge_tenants: int = 200
    parallelism: tuple[int, ...] = (1, 2, 4, 8)


def _ms(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 2),
    }


def _write(directory: Path, version: int, name: str) -> None:
    (directory / f"V{version:04d}__{name}.sql").write_text(STATEMENTS.format(name=name))


def _overhead(server: RunningServer, tenants: Sequence[Tenant], directory: Path) -> dict[str, Any]:
    """Raw vs engine, twice per tenant: the first apply also creates the tracking table (once
    per database's life); the second is what every later migration costs. Then the pool."""
    raw: dict[str, list[float]] = {"first": [], "later": []}
    engine: dict[str, list[float]] = {"first": [], "later": []}
    pool: dict[str, dict[str, float]] = {}
    for version, run in enumerate(("first", "later"), start=1):
        _write(directory, version, f"engine{version}")
        migrations = load_migrations(directory)
        for tenant in tenants:
            names = tenant.names
            settings = server.admin_settings(names.database)
            with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
                started = time.perf_counter()
                with conn.transaction():
                    conn.execute(STATEMENTS.format(name=f"raw{version}"), prepare=False)
                raw[run].append(time.perf_counter() - started)
                started = time.perf_counter()
                result = apply_migrations(conn, migrations, role=names.objects_role)
                engine[run].append(time.perf_counter() - started)
                if result.failed is not None or result.applied != (version,):
                    raise RuntimeError(f"{tenant.id}: {result}")
        pool[run] = _pool_overhead(server, migrations, version)
    results: dict[str, Any] = {"tenants": len(tenants)}
    for run in ("first", "later"):
        added = [e - r for e, r in zip(engine[run], raw[run], strict=True)]
        results[run] = {
            "raw": _ms(raw[run]),
            "engine": _ms(engine[run]),
            "added_median_ms": round(statistics.median(added) * 1000, 2),
            "added_p95_ms": _ms(added)["p95_ms"],
        }
    results["pool"] = pool
    return results


def _pool_overhead(
    server: RunningServer, migrations: Sequence[Migration], version: int
) -> dict[str, float]:
    """The pool database, on one open admin connection: the SQL raw, then the engine as the
    pool's owner with protect_new_tables. The raw side's table is dropped before the engine
    runs (untimed), or protect_new_tables would take it for the migration's own."""
    settings = server.admin_settings(POOL.database)
    protect = protect_new_tables(TENANT_SCHEMAS, ())
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(STATEMENTS.format(name=f"raw{version}"), prepare=False)
        raw = time.perf_counter() - started
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(f"raw{version}_orders")))
        started = time.perf_counter()
        result = apply_migrations(conn, migrations, role=POOL.owner_role, after_each=protect)
        engine = time.perf_counter() - started
    if result.failed is not None or result.applied != (version,):
        raise RuntimeError(f"{POOL_TARGET}: {result}")
    return {
        "raw_ms": round(raw * 1000, 2),
        "engine_ms": round(engine * 1000, 2),
        "added_ms": round((engine - raw) * 1000, 2),
    }


def _fleet(
    server: RunningServer,
    tenants: Sequence[Tenant],
    directory: Path,
    parallelism: int,
    version: int,
) -> dict[str, Any]:
    _write(directory, version, f"wave{version}")
    migrations = load_migrations(directory)
    admin = server.admin_settings()
    retry = RetryPolicy(attempts=2)
    pool = MigrationTarget(
        POOL_TARGET,
        "pool",
        POOL.database,
        POOL.owner_role,
        server.admin_settings(POOL.database),
        PoolSchema(TENANT_SCHEMAS),
    )

    def timed(what: str, apply: Callable[[], tuple[object, tuple[int, ...]]]) -> float:
        started = time.perf_counter()
        failed, applied = apply()
        if failed is not None or applied != (version,):
            raise RuntimeError(f"{what}: {failed or applied}")
        return time.perf_counter() - started

    def tenant_database(tenant: Tenant) -> tuple[object, tuple[int, ...]]:
        names = tenant.names
        with connect(admin.for_database(names.database), retry) as conn:
            result = apply_migrations(conn, migrations, role=names.objects_role)
        return result.failed, result.applied

    def pool_database() -> tuple[object, tuple[int, ...]]:  # as tenantctl migrate apply does
        outcome = apply_target(pool, migrations, directory)
        return outcome.error, outcome.applied

    jobs = [partial(timed, t.id, partial(tenant_database, t)) for t in tenants]
    jobs.append(partial(timed, POOL_TARGET, pool_database))  # the pool last, as the CLI
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallelism) as executor:
        each = list(executor.map(lambda job: job(), jobs))
    seconds = time.perf_counter() - started
    return {
        "parallelism": parallelism,
        "seconds": round(seconds, 3),
        "databases": len(jobs),
        "per_tenant": _ms(each[:-1]),
        "pool_ms": round(each[-1] * 1000, 2),
        "databases_per_second": round(len(jobs) / seconds, 1),
    }


def _protected_pool_tables(server: RunningServer) -> dict[str, int]:
    """How many of the pool's tenant-schema tables are under the tenant policies, and how many
    are not (the benchmark's migrations must leave none outside)."""
    settings = server.admin_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        unprotected = conn.execute(UNPROTECTED_TABLES, (list(TENANT_SCHEMAS), ISOLATION_POLICY))
        outside = len(unprotected.fetchall())
        row = conn.execute(
            "SELECT count(*) FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE p.polname = %s AND n.nspname = ANY(%s)",
            (ISOLATION_POLICY, list(TENANT_SCHEMAS)),
        ).fetchone()
    return {"protected": int(row[0]) if row else 0, "unprotected": outside}


def run_migrate_bench(
    root: Path, config: MigrateBenchConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Start a fresh durable embedded server in `root`, measure, return the results."""
    pg = EmbeddedPostgres(root / "pg", durable=True)
    server = pg.start()
    directory = root / "migrations"
    directory.mkdir()
    try:
        with local_aws():
            store = LocalSecrets(root / "secrets.json")
            tenants = parse_catalog(
                {
                    "tenants": [
                        {"id": f"mig-{n:03d}", "tier": "bridge"}
                        for n in range(config.bridge_tenants)
                    ]
                }
            ).tenants
            progress(f"provisioning {len(tenants)} bridge tenants and the pool database")
            handler = handler_config(server)
            for tenant in tenants:
                handle(tenant_database_event("Create", tenant, server, store), handler)
            pool = provision_pool([], server, store)
            if not pool[0].ok:
                raise RuntimeError(f"the pool database: {pool[0].error}")
            progress("overhead: raw SQL vs the engine, database by database, one open connection")
            overhead = _overhead(server, tenants, directory)
            fleet = []
            for level, parallelism in enumerate(config.parallelism, start=3):
                progress(
                    f"fleet: {len(tenants)} tenant databases and the pool, {parallelism} at once"
                )
                fleet.append(_fleet(server, tenants, directory, parallelism, level))
            pool_tables = _protected_pool_tables(server)
    finally:
        pg.destroy()
    return {
        "config": asdict(config),
        "overhead": overhead,
        "fleet": fleet,
        "pool_tables": pool_tables,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    """Fleet wall time against parallelism."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [f["parallelism"] for f in results["fleet"]]
    seconds = [f["seconds"] for f in results["fleet"]]
    fig, axis = plt.subplots(figsize=(6, 4))
    axis.plot(levels, seconds, marker="o")
    for level, value in zip(levels, seconds, strict=True):
        axis.annotate(f"{value:.1f} s", (level, value), textcoords="offset points", xytext=(0, 6))
    axis.set_xscale("log", base=2)
    axis.set_xticks(levels, [str(level) for level in levels])
    axis.set_xlabel("databases migrated at once")
    axis.set_ylabel("fleet wall time (s)")
    axis.set_ylim(0, max(seconds) * 1.15)  # room for the top label under the title
    axis.grid(alpha=0.3)
    tenants = results["config"]["bridge_tenants"]
    axis.set_title(f"one migration (3 statements): {tenants} bridge databases and the pool")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
