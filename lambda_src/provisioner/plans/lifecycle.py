"""Tenant lifecycle: the states a tenant goes through and the registry that records them.

Every database host keeps a registry, `tenantkit.tenants`: the pool in its own database (the
tenant policy admits only `active` rows), a bridge cluster or silo server in its admin
database. The provisioner records each transition as it works, in AWS and locally alike:

    (in the catalog: requested) -> provisioning -> active <-> suspended
    active | suspended | failed -> offboarding -> offboarded
    provisioning | offboarding -> failed (the cause kept)
    active | suspended -> moving -> moved (tenantctl move: the source's rows, kept frozen and
                          read by no one, until --purge-source) | back to active (rolled back)

A trigger appends every change to `tenantkit.tenant_history`, so the real cause of a failure
survives a later retry. `requested` is not a row: it is a catalog entry no registry knows yet.
Offboarding with `destroy` records `offboarded` and then deletes the row: the host keeps
nothing of the tenant but its history.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from ...core.steps import Step, compose
from ...tenancy import MAX_TENANT_ID_LENGTH, MIN_TENANT_ID_LENGTH, POOL, TENANT_ID_PATTERN

PROVISIONING = "provisioning"
ACTIVE = "active"
SUSPENDED = "suspended"
OFFBOARDING = "offboarding"
OFFBOARDED = "offboarded"
FAILED = "failed"
MOVING = "moving"
"""Being moved to another tier: its writes are frozen (logins disabled, the pool policy denies
it) while its data is copied."""
MOVED = "moved"
"""Moved to another tier: the rows left here are read by no one until purged."""
STATES = (PROVISIONING, ACTIVE, SUSPENDED, OFFBOARDING, OFFBOARDED, FAILED, MOVING, MOVED)
"""What a registry row may say."""

MAX_CAUSE_LENGTH = 1000

_NAMES = {
    "registry": sql.Identifier(POOL.registry_schema),
    "registry_table": sql.Literal(f"{POOL.registry_schema}.tenants"),
    "status_check": sql.SQL("CHECK (status IN ({}))").format(
        sql.SQL(", ").join(sql.Literal(s) for s in STATES)
    ),
    "id_pattern": sql.Literal(TENANT_ID_PATTERN),
    "min_length": sql.Literal(MIN_TENANT_ID_LENGTH),
    "max_length": sql.Literal(MAX_TENANT_ID_LENGTH),
}


def _sql(text: str, **extra: sql.Composable) -> sql.Composed:
    return compose(text, {**_NAMES, **extra})


_REGISTRY = [
    ("create the registry schema", "CREATE SCHEMA IF NOT EXISTS {registry}"),
    ("revoke PUBLIC access to the registry schema", "REVOKE ALL ON SCHEMA {registry} FROM PUBLIC"),
    (
        "create the tenant registry",
        """CREATE TABLE IF NOT EXISTS {registry}.tenants (
        tenant_id text PRIMARY KEY
            CHECK (length(tenant_id) BETWEEN {min_length} AND {max_length}
                   AND tenant_id ~ {id_pattern}),
        status text NOT NULL CONSTRAINT tenants_status_check {status_check},
        cause text,
        registered_by text NOT NULL,
        registered_at timestamptz NOT NULL DEFAULT now(),
        status_changed_at timestamptz NOT NULL DEFAULT now()
    )""",
    ),
    # Registries made before the lifecycle knew only active and offboarded, without a cause,
    # or before moves.
    (
        "bring an older registry up to the lifecycle states",
        """DO $do$ BEGIN
            IF coalesce((SELECT pg_get_constraintdef(oid) NOT LIKE '%moved%'
                           FROM pg_constraint WHERE conname = 'tenants_status_check'
                            AND conrelid = {registry_table}::regclass), true) THEN
                ALTER TABLE {registry}.tenants
                    ADD COLUMN IF NOT EXISTS cause text,
                    DROP CONSTRAINT IF EXISTS tenants_status_check,
                    ADD CONSTRAINT tenants_status_check {status_check};
            END IF;
        END $do$""",
    ),
    (
        "create the tenant history",
        """CREATE TABLE IF NOT EXISTS {registry}.tenant_history (
        tenant_id text NOT NULL,
        status text NOT NULL,
        cause text,
        at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    ),
    (
        "index the tenant history",
        "CREATE INDEX IF NOT EXISTS tenant_history_by_tenant "
        "ON {registry}.tenant_history (tenant_id, at)",
    ),
    (
        "create the history trigger function",
        """CREATE OR REPLACE FUNCTION {registry}.record_transition() RETURNS trigger
        LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp
        AS $fn$
        BEGIN
            IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status
               OR NEW.cause IS DISTINCT FROM OLD.cause THEN
                INSERT INTO {registry}.tenant_history (tenant_id, status, cause)
                VALUES (NEW.tenant_id, NEW.status, NEW.cause);
            END IF;
            RETURN NULL;
        END
        $fn$""",
    ),
    (
        "record every registry change in the history",
        "CREATE OR REPLACE TRIGGER tenants_history AFTER INSERT OR UPDATE ON {registry}.tenants "
        "FOR EACH ROW EXECUTE FUNCTION {registry}.record_transition()",
    ),
    ("revoke PUBLIC access to the registry", "REVOKE ALL ON {registry}.tenants FROM PUBLIC"),
    ("revoke PUBLIC access to the history", "REVOKE ALL ON {registry}.tenant_history FROM PUBLIC"),
    (
        "revoke PUBLIC execute on the history trigger function",
        "REVOKE ALL ON FUNCTION {registry}.record_transition() FROM PUBLIC",
    ),
]

