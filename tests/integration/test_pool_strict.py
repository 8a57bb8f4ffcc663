"""A strict pool on a real PostgreSQL: each tenant logs in as itself and the policies read the
tenant from session_user. Provisioning through the handler, what the policy form does and
does not let a session change, the tenant lifecycle on its login, and switching a pool between
modes (last: it changes the module's pool)."""

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from lambda_src.core.connection import ConnectionSettings
from lambda_src.core.errors import InvalidRequestError
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import RequestType, provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import (
    pool_batch_of,
    pool_batches,
    pool_database_properties,
    pool_tenants_properties,
)
from lambda_src.provisioner.plans.pool_rls import LOGIN_TENANT_FUNCTION, STRICT_TENANT_CONDITION
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS, PoolMode, tenant_names
from lambda_src.tenant_runtime import TenantContextError, tenant_transaction
from tenantkit.embedded_pg import RunningServer
from tenantkit.verify import run_pool_attacks
from tenantkit.verify.pool import StrictLoginsMissingError

from .pool_fixtures import PASSWORD, aws, config, pool_server  # noqa: F401 (fixtures)

PROJECTS = sql.SQL("{}.projects").format(sql.Identifier(POOL.sample_schema))
TENANTS = ("strict-a", "strict-b", "strict-c")


def event(
    request_type: RequestType, props: dict[str, Any], old: dict[str, Any] | None = None
) -> dict[str, Any]:
    physical_id = None if request_type == "Create" else "existing"
    return provider_event(request_type, props, physical_id=physical_id, old_properties=old)


def password_of(tenant: str) -> str:
    return f"password-of-{tenant}"


def login_secret(aws: Any, tenant: str) -> str:
    """The tenant's login secret in moto (created once); its ARN."""
    name = tenant_names(tenant, allow_probes=True).secret_name
    try:
        return str(aws.describe_secret(SecretId=name)["ARN"])
    except aws.exceptions.ResourceNotFoundException:
        value = {"username": tenant_names(tenant, allow_probes=True).pool_login}
        value["password"] = password_of(tenant)
        return str(aws.create_secret(Name=name, SecretString=json.dumps(value))["ARN"])


def pool_props(aws: Any, mode: PoolMode = "strict", **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "runtime_secret_arn": aws.describe_secret(SecretId=POOL.secret_name)["ARN"],
        "iam_auth": True,
        "removal_policy": "retain",
        "mode": mode,
        "probe_secrets": {t: login_secret(aws, t) for t in PROBE_TENANT_IDS}
        if mode == "strict"
        else None,
    }
    settings.update(overrides)
    return pool_database_properties(**settings)


def batch_props(
    aws: Any, tenants: dict[str, str], *, mode: PoolMode = "strict", suspended: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """batch id -> properties for `tenants` (id -> removal policy), with password logins."""
    secrets = {t: login_secret(aws, t) for t in tenants} if mode == "strict" else None
    batches = pool_batches(
        list(tenants.items()),  # type: ignore[arg-type]
        suspended=suspended,
        password_secrets=secrets,
    )
    return {
        batch: pool_tenants_properties(batch, entries, mode=mode)
        for batch, entries in batches.items()
    }


@pytest.fixture(scope="module")
def pool(pool_server: RunningServer, aws: Any, config: HandlerConfig) -> ConnectionSettings:
    """A strict pool with TENANTS registered, each with a password login and one project;
    returns the shared runtime login's settings."""
    handle(event("Create", pool_props(aws)), config)
    for props in batch_props(aws, {t: "retain" for t in TENANTS}).values():
        handle(event("Create", props), config)
    with psycopg.connect(
        **pool_server.admin_settings(POOL.database).connect_kwargs(), autocommit=True
    ) as admin:
        admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(POOL.maintainer_role)))
        admin.execute(
            sql.SQL(
                "INSERT INTO {} SELECT t, 1, 'project of ' || t FROM unnest(%s::text[]) t "
                "ON CONFLICT DO NOTHING"
            ).format(PROJECTS),
            (list(TENANTS),),
        )
    return pool_server.settings(POOL.login_role, PASSWORD, POOL.database)


