"""Attacks on the pool tier, run as the application's logins: the shared runtime login, and in a
strict pool each probe tenant's own login.

Each attack states the exact outcome that means "blocked"; any other outcome (more rows, a
different error, success) is reported as a leak. The attacks use the probe tenants the
PoolDatabase resource registers (tenancy.PROBE_TENANT_IDS) and its sample schema, so they run
against the embedded server or any provisioned pool given the runtime login's connection (and,
in a strict pool, the probe tenants' logins). A pool provisioned with `verify_probes: false`
has neither: the suite then refuses to run (PoolProbesOffError) rather than report every attack
as a leak. The suite reads the pool's mode and runs the attacks of that mode; an attack that
applies to both runs in both.

What stays possible by design in a settable pool (documented, not tested as blocked): code that
can run arbitrary SQL on the runtime connection can itself call set_config('app.tenant_id', ...)
and read that tenant. A strict pool closes it: the tenant is the login, and the strict attacks
(set_config, SET ROLE and SET SESSION AUTHORIZATION to another tenant, functions that trust the
setting) must all be blocked there.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import psycopg
from psycopg import errors, sql

from lambda_src.core.connection import ConnectionSettings, settings_from_dsn
from lambda_src.provisioner.plans.pool_probes import PROBE_ONLY_B_PROJECT
from lambda_src.provisioner.plans.pool_rls import ISOLATION_POLICY
from lambda_src.tenancy import POOL, POOL_MODES, PROBE_TENANT_IDS, PoolMode, tenant_names
from lambda_src.tenant_runtime import tenant_transaction

from .report import AttackResult, LoginUnavailableError, Outcome, blocked, leaked, not_run
from .tables import run_table_attacks

A, B, GONE = PROBE_TENANT_IDS
PROJECTS = sql.SQL("{}.projects").format(sql.Identifier(POOL.sample_schema))
TASKS = sql.SQL("{}.tasks").format(sql.Identifier(POOL.sample_schema))
OPEN_TASKS = sql.SQL("{}.open_tasks").format(sql.Identifier(POOL.sample_schema))
SAMPLE = sql.Identifier(POOL.sample_schema)
SETTING = sql.Identifier(*POOL.tenant_setting.split("."))


class _RollbackError(Exception):
    """Raised inside a tenant transaction to undo an attack's own harmless write."""


TenantLogins = Callable[[str], ConnectionSettings]
"""A strict pool: probe tenant id -> how to log in as that tenant's own login (raising
LoginUnavailableError for one the run was not given: the attacks that need it are reported as
not run)."""


def given_probe_logins(
    runtime: ConnectionSettings,
    dsns: Sequence[str],
    *,
    iam_region: str | None = None,
) -> TenantLogins:
    """A remote strict pool's probe logins (`tenantctl verify --dsn`): each of `dsns` a libpq
    connection string of one probe tenant's own login, its password (or IAM token) in it; with
    `iam_region`, every probe login not among them gets a fresh IAM token per connection,
    minted with the caller's AWS credentials for the runtime's host, port and database. A
    probe login given neither way raises LoginUnavailableError when an attack needs it. Raise
    ValueError for a connection string that is not one, lacks its password, or logs in as
    anything but a probe tenant's login (or one given twice)."""
    probes = {tenant_names(t, allow_probes=True).pool_login: t for t in PROBE_TENANT_IDS}
    given: dict[str, ConnectionSettings] = {}
    for dsn in dsns:
        # its own password: PGPASSWORD, if set, is the runtime login's
        settings = settings_from_dsn(dsn, {})
        tenant = probes.get(settings.user)
        if tenant is None:
            raise ValueError(
                f"user {settings.user!r} is not a probe tenant's login ({', '.join(probes)})"
            )
        if tenant in given:
            raise ValueError(f"{settings.user} is given twice")
        given[tenant] = settings

    def login(tenant: str) -> ConnectionSettings:
        if tenant in given:
            return given[tenant]
        name = tenant_names(tenant, allow_probes=True).pool_login
        if iam_region is None:
            raise LoginUnavailableError(f"not run: needs the probe login {name}")
        # a fresh token per connection: a token is valid for 15 minutes
        token = boto3.client("rds", region_name=iam_region).generate_db_auth_token(
            DBHostname=runtime.host, Port=runtime.port, DBUsername=name, Region=iam_region
        )
        return replace(runtime, user=name, password=token)

    return login


