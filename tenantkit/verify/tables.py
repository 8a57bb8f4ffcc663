"""Attacks on the application's own pool tables: every table under the tenant policies (found
in pg_catalog) and every table of the catalog's tenant schemas (a table a migration created
there, or one that should have been protected and was not), run as the runtime login.

The probe tenants have rows in the sample schema only, so each attack first writes a probe row
of tenantkit-probe-a and one of tenantkit-probe-b into the table (and into every table it
references, parents first), each under its own tenant's context, inside the attack's
transaction; the attack then runs as tenantkit-probe-a, and the transaction is rolled back
whatever happens: nothing an attack writes is ever committed. A probe row takes a value for
each NOT NULL column without a default (by the column's type; a foreign key's columns from
the parent's probe row); a table whose constraints refuse such a row cannot be attacked, and
that is reported as a failure saying so, never as blocked.

Every outcome the server refuses with insufficient_privilege (permission denied, or "new row
violates row-level security policy") is blocked. INSERT checks the row-level security policy's
WITH CHECK before the table's NOT NULL constraints, so inserting only another tenant's
`tenant_id` is refused by the policy on any protected table, whatever its other columns.
"""

from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.types.json import Json

from lambda_src.migrations.apply import TRACKING_SCHEMA
from lambda_src.provisioner.plans.pool_rls import ISOLATION_POLICY
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS, qualified_table

from .report import AttackResult, Outcome, blocked, leaked

A, B, _GONE = PROBE_TENANT_IDS
_NOT_APPLICATION = [POOL.registry_schema, POOL.sample_schema, TRACKING_SCHEMA]
"""Schemas of tenantkit's own (the registry, the sample the fixed attacks use, the migrations'
record), never the application's."""