def login_settings(server: RunningServer, tenant: str) -> ConnectionSettings:
    return server.settings(
        tenant_names(tenant, allow_probes=True).pool_login, password_of(tenant), POOL.database
    )


@pytest.fixture
def as_a(pool_server: RunningServer, pool: ConnectionSettings) -> Iterator[psycopg.Connection[Any]]:
    """A session as strict-a's own login."""
    with psycopg.connect(
        **login_settings(pool_server, "strict-a").connect_kwargs(), autocommit=True
    ) as conn:
        yield conn


@pytest.fixture
def superuser(
    pool_server: RunningServer, pool: ConnectionSettings
) -> Iterator[psycopg.Connection[Any]]:
    settings = pool_server.superuser_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        yield conn


def tenants_seen(conn: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS))}


def registry(superuser: psycopg.Connection[Any]) -> dict[str, str]:
    rows = superuser.execute("SELECT tenant_id, status FROM tenantkit.tenants").fetchall()
    return dict(rows)


# -- provisioning ------------------------------------------------------------------------------


def test_each_tenant_gets_a_login_of_its_own_in_the_runtime_group_and_nothing_else(
    superuser: psycopg.Connection[Any],
) -> None:
    rows = superuser.execute(
        "SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolbypassrls, r.rolcreaterole, "
        "       array(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g "
        "             ON g.oid = m.roleid WHERE m.member = r.oid ORDER BY 1) "
        "  FROM pg_roles r WHERE r.rolname = ANY(%s) ORDER BY 1",
        ([tenant_names(t).pool_login for t in TENANTS],),
    ).fetchall()
    assert rows == [
        (f"tenant_{t}_pool", True, False, False, False, [POOL.runtime_role]) for t in TENANTS
    ]
    assert {t: registry(superuser)[t] for t in TENANTS} == dict.fromkeys(TENANTS, "active")


def test_the_pool_records_its_mode_and_every_protected_table_has_the_login_policy(
    superuser: psycopg.Connection[Any],
) -> None:
    assert superuser.execute("SELECT mode FROM tenantkit.pool_mode").fetchall() == [("strict",)]
    expressions = {
        row[0]
        for row in superuser.execute(
            "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = %s",
            ("tenantkit_isolation",),
        )
    }
    assert len(expressions) == 1
    (expression,) = expressions
    assert f"{LOGIN_TENANT_FUNCTION}()" in expression
    assert "current_setting" not in expression
    assert "tenants" not in expression


def test_replaying_the_pool_and_its_batches_changes_nothing(
    pool: ConnectionSettings, aws: Any, config: HandlerConfig
) -> None:
    assert handle(event("Create", pool_props(aws)), config)["Data"]["Changes"] == "0"
    for props in batch_props(aws, {t: "retain" for t in TENANTS}).values():
        assert handle(event("Create", props), config)["Data"]["Changes"] == "0"


def test_a_login_without_a_password_secret_authenticates_with_iam_only(
    aws: Any, config: HandlerConfig, pool_server: RunningServer, superuser: psycopg.Connection[Any]
) -> None:
    # GIVEN a tenant registered without a password secret (as in AWS)
    entries = pool_batches([("strict-iam", "retain")])
    for batch, items in entries.items():
        handle(event("Create", pool_tenants_properties(batch, items, mode="strict")), config)
    login = tenant_names("strict-iam").pool_login
    # THEN its login is granted rds_iam (RDS then accepts IAM tokens and refuses passwords)
    # and has no password to log in with here
    member = superuser.execute(
        "SELECT pg_has_role(%s, 'rds_iam', 'MEMBER'), pg_has_role(%s, %s, 'MEMBER')",
        (login, login, POOL.runtime_role),
    ).fetchone()
    assert member == (True, True)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**pool_server.settings(login, "guess", POOL.database).connect_kwargs())


def test_a_batch_for_the_other_mode_is_refused_before_any_change(
    aws: Any, config: HandlerConfig, superuser: psycopg.Connection[Any]
) -> None:
    props = next(iter(batch_props(aws, {"strict-wrong": "retain"}, mode="settable").values()))
    with pytest.raises(InvalidRequestError, match="is for a settable pool, but the pool"):
        handle(event("Create", props), config)
    assert "strict-wrong" not in registry(superuser)


