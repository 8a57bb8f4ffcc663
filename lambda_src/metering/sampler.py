"""One sample of a host's per-tenant usage, read as the host's admin.

Silo and bridge tenants have a database each, so PostgreSQL attributes everything to them:
pg_database_size, pg_stat_activity by database, pg_stat_database's cumulative transaction and
row counters (the deltas between two samples are computed where samples are recorded, record.py)
and each table's live-row count (pg_stat_user_tables.n_live_tup, kept by the statistics system
as rows are written: exact for committed inserts and deletes until a VACUUM or ANALYZE replaces
it by their estimate).

Pool tenants share tables, and scanning them on every sample would cost what the tenants pay
for. Rows per tenant come from the planner's statistics of the `tenant_id` column instead:
protect_table() raises its statistics target to TENANT_STATISTICS_TARGET, so ANALYZE samples
300 x that many rows (the whole table up to 3,000,000 rows) and keeps every tenant in the
column's most-common-values list (up to 10,000 tenants per table): its frequency x reltuples is
the tenant's rows as of that ANALYZE. The sampler analyzes that column alone (`ANALYZE t
(tenant_id)`, as the pool owner: the other columns' sorts are most of a whole-table ANALYZE's
CPU, and autovacuum still refreshes them) when more than ANALYZE_AFTER_FRACTION of a table
changed since tenant_id's statistics were taken; a registered tenant the list lacks (the list
is cut when the table is larger than the sample) is counted exactly through the tenant_id
index, at a cost proportional to its own rows. The error bound of each estimate is reported
with it: the rows modified since tenant_id's statistics (any of them may be the tenant's),
plus 3 standard errors of the sample frequency when the table is larger than the sample. A
tenant's storage is its row share of each table's heap, TOAST and indexes.

A column-list ANALYZE does not reset n_mod_since_analyze (PostgreSQL resets it only when every
column was analyzed: autovacuum has work left), so the sampler records in the registry
(usage_analyzed) each table's cumulative rows written (inserted + updated + deleted) when it
analyzed tenant_id; the rows modified since the statistics are the lesser of that difference
and n_mod_since_analyze (which a later whole-table ANALYZE, autovacuum's, resets). Because
n_mod_since_analyze keeps growing, autovacuum's own ANALYZE would follow at its threshold: when
that threshold would be reached before the sampler's next refresh, the sampler analyzes the
whole table instead (it does autovacuum's work and resets its counter), as it did at every
refresh before.

What the pool cannot attribute, said as None with a reason rather than 0: connections in a
settable pool (the tenant is a transaction-local setting of a shared login), and transactions
and rows written in any pool (PostgreSQL counts them per database and per table, not per row
owner).
"""

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from ..migrations.apply import TRACKING_SCHEMA
from ..provisioner.plans.pool_rls import (
    ISOLATION_POLICY,
    TENANT_STATISTICS_TARGET,
    split_qualified_name,
)
from ..tenancy import POOL, PoolMode, tenant_names

ANALYZE_SAMPLE_ROWS = 300 * TENANT_STATISTICS_TARGET
"""Rows ANALYZE reads at that target (PostgreSQL's rule: 300 x the statistics target). The
bound takes each table's own sample size (its columns' largest target), not this: a table
whose target was lowered samples fewer rows."""
ANALYZE_AFTER_FRACTION = 0.02
"""The sampler re-analyzes a pool table's tenant_id once more than this fraction of its rows
(plus ANALYZE_AFTER_ROWS) changed since its last ANALYZE: the bound it leaves on the error."""
ANALYZE_AFTER_ROWS = 100
"""... and at least this many rows (small tables would otherwise be analyzed at every write)."""
SAMPLING_STANDARD_ERRORS = 3.0
"""How many standard errors of the sampled frequency the bound adds for tables larger than
ANALYZE's sample (about 99.7 % of estimates fall inside)."""

SETTABLE_CONNECTIONS = (
    "connections: a settable pool's tenants share one login and name themselves per transaction"
)
POOL_ACTIVITY = (
    "transactions, rows written: PostgreSQL counts them per database and table, not per tenant"
)
HIDDEN_STATEMENTS = "longest statement: other logins' statements need pg_read_all_stats to see"

PARALLEL_DATABASES = 8
"""Tenant databases whose tables are read at once."""

