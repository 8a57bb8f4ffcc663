"""The table attacks on a strict pool whose schema a migration made (the embedded PostgreSQL):
they run as the probe tenants' own logins, every one is blocked on the migrated tables, a
weakened table is reported as a leak, and the probe rows committed for the attacks are gone
afterwards (or reported if they cannot be deleted)."""

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from lambda_src.core.connection import ConnectionSettings
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS
from tenantkit.embedded_pg import RunningServer
from tenantkit.verify import run_pool_attacks
from tenantkit.verify.tables import STRICT_TABLE_ATTACKS, TABLE_ATTACKS, table_attacks_for

from .pool_fixtures import PASSWORD, aws, config, pool_server  # noqa: F401 (fixtures)
from .strict_pool_fixtures import login_settings, provision_strict_pool
from .table_attack_fixtures import SCHEMAS, SHARED, VICTIM, migrate_pool

A, B, _ = PROBE_TENANT_IDS
EVERY_ATTACK = set(table_attacks_for("strict"))


@pytest.fixture(scope="module")
def runtime(
    pool_server: RunningServer, aws: Any, config: HandlerConfig, tmp_path_factory: Any
) -> ConnectionSettings:
    """A strict pool (probe tenants with password logins), migrated: the runtime login."""
    arn = aws.describe_secret(SecretId=POOL.secret_name)["ARN"]
    provision_strict_pool(pool_server, config, aws, (), runtime_secret_arn=arn)
    migrate_pool(pool_server, tmp_path_factory.mktemp("pool-migrations"))
    return pool_server.settings(POOL.login_role, PASSWORD, POOL.database)


@pytest.fixture
def superuser(
    pool_server: RunningServer, runtime: ConnectionSettings
) -> Iterator[psycopg.Connection[Any]]:
    settings = pool_server.superuser_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        yield conn


def table_results(
    runtime: ConnectionSettings, server: RunningServer
) -> dict[str, dict[str, tuple[bool, str]]]:
    """Table -> attack -> (blocked, detail) of the strict suite's table attacks, run with the
    catalog's tenant schema and shared tables, as the probe tenants' logins."""
    found: dict[str, dict[str, tuple[bool, str]]] = {}
    results = run_pool_attacks(
        runtime,
        tenant_schemas=SCHEMAS,
        shared_tables=SHARED,
        logins=lambda tenant: login_settings(server, tenant),
    )
    for result in results:
        table, sep, attack = result.attack.partition(": ")
        if sep and table.startswith("app."):
            found.setdefault(table, {})[attack] = (result.blocked, result.detail)
    return found