def test_a_password_secret_in_a_settable_batch_is_refused(config: HandlerConfig) -> None:
    props = pool_tenants_properties(
        "batch-01",
        [{"Id": "abc", "RemovalPolicy": "retain", "PasswordSecretArn": "arn:aws:x"}],
    )
    with pytest.raises(InvalidRequestError, match="only a strict pool's tenants have logins"):
        handle(event("Create", props), config)


# -- what the policy form does ---------------------------------------------------------------


def test_a_tenants_login_sees_and_writes_only_its_own_rows(as_a: psycopg.Connection[Any]) -> None:
    assert tenants_seen(as_a) == {"strict-a"}
    found = as_a.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = 'strict-b'").format(PROJECTS)
    ).fetchone()
    assert found == (0,)
    with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
        as_a.execute(sql.SQL("INSERT INTO {} VALUES ('strict-b', 99, 'planted')").format(PROJECTS))


def explain(conn: psycopg.Connection[Any], statement: sql.Composable) -> str:
    return "\n".join(row[0] for row in conn.execute(sql.SQL("EXPLAIN {}").format(statement)))


def test_the_policy_is_the_logins_tenant_as_a_constant_and_uses_the_tenant_index(
    as_a: psycopg.Connection[Any],
) -> None:
    with tenant_transaction(as_a, "strict-a", strict=True):
        as_a.execute("SET LOCAL enable_seqscan = off")  # a tiny table: can the index serve it?
        plan = explain(as_a, sql.SQL("SELECT * FROM {} WHERE project_id = 1").format(PROJECTS))
        update = explain(
            as_a, sql.SQL("UPDATE {} SET name = name WHERE project_id = 1").format(PROJECTS)
        )
    # computed while planning: no InitPlan, no registry lookup per statement
    assert "InitPlan" not in plan + update
    assert "tenants" not in plan + update
    assert "Index Scan using projects_" in plan
    for explained in (plan, update):
        conditions = [line for line in explained.splitlines() if "Index Cond:" in line]
        assert len(conditions) == 1
        assert "(tenant_id = 'strict-a'::text)" in conditions[0]


def test_the_shared_login_plans_no_row_at_all(pool: ConnectionSettings) -> None:
    with psycopg.connect(**pool.connect_kwargs(), autocommit=True) as shared:
        plan = explain(shared, sql.SQL("SELECT * FROM {}").format(PROJECTS))
        assert "One-Time Filter: false" in plan
        assert tenants_seen(shared) == set()


def test_a_plan_made_for_one_login_is_made_again_for_another(
    superuser: psycopg.Connection[Any],
) -> None:
    # The tenant is computed while planning (login_tenant() is declared immutable): a session
    # that changes its session_user (only one a superuser logged in to can) must not reuse a
    # prepared statement's plan, generic after five runs, made for the login before.
    a, b = tenant_names("strict-a").pool_login, tenant_names("strict-b").pool_login
    superuser.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(a)))
    try:
        superuser.execute(
            sql.SQL("PREPARE projects_seen AS SELECT tenant_id FROM {}").format(PROJECTS)
        )
        for _ in range(7):
            assert superuser.execute("EXECUTE projects_seen").fetchall() == [("strict-a",)]
        superuser.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(b)))
        assert superuser.execute("EXECUTE projects_seen").fetchall() == [("strict-b",)]
        superuser.execute("RESET SESSION AUTHORIZATION")
        superuser.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(POOL.runtime_role)))
        # the superuser's own session_user again, which is no tenant's login: nothing
        assert superuser.execute("EXECUTE projects_seen").fetchall() == []
    finally:
        superuser.execute("RESET SESSION AUTHORIZATION")
        superuser.execute("DEALLOCATE ALL")


