"""The pool tier's SQL: roles, the tenant registry, Row-Level Security and its procedures.

How the pool isolates tenants:
- every tenant table has `tenant_id text NOT NULL` leading its primary, unique and foreign keys
  and its indexes (unique and FK checks bypass RLS, so they may only ever compare rows of one
  tenant);
- ENABLE and FORCE ROW LEVEL SECURITY, and one policy for the runtime group, TENANT_CONDITION,
  for reads (USING) and writes (WITH CHECK): tenant_id equals the registry's row for the
  transaction-local setting app.tenant_id, if that tenant is active. The scalar sub-select is
  evaluated once per statement (an InitPlan) and tenant_id is compared with a constant, so the
  index leading with tenant_id is used. NULL, '' (what current_setting returns after a
  transaction that set it locally), unknown and offboarded tenants all yield NULL: no rows,
  and every write fails its WITH CHECK;
- the application logs in as a member of the runtime group: not the owner, NOBYPASSRLS, DML
  only, no TEMP (so no temporary functions or tables), no CREATE anywhere;
- a NOLOGIN maintainer role has the only other policy (all rows) and is used by the provisioner
  alone, to purge an offboarded tenant that asked for `destroy`.
Nothing here interpolates input into SQL: names are constants (tenancy.names.POOL) rendered
with psycopg.sql.Identifier, tenant ids and table names are bound parameters.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from psycopg import sql

from ..core.steps import Step
from ..tenancy import POOL, PROBE_TENANT_IDS
from .lifecycle import (
    ACTIVE,
    OFFBOARDED,
    OFFBOARDING,
    SUSPENDED,
    plan_forget,
    plan_mark,
    plan_record,
    plan_registry,
)
from .plan import RDS_IAM_ROLE

ISOLATION_POLICY = "tenantkit_isolation"
MAINTENANCE_POLICY = "tenantkit_maintenance"

TENANT_CONDITION = (
    sql.SQL(
        "tenant_id = (SELECT r.tenant_id FROM {}.tenants r "
        "WHERE r.tenant_id = nullif(current_setting({}, true), '') AND r.status = 'active')"
    )
    .format(sql.Identifier(POOL.registry_schema), sql.Literal(POOL.tenant_setting))
    .as_string(None)
)
"""The tenant policy: rows of the tenant named by the transaction-local setting, if that tenant
is registered and active. NULL (never set), '' (set locally by an earlier transaction), unknown
and offboarded tenants all give NULL: no row matches and every write fails WITH CHECK."""

_NAMES = {
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
    "tenant_expr": sql.Literal(TENANT_CONDITION),
    "maintenance_name": sql.Literal(MAINTENANCE_POLICY),
}


def _sql(text: str, **extra: sql.Composable) -> sql.Composed:
    names = {**_NAMES, **extra}
    return sql.SQL(text).format(**{k: v for k, v in names.items() if "{" + k + "}" in text})


@dataclass(frozen=True)
class ObservedPool:
    """What already exists of the pool: its roles and whether its database exists."""

    login_enabled: Mapping[str, bool] = field(default_factory=dict)
    database_exists: bool = False
    rds_iam_exists: bool = False


OBSERVE_POOL_DATABASE = sql.SQL("SELECT EXISTS (SELECT FROM pg_database WHERE datname = %s)")

# -- the registry and the RLS machinery, run inside the pool database --------------------------

# The registry's table, history and trigger come from lifecycle.plan_registry(); these are the
# pool's own additions: the lookup index, row-level security for the runtime, and procedures.
_REGISTRY = [
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
    # The runtime may read the registry row of the tenant it claims and no other. The tenant
    # policy's sub-select reads the registry with the runtime's own privileges: no function
    # call, and the planner makes it one InitPlan (an index lookup) per statement.
    (
        "protect the registry with row-level security",
        "ALTER TABLE {registry}.tenants ENABLE ROW LEVEL SECURITY",
    ),
    (
        "let the runtime see the registry row of the tenant it claims",
        """DO $do$ BEGIN
            DROP POLICY IF EXISTS tenantkit_claimed_tenant ON {registry}.tenants;
            CREATE POLICY tenantkit_claimed_tenant ON {registry}.tenants FOR SELECT TO {runtime}
                USING (tenant_id = nullif(current_setting({setting}, true), ''));
        END $do$""",
    ),
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

# -- the verify probes: a sample schema and three probe tenants with rows -------------------
# `tenantctl verify` (and `make run`, the tests, the benchmark) attack the pool through them:
# tenantkit_sample.projects / tasks / open_tasks, protected like any tenant table, and the
# probe tenants PROBE_TENANT_IDS (two active, one offboarded, each with a project and a task).
# They hold no customer data; the catalog's `pool: verify_probes: false` leaves them out.

_SAMPLE = [
    ("create the sample schema", "CREATE SCHEMA IF NOT EXISTS {sample} AUTHORIZATION {owner}"),
    ("revoke PUBLIC access to the sample schema", "REVOKE ALL ON SCHEMA {sample} FROM PUBLIC"),
    (
        "create the sample projects table",
        """CREATE TABLE IF NOT EXISTS {sample}.projects (
        tenant_id text NOT NULL,
        project_id bigint NOT NULL,
        name text NOT NULL,
        PRIMARY KEY (tenant_id, project_id),
        UNIQUE (tenant_id, name)
    )""",
    ),
    (
        "create the sample tasks table",
        """CREATE TABLE IF NOT EXISTS {sample}.tasks (
        tenant_id text NOT NULL,
        task_id bigint NOT NULL,
        project_id bigint NOT NULL,
        title text NOT NULL,
        done boolean NOT NULL DEFAULT false,
        PRIMARY KEY (tenant_id, task_id),
        FOREIGN KEY (tenant_id, project_id) REFERENCES {sample}.projects (tenant_id, project_id)
    )""",
    ),
    (
        "index sample tasks by project",
        "CREATE INDEX IF NOT EXISTS tasks_by_project ON {sample}.tasks (tenant_id, project_id)",
    ),
    (
        "create the sample open_tasks view",
        """CREATE OR REPLACE VIEW {sample}.open_tasks WITH (security_invoker = true) AS
        SELECT t.tenant_id, t.task_id, t.title, p.name AS project
          FROM {sample}.tasks t JOIN {sample}.projects p USING (tenant_id, project_id)
         WHERE NOT t.done""",
    ),
]
SAMPLE_TABLES = (f"{POOL.sample_schema}.projects", f"{POOL.sample_schema}.tasks")
SAMPLE_VIEWS = (f"{POOL.sample_schema}.open_tasks",)

_PROBE_PROJECT = "probe project of "
_PROBE_TASK = "probe task of "
PROBE_ONLY_B_PROJECT = 2
"""A project id only the second probe tenant has (for foreign-key existence probes)."""


_PROBES_REGISTERED_BY = "tenantkit"


def _register_probes() -> Step:
    active, other, gone = PROBE_TENANT_IDS
    statement = _sql(
        "INSERT INTO {registry}.tenants (tenant_id, status, registered_by) "
        "VALUES (%s, 'active', %s), (%s, 'active', %s), (%s, 'offboarded', %s) "
        "ON CONFLICT (tenant_id) DO UPDATE SET status = EXCLUDED.status"
    )
    by = _PROBES_REGISTERED_BY
    return Step(
        "register the verify probe tenants",
        statement,
        (active, by, other, by, gone, by),
        database=POOL.database,
        changes=False,
    )


def _seed_probe_rows() -> list[Step]:
    # As the maintainer: the only role whose policy admits rows of any tenant.
    return [
        Step(
            "seed the verify probe projects",
            _sql(
                "INSERT INTO {sample}.projects (tenant_id, project_id, name) "
                "SELECT tenant_id, 1, %s || tenant_id FROM unnest(%s::text[]) AS u(tenant_id) "
                "ON CONFLICT DO NOTHING"
            ),
            (_PROBE_PROJECT, list(PROBE_TENANT_IDS)),
            database=POOL.database,
            changes=False,
            role=POOL.maintainer_role,
        ),
        Step(
            "seed the verify probe project only the second probe tenant has",
            _sql(
                "INSERT INTO {sample}.projects (tenant_id, project_id, name) "
                "VALUES (%s, %s, 'probe project only b has') ON CONFLICT DO NOTHING"
            ),
            (PROBE_TENANT_IDS[1], PROBE_ONLY_B_PROJECT),
            database=POOL.database,
            changes=False,
            role=POOL.maintainer_role,
        ),
        Step(
            "seed the verify probe tasks",
            _sql(
                "INSERT INTO {sample}.tasks (tenant_id, task_id, project_id, title) "
                "SELECT tenant_id, 1, 1, %s || tenant_id FROM unnest(%s::text[]) AS u(tenant_id) "
                "ON CONFLICT DO NOTHING"
            ),
            (_PROBE_TASK, list(PROBE_TENANT_IDS)),
            database=POOL.database,
            changes=False,
            role=POOL.maintainer_role,
        ),
    ]


def plan_probes_removal() -> list[Step]:
    """Steps that take the verify probes out of a pool that has them (idempotent): the probe
    tenants' rows and the sample schema in one transaction, then their registry rows (their
    history stays). The schema is dropped only if its tables hold nothing but the probes' rows
    and nothing else is in it or depends on it; otherwise the step fails saying why."""
    remove = _sql(
        """DO $do$
        DECLARE
            sample_table regclass;
            others boolean;
        BEGIN
            -- As the maintainer, the only role whose policy admits rows of any tenant; the
            -- locks keep anyone from adding rows between the check and the drop.
            FOREACH sample_table IN ARRAY ARRAY[
                to_regclass({tasks_name}), to_regclass({projects_name})
            ] LOOP
                CONTINUE WHEN sample_table IS NULL;
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', sample_table);
                EXECUTE format('DELETE FROM %s WHERE tenant_id = ANY($1)', sample_table)
                    USING {probes};
                EXECUTE format('SELECT EXISTS (SELECT FROM %s)', sample_table) INTO others;
                IF others THEN
                    RAISE EXCEPTION 'tenantkit: % holds rows of tenants other than the verify '
                        'probes: move or delete them, or keep verify_probes on', sample_table;
                END IF;
            END LOOP;
            -- As the owner of the schema and its objects. No CASCADE: an object of yours in
            -- the schema, or one that uses its tables, makes the drop fail, not disappear.
            EXECUTE format('SET LOCAL ROLE %I', {owner_name});
            DROP VIEW IF EXISTS {sample}.open_tasks;
            DROP TABLE IF EXISTS {sample}.tasks;
            DROP TABLE IF EXISTS {sample}.projects;
            DROP SCHEMA IF EXISTS {sample};
        END $do$""",
        # Constants (tenancy's reserved probe ids and names), rendered as literals: a DO block
        # takes no parameters.
        probes=sql.SQL("ARRAY[{}]::text[]").format(
            sql.SQL(", ").join(sql.Literal(t) for t in PROBE_TENANT_IDS)
        ),
        tasks_name=sql.Literal(f"{POOL.sample_schema}.tasks"),
        projects_name=sql.Literal(f"{POOL.sample_schema}.projects"),
    )
    return [
        Step(
            "remove the verify probes' rows and the sample schema",
            remove,
            database=POOL.database,
            changes=False,
            role=POOL.maintainer_role,
        ),
        plan_forget(
            list(PROBE_TENANT_IDS), registered_by=_PROBES_REGISTERED_BY, database=POOL.database
        ),
    ]


def plan_pool_converge(
    observed: ObservedPool,
    *,
    iam_auth: bool,
    password_verifier: str | None,
    tables: Sequence[str],
    views: Sequence[str],
    verify_probes: bool,
) -> list[Step]:
    """Steps that bring the pool database, roles, registry, policies and grants to the desired
    state from any start; `tables`/`views` are the user's own, protected like the sample's.
    `verify_probes`: the sample schema and probe tenants exist (true) or are removed (false)."""
    roles = observed.login_enabled
    steps: list[Step] = []

    def create_role(name: str, attributes: str) -> None:
        if name not in roles:
            steps.append(
                Step(
                    f"create role {name}",
                    sql.SQL("CREATE ROLE {} " + attributes).format(sql.Identifier(name)),
                )
            )

    create_role(POOL.owner_role, "NOLOGIN")
    create_role(POOL.maintainer_role, "NOLOGIN")
    create_role(POOL.runtime_role, "NOLOGIN")
    create_role(POOL.login_role, "LOGIN")
    logins = [POOL.login_role]
    if iam_auth:
        create_role(POOL.iam_user, "LOGIN")
        logins.append(POOL.iam_user)
    for login in logins:
        if roles.get(login) is False:
            steps.append(
                Step(
                    f"re-enable login of {login}",
                    sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(login)),
                )
            )
        steps.append(
            Step(
                f"make {login} a member of {POOL.runtime_role}",
                sql.SQL("GRANT {} TO {}").format(_NAMES["runtime"], sql.Identifier(login)),
                changes=False,
            )
        )
    if iam_auth:
        steps.append(
            Step(
                f"grant {RDS_IAM_ROLE} to {POOL.iam_user}",
                sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(RDS_IAM_ROLE), sql.Identifier(POOL.iam_user)
                ),
                changes=False,
            )
        )
    elif roles.get(POOL.iam_user):
        steps.append(
            Step(
                f"disable IAM user {POOL.iam_user}",
                sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(POOL.iam_user)),
            )
        )
    if password_verifier is not None:
        steps.append(
            Step(
                f"set the password of {POOL.login_role} from its secret",
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(POOL.login_role), sql.Literal(password_verifier)
                ),
                changes=False,
            )
        )
    steps.append(
        Step(
            "let the admin act as the pool owner and maintainer",
            _sql("GRANT {owner}, {maintainer} TO CURRENT_USER"),
            changes=False,
        )
    )
    if not observed.database_exists:
        steps.append(
            Step(
                f"create database {POOL.database}",
                _sql("CREATE DATABASE {db} OWNER {owner}"),
                transactional=False,
            )
        )
    steps += [
        Step(
            f"revoke PUBLIC access to {POOL.database}",
            _sql("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
            changes=False,
        ),
        # CONNECT only: no TEMP, so the application cannot create temporary functions.
        Step(
            f"grant CONNECT on {POOL.database} to {POOL.runtime_role}",
            _sql("GRANT CONNECT ON DATABASE {db} TO {runtime}"),
            changes=False,
        ),
        Step(
            f"revoke PUBLIC access to schema public in {POOL.database}",
            sql.SQL("REVOKE ALL ON SCHEMA public FROM PUBLIC"),
            database=POOL.database,
            changes=False,
        ),
        Step(
            f"give schema public in {POOL.database} to {POOL.owner_role}",
            _sql("ALTER SCHEMA public OWNER TO {owner}"),
            database=POOL.database,
            changes=False,
        ),
    ]
    steps += plan_registry(database=POOL.database, owner=POOL.owner_role)
    steps += [
        Step(description, _sql(text), database=POOL.database, changes=False)
        for description, text in _REGISTRY + (_SAMPLE if verify_probes else [])
    ]
    sample_tables, sample_views = (SAMPLE_TABLES, SAMPLE_VIEWS) if verify_probes else ((), ())
    for table in (*sample_tables, *tables):
        steps.append(protect_table(table))
    for view in (*sample_views, *views):
        steps.append(
            Step(
                f"protect view {view}",
                _sql("CALL {registry}.protect_view(%s::regclass)"),
                (view,),
                database=POOL.database,
                changes=False,
            )
        )
    if not verify_probes:
        return steps + plan_probes_removal()
    steps += [
        _register_probes(),
        *_seed_probe_rows(),
        # Statistics exist, so the verify suite can check pg_stats hides them.
        Step(
            "analyze the sample tables",
            _sql("ANALYZE {sample}.projects, {sample}.tasks"),
            database=POOL.database,
            changes=False,
        ),
    ]
    return steps


def protect_table(table: str) -> Step:
    """Apply the tenant policies, FORCE RLS and grants to a table (by name, bound)."""
    return Step(
        f"protect table {table}",
        _sql("CALL {registry}.protect_table(%s::regclass)"),
        (table,),
        database=POOL.database,
        changes=False,
    )


def plan_pool_retain(observed: ObservedPool) -> list[Step]:
    """Offboard the whole pool keeping its data: logins disabled, sessions ended."""
    steps = [
        Step(
            f"disable login of {role}",
            sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)),
        )
        for role in (POOL.login_role, POOL.iam_user)
        if observed.login_enabled.get(role)
    ]
    steps.append(
        Step(
            "end the pool application's sessions",
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = ANY(%s) AND pid <> pg_backend_pid()"
            ),
            ([POOL.login_role, POOL.iam_user],),
            changes=False,
        )
    )
    return steps


def plan_pool_destroy(observed: ObservedPool) -> list[Step]:
    """Drop the pool database and roles: only with an explicit destroy removal policy."""
    steps = plan_pool_retain(observed)
    if observed.database_exists:
        steps += [
            Step(
                "let the admin act as the pool owner",
                _sql("GRANT {owner} TO CURRENT_USER"),
                changes=False,
            ),
            Step(
                f"drop database {POOL.database}",
                _sql("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                transactional=False,
            ),
        ]
    for role in POOL.roles:
        if role in observed.login_enabled:
            steps += [
                Step(
                    f"let the admin act as {role}",
                    sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)),
                    changes=False,
                ),
                Step(
                    f"drop what {role} owns in the admin database",
                    sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)),
                    changes=False,
                ),
                Step(
                    f"drop role {role}",
                    sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)),
                ),
            ]
    return steps


# -- pool tenants: the registry's rows --------------------------------------------------------


def plan_register(tenant_ids: Sequence[str], batch: str, *, suspended: bool = False) -> list[Step]:
    """Register (or re-activate) tenants as active, or as suspended (the policy admits neither
    a suspended tenant nor an offboarded one); `batch` records which resource registered them."""
    if not tenant_ids:
        return []
    status = SUSPENDED if suspended else ACTIVE
    return [plan_record(tenant_ids, status, registered_by=batch, database=POOL.database)]


def plan_offboard(tenant_ids: Sequence[str], batch: str) -> list[Step]:
    """Mark tenants offboarded (their rows stay; the policy no longer admits them). Only rows
    this batch registered: a tenant that moved to another batch is left alone."""
    if not tenant_ids:
        return []
    return [plan_mark(tenant_ids, OFFBOARDED, registered_by=batch, database=POOL.database)]


OBSERVE_PROTECTED_TABLES = _sql(
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


def plan_purge(
    tenant_ids: Sequence[str], batch: str, references: Mapping[str, Sequence[str]]
) -> list[Step]:
    """Delete the tenants' rows from every protected table (referencing tables first), then
    their registry rows: only for tenants whose removal policy says destroy. The deletes run
    as the maintainer; a replay after a failure deletes what is left."""
    if not tenant_ids:
        return []
    offboarding = plan_mark(tenant_ids, OFFBOARDING, registered_by=batch, database=POOL.database)
    steps = [
        Step(
            f"delete the rows of {len(tenant_ids)} pool tenant(s) from {table}",
            sql.SQL("DELETE FROM {} WHERE tenant_id = ANY(%s)").format(
                sql.SQL(".").join(sql.Identifier(part) for part in _split_qualified(table))
            ),
            (list(tenant_ids),),
            database=POOL.database,
            role=POOL.maintainer_role,
            changes_only_if_rows=True,
        )
        for table in purge_order(references)
    ]
    return [
        offboarding,
        *steps,
        plan_mark(tenant_ids, OFFBOARDED, registered_by=batch, database=POOL.database),
        plan_forget(tenant_ids, registered_by=batch, database=POOL.database),
    ]


def _split_qualified(name: str) -> list[str]:
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
