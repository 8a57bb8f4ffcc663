"""Attacks on the application's own pool tables: every table under the tenant policies (found
in pg_catalog) and every table of the catalog's tenant schemas (a table a migration created
there, or one that should have been protected and was not), run as the runtime login.

The probe tenants have rows in the sample schema only, so each attack first writes a probe row
of tenantkit-probe-a and one of tenantkit-probe-b into the table (and into every table it
references, parents first), each under its own tenant's context, inside the attack's
transaction; the attack then runs as tenantkit-probe-a, and the transaction is rolled back
whatever happens: nothing an attack writes is ever committed.

In a strict pool the tenant is the login, so each probe tenant writes and reads on its own
login's connection (and "no tenant" is the shared runtime login). Another session cannot see
rows that are not committed, so tenantkit-probe-b's probe rows are committed, once per table,
before its attacks, and deleted by the same login after them (each row found by its full
value; one that cannot be deleted is reported as a failure naming the table); the attacker's
rows and everything the attacks write are rolled back as above. What a commit sets off in
the application's table (a trigger that writes elsewhere) is then committed too.

A probe row takes a value for
each NOT NULL column without a default (by the column's type; a foreign key's columns from
the parent's probe row); a table whose constraints refuse such a row cannot be attacked, and
that is reported as a failure saying so, never as blocked.

Every outcome the server refuses with insufficient_privilege (permission denied, or "new row
violates row-level security policy") is blocked. INSERT checks the row-level security policy's
WITH CHECK before the table's NOT NULL constraints, so inserting only another tenant's
`tenant_id` is refused by the policy on any protected table, whatever its other columns.
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, suppress
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import errors, sql
from psycopg.types.json import Json, Jsonb

from lambda_src.migrations.apply import TRACKING_SCHEMA
from lambda_src.provisioner.plans.pool_rls import ISOLATION_POLICY
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS, PoolMode, qualified_table

from .report import AttackResult, LoginUnavailableError, Outcome, blocked, leaked, not_run

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


class Logins(Protocol):
    """The logins the table attacks run as (tenantkit.verify.pool.Target is one)."""

    @property
    def strict(self) -> bool:
        """Whether the pool's tenant is the login (strict) rather than a setting."""
        ...

    def connect(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """An autocommit connection as the shared runtime login."""
        ...

    def login(self, tenant: str) -> AbstractContextManager[psycopg.Connection[Any]]:
        """An autocommit connection that can serve `tenant` (its own login, if strict)."""
        ...


class _Sessions:
    """Settable: one connection of the runtime login serves every tenant, the tenant set
    transaction-locally (as tenant_transaction does); an attack's transaction holds both probe
    tenants' rows."""

    strict = False

    def __init__(self, runtime: psycopg.Connection[Any]) -> None:
        self.attacker = runtime

    def as_tenant(self, tenant: str | None) -> psycopg.Connection[Any]:
        """The connection that runs statements as `tenant` (None: no tenant), now."""
        self.attacker.execute(_SET_TENANT, (tenant or "",))
        return self.attacker


class _StrictSessions(_Sessions):
    """Strict: each probe tenant on its own login's connection, the shared runtime login for
    "no tenant". The attacker's (tenantkit-probe-a's) transaction is rolled back as in a
    settable pool; tenantkit-probe-b's rows are on another session, so they are committed
    before the table's attacks (another session sees nothing else) and deleted after them."""

    strict = True

    def __init__(
        self,
        runtime: psycopg.Connection[Any],
        own: psycopg.Connection[Any],
        other: psycopg.Connection[Any],
    ) -> None:
        self.attacker = own
        self._by_tenant: dict[str | None, psycopg.Connection[Any]] = {
            None: runtime,
            A: own,
            B: other,
        }

    def as_tenant(self, tenant: str | None) -> psycopg.Connection[Any]:
        return self._by_tenant[tenant]


class _Probe:
    """Probe rows written inside the attack's transaction, a table's parents first."""

    def __init__(self, sessions: _Sessions) -> None:
        self.sessions = sessions
        self.rows: dict[tuple[int, str], dict[str, Any]] = {}
        """(table, tenant) -> the probe row written, parents before the tables that reference
        them."""
        self._tables: dict[tuple[int, str], TenantTable] = {}
        self._writing: set[int] = set()
        """Tables whose probe row is being written: a cycle of foreign keys stops there."""

    def as_tenant(self, tenant: str | None) -> psycopg.Connection[Any]:
        """The connection to run statements on as `tenant` (None: with no tenant)."""
        return self.sessions.as_tenant(tenant)

    def write(self, table: TenantTable, tenant: str) -> dict[str, Any]:
        """A probe row of `tenant` in `table` (and in every table it references first); the
        row as written. Raises InsufficientPrivilege as the server does, _ProbeRowError for
        any other refusal."""
        key = (table.oid, tenant)
        if key in self.rows:
            return self.rows[key]
        conn = self.as_tenant(tenant)
        values: dict[str, Any] = {}
        self._writing.add(table.oid)
        for parent_oid, schema, name, columns, parent_columns in conn.execute(
            FOREIGN_KEYS, (table.oid,)
        ).fetchall():
            if parent_oid in self._writing:
                continue
            parent = self.write(TenantTable(int(parent_oid), schema, name), tenant)
            values.update(zip(columns, (parent[c] for c in parent_columns), strict=True))
        self._writing.discard(table.oid)
        for column, needed, category, first_label in conn.execute(COLUMNS, (table.oid,)):
            if needed and column not in values:
                values[column] = first_label if category == "E" else PROBE_VALUES.get(category)
        values["tenant_id"] = tenant
        names = sql.SQL(", ").join(map(sql.Identifier, values))
        statement = sql.SQL(
            "INSERT INTO {table} AS probe ({names}) SELECT {names} "
            "FROM json_populate_record(NULL::{table}, %s) RETURNING to_jsonb(probe)"
        ).format(table=table.identifier, names=names)
        conn = self.as_tenant(tenant)
        try:
            with conn.transaction():  # a savepoint: the refusal is reported, not fatal
                row = conn.execute(statement, (Json(values),)).fetchone()
        except errors.InsufficientPrivilege:
            raise
        except psycopg.Error as error:
            raise _ProbeRowError(
                f"cannot attack {table.qualified}: no probe row of {tenant} could be written "
                f"({type(error).__name__}: {str(error).splitlines()[0]})"
            ) from None
        assert row is not None
        self.rows[key] = row[0]
        self._tables[key] = table
        return self.rows[key]

    def written(self, tenant: str) -> list[tuple[TenantTable, dict[str, Any]]]:
        """`tenant`'s probe rows, each with its table, in the order they were written."""
        return [(self._tables[key], row) for key, row in self.rows.items() if key[1] == tenant]


TableAttack = Callable[[_Probe, TenantTable], Outcome]
TABLE_ATTACKS: dict[str, TableAttack] = {}
"""Attack name (shown after the table's name) -> the attack, for both pool modes."""
STRICT_TABLE_ATTACKS: dict[str, TableAttack] = {}
"""The attacks a strict pool adds on every table (a settable pool lets the setting choose the
tenant, by design)."""


def table_attack(name: str, *, strict_only: bool = False) -> Callable[[TableAttack], TableAttack]:
    """Register an attack run against every application table (in a strict pool only, if
    `strict_only`)."""

    def register(function: TableAttack) -> TableAttack:
        (STRICT_TABLE_ATTACKS if strict_only else TABLE_ATTACKS)[name] = function
        return function

    return register


def table_attacks_for(mode: PoolMode) -> dict[str, TableAttack]:
    """The table attacks of a pool in `mode`, by name."""
    return {**TABLE_ATTACKS, **(STRICT_TABLE_ATTACKS if mode == "strict" else {})}


def _count(conn: psycopg.Connection[Any], table: TenantTable, tenant: str | None = None) -> int:
    """The rows of `table` the connection's tenant sees (only `tenant`'s, if given)."""
    if tenant is None:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table.identifier))
    else:
        statement = sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s")
        row = conn.execute(statement.format(table.identifier), (tenant,))
    found = row.fetchone()
    return int(found[0]) if found else 0