def test_search_path_cannot_change_what_login_tenant_calls(
    as_a: psycopg.Connection[Any], superuser: psycopg.Connection[Any]
) -> None:
    # GIVEN a schema of look-alikes of what login_tenant() calls, each naming strict-b (made
    # by the superuser: the runtime may create no function anywhere, this is the layer below)
    superuser.execute("CREATE SCHEMA hostile")
    superuser.execute("GRANT USAGE ON SCHEMA hostile TO PUBLIC")
    superuser.execute(
        "CREATE FUNCTION hostile.split_part(text, text, integer) RETURNS text "
        "LANGUAGE sql IMMUTABLE RETURN 'strict-b'"
    )
    superuser.execute(
        "CREATE FUNCTION hostile.concat(text, text, text) RETURNS text "
        "LANGUAGE sql IMMUTABLE RETURN 'tenant_strict-b_pool'"
    )
    superuser.execute(
        "CREATE FUNCTION hostile.always(text, text) RETURNS boolean LANGUAGE sql RETURN true"
    )
    superuser.execute(
        "CREATE OPERATOR hostile.= (FUNCTION = hostile.always, LEFTARG = text, RIGHTARG = text)"
    )
    try:
        # WHEN strict-a's session puts them before pg_catalog
        as_a.execute("SET search_path = hostile, pg_catalog")
        assert as_a.execute("SELECT split_part('a_b', '_', 2)").fetchone() == ("strict-b",)
        # THEN every name in the function's body is schema-qualified: its own tenant still
        assert tenants_seen(as_a) == {"strict-a"}
        login_tenant = sql.SQL("SELECT {}.{}()").format(
            sql.Identifier(POOL.registry_schema), sql.Identifier(LOGIN_TENANT_FUNCTION)
        )
        assert as_a.execute(login_tenant).fetchone() == ("strict-a",)
    finally:
        superuser.execute("DROP SCHEMA hostile CASCADE")


def test_setting_the_tenant_variable_to_another_tenant_changes_nothing(
    as_a: psycopg.Connection[Any],
) -> None:
    as_a.execute("SELECT set_config(%s, 'strict-b', false)", (POOL.tenant_setting,))
    assert tenants_seen(as_a) == {"strict-a"}
    with as_a.transaction():
        as_a.execute(
            sql.SQL("SET LOCAL {} = 'strict-b'").format(sql.Identifier("app", "tenant_id"))
        )
        assert tenants_seen(as_a) == {"strict-a"}


def test_set_role_cannot_become_another_tenant_and_the_runtime_group_is_still_the_login(
    as_a: psycopg.Connection[Any],
) -> None:
    other = tenant_names("strict-b").pool_login
    with pytest.raises(errors.InsufficientPrivilege, match="permission denied to set role"):
        as_a.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(other)))
    with pytest.raises(errors.InsufficientPrivilege, match="set session authorization"):
        as_a.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(other)))
    # SET ROLE to the group it is a member of changes current_user, never session_user
    as_a.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(POOL.runtime_role)))
    who = as_a.execute("SELECT current_user, session_user").fetchone()
    assert who == (POOL.runtime_role, tenant_names("strict-a").pool_login)
    assert tenants_seen(as_a) == {"strict-a"}


