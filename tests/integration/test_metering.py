"""Per-tenant usage sampled on a real embedded server: bridge databases and a pool (settable and
strict), checked against exact counts."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lambda_src.core.connection import ConnectionSettings
from lambda_src.metering import read_usage, record_usage, sample_pool, sample_tenant_databases
from lambda_src.metering.sampler import (
    POOL_ACTIVITY,
    SETTABLE_CONNECTIONS,
    exact_pool_rows,
)
from lambda_src.tenancy import POOL, PoolMode
from tenantkit.catalog import Catalog, parse_catalog
from tenantkit.embedded_pg import EmbeddedPostgres, RunningServer
from tenantkit.local import (
    LocalSecrets,
    pool_login_settings,
    pool_runtime_settings,
    provision_pool,
    provision_tenant_databases,
)
from tenantkit.local_aws import local_aws

REPO = Path(__file__).resolve().parents[2]
CUSTOMERS = "public.customers"
BRIDGE = ("mtr-b-one", "mtr-b-two")
POOLED = ("mtr-p-one", "mtr-p-two", "mtr-p-three")


@dataclass(frozen=True)
class Host:
    """A server with two bridge tenants and a pool of three, in one mode."""

    server: RunningServer
    store: LocalSecrets
    catalog: Catalog
    mode: PoolMode

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            **self.server.admin_settings(dbname).connect_kwargs(), autocommit=True
        )

    def bridge_login(self, tenant: str) -> ConnectionSettings:
        names = self.catalog.get(tenant).names
        return self.server.settings(
            names.login_role, self.store.password(names.secret_name), names.database
        )

    def pool_login(self, tenant: str) -> ConnectionSettings:
        if self.mode == "strict":
            return pool_login_settings(self.server, self.store, tenant)
        return pool_runtime_settings(self.server, self.store)


def _catalog(mode: PoolMode) -> Catalog:
    return parse_catalog(
        {
            "schema": {"directory": str(REPO / "migrations"), "tenant_schemas": ["public"]},
            "pool": {"mode": mode},
            "tenants": [{"id": t, "tier": "bridge"} for t in BRIDGE]
            + [{"id": t, "tier": "pool"} for t in POOLED],
        },
        source=str(REPO / "tenants.yaml"),
    )


def _host(root: Path, mode: PoolMode) -> Iterator[Host]:
    pg = EmbeddedPostgres(root / f"metering-{mode}", durable=False)
    server = pg.start()
    catalog = _catalog(mode)
    try:
        with local_aws():
            store = LocalSecrets(root / f"metering-{mode}-secrets.json")
            results = provision_tenant_databases(
                list(catalog.in_tier("bridge")),
                lambda _t: server,
                store,
                migrations_dir=catalog.application_migrations,
            )
            results += provision_pool(
                list(catalog.in_tier("pool")),
                server,
                store,
                mode=mode,
                migrations_dir=catalog.application_migrations,
                pool_schema=catalog.schema.pool_schema if catalog.schema else None,  # type: ignore[arg-type]
            )
            assert all(r.ok for r in results), [r.error for r in results if not r.ok]
            yield Host(server, store, catalog, mode)
    finally:
        pg.destroy()


@pytest.fixture(scope="module")
def settable(pg_root: Path) -> Iterator[Host]:
    """A settable pool and two bridge tenants."""
    yield from _host(pg_root, "settable")


@pytest.fixture(scope="module")
def strict(pg_root: Path) -> Iterator[Host]:
    """A strict pool (a login per tenant) and two bridge tenants."""
    yield from _host(pg_root, "strict")


def write_customers(host: Host, tenant: str, count: int, *, tier: str) -> None:
    """`count` customers written by the tenant's own application login."""
    settings = host.bridge_login(tenant) if tier == "bridge" else host.pool_login(tenant)
    with psycopg.connect(**settings.connect_kwargs()) as conn:
        if tier == "pool":
            conn.execute("SELECT set_config(%s, %s, true)", (POOL.tenant_setting, tenant))
        conn.execute(
            "INSERT INTO customers (tenant_id, name) "
            "SELECT %s, 'c' || n || '-' || gen_random_uuid() FROM generate_series(1, %s) n",
            (tenant, count),
        )
    # Closing the session flushes its statistics (PostgreSQL 15+ flushes them at most once a
    # second otherwise).


def bridge_usage(host: Host) -> dict[str, Any]:
    databases = {t: host.catalog.get(t).names.database for t in BRIDGE}
    with host.admin() as admin:
        usages = sample_tenant_databases(
            admin, databases, tier="bridge", connect_to=lambda db: host.admin(db)
        )
    return {u.tenant_id: u for u in usages}


