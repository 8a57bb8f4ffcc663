"""Pure SQL planning: observed state in, ordered steps out. No database needed."""

from dataclasses import replace
from typing import Any

from lambda_src.core.steps import Step, transaction_groups
from lambda_src.provisioner.plans.pool_rls import LOGIN_TENANT
from lambda_src.provisioner.plans.tenant_database import (
    ObservedTenant,
    plan_converge,
    plan_destroy,
    plan_retain,
)
from lambda_src.provisioner.postgres import HOST_LOCK, POOL_LOCK, pool_batch_lock, tenant_lock
from lambda_src.provisioner.settings import TenantDatabaseSettings
from lambda_src.tenancy import tenant_names, validate_tenant_id

NAMES = tenant_names("acme")
VERIFIER = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"


def sql_of(steps: list[Step]) -> list[str]:
    return [step.statement.as_string(None) for step in steps]


def converge(
    observed: ObservedTenant, *, password_verifier: str | None = VERIFIER, **overrides: Any
) -> list[Step]:
    settings = TenantDatabaseSettings(
        **{"connection_limit": 20, "statement_timeout_ms": 30000, **overrides}
    )
    return plan_converge(NAMES, observed, settings, password_verifier=password_verifier)


CONVERGED = ObservedTenant(
    login_enabled={
        NAMES.owner_role: False,
        NAMES.objects_role: False,
        NAMES.login_role: True,
        NAMES.iam_user: True,
    },
    database_owner=NAMES.owner_role,
    connection_limit=20,
    database_settings=("statement_timeout=30000",),
    rds_iam_exists=True,
)


def test_a_new_tenant_gets_owner_login_iam_user_and_database() -> None:
    statements = sql_of(converge(ObservedTenant(rds_iam_exists=True)))
    assert 'CREATE ROLE "tenant_acme_owner" NOLOGIN' in statements
    assert 'CREATE ROLE "tenant_acme_app" LOGIN' in statements
    assert 'CREATE ROLE "tenant_acme_iam" LOGIN' in statements
    assert 'GRANT "rds_iam" TO "tenant_acme_iam"' in statements
    assert (
        'CREATE DATABASE "tenant_acme" OWNER "tenant_acme_owner" CONNECTION LIMIT 20' in statements
    )
    assert 'ALTER DATABASE "tenant_acme" SET statement_timeout = 30000' in statements


def test_public_loses_connect_temp_and_schema_create() -> None:
    steps = converge(ObservedTenant(rds_iam_exists=True))
    statements = sql_of(steps)
    assert 'REVOKE ALL ON DATABASE "tenant_acme" FROM PUBLIC' in statements
    schema_revoke = next(s for s in steps if "ON SCHEMA public FROM PUBLIC" in sql_of([s])[0])
    assert schema_revoke.database == "tenant_acme"
    assert (
        'GRANT CONNECT, TEMPORARY ON DATABASE "tenant_acme" TO "tenant_acme_app", "tenant_acme_iam"'
        in statements
    )


def test_owner_is_created_before_the_database_it_owns() -> None:
    statements = sql_of(converge(ObservedTenant(rds_iam_exists=True)))
    owner = statements.index('CREATE ROLE "tenant_acme_owner" NOLOGIN')
    database = next(i for i, s in enumerate(statements) if s.startswith("CREATE DATABASE"))
    assert owner < database


def test_only_the_scram_verifier_reaches_sql_text() -> None:
    statements = sql_of(converge(ObservedTenant(rds_iam_exists=True)))
    assert f"ALTER ROLE \"tenant_acme_app\" PASSWORD '{VERIFIER}'" in statements


def test_a_converged_tenant_plans_no_changes() -> None:
    steps = converge(CONVERGED)
    assert [s.description for s in steps if s.changes] == []
    assert not any(s.startswith(("CREATE", "DROP")) for s in sql_of(steps))


def test_changed_settings_are_applied_in_place() -> None:
    steps = converge(CONVERGED, connection_limit=50, statement_timeout_ms=0)
    changed = sql_of([s for s in steps if s.changes])
    assert changed == [
        'ALTER DATABASE "tenant_acme" CONNECTION LIMIT 50',
        'ALTER DATABASE "tenant_acme" RESET statement_timeout',
    ]


def test_a_retained_tenant_gets_its_logins_back_on_create() -> None:
    offboarded = ObservedTenant(
        login_enabled={
            NAMES.owner_role: False,
            NAMES.objects_role: False,
            NAMES.login_role: False,
            NAMES.iam_user: False,
        },
        database_owner=NAMES.owner_role,
        connection_limit=20,
        database_settings=("statement_timeout=30000",),
        rds_iam_exists=True,
    )
    changed = sql_of([s for s in converge(offboarded) if s.changes])
    assert changed == ['ALTER ROLE "tenant_acme_app" LOGIN', 'ALTER ROLE "tenant_acme_iam" LOGIN']