TENANT_TABLES = sql.SQL(
    "SELECT c.oid, n.nspname, c.relname FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND n.nspname <> ALL(%(tenantkit)s) AND n.nspname NOT LIKE 'pg\\_%%' "
    "AND n.nspname <> 'information_schema' "
    "AND (n.nspname = ANY(%(tenant_schemas)s) OR EXISTS ("
    "  SELECT FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = %(policy)s)) "
    "ORDER BY n.nspname, c.relname"
)
"""Protected tables anywhere, and every table of the tenant schemas."""
COLUMNS = sql.SQL(
    "SELECT a.attname, "
    "       a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '', "
    "       coalesce(b.typcategory, t.typcategory), "
    "       (SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = coalesce(b.oid, t.oid) "
    "         ORDER BY e.enumsortorder LIMIT 1) "
    "  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
    "  LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype "
    " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)
"""Each column: its name, whether a row must give it a value, its type category (a domain's
base type's) and, for an enum, its first label."""
FOREIGN_KEYS = sql.SQL(
    "SELECT k.confrelid, pn.nspname, pc.relname, "
    "       array(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(num, i) "
    "             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num "
    "             ORDER BY u.i), "
    "       array(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(num, i) "
    "             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.num "
    "             ORDER BY u.i) "
    "  FROM pg_constraint k JOIN pg_class pc ON pc.oid = k.confrelid "
    "  JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
    " WHERE k.contype = 'f' AND k.conrelid = %s AND k.confrelid <> k.conrelid ORDER BY k.conname"
)
_SET_TENANT = sql.SQL("SELECT set_config({}, %s, true)").format(sql.Literal(POOL.tenant_setting))

PROBE_VALUES: dict[str, object] = {
    "S": "probe",  # text, varchar, char
    "N": 32001,  # every number type, smallint included
    "B": False,
    "D": "2000-01-01 00:00:00",  # date, time, timestamp(tz): the input forms all accept it
    "T": "1 day",  # interval
    "U": "00000000-0000-4000-8000-000000000001",  # uuid; json and bytea accept it as well
    "I": "127.0.0.1",  # inet, cidr
    "V": "1",  # bit
    "A": [],  # arrays
    "C": {},  # composite types
}
"""A probe row's value for a column that needs one, by pg_type.typcategory (json_populate_record
turns each into the column's type)."""


@dataclass(frozen=True)
class TenantTable:
    """One application table the attacks run against."""

    oid: int
    schema: str
    name: str

    @property
    def qualified(self) -> str:
        """`schema.name`, as attack names and messages show it."""
        return f"{self.schema}.{self.name}"

    @property
    def identifier(self) -> sql.Identifier:
        """The table, quoted for SQL."""
        return sql.Identifier(self.schema, self.name)


def tenant_tables(
    conn: psycopg.Connection[Any], tenant_schemas: Sequence[str], shared_tables: Sequence[str]
) -> list[TenantTable]:
    """The application's tables to attack: every table under the tenant policy and every table
    of `tenant_schemas`, less `shared_tables` (reference data every tenant may read)."""
    shared = {qualified_table(name) for name in shared_tables}
    params = {
        "tenantkit": _NOT_APPLICATION,
        "tenant_schemas": list(tenant_schemas),
        "policy": ISOLATION_POLICY,
    }
    rows = conn.execute(TENANT_TABLES, params).fetchall()
    found = [TenantTable(int(oid), schema, name) for oid, schema, name in rows]
    return [table for table in found if (table.schema, table.name) not in shared]


class _ProbeRowError(Exception):
    """A probe row could not be written (the table's constraints refused it)."""


class _Probe:
    """Probe rows written inside the attack's transaction, a table's parents first."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.rows: dict[tuple[int, str], dict[str, Any]] = {}
        self._writing: set[int] = set()
        """Tables whose probe row is being written: a cycle of foreign keys stops there."""

    def as_tenant(self, tenant: str) -> None:
        """Make `tenant` the transaction's tenant (as tenant_transaction does, locally)."""
        self.conn.execute(_SET_TENANT, (tenant,))

    def write(self, table: TenantTable, tenant: str) -> dict[str, Any]:
        """A probe row of `tenant` in `table` (and in every table it references first); the
        row as written. Raises InsufficientPrivilege as the server does, _ProbeRowError for
        any other refusal."""
        key = (table.oid, tenant)
        if key in self.rows:
            return self.rows[key]
        values: dict[str, Any] = {}
        self._writing.add(table.oid)
        for parent_oid, schema, name, columns, parent_columns in self.conn.execute(
            FOREIGN_KEYS, (table.oid,)
        ).fetchall():
            if parent_oid in self._writing:
                continue
            parent = self.write(TenantTable(int(parent_oid), schema, name), tenant)
            values.update(zip(columns, (parent[c] for c in parent_columns), strict=True))
        self._writing.discard(table.oid)
        for column, needed, category, first_label in self.conn.execute(COLUMNS, (table.oid,)):
            if needed and column not in values:
                values[column] = first_label if category == "E" else PROBE_VALUES.get(category)
        values["tenant_id"] = tenant
        names = sql.SQL(", ").join(map(sql.Identifier, values))
        statement = sql.SQL(
            "INSERT INTO {table} AS probe ({names}) SELECT {names} "
            "FROM json_populate_record(NULL::{table}, %s) RETURNING to_jsonb(probe)"
        ).format(table=table.identifier, names=names)
        self.as_tenant(tenant)
        try:
            with self.conn.transaction():  # a savepoint: the refusal is reported, not fatal
                row = self.conn.execute(statement, (Json(values),)).fetchone()
        except errors.InsufficientPrivilege:
            raise
        except psycopg.Error as error:
            raise _ProbeRowError(
                f"cannot attack {table.qualified}: no probe row of {tenant} could be written "
                f"({type(error).__name__}: {str(error).splitlines()[0]})"
            ) from None
        assert row is not None
        self.rows[key] = row[0]
        return self.rows[key]


TableAttack = Callable[[_Probe, TenantTable], Outcome]
TABLE_ATTACKS: dict[str, TableAttack] = {}
"""Attack name (shown after the table's name) -> the attack."""


def table_attack(name: str) -> Callable[[TableAttack], TableAttack]:
    """Register an attack run against every application table."""

    def register(function: TableAttack) -> TableAttack:
        TABLE_ATTACKS[name] = function
        return function

    return register


def _count(probe: _Probe, table: TenantTable, tenant: str | None = None) -> int:
    """The rows of `table` the transaction's tenant sees (only `tenant`'s, if given)."""
    if tenant is None:
        row = probe.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.identifier))
    else:
        statement = sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s")
        row = probe.conn.execute(statement.format(table.identifier), (tenant,))
    found = row.fetchone()
    return int(found[0]) if found else 0


def _refused(
    probe: _Probe,
    statement: sql.Composed,
    params: tuple[object, ...],
    *,
    if_no_row: str = "",
) -> Outcome:
    """Blocked if the server refuses `statement` for privileges or the tenant policy; with
    `if_no_row`, a statement that found no row to change could not be judged: that message."""
    try:
        with probe.conn.transaction():
            done = probe.conn.execute(statement, params).rowcount
    except errors.InsufficientPrivilege as error:
        return blocked(f"InsufficientPrivilege: {str(error).splitlines()[0]}")
    except psycopg.Error as error:
        # e.g. a NOT NULL violation: the row got past where the policy would have refused it
        return leaked(f"expected the policy's refusal, got {type(error).__name__}")
    if done == 0 and if_no_row:
        return leaked(if_no_row)
    return leaked(f"the statement succeeded ({done} row(s))")


