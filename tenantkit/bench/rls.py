"""`tenantctl bench rls`: what tenant isolation costs a query, five ways, in one interleaved run.

Data: `rows_per_tenant` rows for each of `tenants` tenants (100k rows by default) on a fresh
embedded PostgreSQL provisioned by the provisioner's own handler.

Variants (each request: set the context, three statements, COMMIT):
- where      no RLS; every statement says `tenant_id = $1` (the baseline);
- tenantkit  RLS as the pool tier installs it, context from tenant_runtime.tenant_transaction;
- naive      RLS policy `tenant_id = current_setting('app.tenant_id')`, set with a SET;
- schema     one schema per tenant (`tenants` schemas), context by SET search_path;
- database   one database per tenant (a sample of `database_sample`), a connection each.

Each request is one message to set the context (BEGIN with or without the setting), one per
statement and one COMMIT, for every variant: equal round trips. "server-side" times the three
statements only; "end to end" the whole request including setting the context. The statements:
list a tenant's open items, read one item, update one item.
"""

import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lambda_src.provisioner.config import RetryPolicy
from lambda_src.provisioner.pool_plan import protect_table
from lambda_src.provisioner.postgres import connect, run_steps
from lambda_src.tenancy import POOL
from lambda_src.tenant_runtime import tenant_transaction

from ..catalog import Tenant, parse_catalog
from ..embedded_pg import EmbeddedPostgres, RunningServer
from ..local import LocalSecrets, pool_runtime_settings, provision_pool, provision_tenant_databases
from ..local_aws import local_aws
from .latency_proxy import latency_proxy

VARIANTS = ("where", "tenantkit", "naive", "schema", "database")
SCHEMAS_DATABASE = "bench_schemas"


@dataclass(frozen=True)
class RlsBenchConfig:
    """Sizes of one run."""

    tenants: int = 1000
    rows_per_tenant: int = 100
    database_sample: int = 20
    rounds: int = 2000
    warmup: int = 200
    latency_ms: float = 2.0
    latency_rounds: int = 30
    seed: int = 4


@dataclass
class Timing:
    """Per-request times of one variant, in nanoseconds."""

    server: list[int]
    end_to_end: list[int]


def _ms(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return {
        "median_ms": round(statistics.median(ordered) / 1e6, 4),
        "p95_ms": round(p95 / 1e6, 4),
        "mean_ms": round(statistics.fmean(ordered) / 1e6, 4),
    }


# -- data -------------------------------------------------------------------------------------

_ITEMS_COLUMNS = (
    "tenant_id text NOT NULL, id bigint NOT NULL, status text NOT NULL, "
    "amount numeric NOT NULL, note text NOT NULL, PRIMARY KEY (tenant_id, id)"
)


def _fill(table: sql.Composable) -> sql.Composed:
    """INSERT rows for tenants and a row count given as parameters (tenant ids, count)."""
    return sql.SQL(
        "INSERT INTO {} SELECT t, n, CASE WHEN n %% 3 = 0 THEN 'open' ELSE 'closed' END, "
        "n * 1.5, 'note ' || n FROM unnest(%s::text[]) AS t, generate_series(1, %s) AS n"
    ).format(table)


def _setup_pool_tables(server: RunningServer, tenant_ids: list[str], rows: int) -> None:
    """bench.items (tenantkit RLS), bench.items_plain (none), bench.items_naive (naive RLS)."""
    settings = server.admin_settings(POOL.database)
    retry = RetryPolicy(attempts=2)
    with connect(settings, retry) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
        conn.execute("CREATE SCHEMA bench")
        for name in ("items", "items_plain", "items_naive"):
            table = sql.SQL("bench.{}").format(sql.Identifier(name))
            conn.execute(sql.SQL("CREATE TABLE {} (" + _ITEMS_COLUMNS + ")").format(table))
            conn.execute(sql.SQL("CREATE INDEX ON {} (tenant_id, status)").format(table))
            conn.execute(_fill(table), (tenant_ids, rows))
        run_steps(conn, settings, retry, [protect_table("bench.items")])
        runtime = sql.Identifier(POOL.runtime_role)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA bench TO {}").format(runtime))
        conn.execute(
            sql.SQL("GRANT SELECT, UPDATE ON bench.items_plain, bench.items_naive TO {}").format(
                runtime
            )
        )
        conn.execute("ALTER TABLE bench.items_naive ENABLE ROW LEVEL SECURITY")
        # The pattern the reference implementations used: the setting compared per row.
        conn.execute(
            sql.SQL(
                "CREATE POLICY naive ON bench.items_naive TO {} "
                "USING (tenant_id = current_setting('app.tenant_id'))"
            ).format(runtime)
        )
        conn.execute("ANALYZE bench.items, bench.items_plain, bench.items_naive")


def _setup_schemas(server: RunningServer, tenant_ids: list[str], rows: int) -> None:
    """One schema per tenant, each with the tenant's rows, in a database of their own."""
    admin = server.admin_settings()
    with connect(admin, RetryPolicy(attempts=2)) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(SCHEMAS_DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SCHEMAS_DATABASE)))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(SCHEMAS_DATABASE), sql.Identifier(POOL.runtime_role)
            )
        )
    with connect(admin.for_database(SCHEMAS_DATABASE), RetryPolicy(attempts=2)) as conn:
        runtime = sql.Identifier(POOL.runtime_role)
        for tenant in tenant_ids:
            schema = sql.Identifier(_schema_of(tenant))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            table = sql.SQL("{}.items").format(schema)
            conn.execute(sql.SQL("CREATE TABLE {} (" + _ITEMS_COLUMNS + ")").format(table))
            conn.execute(sql.SQL("CREATE INDEX ON {} (tenant_id, status)").format(table))
            conn.execute(_fill(table), ([tenant], rows))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, runtime))
            conn.execute(sql.SQL("GRANT SELECT, UPDATE ON {} TO {}").format(table, runtime))
        conn.execute("ANALYZE")