def test_functions_and_views_run_as_their_owner_see_no_tenant(
    pool_server: RunningServer, as_a: psycopg.Connection[Any]
) -> None:
    # GIVEN application code that reads through a SECURITY DEFINER function and a view that
    # is not security_invoker, both owned by the pool owner (as a migration would make them),
    # and a SECURITY INVOKER function that trusts the setting
    admin_settings = pool_server.admin_settings(POOL.database)
    with psycopg.connect(**admin_settings.connect_kwargs(), autocommit=True) as admin:
        admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(POOL.owner_role)))
        admin.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {s}.all_projects() RETURNS SETOF text "
                "LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog "
                "AS 'SELECT tenant_id FROM {s}.projects';"
                "CREATE OR REPLACE FUNCTION {s}.claimed_projects() RETURNS SETOF text "
                "LANGUAGE sql AS $$SELECT tenant_id FROM {s}.projects "
                "WHERE tenant_id = current_setting('app.tenant_id', true)$$;"
                "CREATE OR REPLACE VIEW {s}.projects_as_owner AS "
                "SELECT tenant_id FROM {s}.projects;"
                "GRANT EXECUTE ON FUNCTION {s}.all_projects(), {s}.claimed_projects() TO {rt};"
                "GRANT SELECT ON {s}.projects_as_owner TO {rt}"
            ).format(s=sql.Identifier(POOL.sample_schema), rt=sql.Identifier(POOL.runtime_role))
        )
    try:
        # WHEN strict-a's login reads through each, having set the variable to strict-b
        as_a.execute("SELECT set_config(%s, 'strict-b', false)", (POOL.tenant_setting,))
        definer = as_a.execute("SELECT * FROM tenantkit_sample.all_projects()").fetchall()
        claimed = as_a.execute("SELECT * FROM tenantkit_sample.claimed_projects()").fetchall()
        view = as_a.execute("SELECT * FROM tenantkit_sample.projects_as_owner").fetchall()
        xml = as_a.execute(
            "SELECT query_to_xml('SELECT tenant_id FROM tenantkit_sample.projects', "
            "false, false, '')::text"
        ).fetchone()
    finally:
        with psycopg.connect(**admin_settings.connect_kwargs(), autocommit=True) as admin:
            admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(POOL.owner_role)))
            admin.execute(
                "DROP FUNCTION tenantkit_sample.all_projects(), "
                "tenantkit_sample.claimed_projects();"
                "DROP VIEW tenantkit_sample.projects_as_owner"
            )
    # THEN the owner's (FORCE row-level security, and no policy of the owner's) sees nothing,
    # and what runs as the login sees the login's tenant only
    assert definer == []
    assert view == []
    assert claimed == []
    assert xml is not None
    assert "strict-b" not in xml[0]
    assert "strict-a" in xml[0]


def test_the_shared_runtime_login_sees_no_tenant_in_a_strict_pool(
    pool: ConnectionSettings,
) -> None:
    with psycopg.connect(**pool.connect_kwargs(), autocommit=True) as shared:
        assert tenants_seen(shared) == set()
        with tenant_transaction(shared, "strict-a"):
            assert tenants_seen(shared) == set()
            registry_rows = shared.execute("SELECT tenant_id FROM tenantkit.tenants").fetchall()
    assert registry_rows == []


def test_a_login_sees_only_its_own_registry_row(as_a: psycopg.Connection[Any]) -> None:
    as_a.execute("SELECT set_config(%s, 'strict-b', false)", (POOL.tenant_setting,))
    rows = as_a.execute("SELECT tenant_id FROM tenantkit.tenants").fetchall()
    assert rows == [("strict-a",)]


def test_strict_tenant_transaction_refuses_a_connection_of_another_login(
    as_a: psycopg.Connection[Any],
) -> None:
    with pytest.raises(TenantContextError, match="not as 'tenant_strict-b_pool'"):
        tenant_transaction(as_a, "strict-b", strict=True)
    with tenant_transaction(as_a, "strict-a", strict=True):
        assert tenants_seen(as_a) == {"strict-a"}


def test_a_weakened_policy_on_current_user_lets_a_granted_login_switch_tenant(
    pool_server: RunningServer, superuser: psycopg.Connection[Any]
) -> None:
    # The control for the session_user choice: with the policy on current_user, a login that
    # was (by mistake) made a member of another tenant's login reads that tenant after SET
    # ROLE; with session_user it still reads its own.
    a, b = tenant_names("strict-a").pool_login, tenant_names("strict-b").pool_login
    weakened = (
        "tenant_id = (SELECT split_part(current_user::text COLLATE \"default\", '_', 2) "
        "WHERE current_user::text LIKE 'tenant\\_%\\_pool')"
    )
    superuser.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(b), sql.Identifier(a)))
    try:
        with psycopg.connect(
            **login_settings(pool_server, "strict-a").connect_kwargs(), autocommit=True
        ) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(b)))
            assert tenants_seen(conn) == {"strict-a"}  # session_user: still strict-a
            superuser.execute(
                sql.SQL("ALTER POLICY tenantkit_isolation ON {} USING ({})").format(
                    PROJECTS, sql.SQL(weakened)
                )
            )
            assert tenants_seen(conn) == {"strict-b"}  # current_user: the leak
    finally:
        superuser.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(b), sql.Identifier(a)))
        superuser.execute(
            sql.SQL("ALTER POLICY tenantkit_isolation ON {} USING ({})").format(
                PROJECTS, sql.SQL(STRICT_TENANT_CONDITION)
            )
        )