@dataclass
class Target:
    """Where the attacks run: the pool database, as the shared runtime login (`settings`) and,
    in a strict pool, as each probe tenant's own login (`logins`)."""

    settings: ConnectionSettings
    logins: TenantLogins | None = None
    mode: PoolMode = field(default="settable")

    @property
    def strict(self) -> bool:
        """Whether the pool's tenant is the login (strict) rather than a setting."""
        return self.mode == "strict"

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[Any]]:
        """A fresh autocommit connection as the shared runtime login (as a pool hands out)."""
        with psycopg.connect(**self.settings.connect_kwargs(), autocommit=True) as conn:
            yield conn

    @contextmanager
    def login(self, tenant: str) -> Iterator[psycopg.Connection[Any]]:
        """A fresh autocommit connection that can serve `tenant`: its own login in a strict
        pool, the shared runtime login in a settable one."""
        if not self.strict:
            with self.connect() as conn:
                yield conn
            return
        assert self.logins is not None
        settings = self.logins(tenant)
        with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
            yield conn

    def attacker(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """The connection an attacker's SQL runs on: the shared runtime login, or in a strict
        pool the first probe tenant's own login (SQL injected into one tenant's requests)."""
        return self.login(A) if self.strict else self.connect()

    @contextmanager
    def as_tenant(
        self, conn: psycopg.Connection[Any], tenant: str
    ) -> Iterator[psycopg.Connection[Any]]:
        """The application's tenant context (tenant_runtime.tenant_transaction, strict or
        not as the pool is)."""
        with tenant_transaction(conn, tenant, allow_probes=True, strict=self.strict) as scoped:
            yield scoped

    @contextmanager
    def tenant(self, tenant: str) -> Iterator[psycopg.Connection[Any]]:
        """A fresh connection that serves `tenant`, inside the tenant's transaction."""
        with self.login(tenant) as conn, self.as_tenant(conn, tenant) as scoped:
            yield scoped


def _tenants_of(rows: Iterable[tuple[Any, ...]]) -> set[Any]:
    return {row[0] for row in rows}


def _expect_error(
    target: Target,
    statement: sql.Composable | str,
    expected: type[Exception],
    *,
    tenant: str | None = None,
    params: tuple[object, ...] | None = None,
) -> Outcome:
    with target.attacker() if tenant is None else target.login(tenant) as conn:
        try:
            if tenant is None:
                conn.execute(statement, params)  # type: ignore[arg-type]
            else:
                with target.as_tenant(conn, tenant):
                    conn.execute(statement, params)  # type: ignore[arg-type]
        except expected as error:
            return blocked(f"{type(error).__name__}: {str(error).splitlines()[0]}")
        except psycopg.Error as error:
            return leaked(f"expected {expected.__name__}, got {type(error).__name__}: {error}")
    return leaked(f"expected {expected.__name__}, but the statement succeeded")


# -- the attacks -------------------------------------------------------------------------------

Attack = Callable[[Target], Outcome]
ATTACKS: dict[str, tuple[Attack, tuple[PoolMode, ...]]] = {}
SETTABLE_ONLY: tuple[PoolMode, ...] = ("settable",)
"""Attacks on reusing one connection for several tenants: a strict pool never does (a
connection is one tenant's login; the runtime keeps a pool per login)."""
STRICT_ONLY: tuple[PoolMode, ...] = ("strict",)
"""Attacks a settable pool does not block by design (the setting is the tenant)."""


def attack(name: str, modes: tuple[PoolMode, ...] = POOL_MODES) -> Callable[[Attack], Attack]:
    """Register an attack under a stable name, for the pool modes it applies to."""

    def register(function: Attack) -> Attack:
        ATTACKS[name] = (function, modes)
        return function

    return register


def attacks_for(mode: PoolMode) -> dict[str, Attack]:
    """The attacks that apply to a pool in `mode`, by name."""
    return {name: function for name, (function, modes) in ATTACKS.items() if mode in modes}


@attack("read without any tenant context")
def _no_context(target: Target) -> Outcome:
    with target.connect() as conn:
        rows = conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)).fetchall()
    return blocked("0 rows") if not rows else leaked(f"{len(rows)} rows without a tenant")


