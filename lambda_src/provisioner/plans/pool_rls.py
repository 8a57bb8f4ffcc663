"""The pool's row-level security: the tenant policy, the registry's RLS for the runtime, and the
procedures that put a table or a view under the policies.

How the pool isolates tenants:
- every tenant table has `tenant_id text NOT NULL` leading its primary, unique and foreign keys
  and its indexes (unique and FK checks bypass RLS, so they may only ever compare rows of one
  tenant);
- ENABLE and FORCE ROW LEVEL SECURITY, and one policy for the runtime group for reads (USING)
  and writes (WITH CHECK): tenant_id equals the pool's tenant expression for its mode
  (tenancy.PoolMode), a value the planner computes once per statement, so tenant_id is
  compared with a constant and the index leading with tenant_id is used; a NULL tenant
  matches no row and fails every WITH CHECK:
  - settable (SETTABLE_TENANT): the registry's row for the transaction-local setting
    app.tenant_id, if that tenant is active, a scalar sub-select (an InitPlan, evaluated once
    per statement). NULL, '' (what current_setting returns after a transaction that set it
    locally), unknown and offboarded tenants all yield NULL;
  - strict (LOGIN_TENANT): the tenant whose own login the session logged in as, read from
    session_user (which SET ROLE does not change and only a superuser's session can) by
    login_tenant() when the statement is planned, so no setting is read at all and no
    registry row per statement: a suspended or offboarded tenant's login is disabled and its
    sessions ended instead. Any other login (the shared runtime logins) yields NULL;
- a NOLOGIN maintainer role has the only other policy (all rows) and is used by the provisioner
  alone (purging an offboarded tenant that asked for `destroy`, seeding the verify probes).
The mode is recorded in tenantkit.pool_mode and baked into protect_table(), so a migration
protects a new table for the pool's mode; changing the mode re-applies the policies of every
protected table in the same transaction (plan_mode_change).
Nothing here interpolates input into SQL: names are constants (tenancy.names.POOL) rendered
with psycopg.sql.Identifier, tenant ids and table names are bound parameters.
"""

from collections.abc import Mapping, Sequence

from psycopg import sql

from ...core.steps import Step, compose
from ...tenancy import PG_NAME_PREFIX, POOL, POOL_LOGIN_SUFFIX, POOL_MODES, PoolMode

ISOLATION_POLICY = "tenantkit_isolation"
MAINTENANCE_POLICY = "tenantkit_maintenance"
TENANT_STATISTICS_TARGET = 10_000
"""Statistics target of every protected table's tenant_id column (PostgreSQL's maximum):
ANALYZE then samples 300 x this many rows and keeps up to this many most common values, from
which metering estimates each tenant's rows without scanning the table (lambda_src.metering)."""

SETTABLE_TENANT = (
    sql.SQL(
        "(SELECT r.tenant_id FROM {}.tenants r "
        "WHERE r.tenant_id = nullif(current_setting({}, true), '') AND r.status = 'active')"
    )
    .format(sql.Identifier(POOL.registry_schema), sql.Literal(POOL.tenant_setting))
    .as_string(None)
)
"""Settable mode's tenant: the one the transaction-local setting names, if the registry has it
active; else NULL."""

LOGIN_TENANT_FUNCTION = "login_tenant"
LOGIN_TENANT = (
    sql.SQL("{}.{}()")
    .format(sql.Identifier(POOL.registry_schema), sql.Identifier(LOGIN_TENANT_FUNCTION))
    .as_string(None)
)
"""Strict mode's tenant: the id inside the session's login name, `tenant_<id>_pool`
(TenantNames.pool_login, the only logins of that shape in the runtime group), or NULL for any other
login, computed by the function login_tenant() (_LOGIN_TENANT_BODY).

The function is declared IMMUTABLE although it reads session_user, so that the planner computes it
while planning (as it folds any immutable call without arguments) and the plan compares tenant_id
with the tenant's id as a constant: no InitPlan to run per statement (one, twice in an UPDATE, was
the strict policy's whole cost over an explicit WHERE: README, "Benchmark: what isolation costs a
query"), an index condition on the constant, a constant per row where the planner filters instead.
That is sound because a plan never serves another session_user than the one it was made for: plans
are private to a backend; a backend's session_user is its login for life except in a session a
superuser logged in to (SET SESSION AUTHORIZATION), and a plan made with row-level security is made
again when the current user changes, which SET SESSION AUTHORIZATION also does (tested).
session_user, not current_user: SET ROLE (to the runtime group, say) changes current_user and never
session_user.

Forms measured and not kept (README, the same section): the expression inline in a sub-select (an
InitPlan: the form before this one), inline without it (a CASE, or a STABLE SQL function, which is
inlined to the same): index-usable, but evaluated per row where the planner filters (a sequential
scan of 100,000 rows 4 to 8 times slower); a policy per tenant login with a constant (`TO
tenant_x_pool USING (tenant_id = 'x')`): as cheap per statement, but each backend loads every
tenant's policies for every table (780 kB a table at 1,000 tenants, 9 ms to reload after each
change) and each onboarding takes an ACCESS EXCLUSIVE lock on every pool table; a SQL function
body, evaluated while planning too, is planned again each time: about 50 µs more per plan than
PL/pgSQL's, which keeps its compiled function for the backend's life."""

