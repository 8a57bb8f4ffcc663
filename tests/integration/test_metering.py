"""Per-tenant usage sampled on a real embedded server: bridge databases and a pool (settable and
strict), checked against exact counts."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from lambda_src.core.connection import ConnectionSettings
from lambda_src.metering import (
    ANALYZE_AFTER_FRACTION,
    ANALYZE_AFTER_ROWS,
    TENANT_STATISTICS_TARGET,
    read_usage,
    record_usage,
    sample_pool,
    sample_tenant_databases,
)
from lambda_src.metering.sampler import (
    HIDDEN_STATEMENTS,
    POOL_ACTIVITY,
    SETTABLE_CONNECTIONS,
    exact_pool_rows,
)
from lambda_src.tenancy import POOL, PoolMode
from tenantkit.catalog import Catalog, parse_catalog
from tenantkit.embedded_pg import RDS_SUPERUSER_ROLE, EmbeddedPostgres, RunningServer
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

    def superuser(self) -> psycopg.Connection[Any]:
        return psycopg.connect(**self.server.superuser_settings().connect_kwargs(), autocommit=True)

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


def test_a_pool_table_sampled_at_a_lowered_statistics_target_gets_a_bound_for_its_sample(
    strict: Host,
) -> None:
    # GIVEN every column of customers at statistics target 1 (ANALYZE samples 300 rows, fewer
    # than the table holds) and two tenants' 2,000 and 1,000 rows
    superuser = strict.server.superuser_settings(POOL.database)
    with psycopg.connect(**superuser.connect_kwargs(), autocommit=True) as conn:
        columns = [
            name
            for (name,) in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attnum > 0 AND NOT attisdropped",
                (CUSTOMERS,),
            )
        ]

        def targets(default: int, tenant_id: int) -> None:
            for column in columns:
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE public.customers ALTER COLUMN {} SET STATISTICS {}"
                    ).format(
                        sql.Identifier(column),
                        sql.Literal(tenant_id if column == "tenant_id" else default),
                    )
                )

        targets(1, 1)
        try:
            write_customers(strict, "mtr-p-one", 2000, tier="pool")
            write_customers(strict, "mtr-p-three", 1000, tier="pool")
            # WHEN the sampler analyzes the table and estimates from its 300-row sample
            with strict.admin(POOL.database) as admin:
                usages, tables = sample_pool(admin, list(POOLED), mode="strict")
                exact = exact_pool_rows(admin, CUSTOMERS)
        finally:
            targets(-1, TENANT_STATISTICS_TARGET)
            conn.execute("ANALYZE public.customers")
    # THEN the table counts as sampled and each bound is of a 300-row sample's size. ANALYZE's
    # sample is random, so the checks leave room for it: the bound (3 standard errors, from
    # the sampled share) is missed by about 0.3 % of estimates, 4 standard errors by 0.006 %;
    # a bound sized for the 3,000,000-row sample of the usual target would be 100x too small.
    (table,) = [t for t in tables if t.table == CUSTOMERS]
    assert table.analyzed
    assert table.sampled
    for usage in usages:
        error = abs(usage.table_rows[CUSTOMERS] - exact.get(usage.tenant_id, 0))
        assert error <= usage.rows_error_bound * 4 / 3, usage.tenant_id
    share = exact["mtr-p-one"] / table.reltuples
    spread = 3 * (share * (1 - share) / 300) ** 0.5 * table.reltuples
    assert {u.tenant_id: u for u in usages}["mtr-p-one"].rows_error_bound > spread / 2


def _customers_statistics(host: Host) -> tuple[int, Any, str]:
    """n_mod_since_analyze, the last analyze time and the name column's statistics of
    customers, read as the superuser (pg_stats hides RLS tables' from everyone else)."""
    settings = host.server.superuser_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_stat_get_mod_since_analyze(%s::regclass), "
            "pg_stat_get_last_analyze_time(%s::regclass), "
            "(SELECT histogram_bounds::text FROM pg_stats WHERE schemaname = 'public' "
            "AND tablename = 'customers' AND attname = 'name')",
            (CUSTOMERS, CUSTOMERS),
        ).fetchone()
        assert row is not None
        return int(row[0]), row[1], row[2]