def probe_rows(superuser: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
    return superuser.execute(
        "SELECT (SELECT count(*) FROM app.customers), (SELECT count(*) FROM app.orders)"
    ).fetchone()


def test_every_migrated_table_is_attacked_as_the_probe_logins_and_every_attack_is_blocked(
    runtime: ConnectionSettings, pool_server: RunningServer, superuser: psycopg.Connection[Any]
) -> None:
    # WHEN the strict suite runs with the catalog's tenant schema
    results = table_results(runtime, pool_server)
    # THEN both tenant tables get the table attacks and the strict one, all blocked; the shared
    # table none; and nothing of the probe rows is left, the committed ones included
    assert sorted(results) == ["app.customers", "app.orders"]
    for table, attacks in results.items():
        assert set(attacks) == EVERY_ATTACK, table
        assert {a: r for a, r in attacks.items() if not r[0]} == {}, table
    assert set(STRICT_TABLE_ATTACKS) <= EVERY_ATTACK
    assert len(EVERY_ATTACK) == len(TABLE_ATTACKS) + 1
    assert probe_rows(superuser) == (0, 0)


def test_the_attacks_ran_as_the_probe_tenants_own_logins(
    runtime: ConnectionSettings, pool_server: RunningServer, superuser: psycopg.Connection[Any]
) -> None:
    # GIVEN a trigger that records who writes app.customers (the probe rows are written there)
    superuser.execute(
        "CREATE TABLE public.writers (who text, tenant text);"
        "GRANT INSERT ON public.writers TO PUBLIC;"
        "CREATE FUNCTION public.record_writer() RETURNS trigger LANGUAGE plpgsql "
        "SECURITY DEFINER SET search_path = pg_catalog AS "
        "$$BEGIN INSERT INTO public.writers VALUES (session_user, NEW.tenant_id); "
        "RETURN NEW; END$$;"
        "CREATE TRIGGER record_writer BEFORE INSERT ON app.customers "
        "FOR EACH ROW EXECUTE FUNCTION public.record_writer()"
    )
    try:
        table_results(runtime, pool_server)
        # only the committed rows' writers are left: B's, as B's own login
        writers = set(superuser.execute("SELECT who, tenant FROM public.writers").fetchall())
    finally:
        superuser.execute(
            "DROP TRIGGER record_writer ON app.customers;"
            "DROP FUNCTION public.record_writer(); DROP TABLE public.writers"
        )
    assert writers == {(f"tenant_{B}_pool", B)}


BREAKAGES = [
    pytest.param(
        [
            VICTIM,
            "CALL tenantkit.protect_table('app.victims')",
            f"CREATE POLICY extra ON app.victims FOR SELECT TO {POOL.runtime_role} USING (true)",
        ],
        {
            "read with the tenant context cleared",
            "read another tenant's rows",
            "read another tenant's rows with the setting claiming it",
        },
        id="a-permissive-extra-policy-that-reads-everyone",
    ),
    pytest.param(
        [
            VICTIM,
            "CALL tenantkit.protect_table('app.victims')",
            f"CREATE POLICY extra ON app.victims TO {POOL.runtime_role} "
            "USING (true) WITH CHECK (true)",
        ],
        EVERY_ATTACK,
        id="a-permissive-extra-policy-that-admits-everyone",
    ),
    pytest.param(
        [
            VICTIM,
            "CALL tenantkit.protect_table('app.victims')",
            f"CREATE POLICY extra ON app.victims FOR SELECT TO {POOL.runtime_role} "
            "USING (tenant_id = current_setting('app.tenant_id', true))",
        ],
        {"read another tenant's rows with the setting claiming it"},
        id="a-policy-of-its-own-that-trusts-the-setting",
    ),
    pytest.param(
        [VICTIM, f"GRANT SELECT, INSERT, UPDATE, DELETE ON app.victims TO {POOL.runtime_role}"],
        EVERY_ATTACK,
        id="never-protected-in-a-tenant-schema",
    ),
]


@pytest.mark.parametrize(("breakage", "expected_leaks"), BREAKAGES)
def test_a_weakened_table_in_a_strict_pool_is_reported_as_a_leak(
    breakage: list[str],
    expected_leaks: set[str],
    runtime: ConnectionSettings,
    pool_server: RunningServer,
    superuser: psycopg.Connection[Any],
) -> None:
    # GIVEN a table of the tenant schema, weakened as the parameter says
    for statement in breakage:
        superuser.execute(statement)
    try:
        results = table_results(runtime, pool_server)
        victims = superuser.execute("SELECT count(*) FROM app.victims").fetchone()
    finally:
        superuser.execute("DROP TABLE app.victims")
    # THEN exactly those attacks report leaks, on that table only, and its probe rows are gone
    leaks = {attack for attack, (blocked, _) in results["app.victims"].items() if not blocked}
    assert leaks == expected_leaks
    assert all(
        blocked for t in ("app.customers", "app.orders") for blocked, _ in results[t].values()
    )
    assert victims == (0,)


def test_committed_probe_rows_that_cannot_be_deleted_are_reported(
    runtime: ConnectionSettings, pool_server: RunningServer, superuser: psycopg.Connection[Any]
) -> None:
    # GIVEN a protected table the runtime may write but not delete from
    superuser.execute(VICTIM)
    superuser.execute("CALL tenantkit.protect_table('app.victims')")
    superuser.execute(f"REVOKE DELETE ON app.victims FROM {POOL.runtime_role}")
    try:
        results = table_results(runtime, pool_server)
        left = superuser.execute("SELECT tenant_id FROM app.victims").fetchall()
    finally:
        superuser.execute("DROP TABLE app.victims")
    # THEN the attacks are blocked, and the row left behind is a failure saying so
    failed = {a: d for a, (blocked, d) in results["app.victims"].items() if not blocked}
    assert list(failed) == [f"delete {B}'s committed probe rows"]
    assert "InsufficientPrivilege" in failed[f"delete {B}'s committed probe rows"]
    assert left == [(B,)]