_LOGIN_TENANT_BODY = """DECLARE
    login_name pg_catalog.text := session_user::pg_catalog.text;
    tenant_part pg_catalog.text := pg_catalog.split_part(login_name, {separator}, 2);
BEGIN
    IF login_name OPERATOR(pg_catalog.=)
            pg_catalog.concat({prefix}::pg_catalog.text, tenant_part, {suffix}::pg_catalog.text)
    THEN
        RETURN tenant_part;
    END IF;
    RETURN NULL;
END"""
"""login_tenant()'s body. The whole name must be rebuilt from its middle part, so the id
can have no `_` (tenant ids have none) and `tenantkit_pool_app` (the shared login: `pool`) or
`tenant_a_x_pool` yield NULL. Every name is schema-qualified, so no search_path a session sets
changes what the function calls (the runtime may create no function anywhere either: no
CREATE on any schema, no TEMP); no SET clause, which would cost every plan a GUC save and
restore."""

TENANT_CONDITION = f"tenant_id = {SETTABLE_TENANT}"
"""The settable tenant policy: rows of the tenant named by the transaction-local setting, if
that tenant is registered and active. NULL (never set), '' (set locally by an earlier
transaction), unknown and offboarded tenants all give NULL: no row matches and every write
fails WITH CHECK."""
STRICT_TENANT_CONDITION = f"tenant_id = {LOGIN_TENANT}"
"""The strict tenant policy: rows of the tenant the session logged in as."""


def tenant_condition(mode: PoolMode) -> str:
    """The isolation policy's USING and WITH CHECK expression in `mode`."""
    return STRICT_TENANT_CONDITION if mode == "strict" else TENANT_CONDITION


POOL_NAMES: dict[str, sql.Composable] = {
    "db": sql.Identifier(POOL.database),
    "owner": sql.Identifier(POOL.owner_role),
    "runtime": sql.Identifier(POOL.runtime_role),
    "maintainer": sql.Identifier(POOL.maintainer_role),
    "registry": sql.Identifier(POOL.registry_schema),
    "sample": sql.Identifier(POOL.sample_schema),
    # Inside PL/pgSQL bodies the role names travel as string literals for format('%I').
    "owner_name": sql.Literal(POOL.owner_role),
    "runtime_name": sql.Literal(POOL.runtime_role),
    "maintainer_name": sql.Literal(POOL.maintainer_role),
    "setting": sql.Literal(POOL.tenant_setting),
    "isolation": sql.Identifier(ISOLATION_POLICY),
    "maintenance": sql.Identifier(MAINTENANCE_POLICY),
    "isolation_name": sql.Literal(ISOLATION_POLICY),
    "maintenance_name": sql.Literal(MAINTENANCE_POLICY),
    "statistics_target": sql.Literal(TENANT_STATISTICS_TARGET),
    "login_tenant": sql.Identifier(LOGIN_TENANT_FUNCTION),
    # login_tenant()'s pieces of a tenant's login name (TenantNames.pool_login)
    "separator": sql.Literal("_"),
    "prefix": sql.Literal(PG_NAME_PREFIX),
    "suffix": sql.Literal(POOL_LOGIN_SUFFIX),
}


def pool_sql(text: str, **extra: sql.Composable) -> sql.Composed:
    """`text` with the pool's names (POOL_NAMES) and `extra` filled into its {placeholders}."""
    return compose(text, {**POOL_NAMES, **extra})