Connector = Callable[[str], psycopg.Connection]
"""Opens an autocommit connection as the host's admin to the named database of the host."""


@dataclass(frozen=True)
class TenantUsage:
    """One tenant's usage at one sample."""

    tenant_id: str
    tier: str
    sampled_at: datetime
    storage_bytes: int
    """pg_database_size (silo, bridge); the tenant's row share of every protected table and its
    indexes (pool, estimated)."""
    table_rows: dict[str, int]
    """Rows per application table (silo, bridge) or protected table (pool, estimated)."""
    rows_error_bound: int = 0
    """How far the pool's row estimate may be from an exact count (0: counted)."""
    connections: int | None = None
    """Client sessions now; None where it cannot be attributed (`notes` says why)."""
    connection_limit: int | None = None
    """The database's (silo, bridge) or the tenant login's (strict pool) CONNECTION LIMIT."""
    longest_statement_s: float | None = None
    """Seconds the tenant's longest running statement has run (0: none running); None: the
    admin cannot see the sessions' statements (`notes`), or the pool cannot attribute them."""
    transactions_counter: int | None = None
    """pg_stat_database's cumulative commits + rollbacks of the tenant's database."""
    rows_written_counter: int | None = None
    """pg_stat_database's cumulative rows inserted + updated + deleted."""
    counters_reset_at: datetime | None = None
    """When those counters last started from zero (pg_stat_database.stats_reset)."""
    transactions: int | None = None
    """Transactions since the previous recorded sample (record.py); None: first sample,
    counters reset, or not attributable."""
    rows_written: int | None = None
    """Rows written since the previous recorded sample, as `transactions`."""
    storage_growth_bytes_per_day: float | None = None
    """Storage change since the previous recorded sample, per day (None: first sample)."""
    peak_connections: int | None = None
    """The most connections of the recorded samples in the asked-for window (a point sample
    cannot see between samples)."""
    notes: tuple[str, ...] = ()
    """What this tier cannot attribute, plainly."""

    @property
    def rows(self) -> int:
        """Rows over all tables."""
        return sum(self.table_rows.values())

    def as_json(self) -> dict[str, Any]:
        """The usage as JSON values."""
        return {
            "tenant": self.tenant_id,
            "tier": self.tier,
            "sampled_at": self.sampled_at.isoformat(),
            "storage_bytes": self.storage_bytes,
            "rows": self.rows,
            "table_rows": self.table_rows,
            "rows_error_bound": self.rows_error_bound,
            "connections": self.connections,
            "peak_connections": self.peak_connections,
            "connection_limit": self.connection_limit,
            "longest_statement_s": self.longest_statement_s,
            "transactions": self.transactions,
            "rows_written": self.rows_written,
            "storage_growth_bytes_per_day": self.storage_growth_bytes_per_day,
            "notes": list(self.notes),
        }


_DATABASES = sql.SQL(
    """SELECT d.datname, pg_database_size(d.oid), nullif(d.datconnlimit, -1),
              (SELECT count(*) FROM pg_stat_activity a
                WHERE a.datid = d.oid AND a.usesysid IS NOT NULL
                  AND a.pid <> pg_backend_pid()),
              (SELECT bool_and(a.state IS NOT NULL) IS NOT FALSE
                 FROM pg_stat_activity a
                WHERE a.datid = d.oid AND a.usesysid IS NOT NULL),
              (SELECT coalesce(max(extract(epoch FROM statement_timestamp() - a.query_start)), 0)
                 FROM pg_stat_activity a
                WHERE a.datid = d.oid AND a.usesysid IS NOT NULL
                  AND a.state = 'active' AND a.pid <> pg_backend_pid()),
              s.xact_commit + s.xact_rollback,
              s.tup_inserted + s.tup_updated + s.tup_deleted,
              s.stats_reset,
              statement_timestamp()
         FROM pg_database d LEFT JOIN pg_stat_database s ON s.datid = d.oid
        WHERE d.datname = ANY(%s)"""
)
"""Per tenant database, from the admin database: size, limit, sessions, the longest running
statement (whether the admin may see every session's), and the cumulative counters. A session
the admin may not see in detail shows state and backend_type NULL, so client sessions are those
with a user (autovacuum workers have none)."""