@contextmanager
def _autovacuum_analyze_threshold(host: Host, rows: int) -> Iterator[None]:
    """customers' own autovacuum_analyze_threshold set to `rows` meanwhile."""
    settings = host.server.superuser_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE public.customers SET (autovacuum_analyze_threshold = {})").format(
                sql.Literal(rows)
            )
        )
        try:
            yield
        finally:
            conn.execute("ALTER TABLE public.customers RESET (autovacuum_analyze_threshold)")


def test_the_sampler_analyzes_tenant_id_alone_and_does_not_analyze_again_at_the_next_sample(
    settable: Host,
) -> None:
    with _autovacuum_analyze_threshold(settable, 1_000_000):
        _analyzes_tenant_id_alone(settable)


def _analyzes_tenant_id_alone(settable: Host) -> None:
    # GIVEN fresh statistics of some rows, autovacuum's ANALYZE far off, then more rows written
    # by one tenant than the sampler's threshold
    write_customers(settable, "mtr-p-one", 200, tier="pool")
    with settable.admin(POOL.database) as conn:
        sample_pool(conn, list(POOLED), mode="settable")
        (reltuples,) = conn.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", (CUSTOMERS,)
        ).fetchone()  # type: ignore[misc]
    write_customers(
        settable,
        "mtr-p-two",
        int(ANALYZE_AFTER_ROWS + ANALYZE_AFTER_FRACTION * reltuples) + 50,
        tier="pool",
    )
    _modified, analyzed_before, name_before = _customers_statistics(settable)
    # WHEN the sampler runs twice
    with settable.admin(POOL.database) as conn:
        _, first = sample_pool(conn, list(POOLED), mode="settable")
        usages, second = sample_pool(conn, list(POOLED), mode="settable")
        exact = exact_pool_rows(conn, CUSTOMERS)
    # THEN the first analyzed tenant_id alone: the table's analyze time moved, the other
    # columns' statistics did not, and PostgreSQL left n_mod_since_analyze as it was (a
    # column-list ANALYZE does not reset it)
    modified, analyzed_after, name_after = _customers_statistics(settable)
    assert [(t.analyzed, t.analyzed_whole_table) for t in first if t.table == CUSTOMERS] == [
        (True, False)
    ]
    assert analyzed_after > analyzed_before
    assert name_after == name_before
    assert modified > ANALYZE_AFTER_ROWS + ANALYZE_AFTER_FRACTION * reltuples
    # ... and the second did not analyze again: the rows modified since tenant_id's statistics
    # are counted from the sampler's record, 0, and the fresh estimate is exact
    (table,) = [t for t in second if t.table == CUSTOMERS]
    assert not table.analyzed
    assert table.modified_since_analyze == 0
    for usage in usages:
        assert usage.table_rows[CUSTOMERS] == exact.get(usage.tenant_id, 0), usage.tenant_id
    # WHEN a few rows are written after it (under the threshold)
    write_customers(settable, "mtr-p-three", 30, tier="pool")
    with settable.admin(POOL.database) as conn:
        usages, third = sample_pool(conn, list(POOLED), mode="settable")
        exact = exact_pool_rows(conn, CUSTOMERS)
    # THEN they are what the bound counts, and every estimate is within it
    (table,) = [t for t in third if t.table == CUSTOMERS]
    assert not table.analyzed
    assert table.modified_since_analyze == 30
    for usage in usages:
        error = abs(usage.table_rows[CUSTOMERS] - exact.get(usage.tenant_id, 0))
        assert error <= usage.rows_error_bound, usage.tenant_id


def test_the_sampler_analyzes_the_whole_table_when_autovacuum_would_analyze_it_next(
    settable: Host,
) -> None:
    # GIVEN fresh statistics, then more rows written than the sampler's threshold
    with settable.admin(POOL.database) as conn:
        sample_pool(conn, list(POOLED), mode="settable")
        (reltuples,) = conn.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", (CUSTOMERS,)
        ).fetchone()  # type: ignore[misc]
    sampler_rows = int(ANALYZE_AFTER_ROWS + ANALYZE_AFTER_FRACTION * reltuples)
    write_customers(settable, "mtr-p-one", sampler_rows + 1, tier="pool")
    # ... and autovacuum's threshold not passed yet, but before the sampler's next refresh:
    # n_mod_since_analyze < autovacuum's rows <= n_mod_since_analyze + the sampler's threshold
    modified, _at, _name = _customers_statistics(settable)
    threshold = modified + sampler_rows // 2 - int(0.1 * reltuples)  # the server's scale 0.1
    with _autovacuum_analyze_threshold(settable, max(threshold, 0)):
        # WHEN the sampler refreshes the statistics
        with settable.admin(POOL.database) as conn:
            _, tables = sample_pool(conn, list(POOLED), mode="settable")
        # THEN it analyzed every column (autovacuum's work): the counter is reset
        (table,) = [t for t in tables if t.table == CUSTOMERS]
        assert table.analyzed
        assert table.analyzed_whole_table
        modified, _at, _name = _customers_statistics(settable)
        assert modified == 0


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