def _refused(
    conn: psycopg.Connection[Any],
    statement: sql.Composed,
    params: tuple[object, ...],
    *,
    if_no_row: str = "",
) -> Outcome:
    """Blocked if the server refuses `statement` for privileges or the tenant policy; with
    `if_no_row`, a statement that found no row to change could not be judged: that message."""
    try:
        with conn.transaction():
            done = conn.execute(statement, params).rowcount
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
    # strict: the shared runtime login, whose session names no tenant
    rows = _count(probe.as_tenant(None), table)
    return Outcome(rows == 0, "0 rows" if rows == 0 else f"{rows} rows without a tenant")


@table_attack("read another tenant's rows")
def _read_other(probe: _Probe, table: TenantTable) -> Outcome:
    conn = probe.as_tenant(A)
    where = _count(conn, table, B)
    seen = {
        row[0]
        for row in conn.execute(
            sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(table.identifier)
        )
    }
    if where == 0 and seen <= {A}:
        return blocked(f"only {A}'s rows")
    return leaked(f"{A} saw rows of {sorted(seen - {A}) or [B]}")


@table_attack("insert a row into another tenant")
def _insert_other(probe: _Probe, table: TenantTable) -> Outcome:
    statement = sql.SQL("INSERT INTO {} (tenant_id) VALUES (%s)").format(table.identifier)
    return _refused(probe.as_tenant(A), statement, (B,))