# -- the lifecycle on the login ----------------------------------------------------------------


def test_suspending_disables_the_login_ends_its_sessions_and_resuming_brings_it_back(
    aws: Any, config: HandlerConfig, pool_server: RunningServer, superuser: psycopg.Connection[Any]
) -> None:
    # GIVEN strict-c with an open session
    tenant = {"strict-c": "retain"}
    (batch,) = batch_props(aws, tenant)
    active = batch_props(aws, tenant)[batch]
    suspended = batch_props(aws, tenant, suspended=("strict-c",))[batch]
    settings = login_settings(pool_server, "strict-c")
    session = psycopg.connect(**settings.connect_kwargs(), autocommit=True)
    assert tenants_seen(session) == {"strict-c"}

    # WHEN it is suspended (an Update of its batch), and the Update is replayed
    handle(event("Update", suspended, active), config)
    replay = handle(event("Update", suspended, active), config)

    # THEN the open session is ended, a new one is refused, the registry says suspended, and
    # the replay changed nothing
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(**settings.connect_kwargs())
    assert registry(superuser)["strict-c"] == "suspended"
    assert replay["Data"]["Changes"] == "0"

    # WHEN it is resumed THEN its login works again and its rows are there
    handle(event("Update", active, suspended), config)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        assert tenants_seen(conn) == {"strict-c"}
    assert registry(superuser)["strict-c"] == "active"


def test_offboarding_keeps_the_rows_disables_the_login_and_onboarding_again_restores_it(
    aws: Any, config: HandlerConfig, pool_server: RunningServer, superuser: psycopg.Connection[Any]
) -> None:
    tenant = {"strict-leaver": "retain"}
    ((batch, props),) = batch_props(aws, tenant).items()
    handle(event("Create", props), config)
    settings = login_settings(pool_server, "strict-leaver")
    session = psycopg.connect(**settings.connect_kwargs(), autocommit=True)
    empty = pool_tenants_properties(batch, [], mode="strict")

    handle(event("Update", empty, props), config)

    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(**settings.connect_kwargs())
    assert registry(superuser)["strict-leaver"] == "offboarded"
    handle(event("Update", props, empty), config)
    with psycopg.connect(**settings.connect_kwargs()) as conn:
        assert conn.execute("SELECT session_user").fetchone() == ("tenant_strict-leaver_pool",)


def test_destroy_deletes_the_rows_and_drops_the_login(
    aws: Any, config: HandlerConfig, pool_server: RunningServer, superuser: psycopg.Connection[Any]
) -> None:
    tenant = {"strict-gone": "destroy"}
    ((batch, props),) = batch_props(aws, tenant).items()
    handle(event("Create", props), config)
    with psycopg.connect(**login_settings(pool_server, "strict-gone").connect_kwargs()) as conn:
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('strict-gone', 1, 'x')").format(PROJECTS))
        conn.commit()

    handle(event("Delete", props), config)

    left = superuser.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM {} WHERE tenant_id = 'strict-gone'), "
            "(SELECT count(*) FROM pg_roles WHERE rolname = 'tenant_strict-gone_pool')"
        ).format(PROJECTS)
    ).fetchone()
    assert left == (0, 0)
    assert pool_batch_of("strict-gone") == batch


def test_the_offboarded_probe_tenant_cannot_log_in(pool_server: RunningServer) -> None:
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(**login_settings(pool_server, PROBE_TENANT_IDS[2]).connect_kwargs())
    with psycopg.connect(**login_settings(pool_server, PROBE_TENANT_IDS[0]).connect_kwargs()) as c:
        assert tenants_seen(c) == {PROBE_TENANT_IDS[0]}


# -- the attack suite on a strict pool ---------------------------------------------------------


def probe_logins(server: RunningServer) -> Any:
    """How the suite logs in as each probe tenant's own login."""
    return lambda tenant: login_settings(server, tenant)


