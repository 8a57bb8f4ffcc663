"""`tenantctl bench rls`: what tenant isolation costs a query, six ways, in one interleaved run.

Data: `rows_per_tenant` rows for each of `tenants` tenants (100k rows by default) on a fresh
embedded PostgreSQL provisioned by the provisioner's own handler.

Variants (each request: set the context, three statements, COMMIT):
- where      no RLS; every statement says `tenant_id = $1` (the baseline);
- control    the baseline again on a copy of its table: its ratio to `where` is the run's
             noise floor (an A/A test);
- tenantkit  RLS as the pool tier installs it, context from tenant_runtime.tenant_transaction;
- strict     RLS as a strict pool installs it (the tenant from session_user), each request on
             a connection of the tenant's own login (one for each of `strict_sample` tenants,
             logins made by the provisioner's plan), tenant_transaction(strict=True): BEGIN;
- where-logins the baseline again on the strict variant's connections and tenants: its ratio to
             strict is the policy's cost alone, whatever the connection layout costs;
- naive      RLS policy `tenant_id = current_setting('app.tenant_id')`, set with a SET;
- schema     one schema per tenant (`tenants` schemas), context by SET search_path;
- database   one database per tenant (a sample of `database_sample`), a connection each;
- where-pgbouncer, tenantkit-pgbouncer  where and tenantkit again through PgBouncer in
             transaction mode (as the README configures it: DISCARD ALL after every
             transaction), on `connections` client connections of their own; nothing is
             prepared on the server (PgBouncer 1.18 cannot carry prepared statements, so
             tenant_transaction's default), so their ratio to each other is tenantkit's cost
             with the pooler in the path. `pgbouncer=False` leaves them out; asked for,
             a missing PgBouncer fails the run before anything starts.

Each request is one message to set the context (BEGIN with or without the setting), one per
statement and one COMMIT, for every variant: equal round trips. "server-side" times the three
statements only; "end to end" the whole request including setting the context. The statements:
list a tenant's open items, read one item, update one item.

How the run is laid out, and why (each choice removed a bias measured on this machine):
- Blocks. Each round runs a block of `block_size` requests of every variant, the variants in
  a shuffled order, and times a block's requests only after its first `block_warmup`. A
  variant is thus measured in the state it leaves the machine in (its code and data in the
  CPU caches), as in an application that isolates tenants one way only, while the rounds
  interleave the variants over the whole run so that drift (other load, CPU clocks) falls on
  all of them alike. Interleaving single requests instead charged each variant for the
  others' cache footprint and favoured the majority: tenantkit measured 1.07x as one variant
  in six and 1.01x as three copies of itself among eight (`block_size=1, block_warmup=0`,
  `tenantkit_copies=3`). Blocks cost more noise per run; the control variant shows how much.
- Shared connections. The variants that use the pool database (where, control, tenantkit,
  naive) draw each request's connection at random from one set of `connections`, as an
  application's pool hands them out; schema draws from a set of its own (another database).
  With a connection per variant, two identical variants differed by up to 5 %: one backend
  process is faster than another for a while. The naive variant's session SET stays on the
  connection it used, as in an application's pool; it changes nothing for the others (`where`
  has no policy, tenantkit sets the tenant transaction-locally).
- Steady-state tables: every table is vacuumed and analyzed before the run, as autovacuum
  leaves them; so is the tenant registry, which the policy reads with an index-only scan and
  which the pool has autovacuum vacuum after a few changes.
"""

import itertools
import random
import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lambda_src.core.connection import ConnectionSettings, RetryPolicy, connect, scram_verifier
from lambda_src.core.steps import run_steps
from lambda_src.provisioner.plans.pool_logins import TenantLogin, plan_tenant_logins
from lambda_src.provisioner.plans.pool_rls import (
    ISOLATION_POLICY,
    STRICT_TENANT_CONDITION,
    protect_table,
)
from lambda_src.provisioner.postgres import observe_logins
from lambda_src.tenancy import POOL, tenant_names
from lambda_src.tenant_runtime import tenant_transaction

