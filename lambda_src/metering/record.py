"""The usage record: `tenantkit.usage_samples` in each host's registry database.

Why there: a billing job reads one table per host with plain SQL (the registry's admin secret,
as `tenantctl list` reads the registry), never the tenant databases or the pool's shared
tables; the record outlives CloudWatch's metric resolution and retention choices; and it holds
the previous sample's cumulative counters, from which each new sample's transactions and rows
written are the deltas. Only the admin (the table's owner) can read it: PUBLIC has no grant.
Samples older than RETENTION_DAYS are deleted when a new one is recorded.
"""

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import psycopg
from psycopg import sql

from ..tenancy import POOL
from .sampler import TenantUsage

RETENTION_DAYS = 400
"""Kept for a year of monthly invoices and their corrections."""

_NAMES = {
    "registry": sql.Identifier(POOL.registry_schema),
    "samples": sql.Identifier(POOL.registry_schema, "usage_samples"),
}

_CREATE = [
    "CREATE SCHEMA IF NOT EXISTS {registry}",
    """CREATE TABLE IF NOT EXISTS {samples} (
        tenant_id text NOT NULL,
        sampled_at timestamptz NOT NULL,
        tier text NOT NULL,
        storage_bytes bigint NOT NULL,
        table_rows jsonb NOT NULL,
        rows_error_bound bigint NOT NULL,
        connections integer,
        connection_limit integer,
        longest_statement_s double precision,
        transactions_counter bigint,
        rows_written_counter bigint,
        counters_reset_at timestamptz,
        transactions bigint,
        rows_written bigint,
        notes text[] NOT NULL DEFAULT '{{}}',
        PRIMARY KEY (tenant_id, sampled_at)
    )""",
    "REVOKE ALL ON {samples} FROM PUBLIC",
]


def ensure_usage_table(conn: psycopg.Connection) -> None:
    """Create the usage record in the connection's (registry) database if it is missing."""
    with conn.transaction():
        for statement in _CREATE:
            conn.execute(sql.SQL(statement).format(**_NAMES))


_PREVIOUS = sql.SQL(
    "SELECT DISTINCT ON (tenant_id) tenant_id, transactions_counter, rows_written_counter, "
    "counters_reset_at, storage_bytes, sampled_at FROM {samples} WHERE tenant_id = ANY(%s) "
    "ORDER BY tenant_id, sampled_at DESC"
).format(**_NAMES)

_INSERT = sql.SQL(
    "INSERT INTO {samples} (tenant_id, sampled_at, tier, storage_bytes, table_rows, "
    "rows_error_bound, connections, connection_limit, longest_statement_s, "
    "transactions_counter, rows_written_counter, counters_reset_at, transactions, "
    "rows_written, notes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (tenant_id, sampled_at) DO NOTHING"
).format(**_NAMES)


def _delta(now: int | None, before: int | None, same_epoch: bool) -> int | None:
    # A counter that went back or whose reset time moved started again: no delta this time.
    if now is None or before is None or not same_epoch or now < before:
        return None
    return now - before


def record_usage(conn: psycopg.Connection, usages: Sequence[TenantUsage]) -> list[TenantUsage]:
    """Write one sample per tenant into the usage record; returns the usages with the deltas
    against each tenant's previous sample (transactions, rows written, storage growth)."""
    if not usages:
        return []
    ensure_usage_table(conn)
    recorded = []
    with conn.transaction():
        previous = {
            row[0]: row[1:]
            for row in conn.execute(_PREVIOUS, ([u.tenant_id for u in usages],)).fetchall()
        }
        for usage in usages:
            before = previous.get(usage.tenant_id)
            if before is not None:
                same = before[2] == usage.counters_reset_at
                days = (usage.sampled_at - before[4]).total_seconds() / 86400
                usage = replace(
                    usage,
                    transactions=_delta(usage.transactions_counter, before[0], same),
                    rows_written=_delta(usage.rows_written_counter, before[1], same),
                    storage_growth_bytes_per_day=(
                        round((usage.storage_bytes - before[3]) / days, 1) if days > 0 else None
                    ),
                )
            conn.execute(
                _INSERT,
                (
                    usage.tenant_id,
                    usage.sampled_at,
                    usage.tier,
                    usage.storage_bytes,
                    json.dumps(usage.table_rows),
                    usage.rows_error_bound,
                    usage.connections,
                    usage.connection_limit,
                    usage.longest_statement_s,
                    usage.transactions_counter,
                    usage.rows_written_counter,
                    usage.counters_reset_at,
                    usage.transactions,
                    usage.rows_written,
                    list(usage.notes),
                ),
            )
            recorded.append(usage)
        conn.execute(
            sql.SQL(
                "DELETE FROM {samples} WHERE sampled_at < now() - make_interval(days => %s)"
            ).format(**_NAMES),
            (RETENTION_DAYS,),
        )
    return recorded


_READ_WINDOW = sql.SQL(
    """SELECT tenant_id, max(connections),
              sum(transactions) FILTER (WHERE sampled_at > %(since)s),
              sum(rows_written) FILTER (WHERE sampled_at > %(since)s)
         FROM {samples} WHERE tenant_id = ANY(%(tenants)s) AND sampled_at >= %(since)s
        GROUP BY tenant_id"""
).format(**_NAMES)
"""Per tenant over the samples since a time: the connection peak and the activity summed."""

_READ_LAST_TWO = sql.SQL(
    """SELECT tenant_id, max(connections), NULL, NULL
         FROM (SELECT tenant_id, connections,
                      row_number() OVER (PARTITION BY tenant_id ORDER BY sampled_at DESC) AS n
                 FROM {samples} WHERE tenant_id = ANY(%(tenants)s)) recent
        WHERE n <= 2 GROUP BY tenant_id"""
).format(**_NAMES)
"""Per tenant: the connection peak of this sample and the previous one."""


def read_usage(
    conn: psycopg.Connection, usages: Sequence[TenantUsage], since: datetime | None
) -> list[TenantUsage]:
    """The recorded usages with what the record says of a window: the peak of the sampled
    connections (of this sample and the previous one; with `since`, of every sample since) and,
    with `since`, the transactions and rows written summed over the window's samples."""
    if not usages or conn.execute(
        "SELECT to_regclass(%s) IS NULL", (f"{POOL.registry_schema}.usage_samples",)
    ).fetchone() == (True,):
        return list(usages)
    query = _READ_LAST_TWO if since is None else _READ_WINDOW
    params = {"since": since, "tenants": [u.tenant_id for u in usages]}
    by_tenant = {row[0]: row[1:] for row in conn.execute(query, params).fetchall()}
    result = []
    for usage in usages:
        peak, transactions, written = by_tenant.get(usage.tenant_id, (None, None, None))
        usage = replace(usage, peak_connections=peak)
        if since is not None and usage.transactions_counter is not None:
            usage = replace(
                usage,
                transactions=None if transactions is None else int(transactions),
                rows_written=None if written is None else int(written),
            )
        result.append(usage)
    return result
