"""The record of a tenant's move between tiers, kept in the source host's registry database
(`tenantkit.tenant_moves`, beside `tenantkit.tenants`): one row per tenant, the last step done,
so a move interrupted at any step is resumed (after the catalog switched tier) or rolled back
(before) by the next run. Only the admin reads or writes it.
"""

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from ..provisioner.plans.lifecycle import MAX_CAUSE_LENGTH
from ..tenancy import POOL

STEPS = ("started", "provision-target", "freeze", "copy", "verify", "switch", "activate")
"""The move's steps in order; a row's `step` is the last one completed."""
RUNNING = "running"
DONE = "done"
ROLLED_BACK = "rolled-back"
PURGED = "purged"
OUTCOMES = (RUNNING, DONE, ROLLED_BACK, PURGED)

_TABLE = sql.Identifier(POOL.registry_schema, "tenant_moves")
_CREATE = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(POOL.registry_schema)),
    sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        " tenant_id text PRIMARY KEY,"
        " source_tier text NOT NULL,"
        " target_tier text NOT NULL,"
        " step text NOT NULL,"
        " outcome text NOT NULL,"
        " cause text,"
        " started_at timestamptz NOT NULL DEFAULT now(),"
        " updated_at timestamptz NOT NULL DEFAULT now())"
    ).format(_TABLE),
    sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(_TABLE),
]


@dataclass(frozen=True)
class MoveRecord:
    """A tenant's move as its source host recorded it."""

    tenant_id: str
    source_tier: str
    target_tier: str
    step: str
    outcome: str
    cause: str | None
    started_at: datetime
    updated_at: datetime

    def done(self, step: str) -> bool:
        """Whether `step` was completed."""
        return STEPS.index(self.step) >= STEPS.index(step)


def ensure_journal(conn: psycopg.Connection) -> None:
    """Create the move record table if it is not there (idempotent)."""
    for statement in _CREATE:
        conn.execute(statement)


def read_move(conn: psycopg.Connection, tenant_id: str) -> MoveRecord | None:
    """The tenant's move recorded here (None: none, or no table yet)."""
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{POOL.registry_schema}.tenant_moves",)
    ).fetchone()
    if exists != (True,):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT tenant_id, source_tier, target_tier, step, outcome, cause, started_at, "
            "updated_at FROM {} WHERE tenant_id = %s"
        ).format(_TABLE),
        (tenant_id,),
    ).fetchone()
    return None if row is None else MoveRecord(*row)


def start_move(conn: psycopg.Connection, tenant_id: str, source: str, target: str) -> None:
    """Record a new move (replacing a finished one's row)."""
    ensure_journal(conn)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (tenant_id, source_tier, target_tier, step, outcome) "
            "VALUES (%s, %s, %s, 'started', %s) ON CONFLICT (tenant_id) DO UPDATE SET "
            "source_tier = EXCLUDED.source_tier, target_tier = EXCLUDED.target_tier, "
            "step = 'started', outcome = EXCLUDED.outcome, cause = NULL, started_at = now(), "
            "updated_at = now()"
        ).format(_TABLE),
        (tenant_id, source, target, RUNNING),
    )


def record_move(
    conn: psycopg.Connection,
    tenant_id: str,
    *,
    step: str | None = None,
    outcome: str | None = None,
    cause: str | None = None,
) -> None:
    """Record the step completed and/or the outcome (and its cause) of the tenant's move."""
    if step is not None and step not in STEPS:
        raise ValueError(f"unknown move step {step!r}")
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"unknown move outcome {outcome!r}")
    conn.execute(
        sql.SQL(
            "UPDATE {} SET step = coalesce(%s, step), outcome = coalesce(%s, outcome), "
            "cause = coalesce(%s, cause), updated_at = now() WHERE tenant_id = %s"
        ).format(_TABLE),
        (step, outcome, cause[:MAX_CAUSE_LENGTH] if cause else None, tenant_id),
    )


def mark_registry(
    conn: psycopg.Connection, tenant_id: str, status: str, cause: str | None = None
) -> None:
    """Set the tenant's row of this host's registry to `status` (moving, moved, active)."""
    conn.execute(
        sql.SQL(
            "UPDATE {}.tenants SET status = %s, cause = %s, status_changed_at = now() "
            "WHERE tenant_id = %s AND status IS DISTINCT FROM %s"
        ).format(sql.Identifier(POOL.registry_schema)),
        (status, cause[:MAX_CAUSE_LENGTH] if cause else None, tenant_id, status),
    )