from ..catalog import Tenant, parse_catalog
from ..embedded_pg import EmbeddedPostgres, RunningServer
from ..local import LocalSecrets, pool_runtime_settings, provision_pool, provision_tenant_databases
from ..local_aws import local_aws
from ..pgbouncer import EmbeddedPgBouncer, find_pgbouncer
from .latency_proxy import latency_proxy

VARIANTS = (
    "where",
    "control",
    "tenantkit",
    "strict",
    "where-logins",
    "naive",
    "schema",
    "database",
    "where-pgbouncer",
    "tenantkit-pgbouncer",
)
PGBOUNCER_VARIANTS = ("where-pgbouncer", "tenantkit-pgbouncer")
PAIRS = (("strict", "where-logins"), ("tenantkit-pgbouncer", "where-pgbouncer"))
"""Variants compared with a baseline of their own layout besides `where`: (variant, baseline)."""
STEPS = ("context", "list", "read", "write", "commit")
SCHEMAS_DATABASE = "bench_schemas"


@dataclass(frozen=True)
class RlsBenchConfig:
    """Sizes of one run."""

    tenants: int = 1000
    rows_per_tenant: int = 100
    database_sample: int = 20
    strict_sample: int = 20
    """Tenants of the strict variant, each with a login and a connection of its own."""
    blocks: int = 150
    """Timed blocks per variant; one more round of blocks before them only warms up."""
    block_size: int = 100
    block_warmup: int = 20
    """Requests at the start of each block that are not timed (block_size 1 and block_warmup
    0 interleave single requests, the layout of earlier releases)."""
    connections: int = 4
    tenantkit_copies: int = 1
    """More than 1 adds identical copies of the tenantkit variant (tenantkit-2, ...): a check
    that the layout measures a variant the same whatever the mix around it."""
    latency_ms: float = 2.0
    latency_rounds: int = 30
    seed: int = 4
    pgbouncer: bool = True
    """Measure the PgBouncer variants too (PgBouncer must then be installed: make setup)."""


def check_config(config: RlsBenchConfig) -> None:
    """Raise ValueError naming a setting that leaves nothing to time."""
    if not 0 <= config.block_warmup < config.block_size:
        raise ValueError(
            f"block warmup must be at least 0 and less than the block size "
            f"({config.block_size}), not {config.block_warmup}"
        )


def timed_per_variant(config: RlsBenchConfig | dict[str, Any]) -> int:
    """How many requests of each variant a run times."""
    values = asdict(config) if isinstance(config, RlsBenchConfig) else config
    return int(values["blocks"] * (values["block_size"] - values["block_warmup"]))