def _schema_of(tenant: str) -> str:
    return "t_" + tenant.replace("-", "_")


def _setup_databases(
    server: RunningServer, store: LocalSecrets, tenants: list[Tenant], rows: int
) -> None:
    """Each sampled tenant's own database (made by the provisioner), with its rows."""
    for tenant in tenants:
        settings = server.settings(
            tenant.names.login_role, store.password(tenant.names.secret_name), tenant.names.database
        )
        with connect(settings, RetryPolicy(attempts=2)) as conn:
            conn.execute("DROP TABLE IF EXISTS items")
            conn.execute(sql.SQL("CREATE TABLE items (" + _ITEMS_COLUMNS + ")"))
            conn.execute("CREATE INDEX ON items (tenant_id, status)")
            conn.execute(_fill(sql.SQL("items")), ([tenant.id], rows))
            conn.execute("ANALYZE items")


# -- requests ---------------------------------------------------------------------------------

_LIST = "SELECT id, amount FROM {t} WHERE status = 'open'"
_READ = "SELECT note FROM {t} WHERE id = %s"
_WRITE = "UPDATE {t} SET amount = amount + 1 WHERE id = %s"


def _statements(table: str, with_tenant: bool) -> list[sql.Composed]:
    suffix = " AND tenant_id = %s" if with_tenant else ""
    return [sql.SQL(text + suffix).format(t=sql.SQL(table)) for text in (_LIST, _READ, _WRITE)]


Context = Callable[[psycopg.Connection[Any], str], AbstractContextManager[object]]


@contextmanager
def _plain_transaction(conn: psycopg.Connection[Any], _tenant: str) -> Iterator[None]:
    conn.execute("BEGIN")
    yield
    conn.execute("COMMIT")


def _session_setting(prefix: str) -> Context:
    @contextmanager
    def context(conn: psycopg.Connection[Any], tenant: str) -> Iterator[None]:
        conn.execute(sql.SQL(prefix + "; BEGIN").format(sql.Literal(tenant)))
        yield
        conn.execute("COMMIT")

    return context


@contextmanager
def _search_path(conn: psycopg.Connection[Any], tenant: str) -> Iterator[None]:
    conn.execute(sql.SQL("SET search_path = {}; BEGIN").format(sql.Identifier(_schema_of(tenant))))
    yield
    conn.execute("COMMIT")