_TABLE_ROWS = sql.SQL(
    "SELECT format('%%I.%%I', schemaname, relname), n_live_tup FROM pg_stat_user_tables "
    "WHERE schemaname <> ALL(%s) ORDER BY 1"
)
"""An application database's tables and their live rows (tenantkit's own tables left out)."""


def sample_tenant_databases(
    admin: psycopg.Connection,
    databases: Mapping[str, str],
    *,
    tier: str,
    connect_to: Connector,
    own_schemas: Sequence[str] = (POOL.registry_schema, TRACKING_SCHEMA),
) -> list[TenantUsage]:
    """Usage of silo or bridge tenants (tenant id -> its database) on the host `admin` is
    connected to; `connect_to` opens the tenant databases for their tables' rows. A database
    that does not exist (the tenant offboarded meanwhile) is left out."""
    by_database = {database: tenant for tenant, database in databases.items()}
    rows = admin.execute(_DATABASES, (list(by_database),)).fetchall()

    def table_rows(database: str) -> dict[str, int]:
        with connect_to(database) as conn:
            return {
                name: int(live)
                for name, live in conn.execute(_TABLE_ROWS, (list(own_schemas),)).fetchall()
            }

    # One connection per tenant database (TLS + SCRAM: tens of ms each), several at once.
    with ThreadPoolExecutor(max_workers=PARALLEL_DATABASES) as pool:
        present = [row[0] for row in rows]  # a database dropped meanwhile is not there
        tables = dict(zip(present, pool.map(table_rows, present), strict=True))
    usages = []
    for database, size, limit, sessions, visible, longest, xacts, writes, reset, at in rows:
        usages.append(
            TenantUsage(
                tenant_id=by_database[database],
                tier=tier,
                sampled_at=at,
                storage_bytes=int(size),
                table_rows=tables[database],
                connections=int(sessions),
                connection_limit=limit,
                longest_statement_s=round(float(longest), 3) if visible else None,
                transactions_counter=xacts,
                rows_written_counter=writes,
                counters_reset_at=reset,
                notes=() if visible else (HIDDEN_STATEMENTS,),
            )
        )
    return sorted(usages, key=lambda u: u.tenant_id)


@dataclass(frozen=True)
class PoolTableEstimate:
    """How one protected table's per-tenant rows were estimated."""

    table: str
    reltuples: int
    """Rows as of the last ANALYZE or VACUUM."""
    bytes: int
    """Heap, TOAST and indexes."""
    modified_since_analyze: int
    analyzed: bool
    """Whether this sample ran ANALYZE on its tenant_id column."""
    from_statistics: int
    """Tenants whose rows came from the most-common-values list."""
    planned: int
    """Tenants whose share the planner was asked for this time (the others' were kept from an
    earlier sample since the same ANALYZE)."""
    counted: int
    """Tenants the list lacked, counted exactly through the tenant_id index."""
    sampled: bool
    """Whether ANALYZE read a sample smaller than the table (sampling error in the bound)."""
    analyzed_whole_table: bool = False
    """Whether that ANALYZE was of the whole table (autovacuum's would have come next)."""
    rows: dict[str, int] = field(default_factory=dict)
    bounds: dict[str, int] = field(default_factory=dict)


_PROTECTED = sql.SQL(
    """SELECT c.oid, format('%%I.%%I', n.nspname, c.relname), c.reltuples::bigint,
              pg_table_size(c.oid) + pg_indexes_size(c.oid),
              pg_stat_get_mod_since_analyze(c.oid),
              greatest(pg_stat_get_last_analyze_time(c.oid),
                       pg_stat_get_last_autoanalyze_time(c.oid)),
              300 * (SELECT CASE WHEN coalesce(a.attstattarget, -1) < 0
                                 THEN current_setting('default_statistics_target')::int
                                 ELSE a.attstattarget END
                       FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'),
              pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid)
              + pg_stat_get_tuples_deleted(c.oid),
              r.analyzed_at, r.rows_written,
              coalesce((SELECT option_value::float8 FROM pg_options_to_table(c.reloptions)
                         WHERE option_name = 'autovacuum_analyze_threshold'),
                       current_setting('autovacuum_analyze_threshold')::float8)
              + coalesce((SELECT option_value::float8 FROM pg_options_to_table(c.reloptions)
                           WHERE option_name = 'autovacuum_analyze_scale_factor'),
                         current_setting('autovacuum_analyze_scale_factor')::float8)
                * greatest(c.reltuples, 0)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN {} r ON r.table_oid = c.oid
        WHERE c.oid IN (SELECT polrelid FROM pg_policy WHERE polname = %s)
          AND (%s::oid IS NULL OR c.oid = %s::oid)
        ORDER BY 2"""
)
"""Every protected table with its size, its rows as of the last ANALYZE and the rows changed
since (the statistics functions, not pg_stat_all_tables: that view reads every table's row),
the rows an ANALYZE of tenant_id samples (300 x its statistics target; -1, or NULL from
PostgreSQL 17, is default_statistics_target: a whole-table ANALYZE samples at least as many),
the table's cumulative rows written, what the sampler recorded at its own last ANALYZE of
tenant_id, and the rows changed at which autovacuum analyzes the table (the table's own
settings over the server's)."""