@attack("read with an empty tenant context")
def _empty_context(target: Target) -> Outcome:
    with target.connect() as conn, conn.transaction():
        conn.execute("SELECT set_config(%s, '', true)", (POOL.tenant_setting,))
        rows = conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)).fetchall()
    return blocked("0 rows") if not rows else leaked(f"{len(rows)} rows with context ''")


@attack("read as a tenant that is not registered", SETTABLE_ONLY)
def _unknown_tenant(target: Target) -> Outcome:
    with target.connect() as conn, target.as_tenant(conn, "no-such-tenant"):
        rows = conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)).fetchall()
    return blocked("0 rows") if not rows else leaked(f"{len(rows)} rows")


@attack("read as an offboarded tenant whose rows are retained", SETTABLE_ONLY)
def _offboarded_tenant(target: Target) -> Outcome:
    with target.connect() as conn, target.as_tenant(conn, GONE):
        rows = conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)).fetchall()
    return blocked("0 rows") if not rows else leaked(f"{len(rows)} rows of an offboarded tenant")


@attack("select another tenant's rows by WHERE tenant_id")
def _where_other(target: Target) -> Outcome:
    with target.tenant(A) as conn:
        rows = conn.execute(
            sql.SQL("SELECT tenant_id FROM {} WHERE tenant_id = %s").format(PROJECTS), (B,)
        ).fetchall()
    return blocked("0 rows") if not rows else leaked(f"read {len(rows)} rows of {B}")


@attack("insert a row into another tenant")
def _insert_other(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("INSERT INTO {} (tenant_id, project_id, name) VALUES (%s, 900001, 'x')").format(
            PROJECTS
        ),
        errors.InsufficientPrivilege,
        tenant=A,
        params=(B,),
    )


@attack("move an own row to another tenant (UPDATE tenant_id)")
def _update_tenant_id(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("UPDATE {} SET tenant_id = %s WHERE tenant_id = %s").format(PROJECTS),
        errors.InsufficientPrivilege,
        tenant=A,
        params=(B, A),
    )


@attack("update another tenant's rows")
def _update_other(target: Target) -> Outcome:
    with target.tenant(A) as conn:
        count = conn.execute(
            sql.SQL("UPDATE {} SET name = name || '!' WHERE tenant_id = %s").format(PROJECTS),
            (B,),
        ).rowcount
    return blocked("0 rows updated") if count == 0 else leaked(f"updated {count} rows of {B}")


@attack("delete another tenant's rows")
def _delete_other(target: Target) -> Outcome:
    with target.tenant(A) as conn:
        count = conn.execute(
            sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(TASKS), (B,)
        ).rowcount
    with target.tenant(B) as conn:
        left = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(TASKS)).fetchone()
    if count == 0 and left and left[0] > 0:
        return blocked(f"0 rows deleted; {B} still has {left[0]} task(s)")
    return leaked(f"deleted {count} rows of {B}")


@attack("join tables without naming the tenant")
def _join(target: Target) -> Outcome:
    with target.tenant(A) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT t.tenant_id, p.tenant_id FROM {} t JOIN {} p USING (project_id)"
            ).format(TASKS, PROJECTS)
        ).fetchall()
    seen = {tenant for row in rows for tenant in row}
    return blocked(f"only {A}") if seen <= {A} else leaked(f"join saw {sorted(seen)}")


