"""The pool database's tenant schemas: every table in them comes under the tenant policies (the
pool's protect_table: FORCE row-level security, the isolation and maintenance policies, the
runtime's grants), or is refused with the table and the rule it breaks; tables declared shared
(reference data) are readable by the runtime and writable by no tenant.

This is how the catalog's `pool.tenant_tables` is derived from the schema: after each migration
of the pool database (inside its transaction, so a refusal rolls the file back) and on every
Create or Update of a PoolDatabase with migrations (which name the tenant schemas), for a table
made outside a migration too."""

from collections.abc import Sequence

import psycopg
from psycopg import errors, sql

from ..core.connection import first_line
from ..core.errors import TenantkitError
from ..provisioner.plans.pool_rls import ISOLATION_POLICY
from ..tenancy import POOL, qualified_table
from .apply import AfterEach
from .files import Migration, MigrationError

UNPROTECTED_TABLES = sql.SQL(
    "SELECT n.nspname, c.relname FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY(%s) "
    "AND NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = %s) "
    "ORDER BY n.nspname, c.relname"
)
"""Tables of the tenant schemas (parameter 1) without the tenant policy (parameter 2)."""
SHARED_TABLE_STATE = sql.SQL(
    "SELECT has_table_privilege(%(runtime)s, c.oid, 'SELECT'), "
    "coalesce(array_agg(DISTINCT pg_get_userbyid(a.grantee)) FILTER (WHERE a.grantee <> 0), "
    "'{}'), coalesce(bool_or(a.grantee = 0), false) "
    "FROM pg_class c LEFT JOIN LATERAL aclexplode(c.relacl) a ON a.grantee <> c.relowner "
    "AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') "
    "WHERE c.oid = %(table)s::regclass GROUP BY c.oid"
)
"""A shared table's state: whether the runtime may read it, the roles other than its owner
that may write it, and whether PUBLIC may."""


class UnprotectableTableError(TenantkitError):
    """A table of a tenant schema cannot be put under the tenant policies."""

    def __init__(self, table: str, reason: str) -> None:
        super().__init__(
            f"{table} is in a tenant schema, and it cannot be put under the tenant policies: "
            f"{reason} (declare it in schema.shared_tables if it is reference data)"
        )
        self.table = table
        self.reason = reason


def protect_tenant_schemas(
    conn: psycopg.Connection, tenant_schemas: Sequence[str], shared_tables: Sequence[str]
) -> list[str]:
    """Put every table of `tenant_schemas` that is not under the tenant policies yet under them
    (shared tables: SELECT for the runtime, nothing for PUBLIC), as the admin, in the caller's
    transaction; the changes made. Raises UnprotectableTableError naming the first table that
    cannot be protected (the caller's transaction must then be rolled back)."""
    shared = {qualified_table(name) for name in shared_tables}
    registry = sql.Identifier(POOL.registry_schema)
    changes: list[str] = []
    rows = conn.execute(UNPROTECTED_TABLES, (list(tenant_schemas), ISOLATION_POLICY))
    for schema, table in rows.fetchall():
        target = sql.Identifier(schema, table)
        if (schema, table) in shared:
            changes += _close_shared_table(conn, target, f"{schema}.{table}")
            continue
        try:
            with conn.transaction():  # a savepoint: the refusal's own error is kept
                conn.execute(
                    sql.SQL("CALL {}.protect_table(%s::regclass)").format(registry),
                    (target.as_string(conn),),
                )
        except errors.RaiseException as error:
            raise UnprotectableTableError(f"{schema}.{table}", first_line(error)) from None
        changes.append(f"protect table {schema}.{table}")
    return changes


def _close_shared_table(conn: psycopg.Connection, target: sql.Identifier, name: str) -> list[str]:
    """A shared table readable by the runtime and writable by no one but its owner: whatever a
    migration granted (to PUBLIC, the runtime or a login) to write it is revoked."""
    state = conn.execute(
        SHARED_TABLE_STATE, {"runtime": POOL.runtime_role, "table": target.as_string(conn)}
    ).fetchone()
    readable, writers, public_writes = state if state is not None else (False, [], True)
    if readable and not writers and not public_writes:
        return []
    conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(target))
    for writer in writers:
        conn.execute(
            sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(
                target, sql.Identifier(writer)
            )
        )
    conn.execute(
        sql.SQL("GRANT SELECT ON {} TO {}").format(target, sql.Identifier(POOL.runtime_role))
    )
    return [f"let the runtime read the shared table {name}, and no one write it"]


def protect_new_tables(tenant_schemas: Sequence[str], shared_tables: Sequence[str]) -> AfterEach:
    """The engine's after_each hook for the pool database (it runs as the admin, inside the
    migration's transaction, so a refusal rolls the file back)."""

    def protect(conn: psycopg.Connection, migration: Migration) -> None:
        try:
            protect_tenant_schemas(conn, tenant_schemas, shared_tables)
        except UnprotectableTableError as error:
            raise MigrationError(
                f"{migration.path} creates {error.table} in a tenant schema, and it cannot be "
                f"put under the tenant policies: {error.reason} (declare it in "
                "schema.shared_tables if it is reference data)"
            ) from None

    return protect