@table_attack("read with the tenant context cleared")
def _cleared_context(probe: _Probe, table: TenantTable) -> Outcome:
    probe.as_tenant("")
    rows = _count(probe, table)
    return Outcome(rows == 0, "0 rows" if rows == 0 else f"{rows} rows without a tenant")


@table_attack("read another tenant's rows")
def _read_other(probe: _Probe, table: TenantTable) -> Outcome:
    probe.as_tenant(A)
    where = _count(probe, table, B)
    seen = {
        row[0]
        for row in probe.conn.execute(
            sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(table.identifier)
        )
    }
    if where == 0 and seen <= {A}:
        return blocked(f"only {A}'s rows")
    return leaked(f"{A} saw rows of {sorted(seen - {A}) or [B]}")


@table_attack("insert a row into another tenant")
def _insert_other(probe: _Probe, table: TenantTable) -> Outcome:
    probe.as_tenant(A)
    statement = sql.SQL("INSERT INTO {} (tenant_id) VALUES (%s)").format(table.identifier)
    return _refused(probe, statement, (B,))


@table_attack("update another tenant's rows")
def _update_other(probe: _Probe, table: TenantTable) -> Outcome:
    probe.as_tenant(A)
    statement = sql.SQL("UPDATE {} SET tenant_id = tenant_id WHERE tenant_id = %s")
    count = probe.conn.execute(statement.format(table.identifier), (B,)).rowcount
    return Outcome(count == 0, "0 rows updated" if count == 0 else f"updated {count} of {B}'s")


@table_attack("delete another tenant's rows")
def _delete_other(probe: _Probe, table: TenantTable) -> Outcome:
    probe.as_tenant(A)
    statement = sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(table.identifier)
    count = probe.conn.execute(statement, (B,)).rowcount
    probe.as_tenant(B)
    left = _count(probe, table, B)
    if count == 0 and left > 0:
        return blocked(f"0 rows deleted; {B} still has {left}")
    if count == 0:
        return leaked(f"cannot attack {table.qualified}: {B} has no row to delete")
    return leaked(f"deleted {count} of {B}'s rows")


@table_attack("move an own row to another tenant (UPDATE tenant_id)")
def _move_own(probe: _Probe, table: TenantTable) -> Outcome:
    probe.as_tenant(A)
    statement = sql.SQL("UPDATE {} SET tenant_id = %s WHERE tenant_id = %s")
    return _refused(
        probe,
        statement.format(table.identifier),
        (B, A),
        if_no_row=f"cannot attack {table.qualified}: {A} has no row to move",
    )


def _attack_one(conn: psycopg.Connection[Any], table: TenantTable, attack: TableAttack) -> Outcome:
    """One attack in a transaction of its own, always rolled back: probe rows of both probe
    tenants first (unless the runtime may not write the table at all), then the attack."""
    try:
        with conn.transaction(force_rollback=True):
            probe = _Probe(conn)
            # the runtime may not write the table at all: the attack finds the same refusal
            with suppress(errors.InsufficientPrivilege), conn.transaction():
                probe.write(table, A)
                probe.write(table, B)
            return attack(probe, table)
    except _ProbeRowError as error:
        return leaked(str(error))
    except errors.InsufficientPrivilege as error:
        return blocked(f"InsufficientPrivilege: {str(error).splitlines()[0]}")


def run_table_attacks(
    connect: Callable[[], Any], tenant_schemas: Sequence[str], shared_tables: Sequence[str] = ()
) -> list[AttackResult]:
    """Every table attack against every application table (tenant_tables), as the runtime
    login `connect()` opens (a context manager giving an autocommit connection)."""
    results = []
    with connect() as conn:
        tables = tenant_tables(conn, tenant_schemas, shared_tables)
        for table in tables:
            for name, attack in TABLE_ATTACKS.items():
                try:
                    outcome = _attack_one(conn, table, attack)
                except psycopg.Error as error:
                    outcome = leaked(
                        f"unexpected {type(error).__name__}: {str(error).splitlines()[0]}"
                    )
                results.append(
                    AttackResult(
                        "pool", f"{table.qualified}: {name}", outcome.blocked, outcome.detail
                    )
                )
    return results