_POOL_SESSIONS = sql.SQL(
    """SELECT r.rolname, nullif(r.rolconnlimit, -1),
              count(a.pid) FILTER (WHERE a.datname = %s),
              coalesce(max(extract(epoch FROM statement_timestamp() - a.query_start))
                       FILTER (WHERE a.state = 'active' AND a.datname = %s), 0),
              bool_and(a.state IS NOT NULL) FILTER (WHERE a.datname = %s) IS NOT FALSE
         FROM pg_roles r LEFT JOIN pg_stat_activity a ON a.usesysid = r.oid
        WHERE r.rolname = ANY(%s)
        GROUP BY r.rolname, r.rolconnlimit"""
)
"""A strict pool's tenant logins: limit, sessions in the pool, the longest running statement
(whether the admin may see each of those sessions: a login without one has none to hide; the
LEFT JOIN's empty row would otherwise read as hidden)."""


PLANNED_PER_STATEMENT = 500
"""Tenants estimated by one EXPLAIN (a UNION ALL of one branch per tenant)."""


def planned_rows(
    conn: psycopg.Connection, table: sql.Composable, values: Sequence[str]
) -> tuple[float, list[float]]:
    """The planner's row estimates for the whole table and for `tenant_id = <value>` of each
    value. pg_stats hides the statistics of a table whose row-level security applies to the
    reader (every reader of a FORCE'd table but a superuser or a BYPASSRLS role, neither of
    which the admin is on RDS), but the planner uses them for every reader as long as the
    operator is leakproof (text = text is): its estimate is most_common_freq x rows. One EXPLAIN
    plans PLANNED_PER_STATEMENT branches of a UNION ALL: one round trip, not one per tenant.
    Runs inside the caller's transaction (it sets a transaction-local setting)."""
    whole = 0.0
    planned: list[float] = []
    # Each branch selects its own number, and VERBOSE shows it: a (parallel) Append may
    # reorder its children by cost. One process plans it: no Gather on top.
    conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
    for start in range(0, len(values), PLANNED_PER_STATEMENT):
        chunk = values[start : start + PLANNED_PER_STATEMENT]
        branches = [sql.SQL("SELECT 0 FROM {}").format(table)] + [
            sql.SQL("SELECT {} FROM {} WHERE tenant_id = %s").format(sql.Literal(n), table)
            for n in range(1, len(chunk) + 1)
        ]
        statement = sql.SQL("EXPLAIN (FORMAT JSON, VERBOSE) ") + sql.SQL(" UNION ALL ").join(
            branches
        )
        plan = conn.execute(statement, chunk).fetchone()[0][0]["Plan"]  # type: ignore[index]
        by_branch = {int(child["Output"][0]): float(child["Plan Rows"]) for child in plan["Plans"]}
        if sorted(by_branch) != list(range(len(chunk) + 1)):
            raise RuntimeError(f"unexpected plan shape estimating {table}: {plan['Node Type']}")
        whole = by_branch[0]
        planned += [by_branch[n] for n in range(1, len(chunk) + 1)]
    return whole, planned


NO_TENANT = ""
"""A tenant_id no row can have (tenant ids are at least 2 characters): what the planner
estimates for a value outside the most-common-values list."""