def pool_usage(host: Host) -> dict[str, Any]:
    with host.admin(POOL.database) as conn:
        usages, _ = sample_pool(conn, list(POOLED), mode=host.mode)
    return {u.tenant_id: u for u in usages}


def test_a_bridge_tenant_that_writes_n_rows_shows_n_and_its_neighbour_none(settable: Host) -> None:
    before = bridge_usage(settable)
    write_customers(settable, "mtr-b-one", 321, tier="bridge")
    after = bridge_usage(settable)
    one, two = after["mtr-b-one"], after["mtr-b-two"]
    assert one.table_rows[CUSTOMERS] - before["mtr-b-one"].table_rows[CUSTOMERS] == 321
    assert two.table_rows == before["mtr-b-two"].table_rows
    assert one.rows_written_counter - before["mtr-b-one"].rows_written_counter >= 321
    assert two.rows_written_counter == before["mtr-b-two"].rows_written_counter
    assert one.storage_bytes > 0
    assert one.rows_error_bound == 0


def test_a_pool_tenant_that_writes_n_rows_shows_n_within_the_bound_and_others_unchanged(
    settable: Host,
) -> None:
    write_customers(settable, "mtr-p-one", 1500, tier="pool")
    write_customers(settable, "mtr-p-two", 40, tier="pool")
    usage = pool_usage(settable)
    with settable.admin(POOL.database) as conn:
        exact = exact_pool_rows(conn, CUSTOMERS)
    for tenant in POOLED:
        estimate = usage[tenant].table_rows[CUSTOMERS]
        assert abs(estimate - exact.get(tenant, 0)) <= usage[tenant].rows_error_bound
    assert usage["mtr-p-one"].table_rows[CUSTOMERS] == 1500  # analyzed: the table fits the sample
    assert usage["mtr-p-two"].table_rows[CUSTOMERS] == 40
    assert usage["mtr-p-three"].table_rows[CUSTOMERS] == 0
    assert usage["mtr-p-three"].storage_bytes == 0
    assert usage["mtr-p-one"].storage_bytes > usage["mtr-p-two"].storage_bytes > 0
    assert set(usage["mtr-p-one"].table_rows) >= {CUSTOMERS, "tenantkit_sample.projects"}


def test_a_settable_pool_says_connections_cannot_be_attributed(settable: Host) -> None:
    usage = pool_usage(settable)["mtr-p-one"]
    assert usage.connections is None
    assert SETTABLE_CONNECTIONS in usage.notes
    assert POOL_ACTIVITY in usage.notes
    assert usage.transactions is None
    assert usage.rows_written is None


def test_a_bridge_tenant_holding_connections_shows_them(settable: Host) -> None:
    settings = settable.bridge_login("mtr-b-two")
    held = [psycopg.connect(**settings.connect_kwargs(), autocommit=True) for _ in range(3)]
    try:
        during = bridge_usage(settable)
    finally:
        for conn in held:
            conn.close()
    assert during["mtr-b-two"].connections == 3
    assert during["mtr-b-one"].connections == 0
    assert (
        during["mtr-b-two"].connection_limit == settable.catalog.get("mtr-b-two").connection_limit
    )


def test_a_strict_pool_tenant_holding_connections_shows_them(strict: Host) -> None:
    settings = strict.pool_login("mtr-p-two")
    held = [psycopg.connect(**settings.connect_kwargs(), autocommit=True) for _ in range(2)]
    try:
        usage = pool_usage(strict)
    finally:
        for conn in held:
            conn.close()
    assert usage["mtr-p-two"].connections == 2
    assert usage["mtr-p-one"].connections == 0
    assert SETTABLE_CONNECTIONS not in usage["mtr-p-two"].notes


def test_recorded_samples_give_deltas_and_the_peak_of_connections(settable: Host) -> None:
    with settable.admin() as admin:
        first = record_usage(admin, list(bridge_usage(settable).values()))
    write_customers(settable, "mtr-b-two", 25, tier="bridge")
    settings = settable.bridge_login("mtr-b-two")
    with psycopg.connect(**settings.connect_kwargs()), settable.admin() as admin:
        record_usage(admin, list(bridge_usage(settable).values()))
    with settable.admin() as admin:
        now = record_usage(admin, list(bridge_usage(settable).values()))
        read = {u.tenant_id: u for u in read_usage(admin, now, None)}
        window = {u.tenant_id: u for u in read_usage(admin, now, first[0].sampled_at)}
    assert read["mtr-b-two"].peak_connections == 1  # the previous sample saw the session
    assert read["mtr-b-two"].connections == 0
    assert window["mtr-b-two"].rows_written is not None
    assert window["mtr-b-two"].rows_written >= 25
    assert window["mtr-b-one"].rows_written == 0