def test_both_logins_start_as_the_objects_role_and_only_it_may_create_in_schema_public() -> None:
    steps = converge(CONVERGED)
    statements = sql_of(steps)
    assert (
        'GRANT "tenant_acme_objects" TO "tenant_acme_app", "tenant_acme_iam" '
        "WITH INHERIT FALSE, SET TRUE" in statements
    )
    for login in ("tenant_acme_app", "tenant_acme_iam"):
        assert (
            f'ALTER ROLE "{login}" IN DATABASE "tenant_acme" SET role = "tenant_acme_objects"'
            in statements
        )
    schema = {sql_of([s])[0]: s.database for s in steps if "ON SCHEMA public" in sql_of([s])[0]}
    assert schema['GRANT USAGE, CREATE ON SCHEMA public TO "tenant_acme_objects"'] == "tenant_acme"
    assert schema['REVOKE ALL ON SCHEMA public FROM "tenant_acme_app", "tenant_acme_iam"'] == (
        "tenant_acme"
    )
    assert not any("REASSIGN" in s for s in statements)


def test_objects_the_logins_own_from_before_go_to_the_objects_role() -> None:
    steps = converge(replace(CONVERGED, logins_own_objects=True))
    reassign = next(s for s in steps if sql_of([s])[0].startswith("REASSIGN"))
    assert sql_of([reassign]) == [
        'REASSIGN OWNED BY "tenant_acme_app", "tenant_acme_iam" TO "tenant_acme_objects"'
    ]
    assert reassign.database == "tenant_acme"
    assert reassign.changes
    assert 'GRANT "tenant_acme_app", "tenant_acme_iam" TO CURRENT_USER' in sql_of(steps)


def test_turning_iam_auth_off_disables_the_iam_user() -> None:
    steps = converge(CONVERGED, iam_auth=False)
    statements = sql_of(steps)
    assert 'ALTER ROLE "tenant_acme_iam" NOLOGIN' in statements
    assert 'GRANT CONNECT, TEMPORARY ON DATABASE "tenant_acme" TO "tenant_acme_app"' in statements


def test_retain_disables_logins_and_drops_nothing() -> None:
    statements = sql_of(plan_retain(NAMES, CONVERGED))
    assert statements[:2] == [
        'ALTER ROLE "tenant_acme_app" NOLOGIN',
        'ALTER ROLE "tenant_acme_iam" NOLOGIN',
    ]
    assert not any("DROP" in s for s in statements)


def test_destroy_drops_database_then_every_existing_role() -> None:
    statements = sql_of(plan_destroy(NAMES, CONVERGED))
    assert 'DROP DATABASE IF EXISTS "tenant_acme" WITH (FORCE)' in statements
    drops = [s for s in statements if s.startswith("DROP ROLE")]
    assert drops == [
        'DROP ROLE IF EXISTS "tenant_acme_app"',
        'DROP ROLE IF EXISTS "tenant_acme_iam"',
        'DROP ROLE IF EXISTS "tenant_acme_objects"',
        'DROP ROLE IF EXISTS "tenant_acme_owner"',
    ]
    assert statements.index('DROP OWNED BY "tenant_acme_app"') < statements.index(drops[0])


def test_destroy_of_a_tenant_that_is_gone_plans_no_changes() -> None:
    assert [s for s in plan_destroy(NAMES, ObservedTenant()) if s.changes] == []


def test_session_termination_binds_role_names_as_values() -> None:
    terminate = plan_retain(NAMES, ObservedTenant())[-1]
    assert "%s" in sql_of([terminate])[0]
    assert terminate.params == ([NAMES.login_role, NAMES.iam_user],)


def test_advisory_lock_key_is_stable_signed_64_bit_and_per_tenant() -> None:
    key = tenant_lock("acme").key
    assert key == tenant_lock("acme").key
    assert key != tenant_lock("globex").key
    assert -(2**63) <= key < 2**63


def test_a_tenant_named_like_a_host_wide_lock_does_not_share_its_key() -> None:
    # `host` and `pool-batch` are valid tenant ids; their locks must not be the host's or a
    # batch's, or onboarding such a tenant would wait for (or block) unrelated work.
    assert validate_tenant_id("host") == "host"
    keys = {
        tenant_lock("host").key,
        tenant_lock("pool").key,
        tenant_lock("batch-07").key,
        HOST_LOCK.key,
        POOL_LOCK.key,
        pool_batch_lock("batch-07").key,
    }
    assert len(keys) == 6