_SHARES_TABLE = sql.Identifier(POOL.registry_schema, "usage_shares")
_ANALYZED_TABLE = sql.Identifier(POOL.registry_schema, "usage_analyzed")
_CREATE_ANALYZED = sql.SQL(
    """CREATE TABLE IF NOT EXISTS {} (
        table_oid oid PRIMARY KEY,
        analyzed_at timestamptz NOT NULL,
        rows_written bigint NOT NULL
    )"""
).format(_ANALYZED_TABLE)
"""The sampler's last `ANALYZE t (tenant_id)` of each protected table: when (the table's last
analyze time after it) and at what cumulative rows written (inserted + updated + deleted, read
before it), because a column-list ANALYZE leaves n_mod_since_analyze as it was. Owned by the
admin; PUBLIC has no grant."""
_CREATE_SHARES = sql.SQL(
    """CREATE TABLE IF NOT EXISTS {} (
        table_oid oid NOT NULL,
        analyzed_at timestamptz NOT NULL,
        tenant_id text NOT NULL,
        share double precision,
        PRIMARY KEY (table_oid, tenant_id)
    )"""
).format(_SHARES_TABLE)
"""Each tenant's share of a protected table as the planner had it after the table's last
ANALYZE (NULL: not in the most-common-values list), so that planning is paid once per ANALYZE
and per new tenant, not at every sample. Owned by the admin; PUBLIC has no grant."""


def _cached_shares(
    conn: psycopg.Connection, oid: int, analyzed_at: datetime, tenants: Sequence[str]
) -> dict[str, float | None]:
    rows = conn.execute(
        sql.SQL(
            "SELECT tenant_id, share FROM {} WHERE table_oid = %s AND analyzed_at = %s "
            "AND tenant_id = ANY(%s)"
        ).format(_SHARES_TABLE),
        (oid, analyzed_at, list(tenants)),
    ).fetchall()
    return dict(rows)


def _ensure_shares_table(conn: psycopg.Connection) -> None:
    for name, create, identifier in (
        ("usage_shares", _CREATE_SHARES, _SHARES_TABLE),
        ("usage_analyzed", _CREATE_ANALYZED, _ANALYZED_TABLE),
    ):
        qualified = f"{POOL.registry_schema}.{name}"
        if conn.execute("SELECT to_regclass(%s) IS NULL", (qualified,)).fetchone() == (True,):
            with conn.transaction():
                conn.execute(create)
                conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(identifier))


def _store_shares(
    conn: psycopg.Connection, oid: int, analyzed_at: datetime, shares: Mapping[str, float | None]
) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE table_oid = %s AND analyzed_at <> %s").format(
                _SHARES_TABLE
            ),
            (oid, analyzed_at),
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                sql.SQL(
                    "INSERT INTO {} (table_oid, analyzed_at, tenant_id, share) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (table_oid, tenant_id) DO UPDATE "
                    "SET analyzed_at = excluded.analyzed_at, share = excluded.share"
                ).format(_SHARES_TABLE),
                [(oid, analyzed_at, t, share) for t, share in shares.items()],
            )


def _as_maintainer(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(POOL.maintainer_role)))


def _modified_since_statistics(row: tuple[Any, ...]) -> int:
    """Rows changed since tenant_id's statistics were taken: n_mod_since_analyze (since the
    last whole-table ANALYZE), or less when the sampler's own column ANALYZE is more recent.
    Its record counts only while it is not newer than the table's last analyze time and the
    cumulative counter has not gone back (statistics reset, a table recreated)."""
    modified, analyzed_at = row[4:6]
    written, recorded_at, recorded_written = row[7:10]
    modified = int(modified)
    if (
        recorded_at is not None
        and analyzed_at is not None
        and recorded_at <= analyzed_at
        and int(written) >= int(recorded_written)
    ):
        modified = min(modified, int(written) - int(recorded_written))
    return modified