@attack("read through a view")
def _view(target: Target) -> Outcome:
    with target.tenant(A) as conn:
        rows = conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(OPEN_TASKS)).fetchall()
    seen = _tenants_of(rows)
    return blocked(f"only {A}") if seen <= {A} else leaked(f"view showed {sorted(seen)}")


@attack("ALTER TABLE ... DISABLE ROW LEVEL SECURITY")
def _disable_rls(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(PROJECTS),
        errors.InsufficientPrivilege,
    )


@attack("ALTER TABLE ... NO FORCE ROW LEVEL SECURITY")
def _no_force(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(PROJECTS),
        errors.InsufficientPrivilege,
    )


@attack("DROP POLICY")
def _drop_policy(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(ISOLATION_POLICY), PROJECTS),
        errors.InsufficientPrivilege,
    )


@attack("TRUNCATE (ignores RLS)")
def _truncate(target: Target) -> Outcome:
    return _expect_error(
        target, sql.SQL("TRUNCATE {}").format(TASKS), errors.InsufficientPrivilege, tenant=A
    )


@attack("COPY ... TO STDOUT")
def _copy_to(target: Target) -> Outcome:
    with target.tenant(A) as conn:
        cursor = conn.cursor()
        with cursor.copy(sql.SQL("COPY {} (tenant_id) TO STDOUT").format(PROJECTS)) as copy:
            seen = {row[0] for row in copy.rows()}
    return blocked(f"only {A}") if seen <= {A} else leaked(f"COPY exported {sorted(seen)}")


@attack("COPY ... FROM STDIN into another tenant")
def _copy_from(target: Target) -> Outcome:
    with target.login(A) as conn:
        try:
            with target.as_tenant(conn, A):
                cursor = conn.cursor()
                statement = sql.SQL("COPY {} (tenant_id, project_id, name) FROM STDIN")
                with cursor.copy(statement.format(PROJECTS)) as copy:
                    copy.write_row((B, 900002, "copied"))
        except (errors.FeatureNotSupported, errors.InsufficientPrivilege) as error:
            return blocked(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    return leaked("COPY FROM wrote a row into another tenant")


@attack("unique-key probe for another tenant's value")
def _unique_probe(target: Target) -> Outcome:
    # B has a project with this name; if uniqueness ignored tenant_id, A's insert would fail
    # and reveal it.
    with target.login(A) as conn:
        try:
            with target.as_tenant(conn, A):
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (tenant_id, project_id, name) VALUES (%s, 900003, %s)"
                    ).format(PROJECTS),
                    (A, "probe project only b has"),
                )
                raise _RollbackError
        except _RollbackError:
            return blocked("no conflict: the unique key is per tenant")
        except errors.UniqueViolation as error:
            return leaked(f"unique violation reveals another tenant's value: {error}")


@attack("foreign-key probe for another tenant's row")
def _foreign_key_probe(target: Target) -> Outcome:
    outcomes = []
    for project in (PROBE_ONLY_B_PROJECT, 987654):  # exists only for B / exists for nobody
        with target.login(A) as conn:
            try:
                with target.as_tenant(conn, A):
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (tenant_id, task_id, project_id, title) "
                            "VALUES (%s, 900004, %s, 'probe')"
                        ).format(TASKS),
                        (A, project),
                    )
                outcomes.append("inserted")
            except errors.ForeignKeyViolation:
                outcomes.append("foreign key violation")
    if outcomes == ["foreign key violation", "foreign key violation"]:
        return blocked("the same violation whether or not another tenant has the row")
    return leaked(f"outcomes differ or succeed: {outcomes}")


@attack("non-leakproof function sees rows before the policy")
def _leaky_function(target: Target) -> Outcome:
    # A cast error prints the value it failed on. Were the cast evaluated before the policy,
    # another tenant's name could appear in the error.
    with target.login(A) as conn:
        try:
            with target.as_tenant(conn, A):
                conn.execute(sql.SQL("SELECT * FROM {} WHERE name::int = 1").format(PROJECTS))
        except errors.InvalidTextRepresentation as error:
            message = str(error)
            others = [t for t in (B, GONE) if t in message]
            if others:
                return leaked(f"error message shows {others}")
            return blocked("the error only ever shows the tenant's own value")
    return leaked("expected the cast to fail on the tenant's own row")