def test_purge_order_deletes_referencing_tables_first() -> None:
    from lambda_src.provisioner.plans.pool_rls import purge_order

    order = purge_order(
        {
            "app.projects": [],
            "app.tasks": ["app.projects"],
            "app.comments": ["app.tasks", "app.projects"],
            "app.tags": [],
        }
    )
    assert order.index("app.comments") < order.index("app.tasks") < order.index("app.projects")
    assert sorted(order) == ["app.comments", "app.projects", "app.tags", "app.tasks"]


def test_purge_order_survives_a_self_reference_and_a_cycle() -> None:
    from lambda_src.provisioner.plans.pool_rls import purge_order

    order = purge_order({"a.t": ["a.t", "a.u"], "a.u": ["a.t"]})
    assert sorted(order) == ["a.t", "a.u"]


def test_qualified_names_from_regclass_output_split_into_identifiers() -> None:
    from lambda_src.provisioner.plans.pool_rls import split_qualified_name

    assert split_qualified_name("app.tasks") == ["app", "tasks"]
    assert split_qualified_name('"My Schema"."odd.name"') == ["My Schema", "odd.name"]
    assert split_qualified_name('"quo""te".t') == ['quo"te', "t"]


def test_purge_binds_tenant_ids_and_quotes_table_names() -> None:
    from lambda_src.provisioner.plans.pool import plan_purge

    steps = plan_purge(["a"], "batch-01", {'"x y".t': []})
    # offboarding is recorded first, the rows go, then offboarded and the registry row
    assert [s.description for s in steps] == [
        "mark 1 tenant(s) offboarding",
        'delete the rows of 1 pool tenant(s) from "x y".t',
        "mark 1 tenant(s) offboarded",
        "remove 1 tenant(s) from the registry",
    ]
    assert sql_of(steps)[1] == 'DELETE FROM "x y"."t" WHERE tenant_id = ANY(%s)'
    assert steps[1].params == (["a"],)
    assert steps[1].role == "tenantkit_pool_maintainer"


def test_pool_converge_keeps_the_runtime_away_from_owner_and_temp() -> None:
    from lambda_src.provisioner.plans.pool import ObservedPool, plan_pool_converge

    statements = sql_of(
        plan_pool_converge(
            ObservedPool(rds_iam_exists=True),
            iam_auth=True,
            password_verifier=VERIFIER,
            tables=["shop.orders"],
            views=[],
            verify_probes=True,
        )
    )
    assert 'GRANT CONNECT ON DATABASE "tenantkit_pool" TO "tenantkit_pool_runtime"' in statements
    assert not any("TEMP" in s and "tenantkit_pool_runtime" in s for s in statements)
    assert not any(
        s.startswith("GRANT") and '"tenantkit_pool_owner" TO "tenantkit_pool_app"' in s
        for s in statements
    )
    assert statements.count('CALL "tenantkit".protect_table(%s::regclass)') == 3


def test_steps_share_a_transaction_except_create_database() -> None:

    steps = converge(ObservedTenant(rds_iam_exists=True))
    groups = transaction_groups(steps)
    creates = [g for g in groups if any("CREATE DATABASE" in s for s in sql_of(g))]
    assert len(creates) == 1
    assert len(creates[0]) == 1
    assert not creates[0][0].transactional
    # roles before, grants after, schema inside the new database: four commits in all
    assert len(groups) == 4
    assert {g[0].database for g in groups} == {None, "tenant_acme"}


def test_host_hardening_revokes_only_what_is_still_open() -> None:
    from lambda_src.provisioner.plans.host import plan_host_hardening

    assert sql_of(plan_host_hardening(["template1"])) == [
        'REVOKE ALL ON DATABASE "template1" FROM PUBLIC'
    ]
    assert plan_host_hardening([]) == []
    assert sql_of(plan_host_hardening([], proxy_monitor_lacks_connect=True)) == [
        'GRANT CONNECT ON DATABASE postgres TO "rdsproxyadmin"'
    ]


def test_a_suspended_tenant_converges_with_its_logins_disabled_and_sessions_ended() -> None:
    steps = converge(CONVERGED, password_verifier=None, suspended=True)

    changing = [s.description for s in steps if s.changes]
    assert changing == [
        f"disable login of {NAMES.login_role}",
        f"disable login of {NAMES.iam_user}",
    ]
    assert steps[-1].description == f"end sessions of {NAMES.tenant_id}'s login roles"
    assert not any(s.description.startswith("drop") for s in steps)


def test_a_new_suspended_tenant_gets_its_roles_without_login() -> None:
    statements = sql_of(converge(ObservedTenant(rds_iam_exists=True), suspended=True))

    assert f'CREATE ROLE "{NAMES.login_role}" NOLOGIN' in statements
    assert f'CREATE ROLE "{NAMES.iam_user}" NOLOGIN' in statements