_OWNERSHIP = [
    ("give the registry schema to {owner}", "ALTER SCHEMA {registry} OWNER TO {owner}"),
    ("give the registry to {owner}", "ALTER TABLE {registry}.tenants OWNER TO {owner}"),
    ("give the history to {owner}", "ALTER TABLE {registry}.tenant_history OWNER TO {owner}"),
    (
        "give the history trigger function to {owner}",
        "ALTER FUNCTION {registry}.record_transition() OWNER TO {owner}",
    ),
]


def plan_registry(*, database: str | None = None, owner: str | None = None) -> list[Step]:
    """Steps that create (or bring up to date) the registry and its history in `database`
    (None: the admin connection's), owned by `owner` (None: the admin). All idempotent."""
    steps = [
        Step(description, _sql(text), database=database, changes=False)
        for description, text in _REGISTRY
    ]
    if owner is not None:
        steps += [
            Step(
                description.format(owner=owner),
                _sql(text, owner=sql.Identifier(owner)),
                database=database,
                changes=False,
            )
            for description, text in _OWNERSHIP
        ]
    return steps


OBSERVE_REGISTRY = sql.SQL("SELECT to_regclass(%s) IS NOT NULL")
"""Whether the admin database has a registry yet (bound: the qualified table name)."""
REGISTRY_TABLE = f"{POOL.registry_schema}.tenants"
"""The registry table's qualified name."""
HISTORY_TABLE = f"{POOL.registry_schema}.tenant_history"

# Registries made before the lifecycle have no cause column until the provisioner next runs:
# read it through to_jsonb so the reader works on either.
SELECT_TENANTS = _sql(
    "SELECT tenant_id, status, to_jsonb(t) ->> 'cause', status_changed_at "
    "FROM {registry}.tenants t ORDER BY tenant_id"
)
SELECT_HISTORY = _sql(
    "SELECT tenant_id, status, cause, at FROM {registry}.tenant_history "
    "WHERE tenant_id = %s ORDER BY at"
)


@dataclass(frozen=True)
class RegistryEntry:
    """One tenant's row in a registry, or one entry of its history."""

    tenant_id: str
    status: str
    cause: str | None
    at: datetime


def _cause(cause: str | None) -> str | None:
    return cause[:MAX_CAUSE_LENGTH] if cause else None


def plan_record(
    tenant_ids: Sequence[str],
    status: str,
    *,
    registered_by: str,
    cause: str | None = None,
    database: str | None = None,
    keep: Sequence[str] = (),
) -> Step:
    """Record `status` for tenants, adding rows for tenants the registry does not know yet.
    A row already in one of the `keep` states is left alone."""
    if status not in STATES:
        raise ValueError(f"unknown tenant status {status!r}")
    return Step(
        f"record {len(tenant_ids)} tenant(s) as {status}",
        _sql(
            "INSERT INTO {registry}.tenants AS t (tenant_id, status, cause, registered_by) "
            "SELECT unnest(%s::text[]), %s, %s, %s "
            "ON CONFLICT (tenant_id) DO UPDATE "
            "SET status = EXCLUDED.status, cause = EXCLUDED.cause, "
            "    registered_by = EXCLUDED.registered_by, status_changed_at = now() "
            "WHERE (t.status, t.cause, t.registered_by) IS DISTINCT FROM "
            "      (EXCLUDED.status, EXCLUDED.cause, EXCLUDED.registered_by) "
            "  AND NOT t.status = ANY(%s::text[])"
        ),
        (list(tenant_ids), status, _cause(cause), registered_by, list(keep)),
        database=database,
        changes_only_if_rows=True,
    )


def plan_mark(
    tenant_ids: Sequence[str],
    status: str,
    *,
    registered_by: str | None = None,
    database: str | None = None,
) -> Step:
    """Move tenants the registry knows to `status` (only rows `registered_by` made, if given)."""
    if status not in STATES:
        raise ValueError(f"unknown tenant status {status!r}")
    return Step(
        f"mark {len(tenant_ids)} tenant(s) {status}",
        _sql(
            "UPDATE {registry}.tenants SET status = %s, cause = NULL, status_changed_at = now() "
            "WHERE tenant_id = ANY(%s) AND status <> %s "
            "  AND (%s::text IS NULL OR registered_by = %s)"
        ),
        (status, list(tenant_ids), status, registered_by, registered_by),
        database=database,
        changes_only_if_rows=True,
    )


def plan_forget(
    tenant_ids: Sequence[str], *, registered_by: str | None = None, database: str | None = None
) -> Step:
    """Remove the registry rows of tenants whose data was destroyed (their history stays)."""
    return Step(
        f"remove {len(tenant_ids)} tenant(s) from the registry",
        _sql(
            "DELETE FROM {registry}.tenants WHERE tenant_id = ANY(%s) "
            "AND (%s::text IS NULL OR registered_by = %s)"
        ),
        (list(tenant_ids), registered_by, registered_by),
        database=database,
        changes_only_if_rows=True,
    )
