"""`tenantctl bench onboard`: how long onboarding takes, on a fresh embedded PostgreSQL.

- bridge: a TenantDatabase Create through the provisioner's handler (connect as the admin, read
  the tenant's secret, roles, CREATE DATABASE, grants, schema, password) against a bare
  `CREATE DATABASE` on an open admin connection, interleaved in one run;
- concurrency: `concurrent` tenants onboarded at once, each request sent twice (as
  CloudFormation retries do): no error, one database and one set of roles per tenant;
- pool: tenants registered through PoolTenants, all batches of a catalog at once and one
  tenant per request (a deploy that adds one tenant).

The server is durable (fsync on), as a real one is: CREATE DATABASE pays for its checkpoint.
"""

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lambda_src.core.connection import RetryPolicy, connect
from lambda_src.provisioner.events import pool_tenants_physical_id, provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import (
    pool_batch_of,
    pool_batches,
    pool_tenants_properties,
)

from ..catalog import parse_catalog
from ..embedded_pg import EmbeddedPostgres, RunningServer
from ..local import LocalSecrets, handler_config, provision_pool, tenant_database_event
from ..local_aws import local_aws


@dataclass(frozen=True)
class OnboardBenchConfig:
    """Sizes of one run."""

    bridge_tenants: int = 40
    concurrent: int = 20
    pool_tenants: int = 2000
    pool_single: int = 200


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 2),
    }


def _bridge_latency(
    server: RunningServer, store: LocalSecrets, config: OnboardBenchConfig
) -> dict[str, Any]:
    tenants = parse_catalog(
        {
            "tenants": [
                {"id": f"onb-{n:03d}", "tier": "bridge"} for n in range(config.bridge_tenants)
            ]
        }
    ).tenants
    events = [
        tenant_database_event("Create", t, server, store) for t in tenants
    ]  # secrets exist before deploys
    handler = handler_config(server)
    onboard: list[float] = []
    raw: list[float] = []
    with connect(server.admin_settings(), RetryPolicy(attempts=2)) as admin:
        for n, event in enumerate(events):
            started = time.perf_counter()
            handle(event, handler)
            onboard.append(time.perf_counter() - started)
            started = time.perf_counter()
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"raw_{n:03d}")))
            raw.append(time.perf_counter() - started)
    return {
        "tenants": len(events),
        "onboard": _ms(onboard),
        "raw_create_database": _ms(raw),
        "ratio_median": round(statistics.median(onboard) / statistics.median(raw), 3),
        "ratio_p95": round(_ms(onboard)["p95_ms"] / _ms(raw)["p95_ms"], 3),
    }


def _concurrent(
    server: RunningServer, store: LocalSecrets, config: OnboardBenchConfig
) -> dict[str, Any]:
    tenants = parse_catalog(
        {"tenants": [{"id": f"par-{n:03d}", "tier": "bridge"} for n in range(config.concurrent)]}
    ).tenants
    events = [tenant_database_event("Create", t, server, store) for t in tenants]
    handler = handler_config(server)
    errors: list[str] = []

    def onboard(event: dict[str, Any]) -> None:
        try:
            handle(event, handler)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=onboard, args=(e,)) for e in events + events]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    with psycopg.connect(**server.superuser_settings().connect_kwargs()) as conn:
        databases, roles = conn.execute(
            "SELECT (SELECT count(*) FROM pg_database WHERE datname LIKE 'tenant\\_par%'), "
            "       (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenant\\_par%')"
        ).fetchone() or (0, 0)
    return {
        "tenants": len(events),
        "requests": len(threads),
        "seconds": round(seconds, 3),
        "errors": errors,
        "databases": databases,
        "roles": roles,
        "expected_roles": len(tenants[0].names.roles) * len(events),
    }


def _pool(server: RunningServer, store: LocalSecrets, config: OnboardBenchConfig) -> dict[str, Any]:
    provision_pool([], server, store)
    handler = handler_config(server)
    ids = [f"pool-{n:05d}" for n in range(config.pool_tenants)]
    batches = pool_batches([(t, "retain") for t in ids])
    started = time.perf_counter()
    for batch_id, entries in batches.items():
        handle(provider_event("Create", pool_tenants_properties(batch_id, entries)), handler)
    batched = time.perf_counter() - started

    # One tenant per request: each request is an Update of its batch that adds one tenant.
    registered: dict[str, list[dict[str, str]]] = {b: list(e) for b, e in batches.items()}
    latencies = []
    for n in range(config.pool_single):
        tenant = f"single-{n:05d}"
        batch = pool_batch_of(tenant)
        old = pool_tenants_properties(batch, registered.get(batch, []))
        registered.setdefault(batch, []).append({"Id": tenant, "RemovalPolicy": "retain"})
        event = provider_event(
            "Update",
            pool_tenants_properties(batch, registered[batch]),
            physical_id=pool_tenants_physical_id(batch),
            old_properties=old,
        )
        started = time.perf_counter()
        handle(event, handler)
        latencies.append(time.perf_counter() - started)
    single_total = sum(latencies)
    return {
        "batched": {
            "tenants": len(ids),
            "batches": len(batches),
            "seconds": round(batched, 3),
            "tenants_per_second": round(len(ids) / batched, 1),
        },
        "one_per_request": {
            "tenants": config.pool_single,
            **_ms(latencies),
            "tenants_per_second": round(config.pool_single / single_total, 1),
        },
    }


def run_onboard_bench(
    root: Path, config: OnboardBenchConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Start a fresh durable embedded server in `root`, measure, return the results."""
    pg = EmbeddedPostgres(root / "pg", durable=True)
    server = pg.start()
    try:
        with local_aws():
            store = LocalSecrets(root / "secrets.json")
            progress(f"bridge: {config.bridge_tenants} onboardings vs CREATE DATABASE")
            bridge = _bridge_latency(server, store, config)
            progress(f"bridge: {config.concurrent} tenants onboarded concurrently, twice each")
            concurrent = _concurrent(server, store, config)
            progress(f"pool: {config.pool_tenants} tenants in batches, {config.pool_single} alone")
            pool = _pool(server, store, config)
    finally:
        pg.destroy()
    return {"config": asdict(config), "bridge": bridge, "concurrent": concurrent, "pool": pool}