def _estimate_table(
    conn: psycopg.Connection,
    row: tuple[Any, ...],
    tenants: Sequence[str],
    analyzed: bool,
) -> PoolTableEstimate:
    oid, table, reltuples, size, _modified, analyzed_at, sample_rows = row[:7]
    modified = _modified_since_statistics(row)
    reltuples = max(int(reltuples), 0)
    sample_rows = max(int(sample_rows or 0), 1)
    identifier = sql.Identifier(*split_qualified_name(table))
    sampled = reltuples > sample_rows
    rows: dict[str, int] = {}
    bounds: dict[str, int] = {}
    shares: dict[str, float | None] = {}
    planned_now = 0
    if reltuples > 0 and tenants and analyzed_at is not None:
        shares = _cached_shares(conn, oid, analyzed_at, tenants)
        unknown = [t for t in tenants if t not in shares]
        if unknown:
            with conn.transaction():
                _as_maintainer(conn)
                whole, planned = planned_rows(conn, identifier, [NO_TENANT, *unknown])
            outside = planned[0]
            # A tenant the planner estimates above a value it cannot have is in the list; its
            # share is its estimate over the table's (both scaled alike to the table's size).
            found = {
                t: (estimate / whole if estimate > outside and whole > 0 else None)
                for t, estimate in zip(unknown, planned[1:], strict=True)
            }
            _store_shares(conn, oid, analyzed_at, found)
            shares.update(found)
            planned_now = len(unknown)
    common = {t: share for t, share in shares.items() if share is not None}
    missing = [t for t in tenants if t not in common]
    counted: dict[str, int] = {}
    if missing and (reltuples > 0 or modified):
        with conn.transaction():
            _as_maintainer(conn)
            if reltuples > 0:
                counted = dict(
                    conn.execute(
                        sql.SQL(
                            "SELECT tenant_id, count(*) FROM {} WHERE tenant_id = ANY(%s) "
                            "GROUP BY 1"
                        ).format(identifier),
                        (missing,),
                    ).fetchall()
                )
            else:  # empty at its last ANALYZE, fewer than the threshold written since
                counted = dict(
                    conn.execute(
                        sql.SQL("SELECT tenant_id, count(*) FROM {} GROUP BY 1").format(identifier)
                    ).fetchall()
                )
    for tenant in tenants:
        if tenant in common:
            share = common[tenant]
            rows[tenant] = round(share * reltuples)
            spread = 0.0
            if sampled:
                spread = SAMPLING_STANDARD_ERRORS * math.sqrt(share * (1 - share) / sample_rows)
            # + 1: the planner's estimates are whole rows, the share is rounded by them.
            bounds[tenant] = int(modified) + math.ceil(spread * reltuples) + 1
        else:
            rows[tenant], bounds[tenant] = int(counted.get(tenant, 0)), 0
    return PoolTableEstimate(
        table=table,
        reltuples=reltuples,
        bytes=int(size),
        modified_since_analyze=int(modified),
        analyzed=analyzed,
        from_statistics=len(common),
        planned=planned_now,
        counted=len(missing) if reltuples > 0 or modified else 0,
        sampled=sampled,
        rows=rows,
        bounds=bounds,
    )


def _analyze_after(reltuples: int) -> float:
    return ANALYZE_AFTER_ROWS + ANALYZE_AFTER_FRACTION * max(reltuples, 0)


def _needs_analyze(row: tuple[Any, ...]) -> bool:
    _oid, _table, reltuples, _size, modified, analyzed_at, _sample_rows = row[:7]
    if analyzed_at is None:
        return int(reltuples) > 0 or int(modified) > 0
    return _modified_since_statistics(row) > _analyze_after(int(reltuples))


def _analyze_whole_table(row: tuple[Any, ...]) -> bool:
    """Whether autovacuum's ANALYZE of the table would come before the sampler's next: its
    counter (n_mod_since_analyze, which only a whole-table ANALYZE resets) is within the
    sampler's own threshold of autovacuum's."""
    reltuples, modified, autovacuum_rows = int(row[2]), int(row[4]), float(row[10])
    return modified + _analyze_after(reltuples) >= autovacuum_rows


_ROWS_WRITTEN = sql.SQL(
    "SELECT pg_stat_get_tuples_inserted(%s) + pg_stat_get_tuples_updated(%s) "
    "+ pg_stat_get_tuples_deleted(%s)"
)
_ANALYZE_TIME = sql.SQL(
    "SELECT greatest(pg_stat_get_last_analyze_time(%s), pg_stat_get_last_autoanalyze_time(%s))"
)