# The registry's table, history and trigger come from lifecycle.plan_registry(); these are the
# pool's own additions: the lookup index, row-level security for the runtime, and procedures.
_RLS = [
    # The tenant policy looks up the active tenant once per statement: an index-only scan.
    (
        "index the active tenants",
        "CREATE UNIQUE INDEX IF NOT EXISTS tenants_active ON {registry}.tenants (tenant_id) "
        "WHERE status = 'active'",
    ),
    # That scan stays index-only (no heap visit, no dead index entries to step over) only
    # while the registry is vacuumed. With the default thresholds autovacuum would leave a
    # registry of under 1,000 tenants unvacuumed for good (1,000 inserts before the first
    # pass), and every statement of every tenant would pay for it; the registry is small, so
    # vacuuming it after a few changes is cheap.
    (
        "have autovacuum keep the registry vacuumed",
        "ALTER TABLE {registry}.tenants SET (autovacuum_vacuum_threshold = 20, "
        "autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_threshold = 20, "
        "autovacuum_vacuum_insert_scale_factor = 0.01)",
    ),
    # Strict mode's tenant (LOGIN_TENANT), also there in a settable pool: a change of mode
    # then only re-applies policies. Owned by the pool owner, callable by the runtime alone.
    (
        "create login_tenant()",
        """CREATE OR REPLACE FUNCTION {registry}.{login_tenant}() RETURNS pg_catalog.text
        LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
        AS $fn$"""
        + _LOGIN_TENANT_BODY
        + "$fn$",
    ),
    (
        "give login_tenant() to the pool owner",
        "ALTER FUNCTION {registry}.{login_tenant}() OWNER TO {owner}",
    ),
    (
        "revoke PUBLIC execute on login_tenant()",
        "REVOKE ALL ON FUNCTION {registry}.{login_tenant}() FROM PUBLIC",
    ),
    (
        "let the runtime call login_tenant()",
        "GRANT EXECUTE ON FUNCTION {registry}.{login_tenant}() TO {runtime}",
    ),
    # The runtime may read the registry row of the tenant it claims and no other. The tenant
    # policy's sub-select reads the registry with the runtime's own privileges: no function
    # call, and the planner makes it one InitPlan (an index lookup) per statement.
    (
        "protect the registry with row-level security",
        "ALTER TABLE {registry}.tenants ENABLE ROW LEVEL SECURITY",
    ),
    (
        "let the runtime see the registry row of its own tenant",
        """DO $do$ BEGIN
            DROP POLICY IF EXISTS tenantkit_claimed_tenant ON {registry}.tenants;
            CREATE POLICY tenantkit_claimed_tenant ON {registry}.tenants FOR SELECT TO {runtime}
                USING (tenant_id = {registry_tenant});
        END $do$""",
    ),
    (
        "create the record of the pool's mode",
        """CREATE TABLE IF NOT EXISTS {registry}.pool_mode (
            mode text NOT NULL CHECK (mode IN ({modes})),
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row)
        )""",
    ),
    (
        "give the record of the mode to the pool owner",
        "ALTER TABLE {registry}.pool_mode OWNER TO {owner}",
    ),
    (
        "revoke PUBLIC access to the record of the mode",
        "REVOKE ALL ON {registry}.pool_mode FROM PUBLIC",
    ),
    # tenantctl verify, as the runtime, reads which attacks apply.
    ("let the runtime read the pool's mode", "GRANT SELECT ON {registry}.pool_mode TO {runtime}"),
    (
        "grant the runtime use of the registry schema",
        "GRANT USAGE ON SCHEMA {registry} TO {runtime}",
    ),
    ("grant the runtime SELECT on the registry", "GRANT SELECT ON {registry}.tenants TO {runtime}"),
    (
        "create protect_table()",
        """CREATE OR REPLACE PROCEDURE {registry}.protect_table(target regclass)
        LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp
        AS $proc$
        DECLARE
            tenant_attnum smallint;
            offenders text;
            target_schema name;
            sequence regclass;
        BEGIN
            SELECT a.attnum INTO tenant_attnum
              FROM pg_attribute a
             WHERE a.attrelid = target AND a.attname = 'tenant_id' AND NOT a.attisdropped
               AND a.atttypid = 'text'::regtype AND a.attnotnull;
            IF tenant_attnum IS NULL THEN
                RAISE EXCEPTION 'tenantkit: table % needs a column tenant_id text NOT NULL',
                    target;
            END IF;
            -- Unique and foreign-key checks bypass RLS: each must compare within one tenant.
            SELECT string_agg(c.relname, ', ') INTO offenders
              FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = target AND i.indkey[0] <> tenant_attnum;
            IF offenders IS NOT NULL THEN
                RAISE EXCEPTION 'tenantkit: index(es) % of % must lead with tenant_id',
                    offenders, target;
            END IF;
            SELECT string_agg(k.conname, ', ') INTO offenders
              FROM pg_constraint k
             WHERE k.contype = 'f' AND (k.conrelid = target OR k.confrelid = target)
               AND (k.conkey[1] IS DISTINCT FROM (SELECT attnum FROM pg_attribute
                        WHERE attrelid = k.conrelid AND attname = 'tenant_id')
                    OR k.confkey[1] IS DISTINCT FROM (SELECT attnum FROM pg_attribute
                        WHERE attrelid = k.confrelid AND attname = 'tenant_id'));
            IF offenders IS NOT NULL THEN
                RAISE EXCEPTION 'tenantkit: foreign key(s) % on % must lead with tenant_id',
                    offenders, target;
            END IF;
            IF NOT EXISTS (SELECT FROM pg_index WHERE indrelid = target) THEN
                RAISE EXCEPTION 'tenantkit: table % needs a primary key leading with tenant_id',
                    target;
            END IF;

            SELECT relnamespace::regnamespace::name INTO target_schema
              FROM pg_class WHERE oid = target;
            -- The pool owner takes the table (a new owner needs CREATE on its schema).
            EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', target_schema, {owner_name});
            EXECUTE format('ALTER TABLE %s OWNER TO %I', target, {owner_name});
            EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
            EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
            EXECUTE format('DROP POLICY IF EXISTS %I ON %s', {isolation_name}, target);
            EXECUTE format(
                'CREATE POLICY %I ON %s AS PERMISSIVE FOR ALL TO %I USING (%s) WITH CHECK (%s)',
                {isolation_name}, target, {runtime_name}, {tenant_expr}, {tenant_expr});
            EXECUTE format('DROP POLICY IF EXISTS %I ON %s', {maintenance_name}, target);
            EXECUTE format(
                'CREATE POLICY %I ON %s AS PERMISSIVE FOR ALL TO %I USING (true) WITH CHECK (true)',
                {maintenance_name}, target, {maintainer_name});
            -- Metering reads each tenant's rows from tenant_id's statistics (lambda_src.metering).
            EXECUTE format('ALTER TABLE %s ALTER COLUMN tenant_id SET STATISTICS %s',
                           target, {statistics_target});
            EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', target);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I',
                           target, {runtime_name});
            EXECUTE format('GRANT SELECT, INSERT, DELETE ON %s TO %I', target, {maintainer_name});
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I, %I',
                           target_schema, {runtime_name}, {maintainer_name});
            -- serial/identity sequences of the table: the runtime may take values from them.
            FOR sequence IN
                SELECT d.objid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
                 WHERE d.refobjid = target AND d.classid = 'pg_class'::regclass
                   AND d.deptype IN ('a', 'i') AND c.relkind = 'S'
            LOOP
                EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I', sequence, {runtime_name});
            END LOOP;
        END
        $proc$""",
    ),
    (
        "give protect_table() to the pool owner",
        "ALTER PROCEDURE {registry}.protect_table(regclass) OWNER TO {owner}",
    ),
    (
        "revoke PUBLIC execute on protect_table()",
        "REVOKE ALL ON PROCEDURE {registry}.protect_table(regclass) FROM PUBLIC",
    ),
    (
        "create protect_view()",
        """CREATE OR REPLACE PROCEDURE {registry}.protect_view(target regclass)
        LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp
        AS $proc$
        BEGIN
            IF (SELECT relkind FROM pg_class WHERE oid = target) <> 'v' THEN
                RAISE EXCEPTION 'tenantkit: % is not a view', target;
            END IF;
            -- security_invoker: base-table policies apply to the querying role, not the owner.
            EXECUTE format('ALTER VIEW %s SET (security_invoker = true)', target);
            EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO %I',
                           (SELECT relnamespace::regnamespace::name FROM pg_class
                             WHERE oid = target), {owner_name});
            EXECUTE format('ALTER VIEW %s OWNER TO %I', target, {owner_name});
            EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', target);
            EXECUTE format('GRANT SELECT ON %s TO %I', target, {runtime_name});
        END
        $proc$""",
    ),
    (
        "give protect_view() to the pool owner",
        "ALTER PROCEDURE {registry}.protect_view(regclass) OWNER TO {owner}",
    ),
    (
        "revoke PUBLIC execute on protect_view()",
        "REVOKE ALL ON PROCEDURE {registry}.protect_view(regclass) FROM PUBLIC",
    ),
]