def test_every_attack_on_a_strict_pool_is_blocked(
    pool: ConnectionSettings, pool_server: RunningServer
) -> None:
    results = run_pool_attacks(pool, logins=probe_logins(pool_server))
    names = {r.attack for r in results}
    assert [(r.attack, r.detail) for r in results if not r.blocked] == []
    # the strict attacks ran, and those on one connection reused by several tenants did not
    assert {
        "set_config to another tenant",
        "SET ROLE to another tenant's login",
        "SET SESSION AUTHORIZATION to another tenant's login",
        "read through a function that trusts the setting, set to another tenant",
        "read through a SECURITY DEFINER function owned by the app",
        "log in as an offboarded tenant",
    } <= names
    assert "context survives COMMIT on a reused connection" not in names
    assert len(results) >= 35


def test_a_strict_pool_is_not_attacked_without_the_probe_tenants_logins(
    pool: ConnectionSettings,
) -> None:
    with pytest.raises(StrictLoginsMissingError, match="is strict: its attacks run as the probe"):
        run_pool_attacks(pool)


STRICT_BREAKAGES = [
    pytest.param(
        [
            "ALTER POLICY tenantkit_isolation ON tenantkit_sample.projects "
            "USING (tenant_id = current_setting('app.tenant_id', true))"
        ],
        {
            "set_config to another tenant",
            "session SET of another tenant",
            "read through a function that trusts the setting, set to another tenant",
        },
        id="settable-policy-in-a-strict-pool",
    ),
    pytest.param(
        ['GRANT "tenant_tenantkit-probe-b_pool" TO "tenant_tenantkit-probe-a_pool"'],
        {"SET ROLE to another tenant's login"},
        id="a-login-member-of-another",
    ),
    pytest.param(
        ['ALTER ROLE "tenant_tenantkit-probe-gone_pool" LOGIN'],
        {"log in as an offboarded tenant"},
        id="offboarded-login-enabled",
    ),
    pytest.param(
        ["ALTER FUNCTION tenantkit_sample.projects_as_owner() OWNER TO postgres"],
        {"read through a SECURITY DEFINER function owned by the app"},
        id="definer-function-of-a-superuser",
    ),
]


@pytest.mark.parametrize(("breakage", "expected_leaks"), STRICT_BREAKAGES)
def test_the_suite_reports_leaks_when_a_strict_pool_is_weakened(
    breakage: list[str],
    expected_leaks: set[str],
    pool: ConnectionSettings,
    pool_server: RunningServer,
    aws: Any,
    config: HandlerConfig,
    superuser: psycopg.Connection[Any],
) -> None:
    for statement in breakage:
        superuser.execute(statement)
    try:
        results = run_pool_attacks(pool, logins=probe_logins(pool_server))
    finally:
        superuser.execute(
            'REVOKE "tenant_tenantkit-probe-b_pool" FROM "tenant_tenantkit-probe-a_pool"'
        )
        superuser.execute(
            f"ALTER FUNCTION tenantkit_sample.projects_as_owner() OWNER TO {POOL.owner_role}"
        )
        handle(event("Create", pool_props(aws)), config)  # the provisioner repairs the rest
    assert expected_leaks <= {r.attack for r in results if not r.blocked}
    repaired = run_pool_attacks(pool, logins=probe_logins(pool_server))
    assert [r.attack for r in repaired if not r.blocked] == []


# -- switching the pool between modes (last: they change the module's pool) --------------------


def test_a_strict_pool_switched_to_settable_disables_every_tenant_login_and_the_setting_works(
    aws: Any,
    config: HandlerConfig,
    pool: ConnectionSettings,
    pool_server: RunningServer,
    superuser: psycopg.Connection[Any],
) -> None:
    # GIVEN a session of strict-a's login
    session = psycopg.connect(
        **login_settings(pool_server, "strict-a").connect_kwargs(), autocommit=True
    )
    # WHEN the pool and then its batches are deployed in settable mode
    handle(event("Update", pool_props(aws, "settable"), pool_props(aws)), config)
    for batch, props in batch_props(aws, {t: "retain" for t in TENANTS}, mode="settable").items():
        old = batch_props(aws, {t: "retain" for t in TENANTS})[batch]
        handle(event("Update", props, old), config)

    # THEN no tenant login can log in (the session is ended), every table has the settable
    # policy, and the shared login reaches each tenant through the setting
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    logins = superuser.execute(
        "SELECT count(*) FILTER (WHERE rolcanlogin), count(*) FROM pg_roles "
        "WHERE rolname LIKE 'tenant\\_%\\_pool'"
    ).fetchone()
    assert logins is not None
    assert logins[0] == 0
    assert logins[1] >= len(TENANTS)
    assert superuser.execute("SELECT mode FROM tenantkit.pool_mode").fetchall() == [("settable",)]
    expressions = superuser.execute(
        "SELECT DISTINCT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = %s",
        ("tenantkit_isolation",),
    ).fetchall()
    assert len(expressions) == 1
    assert "current_setting" in expressions[0][0]
    with psycopg.connect(**pool.connect_kwargs(), autocommit=True) as shared:
        for tenant in TENANTS:
            with tenant_transaction(shared, tenant):
                assert tenants_seen(shared) == {tenant}
    assert handle(event("Create", pool_props(aws, "settable")), config)["Data"]["Changes"] == "0"


