"""`tenantctl bench migrate`: what the migration engine costs per tenant database, and how a
fleet rollout's wall time falls with parallelism, on a fresh durable embedded PostgreSQL.

- overhead: for each bridge tenant, on one open admin connection to its database, the same
  few statements applied raw (BEGIN, the SQL, COMMIT) and through `apply_migrations` (advisory
  lock, status and drift check, role check, SET ROLE and timeouts, the tracking row),
  interleaved tenant by tenant, each side creating tables of its own names; twice: the first
  apply of a database also creates its tracking table, the second is a later migration;
- fleet: every tenant database brought to a new migration, connecting to each as the
  provisioner does, with 1, 2, 4 and 8 at once (a new migration file per level, so each level
  applies exactly one file per tenant, as a real rollout does).

The pool database is not part of it: it is one database, migrated once.
"""

import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from lambda_src.core.connection import RetryPolicy, connect
from lambda_src.migrations.apply import apply_migrations
from lambda_src.migrations.files import load_migrations
from lambda_src.provisioner.handler import handle

from ..catalog import Tenant, parse_catalog
from ..embedded_pg import EmbeddedPostgres, RunningServer
from ..local import LocalSecrets, handler_config, tenant_database_event
from ..local_aws import local_aws

STATEMENTS = """\
CREATE TABLE {name}_orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer text NOT NULL,
    total_cents bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX {name}_orders_created ON {name}_orders (created_at);
ALTER TABLE {name}_orders ADD COLUMN note text;
"""
"""A typical small migration: a table, an index on it, a new nullable column."""


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
    per database's life); the second is what every later migration costs."""
    raw: dict[str, list[float]] = {"first": [], "later": []}
    engine: dict[str, list[float]] = {"first": [], "later": []}
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
    results: dict[str, Any] = {"tenants": len(tenants)}
    for run in ("first", "later"):
        added = [e - r for e, r in zip(engine[run], raw[run], strict=True)]
        results[run] = {
            "raw": _ms(raw[run]),
            "engine": _ms(engine[run]),
            "added_median_ms": round(statistics.median(added) * 1000, 2),
            "added_p95_ms": _ms(added)["p95_ms"],
        }
    return results


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

    def migrate(tenant: Tenant) -> float:
        started = time.perf_counter()
        with connect(admin.for_database(tenant.names.database), retry) as conn:
            result = apply_migrations(conn, migrations, role=tenant.names.objects_role)
        if result.failed is not None or result.applied != (version,):
            raise RuntimeError(f"{tenant.id}: {result}")
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallelism) as pool:
        each = list(pool.map(migrate, tenants))
    seconds = time.perf_counter() - started
    return {
        "parallelism": parallelism,
        "seconds": round(seconds, 3),
        "per_tenant": _ms(each),
        "tenants_per_second": round(len(tenants) / seconds, 1),
    }


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
            progress(f"provisioning {len(tenants)} bridge tenants")
            handler = handler_config(server)
            for tenant in tenants:
                handle(tenant_database_event("Create", tenant, server, store), handler)
            progress("overhead: raw SQL vs the engine, tenant by tenant, one open connection")
            overhead = _overhead(server, tenants, directory)
            fleet = []
            for level, parallelism in enumerate(config.parallelism, start=3):
                progress(f"fleet: {len(tenants)} tenant databases, {parallelism} at once")
                fleet.append(_fleet(server, tenants, directory, parallelism, level))
    finally:
        pg.destroy()
    return {"config": asdict(config), "overhead": overhead, "fleet": fleet}


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
    axis.set_xlabel("tenant databases migrated at once")
    axis.set_ylabel("fleet wall time (s)")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    tenants = results["config"]["bridge_tenants"]
    axis.set_title(f"one migration (3 statements) across {tenants} bridge tenant databases")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