@attack("create a temporary function")
def _temp_function(target: Target) -> Outcome:
    return _expect_error(
        target,
        "CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
        errors.InsufficientPrivilege,
    )


@attack("create a function in schema public")
def _public_function(target: Target) -> Outcome:
    return _expect_error(
        target,
        "CREATE FUNCTION public.leak(text) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
        errors.InsufficientPrivilege,
    )


@attack("re-activate an offboarded tenant in the registry")
def _reactivate(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("UPDATE {}.tenants SET status = 'active' WHERE tenant_id = %s").format(
            sql.Identifier(POOL.registry_schema)
        ),
        errors.InsufficientPrivilege,
        params=(GONE,),
    )


@attack("register a tenant of its own choosing")
def _self_register(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("INSERT INTO {}.tenants (tenant_id, registered_by) VALUES ('mine', 'me')").format(
            sql.Identifier(POOL.registry_schema)
        ),
        errors.InsufficientPrivilege,
    )


@attack("read pg_stats of a tenant table")
def _pg_stats(target: Target) -> Outcome:
    with target.attacker() as conn:
        rows = conn.execute(
            "SELECT attname FROM pg_stats WHERE schemaname = %s AND tablename = 'projects'",
            (POOL.sample_schema,),
        ).fetchall()
    return blocked("0 rows") if not rows else leaked(f"pg_stats shows {len(rows)} columns")


@attack("read pg_statistic")
def _pg_statistic(target: Target) -> Outcome:
    return _expect_error(target, "SELECT * FROM pg_statistic LIMIT 1", errors.InsufficientPrivilege)


@attack("list the tenant registry")
def _registry(target: Target) -> Outcome:
    registry = sql.SQL("SELECT tenant_id FROM {}.tenants").format(
        sql.Identifier(POOL.registry_schema)
    )
    with target.connect() as conn:
        without = _tenants_of(conn.execute(registry).fetchall())
    with target.tenant(A) as conn:
        claimed = _tenants_of(conn.execute(registry).fetchall())
    if not without and claimed == {A}:
        return blocked("no row without a tenant, only its own row as a tenant")
    return leaked(f"saw {sorted(without)} without a tenant, {sorted(claimed)} as {A}")


@attack("context survives COMMIT on a reused connection", SETTABLE_ONLY)
def _after_commit(target: Target) -> Outcome:
    with target.connect() as conn:
        with target.as_tenant(conn, A):
            conn.execute(sql.SQL("SELECT 1 FROM {}").format(PROJECTS))
        rows = conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)).fetchall()
    return blocked("0 rows after COMMIT") if not rows else leaked(f"{len(rows)} rows after COMMIT")


@attack("context survives ROLLBACK on a reused connection", SETTABLE_ONLY)
def _after_rollback(target: Target) -> Outcome:
    with target.connect() as conn:
        try:
            with target.as_tenant(conn, A):
                raise _RollbackError
        except _RollbackError:
            pass
        rows = conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)).fetchall()
    return blocked("0 rows after ROLLBACK") if not rows else leaked(f"{len(rows)} rows")


@attack("context survives an error on a reused connection", SETTABLE_ONLY)
def _after_error(target: Target) -> Outcome:
    with target.connect() as conn:
        try:
            with target.as_tenant(conn, A):
                conn.execute("SELECT 1 / 0")
        except errors.DivisionByZero:
            pass
        rows = conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)).fetchall()
    return blocked("0 rows after the error") if not rows else leaked(f"{len(rows)} rows")


@attack("cursor WITH HOLD read by the connection's next tenant", SETTABLE_ONLY)
def _cursor_with_hold(target: Target) -> Outcome:
    with target.connect() as conn:
        with target.as_tenant(conn, A):
            conn.execute(
                sql.SQL("DECLARE held CURSOR WITH HOLD FOR SELECT tenant_id FROM {}").format(
                    PROJECTS
                )
            )
        try:
            with target.as_tenant(conn, B):
                rows = conn.execute("FETCH ALL FROM held").fetchall()
        except errors.InvalidCursorName:
            return blocked("the held cursor was closed with the tenant's transaction")
    return leaked(f"{B} fetched {len(rows)} rows read as {A}")