def _request(
    conn: psycopg.Connection[Any],
    context: Context,
    statements: list[sql.Composed],
    tenant: str,
    item: int,
    with_tenant: bool,
) -> tuple[int, int]:
    params: tuple[object, ...] = (tenant,) if with_tenant else ()
    manager = context(conn, tenant)
    started = time.perf_counter_ns()
    manager.__enter__()
    inside = time.perf_counter_ns()
    conn.execute(statements[0], params or None).fetchall()
    conn.execute(statements[1], (item, *params)).fetchall()
    conn.execute(statements[2], (item, *params))
    done = time.perf_counter_ns()
    manager.__exit__(None, None, None)
    finished = time.perf_counter_ns()
    return done - inside, finished - started


@dataclass
class _Variant:
    name: str
    context: Context
    statements: list[sql.Composed]
    with_tenant: bool
    connection: Callable[[str], psycopg.Connection[Any]]
    tenants: list[str]


def _tenantkit_context(
    conn: psycopg.Connection[Any], tenant: str
) -> AbstractContextManager[object]:
    return tenant_transaction(conn, tenant)


def run_rls_bench(
    root: Path, config: RlsBenchConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Set everything up on a fresh embedded server in `root`, measure, return the results."""
    rng = random.Random(config.seed)  # noqa: S311 - a reproducible workload, not a secret
    catalog = parse_catalog(
        {
            "tenants": [{"id": f"bench-{n:04d}", "tier": "pool"} for n in range(config.tenants)]
            + [
                {"id": f"benchdb-{n:03d}", "tier": "bridge", "connection_limit": 10}
                for n in range(config.database_sample)
            ]
        }
    )
    pool_tenants = list(catalog.in_tier("pool"))
    db_tenants = list(catalog.in_tier("bridge"))
    pool_ids = [t.id for t in pool_tenants]
    pg = EmbeddedPostgres(root / "pg", durable=False)
    server = pg.start()
    connections: list[psycopg.Connection[Any]] = []
    try:
        with local_aws():
            store = LocalSecrets(root / "secrets.json")
            progress(f"provisioning the pool and {len(pool_ids)} pool tenants")
            failures = [r for r in provision_pool(pool_tenants, server, store) if not r.ok]
            progress(f"provisioning {len(db_tenants)} tenant databases")
            failures += [
                r
                for r in provision_tenant_databases(db_tenants, lambda _tenant: server, store)
                if not r.ok
            ]
            if failures:
                raise RuntimeError(f"provisioning failed: {failures[0].error}")
            runtime = pool_runtime_settings(server, store)
        progress(f"loading {config.tenants * config.rows_per_tenant:,} rows per layout")
        _setup_pool_tables(server, pool_ids, config.rows_per_tenant)
        progress(f"creating {len(pool_ids)} schemas")
        _setup_schemas(server, pool_ids, config.rows_per_tenant)
        _setup_databases(server, store, db_tenants, config.rows_per_tenant)

        def open_(settings: Any) -> psycopg.Connection[Any]:
            conn = psycopg.connect(**settings.connect_kwargs(), autocommit=True)
            connections.append(conn)
            return conn

        # A connection per variant: the naive variant's session-level SET must not linger on
        # the others' connections.
        where_conn, tenantkit_conn, naive_conn = (open_(runtime) for _ in range(3))
        schema_conn = open_(runtime.for_database(SCHEMAS_DATABASE))
        db_conns = {
            t.id: open_(
                server.settings(
                    t.names.login_role, store.password(t.names.secret_name), t.names.database
                )
            )
            for t in db_tenants
        }
        variants = [
            _Variant(
                "where",
                _plain_transaction,
                _statements("bench.items_plain", True),
                True,
                lambda _t: where_conn,
                pool_ids,
            ),
            _Variant(
                "tenantkit",
                _tenantkit_context,
                _statements("bench.items", False),
                False,
                lambda _t: tenantkit_conn,
                pool_ids,
            ),
            _Variant(
                "naive",
                _session_setting("SET app.tenant_id = {}"),
                _statements("bench.items_naive", False),
                False,
                lambda _t: naive_conn,
                pool_ids,
            ),
            _Variant(
                "schema",
                _search_path,
                _statements("items", False),
                False,
                lambda _t: schema_conn,
                pool_ids,
            ),
            _Variant(
                "database",
                _plain_transaction,
                _statements("items", False),
                False,
                lambda t: db_conns[t],
                [t.id for t in db_tenants],
            ),
        ]
        timings = {v.name: Timing([], []) for v in variants}
        progress(f"measuring {config.rounds} interleaved rounds")
        for round_ in range(config.warmup + config.rounds):
            order = list(variants)
            rng.shuffle(order)
            item = rng.randint(1, config.rows_per_tenant)
            for variant in order:
                tenant = rng.choice(variant.tenants)
                server_ns, total_ns = _request(
                    variant.connection(tenant),
                    variant.context,
                    variant.statements,
                    tenant,
                    item,
                    variant.with_tenant,
                )
                if round_ >= config.warmup:
                    timings[variant.name].server.append(server_ns)
                    timings[variant.name].end_to_end.append(total_ns)

        progress(f"counting round trips through a {config.latency_ms} ms relay")
        round_trips = _round_trips(server, runtime, config, rng, pool_ids)
    finally:
        for conn in connections:
            conn.close()
        pg.destroy()
    return _results(config, timings, round_trips)


def _round_trips(
    server: RunningServer, runtime: Any, config: RlsBenchConfig, rng: random.Random, ids: list[str]
) -> dict[str, Any]:
    """Median request time through a delaying relay, in round trips, baseline vs tenantkit."""
    measured: dict[str, Any] = {"delay_ms_each_way": config.latency_ms}
    with latency_proxy(server.port, config.latency_ms) as port:
        settings = runtime.__class__(**{**runtime.__dict__, "port": port})
        with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
            cases = {
                "where": (_plain_transaction, _statements("bench.items_plain", True), True),
                "tenantkit": (_tenantkit_context, _statements("bench.items", False), False),
            }
            for name, (context, statements, with_tenant) in cases.items():
                totals = [
                    _request(conn, context, statements, rng.choice(ids), 1, with_tenant)[1]
                    for _ in range(config.latency_rounds)
                ]
                median_ms = statistics.median(totals) / 1e6
                measured[name] = {
                    "median_ms": round(median_ms, 2),
                    "round_trips": round(median_ms / (2 * config.latency_ms), 2),
                }
    return measured


def _results(
    config: RlsBenchConfig, timings: dict[str, Timing], round_trips: dict[str, Any]
) -> dict[str, Any]:
    base = timings["where"]
    results: dict[str, Any] = {"config": asdict(config), "variants": {}, "round_trips": round_trips}
    for name, timing in timings.items():
        server = _ms(timing.server)
        total = _ms(timing.end_to_end)
        results["variants"][name] = {
            "server_side": server,
            "end_to_end": total,
            "ratio": {
                "server_side_median": round(
                    statistics.median(timing.server) / statistics.median(base.server), 3
                ),
                "end_to_end_median": round(
                    statistics.median(timing.end_to_end) / statistics.median(base.end_to_end), 3
                ),
                "end_to_end_p95": round(total["p95_ms"] / _ms(base.end_to_end)["p95_ms"], 3),
            },
        }
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    """Bar chart of median and p95 per variant, server-side and end to end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["variants"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, key, title in (
        (axes[0], "server_side", "server-side (3 statements, equal round trips)"),
        (axes[1], "end_to_end", "end to end (incl. setting the context)"),
    ):
        medians = [results["variants"][n][key]["median_ms"] for n in names]
        p95s = [results["variants"][n][key]["p95_ms"] for n in names]
        positions = range(len(names))
        axis.bar([p - 0.2 for p in positions], medians, width=0.4, label="median")
        axis.bar([p + 0.2 for p in positions], p95s, width=0.4, label="p95")
        axis.set_xticks(list(positions), names)
        axis.set_title(title, fontsize=10)
        for position, name, median in zip(positions, names, medians, strict=True):
            ratio = results["variants"][name]["ratio"][f"{key}_median"]
            axis.annotate(
                f"{ratio:.2f}x", (position - 0.2, median), ha="center", va="bottom", fontsize=8
            )
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("ms per request (labels: median / median of where)")
    axes[0].legend()
    config = results["config"]
    fig.suptitle(
        f"tenant isolation cost: {config['tenants']} tenants x {config['rows_per_tenant']} rows, "
        f"{config['rounds']} interleaved requests per variant",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