def plan_rls(mode: PoolMode) -> list[Step]:
    """Steps that create (or bring up to date) the registry's lookup index and RLS, the record
    of the mode, and the protect_table()/protect_view() procedures for `mode`, in the pool
    database. All idempotent."""
    names = {
        # The registry's own policy: in settable mode the claimed tenant (the lookup the
        # table policies make must not itself need the registry), in strict mode the login's.
        "registry_tenant": (
            sql.SQL(LOGIN_TENANT)
            if mode == "strict"
            else sql.SQL("nullif(current_setting({}, true), '')").format(
                sql.Literal(POOL.tenant_setting)
            )
        ),
        "tenant_expr": sql.Literal(tenant_condition(mode)),
        "modes": sql.SQL(", ").join(sql.Literal(m) for m in POOL_MODES),
    }
    return [
        Step(description, pool_sql(text, **names), database=POOL.database, changes=False)
        for description, text in _RLS
    ]


def plan_mode(mode: PoolMode, observed: PoolMode | None) -> list[Step]:
    """Record `mode`; if the pool was in another one (`observed`), put every protected table
    under `mode`'s policies in the same transaction (plan_rls has replaced protect_table)."""
    steps = [
        Step(
            f"record the pool's mode: {mode}",
            pool_sql(
                "INSERT INTO {registry}.pool_mode (mode) VALUES (%s) "
                "ON CONFLICT (only_row) DO UPDATE SET mode = EXCLUDED.mode "
                "WHERE pool_mode.mode IS DISTINCT FROM EXCLUDED.mode"
            ),
            (mode,),
            database=POOL.database,
            changes_only_if_rows=True,
        )
    ]
    if observed is not None and observed != mode:
        steps.append(
            Step(
                f"put every protected table under the {mode} policies",
                pool_sql(
                    """DO $do$ DECLARE protected regclass; BEGIN
                        FOR protected IN SELECT DISTINCT polrelid::regclass FROM pg_policy
                                          WHERE polname = {isolation_name}
                        LOOP
                            CALL {registry}.protect_table(protected);
                        END LOOP;
                    END $do$"""
                ),
                database=POOL.database,
            )
        )
    return steps