@attack("prepared statement reused by another tenant", SETTABLE_ONLY)
def _prepared(target: Target) -> Outcome:
    # PREPARE outlives the transaction (it is not transactional) on the same server session;
    # behind a transaction pooler that resets server connections it is gone by the next one.
    with target.connect() as conn:
        with target.as_tenant(conn, A):
            conn.execute(sql.SQL("PREPARE rows_q AS SELECT tenant_id FROM {}").format(PROJECTS))
            first = _tenants_of(conn.execute("EXECUTE rows_q").fetchall())
        try:
            with target.as_tenant(conn, B):
                second = _tenants_of(conn.execute("EXECUTE rows_q").fetchall())
        except errors.InvalidSqlStatementName:
            if first == {A}:
                return blocked("the statement did not outlive its transaction (a pooler's reset)")
            return leaked(f"the first execution saw {sorted(first)}")
        conn.execute("DEALLOCATE rows_q")
    if first == {A} and second == {B}:
        return blocked("each execution saw only its own tenant")
    return leaked(f"first saw {sorted(first)}, second saw {sorted(second)}")


@attack("SET ROLE to the table owner")
def _set_role_owner(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("SET ROLE {}").format(sql.Identifier(POOL.owner_role)),
        errors.InsufficientPrivilege,
    )


@attack("SET ROLE to the maintainer")
def _set_role_maintainer(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("SET ROLE {}").format(sql.Identifier(POOL.maintainer_role)),
        errors.InsufficientPrivilege,
    )


@attack("grant itself the owner role")
def _grant_self(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(POOL.owner_role)),
        errors.InsufficientPrivilege,
    )


@attack("create a table beside the tenant tables")
def _create_table(target: Target) -> Outcome:
    return _expect_error(
        target,
        sql.SQL("CREATE TABLE {}.mine (tenant_id text)").format(sql.Identifier(POOL.sample_schema)),
        errors.InsufficientPrivilege,
    )


@attack("runtime login is a superuser, BYPASSRLS or a table owner")
def _privileged_login(target: Target) -> Outcome:
    with target.attacker() as conn:
        row = conn.execute(
            "SELECT r.rolsuper, r.rolbypassrls, "
            "       EXISTS (SELECT FROM pg_class c WHERE pg_has_role(c.relowner, 'USAGE') "
            "               AND c.relrowsecurity) "
            "  FROM pg_roles r WHERE r.rolname = current_user"
        ).fetchone()
    if row == (False, False, False):
        return blocked("not superuser, NOBYPASSRLS, owns no RLS table")
    return leaked(f"superuser, bypassrls, owner = {row}")


# -- reading other tenants' rows through functions and views (both modes) ---------------------


@attack("read through a SECURITY DEFINER function owned by the app")
def _definer_function(target: Target) -> Outcome:
    # Runs as the pool owner: FORCE row-level security and no policy of the owner's.
    with target.tenant(A) as conn:
        rows = conn.execute(sql.SQL("SELECT tenant_id FROM {}.projects_as_owner()").format(SAMPLE))
        seen = _tenants_of(rows.fetchall())
    return blocked("0 rows") if not seen else leaked(f"the function returned {sorted(seen)}")


@attack("read through a view that is not security_invoker")
def _owner_view(target: Target) -> Outcome:
    with target.tenant(A) as conn:
        rows = conn.execute(
            sql.SQL("SELECT tenant_id FROM {}.projects_as_view_owner").format(SAMPLE)
        )
        seen = _tenants_of(rows.fetchall())
    return blocked("0 rows") if not seen else leaked(f"the view showed {sorted(seen)}")


