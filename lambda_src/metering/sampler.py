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
the tenant's rows as of that ANALYZE. The sampler analyzes the column itself (as the pool
owner) when more than ANALYZE_AFTER_FRACTION of a table changed since; a registered tenant the
list lacks (the list is cut when the table is larger than the sample) is counted exactly
through the tenant_id index, at a cost proportional to its own rows. The error bound of each
estimate is reported with it: the rows modified since the table's last ANALYZE (any of them
may be the tenant's), plus 3 standard errors of the sample frequency when the table is larger
than the sample. A tenant's storage is its row share of each table's heap, TOAST and indexes.

What the pool cannot attribute, said as None with a reason rather than 0: connections in a
settable pool (the tenant is a transaction-local setting of a shared login), and transactions
and rows written in any pool (PostgreSQL counts them per database and per table, not per row
owner).
"""

import math
from collections.abc import Callable, Mapping, Sequence
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
"""Rows ANALYZE reads at that target (PostgreSQL's rule: 300 x the statistics target)."""
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
    usages = []
    for database, size, limit, sessions, visible, longest, xacts, writes, reset, at in rows:
        with connect_to(database) as conn:
            table_rows = {
                name: int(live)
                for name, live in conn.execute(_TABLE_ROWS, (list(own_schemas),)).fetchall()
            }
        usages.append(
            TenantUsage(
                tenant_id=by_database[database],
                tier=tier,
                sampled_at=at,
                storage_bytes=int(size),
                table_rows=table_rows,
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
    counted: int
    """Tenants the list lacked, counted exactly through the tenant_id index."""
    sampled: bool
    """Whether ANALYZE read a sample smaller than the table (sampling error in the bound)."""
    rows: dict[str, int] = field(default_factory=dict)
    bounds: dict[str, int] = field(default_factory=dict)


_PROTECTED = sql.SQL(
    """SELECT c.oid, format('%%I.%%I', s.schemaname, s.relname), c.reltuples::bigint,
              pg_table_size(c.oid) + pg_indexes_size(c.oid),
              coalesce(s.n_mod_since_analyze, 0),
              st.most_common_vals::text::text[], st.most_common_freqs, st.n_distinct
         FROM pg_class c
         JOIN pg_stat_all_tables s ON s.relid = c.oid
         LEFT JOIN pg_stats st ON st.schemaname = s.schemaname AND st.tablename = s.relname
               AND st.attname = 'tenant_id' AND NOT st.inherited
        WHERE c.oid IN (SELECT polrelid FROM pg_policy WHERE polname = %s)
          AND (%s::oid IS NULL OR c.oid = %s::oid)
        ORDER BY 1"""
)
"""Every protected table with its size and tenant_id statistics. pg_stats shows a column's
statistics only to a role that may read the column: read as the pool maintainer."""

_POOL_SESSIONS = sql.SQL(
    """SELECT r.rolname, nullif(r.rolconnlimit, -1),
              count(a.pid) FILTER (WHERE a.datname = %s),
              coalesce(max(extract(epoch FROM statement_timestamp() - a.query_start))
                       FILTER (WHERE a.state = 'active' AND a.datname = %s), 0),
              bool_and(a.state IS NOT NULL) IS NOT FALSE
         FROM pg_roles r LEFT JOIN pg_stat_activity a ON a.usesysid = r.oid
        WHERE r.rolname = ANY(%s)
        GROUP BY r.rolname, r.rolconnlimit"""
)
"""A strict pool's tenant logins: limit, sessions in the pool, the longest running statement."""


def _estimate_table(
    conn: psycopg.Connection,
    row: tuple[Any, ...],
    tenants: Sequence[str],
    analyzed: bool,
) -> PoolTableEstimate:
    _oid, table, reltuples, size, modified, values, freqs, n_distinct = row
    reltuples = max(int(reltuples), 0)
    common = dict(zip(values or [], freqs or [], strict=True))
    sampled = reltuples > ANALYZE_SAMPLE_ROWS
    rows: dict[str, int] = {}
    bounds: dict[str, int] = {}
    # Every value seen is in the list (n_distinct positive and equal to its length): a tenant
    # it lacks had no row at that ANALYZE.
    complete = n_distinct is not None and n_distinct > 0 and len(common) >= n_distinct
    missing = [t for t in tenants if t not in common]
    counted: dict[str, int] = {}
    if missing and not complete:
        counted = dict(
            conn.execute(
                sql.SQL(
                    "SELECT tenant_id, count(*) FROM {} WHERE tenant_id = ANY(%s) GROUP BY 1"
                ).format(sql.Identifier(*split_qualified_name(table))),
                (missing,),
            ).fetchall()
        )
    for tenant in tenants:
        if tenant in common:
            share = float(common[tenant])
            rows[tenant] = round(share * reltuples)
            spread = 0.0
            if sampled:
                spread = SAMPLING_STANDARD_ERRORS * math.sqrt(
                    share * (1 - share) / ANALYZE_SAMPLE_ROWS
                )
            bounds[tenant] = int(modified) + math.ceil(spread * reltuples)
        elif complete:
            rows[tenant], bounds[tenant] = 0, int(modified)
        else:
            rows[tenant], bounds[tenant] = int(counted.get(tenant, 0)), 0
    return PoolTableEstimate(
        table=table,
        reltuples=reltuples,
        bytes=int(size),
        modified_since_analyze=int(modified),
        analyzed=analyzed,
        from_statistics=sum(1 for t in tenants if t in common),
        counted=0 if complete else len(missing),
        sampled=sampled,
        rows=rows,
        bounds=bounds,
    )


def _needs_analyze(row: tuple[Any, ...]) -> bool:
    _oid, _table, reltuples, _size, modified, values, _freqs, _n_distinct = row
    if values is None:  # never analyzed (or empty when it was): no statistics to read
        return int(reltuples) != 0 or int(modified) > 0
    return int(modified) > ANALYZE_AFTER_ROWS + ANALYZE_AFTER_FRACTION * max(int(reltuples), 0)


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
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(POOL.maintainer_role)))
        rows = conn.execute(_PROTECTED, (isolation, None, None)).fetchall()
    estimates = []
    for row in rows:
        analyzed = False
        if analyze and _needs_analyze(row):
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(POOL.owner_role)))
                conn.execute(
                    sql.SQL("ANALYZE {} (tenant_id)").format(
                        sql.Identifier(*split_qualified_name(row[1]))
                    )
                )
            analyzed = True
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(POOL.maintainer_role)))
            if analyzed:
                row = conn.execute(_PROTECTED, (isolation, row[0], row[0])).fetchone() or row
            estimates.append(_estimate_table(conn, row, tenants, analyzed))
    sessions: dict[str, tuple[Any, ...]] = {}
    if mode == "strict":
        logins = {tenant_names(t, allow_probes=True).pool_login: t for t in tenants}
        for login, limit, count, longest, visible in conn.execute(
            _POOL_SESSIONS, (POOL.database, POOL.database, list(logins))
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