@dataclass
class Timing:
    """Per-request times of one variant, in nanoseconds, and the backends that served it."""

    server: list[int] = field(default_factory=list)
    end_to_end: list[int] = field(default_factory=list)
    steps: list[tuple[int, ...]] = field(default_factory=list)
    backends: set[int] = field(default_factory=set)


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
    """bench.items (tenantkit RLS), bench.items_strict (a strict pool's RLS), bench.items_plain
    and its copy bench.items_control (none), bench.items_naive (naive RLS)."""
    settings = server.admin_settings(POOL.database)
    retry = RetryPolicy(attempts=2)
    with connect(settings, retry) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
        conn.execute("CREATE SCHEMA bench")
        for name in ("items", "items_strict", "items_plain", "items_control", "items_naive"):
            table = sql.SQL("bench.{}").format(sql.Identifier(name))
            conn.execute(sql.SQL("CREATE TABLE {} (" + _ITEMS_COLUMNS + ")").format(table))
            conn.execute(sql.SQL("CREATE INDEX ON {} (tenant_id, status)").format(table))
            conn.execute(_fill(table), (tenant_ids, rows))
        run_steps(
            conn,
            settings,
            retry,
            [protect_table("bench.items"), protect_table("bench.items_strict")],
        )
        # The bench pool is settable; this table gets a strict pool's policy, text for text.
        conn.execute(
            sql.SQL("ALTER POLICY {} ON bench.items_strict USING ({c}) WITH CHECK ({c})").format(
                sql.Identifier(ISOLATION_POLICY), c=sql.SQL(STRICT_TENANT_CONDITION)
            )
        )
        runtime = sql.Identifier(POOL.runtime_role)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA bench TO {}").format(runtime))
        conn.execute(
            sql.SQL(
                "GRANT SELECT, UPDATE ON bench.items_plain, bench.items_control, bench.items_naive "
                "TO {}"
            ).format(runtime)
        )
        conn.execute("ALTER TABLE bench.items_naive ENABLE ROW LEVEL SECURITY")
        # The pattern the reference implementations used: the setting compared per row.
        conn.execute(
            sql.SQL(
                "CREATE POLICY naive ON bench.items_naive TO {} "
                "USING (tenant_id = current_setting('app.tenant_id'))"
            ).format(runtime)
        )
        # Steady state, as autovacuum leaves a table: statistics and a visibility map (the
        # registry's too: the tenant policy reads it with an index-only scan).
        registry = sql.Identifier(POOL.registry_schema, "tenants")
        tables = sql.SQL(
            "bench.items, bench.items_strict, bench.items_plain, bench.items_control, "
            "bench.items_naive, {}"
        ).format(registry)
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(tables))


def _setup_strict_logins(
    server: RunningServer, tenant_ids: list[str]
) -> dict[str, ConnectionSettings]:
    """Each tenant's own pool login, made by the provisioner's plan as a strict pool's batch
    makes it (a password login: the embedded server has no IAM auth); tenant -> its settings."""
    admin = server.admin_settings()
    retry = RetryPolicy(attempts=2)
    passwords = {tenant: secrets.token_urlsafe(18) for tenant in tenant_ids}
    with connect(admin, retry) as conn:
        logins = [
            TenantLogin(
                tenant_names(t).pool_login,
                True,
                scram_verifier(conn, tenant_names(t).pool_login, passwords[t]),
            )
            for t in tenant_ids
        ]
        existing = observe_logins(conn, [login.role for login in logins])
        run_steps(conn, admin, retry, plan_tenant_logins(logins, existing))
    return {
        t: server.settings(tenant_names(t).pool_login, passwords[t], POOL.database)
        for t in tenant_ids
    }


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
        conn.execute("VACUUM (ANALYZE)")


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
            conn.execute("VACUUM (ANALYZE) items")


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
) -> tuple[int, ...]:
    """One request; the nanoseconds of each of STEPS (making and entering the context counts
    as the context's)."""
    params: tuple[object, ...] = (tenant,) if with_tenant else ()
    marks = [time.perf_counter_ns()]
    manager = context(conn, tenant)
    manager.__enter__()
    marks.append(time.perf_counter_ns())
    conn.execute(statements[0], params or None).fetchall()
    marks.append(time.perf_counter_ns())
    conn.execute(statements[1], (item, *params)).fetchall()
    marks.append(time.perf_counter_ns())
    conn.execute(statements[2], (item, *params))
    marks.append(time.perf_counter_ns())
    manager.__exit__(None, None, None)
    marks.append(time.perf_counter_ns())
    return tuple(later - earlier for earlier, later in itertools.pairwise(marks))


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
    # Straight to the server, as the other variants: psycopg prepares the statements of every
    # variant alike (tenant_transaction would not, by default, for a pooler's sake).
    return tenant_transaction(conn, tenant, prepared_statements=True)


def _strict_context(conn: psycopg.Connection[Any], tenant: str) -> AbstractContextManager[object]:
    return tenant_transaction(conn, tenant, prepared_statements=True, strict=True)