@attack("read through a query run by a built-in function (query_to_xml)")
def _query_to_xml(target: Target) -> Outcome:
    query = sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS).as_string(None)
    with target.tenant(A) as conn:
        row = conn.execute("SELECT query_to_xml(%s, false, false, '')::text", (query,)).fetchone()
    text = row[0] if row else ""
    others = [t for t in (B, GONE) if t in text]
    return blocked(f"only {A}") if not others else leaked(f"query_to_xml returned {others}")


# -- what a strict pool must block and a settable one does not, by design ----------------------


@attack("set_config to another tenant", STRICT_ONLY)
def _set_config_other(target: Target) -> Outcome:
    with target.tenant(A) as conn:
        conn.execute("SELECT set_config(%s, %s, true)", (POOL.tenant_setting, B))
        seen = _tenants_of(conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)))
    if seen <= {A}:
        return blocked(f"still only {A}: the tenant is the login")
    return leaked(f"setting the tenant showed {sorted(seen)}")


@attack("session SET of another tenant", STRICT_ONLY)
def _session_set_other(target: Target) -> Outcome:
    with target.login(A) as conn:
        conn.execute(sql.SQL("SET {} = {}").format(SETTING, sql.Literal(B)))
        seen = _tenants_of(conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)))
    return blocked(f"still only {A}") if seen <= {A} else leaked(f"saw {sorted(seen)}")


@attack("read through a function that trusts the setting, set to another tenant", STRICT_ONLY)
def _setting_function(target: Target) -> Outcome:
    with target.tenant(A) as conn:
        conn.execute("SELECT set_config(%s, %s, true)", (POOL.tenant_setting, B))
        rows = conn.execute(
            sql.SQL("SELECT tenant_id FROM {}.projects_of_setting()").format(SAMPLE)
        )
        seen = _tenants_of(rows.fetchall())
    return blocked("0 rows") if not seen else leaked(f"the function returned {sorted(seen)}")


@attack("SET ROLE to another tenant's login", STRICT_ONLY)
def _set_role_other_tenant(target: Target) -> Outcome:
    other = tenant_names(B, allow_probes=True).pool_login
    return _expect_error(
        target, sql.SQL("SET ROLE {}").format(sql.Identifier(other)), errors.InsufficientPrivilege
    )


@attack("SET SESSION AUTHORIZATION to another tenant's login", STRICT_ONLY)
def _session_authorization_other(target: Target) -> Outcome:
    other = tenant_names(B, allow_probes=True).pool_login
    return _expect_error(
        target,
        sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(other)),
        errors.InsufficientPrivilege,
    )


@attack("SET ROLE to the runtime group and read", STRICT_ONLY)
def _set_role_runtime(target: Target) -> Outcome:
    # The login is a member of the group: SET ROLE works and changes current_user, but the
    # policy reads session_user.
    with target.login(A) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(POOL.runtime_role)))
        seen = _tenants_of(conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)))
    return blocked(f"still only {A}") if seen <= {A} else leaked(f"saw {sorted(seen)}")


@attack("log in as an offboarded tenant", STRICT_ONLY)
def _offboarded_login(target: Target) -> Outcome:
    try:
        with target.login(GONE) as conn:
            seen = _tenants_of(conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)))
    except psycopg.OperationalError as error:
        if "not permitted to log in" in str(error):
            return blocked("its login is disabled")
        return leaked(f"expected a disabled login, got: {str(error).strip().splitlines()[-1]}")
    return leaked(f"logged in as the offboarded tenant and saw {sorted(seen)}")


@attack("the shared runtime login claims a tenant", STRICT_ONLY)
def _shared_login_claims(target: Target) -> Outcome:
    with target.connect() as conn, tenant_transaction(conn, A, allow_probes=True):
        seen = _tenants_of(conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS)))
    return blocked("0 rows") if not seen else leaked(f"the shared login saw {sorted(seen)}")


class PoolProbesOffError(RuntimeError):
    """The pool has not got the sample schema and probe tenants the attacks run through."""


class StrictLoginsMissingError(RuntimeError):
    """A strict pool's attacks need the probe tenants' own logins, and none were given."""