def analyze_tenant_id(
    conn: psycopg.Connection, oid: int, table: str, *, whole_table: bool = False
) -> None:
    """ANALYZE the protected table's tenant_id alone (`whole_table`: every column), as the pool
    owner, and record at what cumulative rows written (usage_analyzed). Rows written while it
    samples count as modified since (the counter is read before): the bound stays an upper
    bound."""
    identifier = sql.Identifier(*split_qualified_name(table))
    with conn.transaction():
        conn.execute("SELECT pg_stat_clear_snapshot()")
        written = conn.execute(_ROWS_WRITTEN, (oid, oid, oid)).fetchone()[0]  # type: ignore[index]
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(POOL.owner_role)))
        columns = sql.SQL("") if whole_table else sql.SQL(" (tenant_id)")
        conn.execute(sql.SQL("ANALYZE {}{}").format(identifier, columns))
        conn.execute("RESET ROLE")
        # The statistics snapshot of this transaction predates the ANALYZE's report.
        conn.execute("SELECT pg_stat_clear_snapshot()")
        at = conn.execute(_ANALYZE_TIME, (oid, oid)).fetchone()[0]  # type: ignore[index]
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (table_oid, analyzed_at, rows_written) VALUES (%s, %s, %s) "
                "ON CONFLICT (table_oid) DO UPDATE SET analyzed_at = excluded.analyzed_at, "
                "rows_written = excluded.rows_written"
            ).format(_ANALYZED_TABLE),
            (oid, at, written),
        )


def sample_pool(
    conn: psycopg.Connection,
    tenants: Sequence[str],
    *,
    mode: PoolMode,
    analyze: bool = True,
) -> tuple[list[TenantUsage], list[PoolTableEstimate]]:
    """Usage of the pool's `tenants` (registered ids) on `conn`, the admin's autocommit
    connection to the pool database, and how each protected table was estimated. With
    `analyze`, a table whose statistics are missing or stale (ANALYZE_AFTER_FRACTION) has its
    tenant_id analyzed first, as the pool owner."""
    isolation = ISOLATION_POLICY
    _ensure_shares_table(conn)
    protected = _PROTECTED.format(_ANALYZED_TABLE)
    rows = conn.execute(protected, (isolation, None, None)).fetchall()
    estimates = []
    for row in rows:
        analyzed = whole_table = False
        if analyze and _needs_analyze(row):
            whole_table = _analyze_whole_table(row)
            analyze_tenant_id(conn, row[0], row[1], whole_table=whole_table)
            analyzed = True
        if analyzed:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(protected, (isolation, row[0], row[0])).fetchone() or row
        estimate = _estimate_table(conn, row, tenants, analyzed)
        estimates.append(replace(estimate, analyzed_whole_table=whole_table))
    sessions: dict[str, tuple[Any, ...]] = {}
    if mode == "strict":
        logins = {tenant_names(t, allow_probes=True).pool_login: t for t in tenants}
        for login, limit, count, longest, visible in conn.execute(
            _POOL_SESSIONS, (POOL.database, POOL.database, POOL.database, list(logins))
        ).fetchall():
            sessions[logins[login]] = (int(count), limit, float(longest), visible)
    at = conn.execute("SELECT statement_timestamp()").fetchone()[0]  # type: ignore[index]
    usages = []
    for tenant in sorted(tenants):
        table_rows = {e.table: e.rows[tenant] for e in estimates}
        storage = sum(
            round(e.bytes * e.rows[tenant] / e.reltuples) for e in estimates if e.reltuples > 0
        )
        usage = TenantUsage(
            tenant_id=tenant,
            tier="pool",
            sampled_at=at,
            storage_bytes=storage,
            table_rows=table_rows,
            rows_error_bound=sum(e.bounds[tenant] for e in estimates),
            notes=(POOL_ACTIVITY,) if mode == "strict" else (SETTABLE_CONNECTIONS, POOL_ACTIVITY),
        )
        if tenant in sessions:
            count, limit, longest, visible = sessions[tenant]
            usage = replace(
                usage,
                connections=count,
                connection_limit=limit,
                longest_statement_s=round(longest, 3) if visible else None,
                notes=usage.notes + (() if visible else (HIDDEN_STATEMENTS,)),
            )
        usages.append(usage)
    return usages, estimates


def exact_pool_rows(conn: psycopg.Connection, table: str) -> dict[str, int]:
    """An exact `count(*) ... GROUP BY tenant_id` of one protected table, as the maintainer: what
    the estimate is checked against (tests, `tenantctl bench usage`), never what it samples."""
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(POOL.maintainer_role)))
        return dict(
            conn.execute(
                sql.SQL("SELECT tenant_id, count(*) FROM {} GROUP BY 1").format(
                    sql.Identifier(*split_qualified_name(table))
                )
            ).fetchall()
        )