LONG_STATEMENT_S = 1.5
"""How long the tenant's statement has run, at least, when the sampler looks."""


@contextmanager
def long_statement(host: Host, settings: ConnectionSettings) -> Iterator[None]:
    """A tenant's own login runs `SELECT pg_sleep(60)` in a thread; inside the block it has run
    LONG_STATEMENT_S or more (watched as the bootstrap superuser). Cancelled on the way out."""
    conn = psycopg.connect(**settings.connect_kwargs(), autocommit=True)
    pid = conn.info.backend_pid
    failed: list[BaseException] = []

    def run() -> None:
        try:
            conn.execute("SELECT pg_sleep(60)")
        except psycopg.errors.QueryCanceled:
            pass
        except BaseException as error:  # surfaced below, not lost in the thread
            failed.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        with host.superuser() as watcher:
            deadline = time.monotonic() + 30
            while True:
                ran = watcher.execute(
                    "SELECT extract(epoch FROM now() - query_start) FROM pg_stat_activity "
                    "WHERE pid = %s AND state = 'active'",
                    (pid,),
                ).fetchone()
                if ran is not None and float(ran[0]) >= LONG_STATEMENT_S:
                    break
                assert not failed, failed
                assert time.monotonic() < deadline, "the tenant's statement never ran"
                time.sleep(0.1)
        yield
    finally:
        conn.cancel_safe()
        worker.join(timeout=30)
        conn.close()
    assert not failed, failed


@contextmanager
def admin_without_pg_monitor(host: Host) -> Iterator[None]:
    """The host as a server whose master user lacks pg_monitor (unlike RDS and Aurora)."""
    role = sql.Identifier(RDS_SUPERUSER_ROLE)
    with host.superuser() as conn:
        conn.execute(sql.SQL("REVOKE pg_monitor FROM {}").format(role))
    try:
        yield
    finally:
        with host.superuser() as conn:
            conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(role))


def test_a_bridge_tenants_long_statement_is_seen_by_the_admin_as_on_rds(settable: Host) -> None:
    # GIVEN a tenant's own login running a statement for LONG_STATEMENT_S and more
    with long_statement(settable, settable.bridge_login("mtr-b-two")):
        # WHEN the host's admin samples (as the metering function does with the admin secret)
        during = bridge_usage(settable)
    # THEN that tenant's longest statement is measured, its neighbour's is none
    two, one = during["mtr-b-two"], during["mtr-b-one"]
    assert two.longest_statement_s is not None
    assert two.longest_statement_s >= LONG_STATEMENT_S
    assert HIDDEN_STATEMENTS not in two.notes
    assert one.longest_statement_s == 0.0


def test_a_strict_pool_tenants_long_statement_is_seen_by_the_admin(strict: Host) -> None:
    with long_statement(strict, strict.pool_login("mtr-p-three")):
        usage = pool_usage(strict)
    three = usage["mtr-p-three"]
    assert three.longest_statement_s is not None
    assert three.longest_statement_s >= LONG_STATEMENT_S
    assert HIDDEN_STATEMENTS not in three.notes
    assert usage["mtr-p-one"].longest_statement_s == 0.0


def test_an_admin_without_pg_monitor_reports_the_statement_as_hidden_not_zero(
    settable: Host,
) -> None:
    # GIVEN a server whose admin may not read other roles' sessions in detail
    with (
        admin_without_pg_monitor(settable),
        long_statement(settable, settable.bridge_login("mtr-b-two")),
    ):
        during = bridge_usage(settable)
    # THEN the statement is unknown and says why, not 0 s; the session still counts
    two = during["mtr-b-two"]
    assert two.longest_statement_s is None
    assert HIDDEN_STATEMENTS in two.notes
    assert two.connections == 1