def _registered(conn: psycopg.Connection[Any], tenant: str) -> bool:
    # The runtime may read the registry row of its own tenant, and no other.
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.tenants WHERE tenant_id = %s").format(
            sql.Identifier(POOL.registry_schema)
        ),
        (tenant,),
    ).fetchone()
    return row == (1,)


def _missing_probes(target: Target) -> list[str]:
    """What of the verify probes the runtime cannot find in the pool. Only whether they exist:
    what state they are in is for the attacks to judge."""
    sample = [
        f"{POOL.sample_schema}.{name}"
        for name in ("projects", "tasks", "open_tasks", "projects_as_view_owner")
    ]
    with target.connect() as conn:
        found = conn.execute("SELECT to_regclass(x)::text FROM unnest(%s::text[]) x", (sample,))
        missing = [name for name, (exists,) in zip(sample, found, strict=True) if exists is None]
    for tenant in PROBE_TENANT_IDS:
        if target.strict and tenant == GONE:
            continue  # its login is disabled: an attack checks that
        try:
            with target.tenant(tenant) as conn:
                if not _registered(conn, tenant):
                    missing.append(f"probe tenant {tenant}")
        except LoginUnavailableError:
            continue  # not given: the attacks that need it are reported as not run
    return missing


def pool_mode_of(settings: ConnectionSettings) -> PoolMode:
    """The mode the pool records, read as the shared runtime login (settable if it records
    none: a pool made before modes existed)."""
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        table = sql.Identifier(POOL.registry_schema, "pool_mode")
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table.as_string(None),))
        if exists.fetchone() != (True,):
            return "settable"
        row = conn.execute(sql.SQL("SELECT mode FROM {}").format(table)).fetchone()
    return next((m for m in POOL_MODES if row and m == row[0]), "settable")


def run_pool_attacks(
    settings: ConnectionSettings,
    *,
    tenant_schemas: Sequence[str] = (),
    shared_tables: Sequence[str] = (),
    logins: TenantLogins | None = None,
) -> list[AttackResult]:
    """Run every attack of the pool's mode: as the runtime login described by `settings` and,
    in a strict pool, as the probe tenants' own logins that `logins` gives; the fixed ones on
    the sample schema, then the table attacks (tenantkit.verify.tables) on every protected
    table and every table of `tenant_schemas` but `shared_tables`. Raise PoolProbesOffError if
    the pool has no verify probes,
    StrictLoginsMissingError for a strict pool without `logins`, psycopg.Error if it cannot be
    reached. An attack that needs a login `logins` refuses (LoginUnavailableError) is reported
    as not run, never as blocked."""
    mode = pool_mode_of(settings)
    if mode == "strict" and logins is None:
        raise StrictLoginsMissingError(
            f"the pool {settings.host}:{settings.port}/{settings.dbname} is strict: its attacks "
            "run as the probe tenants' own logins (tenant_<probe>_pool), which this run was "
            "not given (`tenantctl verify --dsn` takes them with --probe-dsn or --probe-iam; "
            "locally, `tenantctl verify` logs in as them)"
        )
    target = Target(settings, logins, mode)
    missing = _missing_probes(target)
    if missing:
        raise PoolProbesOffError(
            f"the pool {settings.host}:{settings.port}/{settings.dbname} has no verify probes "
            f"(missing: {', '.join(missing)}), so its attacks cannot run. They are off when the "
            "catalog says `pool: verify_probes: false`; set it to true and deploy the pool "
            "stack to verify this pool."
        )
    results = []
    for name, function in attacks_for(mode).items():
        try:
            outcome = function(target)
        except LoginUnavailableError as unavailable:
            results.append(not_run("pool", name, str(unavailable)))
            continue
        except psycopg.Error as error:
            outcome = leaked(f"unexpected {type(error).__name__}: {str(error).splitlines()[0]}")
        results.append(AttackResult("pool", name, outcome.blocked, outcome.detail))
    return results + run_table_attacks(target, tenant_schemas, shared_tables)