@table_attack("update another tenant's rows")
def _update_other(probe: _Probe, table: TenantTable) -> Outcome:
    statement = sql.SQL("UPDATE {} SET tenant_id = tenant_id WHERE tenant_id = %s")
    count = probe.as_tenant(A).execute(statement.format(table.identifier), (B,)).rowcount
    return Outcome(count == 0, "0 rows updated" if count == 0 else f"updated {count} of {B}'s")


@table_attack("delete another tenant's rows")
def _delete_other(probe: _Probe, table: TenantTable) -> Outcome:
    statement = sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(table.identifier)
    count = probe.as_tenant(A).execute(statement, (B,)).rowcount
    left = _count(probe.as_tenant(B), table, B)
    if count == 0 and left > 0:
        return blocked(f"0 rows deleted; {B} still has {left}")
    if count == 0:
        return leaked(f"cannot attack {table.qualified}: {B} has no row to delete")
    return leaked(f"deleted {count} of {B}'s rows")


@table_attack("move an own row to another tenant (UPDATE tenant_id)")
def _move_own(probe: _Probe, table: TenantTable) -> Outcome:
    statement = sql.SQL("UPDATE {} SET tenant_id = %s WHERE tenant_id = %s")
    return _refused(
        probe.as_tenant(A),
        statement.format(table.identifier),
        (B, A),
        if_no_row=f"cannot attack {table.qualified}: {A} has no row to move",
    )


@table_attack("read another tenant's rows with the setting claiming it", strict_only=True)
def _setting_claims_other(probe: _Probe, table: TenantTable) -> Outcome:
    # A policy of the table's own that trusts the setting (written by hand, not protect_table's)
    # would let any SQL on a tenant's connection choose another tenant.
    conn = probe.as_tenant(A)
    conn.execute(_SET_TENANT, (B,))
    seen = _count(conn, table, B)
    return Outcome(seen == 0, "0 rows" if seen == 0 else f"{A} read {seen} of {B}'s rows")


def _attack_one(sessions: _Sessions, table: TenantTable, attack: TableAttack) -> Outcome:
    """One attack in a transaction of its own on the attacker's connection, always rolled
    back: probe rows first (both probe tenants' when settable; the attacker's own when strict,
    the other's being committed already), unless the runtime may not write the table at all,
    then the attack."""
    conn = sessions.attacker
    try:
        with conn.transaction(force_rollback=True):
            probe = _Probe(sessions)
            # the runtime may not write the table at all: the attack finds the same refusal
            with suppress(errors.InsufficientPrivilege), conn.transaction():
                probe.write(table, A)
                if not sessions.strict:
                    probe.write(table, B)
            return attack(probe, table)
    except _ProbeRowError as error:
        return leaked(str(error))
    except errors.InsufficientPrivilege as error:
        return blocked(f"InsufficientPrivilege: {str(error).splitlines()[0]}")


