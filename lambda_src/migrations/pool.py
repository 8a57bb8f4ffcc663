"""After each migration of the pool database: every table in a tenant schema comes under the
tenant policies (the pool's protect_table: FORCE row-level security, the isolation and
maintenance policies, the runtime's grants), or the migration is refused and rolled back with
the table and the rule it breaks; tables declared shared (reference data) are readable by the
runtime and writable by no tenant."""

from collections.abc import Sequence

import psycopg
from psycopg import errors, sql

from ..core.connection import first_line
from ..provisioner.plans.pool_rls import ISOLATION_POLICY
from ..tenancy import POOL
from .apply import AfterEach
from .files import Migration, MigrationError

UNPROTECTED_TABLES = sql.SQL(
    "SELECT n.nspname, c.relname FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY(%s) "
    "AND NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = %s) "
    "ORDER BY n.nspname, c.relname"
)


def _qualified(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return (schema or "public", table)


def protect_new_tables(tenant_schemas: Sequence[str], shared_tables: Sequence[str]) -> AfterEach:
    """The engine's after_each hook for the pool database (it runs as the admin, inside the
    migration's transaction, so a refusal rolls the file back)."""
    shared = {_qualified(name) for name in shared_tables}
    registry = sql.Identifier(POOL.registry_schema)

    def protect(conn: psycopg.Connection, migration: Migration) -> None:
        rows = conn.execute(UNPROTECTED_TABLES, (list(tenant_schemas), ISOLATION_POLICY))
        for schema, table in rows.fetchall():
            target = sql.Identifier(schema, table)
            if (schema, table) in shared:
                conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(target))
                conn.execute(
                    sql.SQL("GRANT SELECT ON {} TO {}").format(
                        target, sql.Identifier(POOL.runtime_role)
                    )
                )
                continue
            try:
                with conn.transaction():  # a savepoint: the refusal's own error is kept
                    conn.execute(
                        sql.SQL("CALL {}.protect_table(%s::regclass)").format(registry),
                        (target.as_string(conn),),
                    )
            except errors.RaiseException as error:
                raise MigrationError(
                    f"{migration.path} creates {schema}.{table} in a tenant schema, and it "
                    f"cannot be put under the tenant policies: {first_line(error)} (declare "
                    "it in schema.shared_tables if it is reference data)"
                ) from None

    return protect