def _pooled_tenantkit_context(
    conn: psycopg.Connection[Any], tenant: str
) -> AbstractContextManager[object]:
    # tenant_transaction's default, what a transaction pooler needs: nothing prepared.
    return tenant_transaction(conn, tenant)


def run_rls_bench(
    root: Path, config: RlsBenchConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Set everything up on a fresh embedded server in `root`, measure, return the results."""
    check_config(config)
    if config.pgbouncer:
        find_pgbouncer()  # asked for and missing: fail here, before anything is made
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
    bouncer: EmbeddedPgBouncer | None = None
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
        strict_ids = rng.sample(pool_ids, min(config.strict_sample, len(pool_ids)))
        strict_logins = _setup_strict_logins(server, strict_ids)

        def open_(settings: Any) -> psycopg.Connection[Any]:
            conn = psycopg.connect(**settings.connect_kwargs(), autocommit=True)
            connections.append(conn)
            return conn

        # Connections shared by the variants that use one database (see the module docstring).
        pool_conns = [open_(runtime) for _ in range(config.connections)]
        schema_conns = [
            open_(runtime.for_database(SCHEMAS_DATABASE)) for _ in range(config.connections)
        ]
        strict_conns = {tenant: open_(settings) for tenant, settings in strict_logins.items()}
        pooled_conns: list[psycopg.Connection[Any]] = []
        pooled: ConnectionSettings | None = None
        if config.pgbouncer:
            progress("starting PgBouncer (transaction mode) in front of the pool")
            bouncer = EmbeddedPgBouncer(
                root / "pgbouncer",
                upstream=server,
                database=POOL.database,
                logins={runtime.user: runtime.password},
                pool_size=config.connections,
            )
            pooled = bouncer.start().settings(runtime.user, runtime.password, POOL.database)
            pooled_conns = [open_(pooled) for _ in range(config.connections)]
            for conn in pooled_conns:
                # PgBouncer 1.18 cannot carry protocol-level prepared statements: none for
                # where either (tenant_transaction prepares nothing by default)
                conn.prepare_threshold = None
        db_conns = {
            t.id: open_(
                server.settings(
                    t.names.login_role, store.password(t.names.secret_name), t.names.database
                )
            )
            for t in db_tenants
        }

        def drawn_from(conns: list[psycopg.Connection[Any]]) -> Callable[[str], Any]:
            return lambda _tenant: rng.choice(conns)

        variants = [
            _Variant(
                "where",
                _plain_transaction,
                _statements("bench.items_plain", True),
                True,
                drawn_from(pool_conns),
                pool_ids,
            ),
            _Variant(
                "control",
                _plain_transaction,
                _statements("bench.items_control", True),
                True,
                drawn_from(pool_conns),
                pool_ids,
            ),
            *(
                _Variant(
                    "tenantkit" if copy == 1 else f"tenantkit-{copy}",
                    _tenantkit_context,
                    _statements("bench.items", False),
                    False,
                    drawn_from(pool_conns),
                    pool_ids,
                )
                for copy in range(1, config.tenantkit_copies + 1)
            ),
            _Variant(
                "strict",
                _strict_context,
                _statements("bench.items_strict", False),
                False,
                lambda t: strict_conns[t],
                strict_ids,
            ),
            _Variant(
                "where-logins",
                _plain_transaction,
                _statements("bench.items_plain", True),
                True,
                lambda t: strict_conns[t],
                strict_ids,
            ),
            _Variant(
                "naive",
                _session_setting("SET app.tenant_id = {}"),
                _statements("bench.items_naive", False),
                False,
                drawn_from(pool_conns),
                pool_ids,
            ),
            _Variant(
                "schema",
                _search_path,
                _statements("items", False),
                False,
                drawn_from(schema_conns),
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
        if config.pgbouncer:
            variants += [
                _Variant(
                    "where-pgbouncer",
                    _plain_transaction,
                    _statements("bench.items_plain", True),
                    True,
                    drawn_from(pooled_conns),
                    pool_ids,
                ),
                _Variant(
                    "tenantkit-pgbouncer",
                    _pooled_tenantkit_context,
                    _statements("bench.items", False),
                    False,
                    drawn_from(pooled_conns),
                    pool_ids,
                ),
            ]
        timings = {v.name: Timing() for v in variants}
        progress(
            f"measuring {timed_per_variant(config)} requests per variant "
            f"in blocks of {config.block_size}"
        )
        for round_ in range(1 + config.blocks):
            order = list(variants)
            rng.shuffle(order)
            items = [rng.randint(1, config.rows_per_tenant) for _ in range(config.block_size)]
            for variant in order:
                for position, item in enumerate(items):
                    tenant = rng.choice(variant.tenants)
                    conn = variant.connection(tenant)
                    steps = _request(
                        conn, variant.context, variant.statements, tenant, item, variant.with_tenant
                    )
                    if round_ > 0 and position >= config.block_warmup:
                        timing = timings[variant.name]
                        timing.server.append(sum(steps[1:4]))
                        timing.end_to_end.append(sum(steps))
                        timing.steps.append(steps)
                        timing.backends.add(conn.info.backend_pid)

        progress(f"counting round trips through a {config.latency_ms} ms relay")
        round_trips = _round_trips(
            runtime,
            config,
            rng,
            pool_ids,
            (strict_ids[0], strict_logins[strict_ids[0]]),
            pooled,
        )
    finally:
        for conn in connections:
            conn.close()
        if bouncer is not None:
            bouncer.stop()
        pg.destroy()
    return _results(config, timings, round_trips)


def _round_trips(
    runtime: ConnectionSettings,
    config: RlsBenchConfig,
    rng: random.Random,
    ids: list[str],
    strict: tuple[str, ConnectionSettings],
    pooled: ConnectionSettings | None,
) -> dict[str, Any]:
    """Median request time through a delaying relay, in round trips: baseline, tenantkit, and
    strict (`strict`: a tenant and its own login) straight to the server, and baseline and
    tenantkit through PgBouncer (`pooled`: the runtime login there; the relay then sits
    between the client and PgBouncer)."""
    measured: dict[str, Any] = {"delay_ms_each_way": config.latency_ms}
    strict_tenant, strict_login = strict
    where = _statements("bench.items_plain", True)
    tenantkit = _statements("bench.items", False)
    # name: (login, tenants, context, statements, with_tenant, prepared)
    cases: dict[str, tuple[ConnectionSettings, list[str], Context, Any, bool, bool]] = {
        "where": (runtime, ids, _plain_transaction, where, True, True),
        "tenantkit": (runtime, ids, _tenantkit_context, tenantkit, False, True),
        "strict": (
            strict_login,
            [strict_tenant],
            _strict_context,
            _statements("bench.items_strict", False),
            False,
            True,
        ),
    }
    if pooled is not None:
        cases["where-pgbouncer"] = (pooled, ids, _plain_transaction, where, True, False)
        cases["tenantkit-pgbouncer"] = (
            pooled,
            ids,
            _pooled_tenantkit_context,
            tenantkit,
            False,
            False,
        )
    for name, (login, tenants, context, statements, with_tenant, prepared) in cases.items():
        with latency_proxy(login.port, config.latency_ms) as relay:
            settings = replace(login, port=relay.port)
            with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
                if not prepared:
                    conn.prepare_threshold = None
                # psycopg prepares a statement once it has run prepare_threshold times (one more
                # round trip then): count the steady state after it
                for _ in range((conn.prepare_threshold or 0) + 1):
                    _request(conn, context, statements, rng.choice(tenants), 1, with_tenant)
                before = relay.round_trips
                totals = [
                    sum(_request(conn, context, statements, rng.choice(tenants), 1, with_tenant))
                    for _ in range(config.latency_rounds)
                ]
            measured[name] = {
                "median_ms": round(statistics.median(totals) / 1e6, 2),
                # counted by the relay: exact, whatever the machine's load
                "round_trips": (relay.round_trips - before) / config.latency_rounds,
            }
    return measured


def _ratios(timing: Timing, base: Timing) -> dict[str, float]:
    """`timing`'s medians (and end-to-end p95) over `base`'s."""
    return {
        "server_side_median": round(
            statistics.median(timing.server) / statistics.median(base.server), 3
        ),
        "end_to_end_median": round(
            statistics.median(timing.end_to_end) / statistics.median(base.end_to_end), 3
        ),
        "end_to_end_p95": round(
            _ms(timing.end_to_end)["p95_ms"] / _ms(base.end_to_end)["p95_ms"], 3
        ),
    }


def _results(
    config: RlsBenchConfig, timings: dict[str, Timing], round_trips: dict[str, Any]
) -> dict[str, Any]:
    base = timings["where"]
    results: dict[str, Any] = {
        "config": asdict(config),
        "variants": {},
        # each of PAIRS measured: the variant against the baseline on its own layout
        "pairs": {
            f"{name} / {baseline}": {
                "variant": name,
                "baseline": baseline,
                **_ratios(timings[name], timings[baseline]),
            }
            for name, baseline in PAIRS
            if name in timings and baseline in timings
        },
        "round_trips": round_trips,
    }
    for name, timing in timings.items():
        results["variants"][name] = {
            "server_side": _ms(timing.server),
            "end_to_end": _ms(timing.end_to_end),
            "ratio": _ratios(timing, base),
            # Where the time goes: the median of each step, in microseconds.
            "steps_median_us": {
                step: round(statistics.median(column) / 1e3, 1)
                for step, column in zip(STEPS, zip(*timing.steps, strict=True), strict=True)
            },
            # Server backends; through PgBouncer, the client connections (it gives each
            # client a cancel key of its own in place of a backend's process id).
            "backends": len(timing.backends),
        }
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    """Bar chart of median and p95 per variant, server-side and end to end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["variants"])
    own_baseline = {pair["variant"]: pair for pair in results.get("pairs", {}).values()}
    fig, axes = plt.subplots(1, 2, figsize=(max(11, 1.7 * len(names)), 4.6), sharey=True)
    for axis, key, title in (
        (axes[0], "server_side", "server-side (3 statements, equal round trips)"),
        (axes[1], "end_to_end", "end to end (incl. setting the context)"),
    ):
        medians = [results["variants"][n][key]["median_ms"] for n in names]
        p95s = [results["variants"][n][key]["p95_ms"] for n in names]
        positions = range(len(names))
        axis.bar([p - 0.2 for p in positions], medians, width=0.4, label="median")
        axis.bar([p + 0.2 for p in positions], p95s, width=0.4, label="p95")
        axis.set_xticks(list(positions), names, rotation=25, ha="right", fontsize=9)
        axis.set_title(title, fontsize=10)
        for position, name, median in zip(positions, names, medians, strict=True):
            label = f"{results['variants'][name]['ratio'][f'{key}_median']:.2f}x"
            if name in own_baseline:
                label += f"\n{own_baseline[name][f'{key}_median']:.2f}x*"
            axis.annotate(label, (position - 0.2, median), ha="center", va="bottom", fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("ms per request")
    axes[0].legend()
    fig.text(
        0.5,
        0.01,
        "labels: median / median of where"
        + "".join(
            f"; * {pair['variant']} / {pair['baseline']}"
            for pair in results.get("pairs", {}).values()
        ),
        ha="center",
        fontsize=8,
    )
    config = results["config"]
    fig.suptitle(
        f"tenant isolation cost: {config['tenants']} tenants x {config['rows_per_tenant']} rows, "
        f"{timed_per_variant(config)} requests per variant, in interleaved blocks",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