MODE_TABLE = f"{POOL.registry_schema}.pool_mode"
SELECT_MODE = pool_sql("SELECT mode FROM {registry}.pool_mode")
"""The pool's recorded mode, in the pool database (no table or no row: none recorded, as in a
pool made before modes existed, whose policies are settable)."""


def protect_table(table: str) -> Step:
    """Apply the tenant policies, FORCE RLS and grants to a table (by name, bound)."""
    return Step(
        f"protect table {table}",
        pool_sql("CALL {registry}.protect_table(%s::regclass)"),
        (table,),
        database=POOL.database,
        changes=False,
    )


def protect_view(view: str) -> Step:
    """Make a view security_invoker and give it to the pool owner (by name, bound)."""
    return Step(
        f"protect view {view}",
        pool_sql("CALL {registry}.protect_view(%s::regclass)"),
        (view,),
        database=POOL.database,
        changes=False,
    )


OBSERVE_PROTECTED_TABLES = pool_sql(
    "SELECT p.polrelid::regclass::text, "
    "       coalesce(array_agg(DISTINCT k.confrelid::regclass::text) "
    "                FILTER (WHERE k.confrelid IS NOT NULL), '{{}}') "
    "  FROM pg_policy p "
    "  LEFT JOIN pg_constraint k ON k.conrelid = p.polrelid AND k.contype = 'f' "
    " WHERE p.polname = {isolation_name} "
    " GROUP BY p.polrelid"
)


def purge_order(references: Mapping[str, Sequence[str]]) -> list[str]:
    """Protected tables ordered so every table comes before the tables it references."""
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(table: str) -> None:
        if table in ordered or table in visiting:
            return
        visiting.add(table)
        for child, parents in sorted(references.items()):
            if table in parents and child != table:
                visit(child)
        visiting.discard(table)
        ordered.append(table)

    for table in sorted(references):
        visit(table)
    return ordered


def split_qualified_name(name: str) -> list[str]:
    """Split regclass text output ('schema.table', quoted parts allowed) into identifiers."""
    parts: list[str] = []
    current = ""
    quoted = False
    i = 0
    while i < len(name):
        char = name[i]
        if char == '"':
            if quoted and i + 1 < len(name) and name[i + 1] == '"':
                current += '"'
                i += 1
            else:
                quoted = not quoted
        elif char == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
        i += 1
    parts.append(current)
    return parts
