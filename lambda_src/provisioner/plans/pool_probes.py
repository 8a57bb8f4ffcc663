"""The pool's verify probes: a sample schema and three probe tenants with rows.

`tenantctl verify` (and `make run`, the tests, the benchmark) attack the pool through them:
tenantkit_sample.projects / tasks / open_tasks, protected like any tenant table, and the probe
tenants PROBE_TENANT_IDS (two active, one offboarded, each with a project and a task). They hold
no customer data; the catalog's `pool: verify_probes: false` leaves them out (and removes them).
"""

from psycopg import sql

from ...core.steps import Step
from ...tenancy import POOL, PROBE_TENANT_IDS
from .lifecycle import plan_forget
from .pool_rls import pool_sql, protect_table, protect_view

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
    # Application code that reads the sample rows other than as the querying role, for the
    # verify suite's attacks "through a function": a SECURITY DEFINER function and a view that
    # is not security_invoker, both run as the pool owner (whom FORCE row-level security and no
    # policy of its own show nothing), and a function that trusts the tenant setting.
    (
        "create the sample function run as its owner",
        """CREATE OR REPLACE FUNCTION {sample}.projects_as_owner()
        RETURNS TABLE (tenant_id text, project_id bigint)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS $fn$ SELECT p.tenant_id, p.project_id FROM {sample}.projects p $fn$""",
    ),
    (
        "create the sample function that trusts the tenant setting",
        """CREATE OR REPLACE FUNCTION {sample}.projects_of_setting()
        RETURNS TABLE (tenant_id text, project_id bigint)
        LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
        AS $fn$ SELECT p.tenant_id, p.project_id FROM {sample}.projects p
                WHERE p.tenant_id = current_setting({setting}, true) $fn$""",
    ),
    (
        "create the sample view run as its owner",
        """CREATE OR REPLACE VIEW {sample}.projects_as_view_owner AS
        SELECT tenant_id, project_id FROM {sample}.projects""",
    ),
    (
        "give the sample functions and view to the pool owner",
        """ALTER FUNCTION {sample}.projects_as_owner() OWNER TO {owner};
        ALTER FUNCTION {sample}.projects_of_setting() OWNER TO {owner};
        ALTER VIEW {sample}.projects_as_view_owner OWNER TO {owner}""",
    ),
    (
        "let the runtime use the sample functions and view",
        """REVOKE ALL ON FUNCTION {sample}.projects_as_owner(), {sample}.projects_of_setting()
            FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION {sample}.projects_as_owner(), {sample}.projects_of_setting()
            TO {runtime};
        REVOKE ALL ON {sample}.projects_as_view_owner FROM PUBLIC;
        GRANT SELECT ON {sample}.projects_as_view_owner TO {runtime}""",
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
    statement = pool_sql(
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
            pool_sql(
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
            pool_sql(
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
            pool_sql(
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
    remove = pool_sql(
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
            DROP VIEW IF EXISTS {sample}.projects_as_view_owner;
            DROP FUNCTION IF EXISTS {sample}.projects_as_owner();
            DROP FUNCTION IF EXISTS {sample}.projects_of_setting();
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


def plan_probes() -> list[Step]:
    """Steps that create the sample schema, protect it, and register and seed the probes."""
    return [
        *(
            Step(description, pool_sql(text), database=POOL.database, changes=False)
            for description, text in _SAMPLE
        ),
        *(protect_table(table) for table in SAMPLE_TABLES),
        *(protect_view(view) for view in SAMPLE_VIEWS),
        _register_probes(),
        *_seed_probe_rows(),
        # Statistics exist, so the verify suite can check pg_stats hides them.
        Step(
            "analyze the sample tables",
            pool_sql("ANALYZE {sample}.projects, {sample}.tasks"),
            database=POOL.database,
            changes=False,
        ),
    ]