def _commit_other_rows(sessions: _Sessions, table: TenantTable) -> _Probe:
    """Strict: tenantkit-probe-b's probe rows in `table` (and its parents), written as its own
    login and committed, for the attacker's session to find."""
    probe = _Probe(sessions)
    with sessions.as_tenant(B).transaction():
        probe.write(table, B)
    return probe


def _remove_rows(probe: _Probe, tenant: str) -> str | None:
    """Delete the probe rows `tenant` committed, as its own login, the tables that reference
    others first; None if each was found and deleted, else what went wrong."""
    conn = probe.as_tenant(tenant)
    missed = []
    try:
        with conn.transaction():
            for table, row in reversed(probe.written(tenant)):
                statement = sql.SQL(
                    "DELETE FROM {} AS probe WHERE tenant_id = %s AND to_jsonb(probe) = %s"
                ).format(table.identifier)
                if conn.execute(statement, (tenant, Jsonb(row))).rowcount == 0:
                    missed.append(f"no row of {table.qualified} matched its probe row")
    except psycopg.Error as error:  # nothing was deleted: the transaction rolled back
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return "; ".join(missed) or None


def _attack_table(sessions: _Sessions, table: TenantTable) -> list[AttackResult]:
    """Every table attack on `table`; in a strict pool between committing tenantkit-probe-b's
    rows and deleting them (a failure to delete them is reported as a failure of its own)."""
    attacks = table_attacks_for("strict" if sessions.strict else "settable")
    outcomes: dict[str, Outcome] = {}
    committed: _Probe | None = None
    try:
        if sessions.strict:
            try:
                committed = _commit_other_rows(sessions, table)
            except errors.InsufficientPrivilege:
                pass  # the runtime may not write the table at all: each attack finds that too
            except _ProbeRowError as error:
                outcomes = dict.fromkeys(attacks, leaked(str(error)))
        for name, attack in attacks.items():
            if name in outcomes:
                continue
            try:
                outcomes[name] = _attack_one(sessions, table, attack)
            except psycopg.Error as error:
                outcomes[name] = leaked(
                    f"unexpected {type(error).__name__}: {str(error).splitlines()[0]}"
                )
    finally:
        left = _remove_rows(committed, B) if committed is not None else None
    results = [
        AttackResult("pool", f"{table.qualified}: {name}", outcome.blocked, outcome.detail)
        for name, outcome in outcomes.items()
    ]
    if left is not None:
        results.append(
            AttackResult(
                "pool",
                f"{table.qualified}: delete {B}'s committed probe rows",
                False,
                f"not deleted, left in the table ({left})",
            )
        )
    return results


def run_table_attacks(
    logins: Logins, tenant_schemas: Sequence[str], shared_tables: Sequence[str] = ()
) -> list[AttackResult]:
    """Every table attack against every application table (tenant_tables): as the runtime
    login in a settable pool, as the probe tenants' own logins in a strict one (all reported as
    not run if either probe tenant's login is unavailable)."""
    results: list[AttackResult] = []
    with ExitStack() as stack:
        runtime = stack.enter_context(logins.connect())
        tables = tenant_tables(runtime, tenant_schemas, shared_tables)
        if not tables:
            return results
        try:
            sessions = (
                _StrictSessions(
                    runtime,
                    stack.enter_context(logins.login(A)),
                    stack.enter_context(logins.login(B)),
                )
                if logins.strict
                else _Sessions(runtime)
            )
        except LoginUnavailableError as unavailable:
            return [
                not_run("pool", f"{table.qualified}: {name}", str(unavailable))
                for table in tables
                for name in table_attacks_for("strict")
            ]
        for table in tables:
            results += _attack_table(sessions, table)
    return results