def test_a_settable_pool_switched_to_strict_gives_every_tenant_its_login_back(
    aws: Any,
    config: HandlerConfig,
    pool: ConnectionSettings,
    pool_server: RunningServer,
    superuser: psycopg.Connection[Any],
) -> None:
    # GIVEN the settable pool of the test before, with a table of the user's protected in it
    with psycopg.connect(
        **pool_server.admin_settings(POOL.database).connect_kwargs(), autocommit=True
    ) as admin:
        admin.execute("CREATE SCHEMA IF NOT EXISTS shop")
        admin.execute(
            "CREATE TABLE IF NOT EXISTS shop.orders (tenant_id text NOT NULL, id int NOT NULL, "
            "PRIMARY KEY (tenant_id, id))"
        )
    settable = pool_props(aws, "settable", tenant_tables=["shop.orders"])
    handle(event("Update", settable, pool_props(aws, "settable")), config)
    with psycopg.connect(**pool.connect_kwargs()) as shared, tenant_transaction(shared, "strict-b"):
        shared.execute("INSERT INTO shop.orders VALUES ('strict-b', 1)")

    # WHEN it is deployed in strict mode: the pool, then its batches
    strict = pool_props(aws, "strict", tenant_tables=["shop.orders"])
    converted = handle(event("Update", strict, settable), config)
    for batch, props in batch_props(aws, {t: "retain" for t in TENANTS}).items():
        old = batch_props(aws, {t: "retain" for t in TENANTS}, mode="settable")[batch]
        handle(event("Update", props, old), config)

    # THEN every protected table (the user's too) has the login policy, each tenant's login
    # reads its own rows in every table, the shared login none, and a replay changes nothing
    assert int(converted["Data"]["Changes"]) > 0
    expressions = superuser.execute(
        "SELECT DISTINCT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = %s",
        ("tenantkit_isolation",),
    ).fetchall()
    assert len(expressions) == 1
    assert f"{LOGIN_TENANT_FUNCTION}()" in expressions[0][0]
    with psycopg.connect(**login_settings(pool_server, "strict-b").connect_kwargs()) as conn:
        assert tenants_seen(conn) == {"strict-b"}
        assert conn.execute("SELECT tenant_id, id FROM shop.orders").fetchall() == [("strict-b", 1)]
    with psycopg.connect(**login_settings(pool_server, "strict-a").connect_kwargs()) as conn:
        assert conn.execute("SELECT count(*) FROM shop.orders").fetchone() == (0,)
    with psycopg.connect(**pool.connect_kwargs()) as shared, tenant_transaction(shared, "strict-b"):
        assert shared.execute("SELECT count(*) FROM shop.orders").fetchone() == (0,)
    assert handle(event("Create", strict), config)["Data"]["Changes"] == "0"


def test_deleting_a_strict_pool_disables_and_destroying_it_drops_every_tenant_login(
    aws: Any, config: HandlerConfig, pool_server: RunningServer
) -> None:
    handle(event("Delete", pool_props(aws)), config)
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(**login_settings(pool_server, "strict-a").connect_kwargs())
    handle(event("Delete", pool_props(aws, removal_policy="destroy")), config)
    with psycopg.connect(**pool_server.superuser_settings().connect_kwargs()) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenant\\_%\\_pool'"
        ).fetchone()
    assert left == (0,)