def test_pool_converge_without_verify_probes_creates_none_and_removes_them() -> None:
    from lambda_src.provisioner.plans.pool import ObservedPool, plan_pool_converge

    def converge_pool(verify_probes: bool) -> list[str]:
        steps = plan_pool_converge(
            ObservedPool(rds_iam_exists=True),
            iam_auth=True,
            password_verifier=VERIFIER,
            tables=["shop.orders"],
            views=[],
            verify_probes=verify_probes,
        )
        return [step.description for step in steps]

    on, off = converge_pool(True), converge_pool(False)
    assert "create the sample schema" in on
    assert "register the verify probe tenants" in on
    assert not [d for d in off if "sample" in d and "remove" not in d]
    assert not [d for d in off if "probe" in d and "remove" not in d]
    assert off[-2:] == [
        "remove the verify probes' rows and the sample schema",
        "remove 3 tenant(s) from the registry",
    ]
    assert off.count("protect table shop.orders") == 1
    assert [d for d in off if d.startswith("protect table")] == ["protect table shop.orders"]


# -- strict mode -------------------------------------------------------------------------------


def test_tenant_logins_are_created_enabled_or_not_and_granted_in_one_statement_each() -> None:
    from lambda_src.provisioner.plans.pool_logins import TenantLogin, plan_tenant_logins

    logins = [
        TenantLogin("tenant_new_pool", True),
        TenantLogin("tenant_back_pool", True, VERIFIER),
        TenantLogin("tenant_paused_pool", False),
    ]
    existing = {"tenant_back_pool": False, "tenant_paused_pool": True}
    statements = sql_of(plan_tenant_logins(logins, existing))
    assert statements == [
        'CREATE ROLE "tenant_new_pool" LOGIN',
        'ALTER ROLE "tenant_back_pool" LOGIN',
        'ALTER ROLE "tenant_paused_pool" NOLOGIN',
        'GRANT "tenantkit_pool_runtime" TO "tenant_new_pool", "tenant_back_pool", '
        '"tenant_paused_pool"',
        # IAM auth for those without a password secret; a password for the one with
        'GRANT "rds_iam" TO "tenant_new_pool", "tenant_paused_pool"',
        f"ALTER ROLE \"tenant_back_pool\" PASSWORD '{VERIFIER}'",
    ]


def test_sessions_of_disabled_logins_are_ended_after_the_disabling_commits() -> None:
    from lambda_src.provisioner.plans.pool_logins import plan_disable_logins, plan_end_sessions

    steps = plan_disable_logins(["tenant_x_pool"], {"tenant_x_pool": True}) + plan_end_sessions(
        ["tenant_x_pool"]
    )
    groups = transaction_groups(steps)
    # two groups: the NOLOGIN commits before any session is ended, so none can reconnect
    assert [len(g) for g in groups] == [1, 1]
    assert not groups[1][0].transactional
    assert steps[1].params == (["tenant_x_pool"],)


def test_a_pool_in_strict_mode_bakes_the_login_policy_into_protect_table() -> None:
    from lambda_src.provisioner.plans.pool import ObservedPool, plan_pool_converge

    def converge_pool(mode: Any, observed_mode: Any) -> list[Step]:
        return plan_pool_converge(
            ObservedPool(rds_iam_exists=True, database_exists=True, mode=observed_mode),
            iam_auth=True,
            password_verifier=VERIFIER,
            tables=[],
            views=[],
            verify_probes=True,
            mode=mode,
        )

    strict = converge_pool("strict", "strict")
    procedure = next(s for s in strict if s.description == "create protect_table()")
    text = procedure.statement.as_string(None)
    assert LOGIN_TENANT in text
    assert "current_setting" not in text
    assert "put every protected table under the strict policies" not in [
        s.description for s in strict
    ]
    # from the other mode: every protected table is put under the new policies, in the same
    # transaction as the procedure that now carries them
    converted = converge_pool("strict", "settable")
    reprotect = next(
        s
        for s in converted
        if s.description == "put every protected table under the strict policies"
    )
    group = next(g for g in transaction_groups(converted) if reprotect in g)
    assert procedure.description in [s.description for s in group]


def test_a_settable_pool_disables_every_tenant_login_left_from_a_strict_past() -> None:
    from lambda_src.provisioner.plans.pool import ObservedPool, plan_pool_converge

    steps = plan_pool_converge(
        ObservedPool(
            rds_iam_exists=True,
            database_exists=True,
            mode="strict",
            tenant_logins={"tenant_a_pool": True, "tenant_b_pool": False},
        ),
        iam_auth=True,
        password_verifier=VERIFIER,
        tables=[],
        views=[],
        verify_probes=True,
    )
    descriptions = [s.description for s in steps]
    assert "disable login of tenant_a_pool" in descriptions
    assert "disable login of tenant_b_pool" not in descriptions
    assert descriptions[-1] == "end the sessions of 2 pool login(s)"
