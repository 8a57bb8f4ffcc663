"""The per-database migration engine on a provisioned bridge tenant (real PostgreSQL, moto for
the login secret): files run in order as the tenant's objects role, once each, recorded with
their checksums; drift, failures, locks and timeouts leave the database at a version."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from lambda_src.migrations.apply import (
    ApplyResult,
    apply_migrations,
    database_status,
    migration_lock,
)
from lambda_src.migrations.files import Migration, MigrationError, load_migrations
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.handler import handle
from lambda_src.tenancy import TenantNames, tenant_names
from tenantkit.embedded_pg import ADMIN_USER, RunningServer

from .conftest import SecretFactory, create_event, properties

PASSWORD = "migrations-login-password-23"
IAM_PASSWORD = "local-stand-in-for-an-iam-token-23"

CREATE_ITEMS = """
CREATE TABLE items (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL
);
CREATE VIEW item_names AS SELECT name FROM items;
"""
ADD_PRICE = "ALTER TABLE items ADD COLUMN price_cents bigint;\n"


@pytest.fixture
def names(
    tenant_id: str,
    make_secret: SecretFactory,
    config: HandlerConfig,
    superuser: psycopg.Connection,
) -> TenantNames:
    """A provisioned bridge tenant whose IAM user also has a password (the embedded server
    cannot check IAM tokens; what a session may do comes from its roles either way)."""
    handle(create_event(properties(tenant_id, make_secret(tenant_id, PASSWORD))), config)
    names = tenant_names(tenant_id)
    superuser.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(names.iam_user), sql.Literal(IAM_PASSWORD)
        )
    )
    return names


def admin_connection(server: RunningServer, names: TenantNames) -> psycopg.Connection[Any]:
    settings = server.admin_settings(names.database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


@pytest.fixture
def admin(server: RunningServer, names: TenantNames) -> Iterator[psycopg.Connection[Any]]:
    """The admin's autocommit connection to the tenant's database: what the engine gets."""
    with admin_connection(server, names) as conn:
        yield conn


@pytest.fixture
def inspect(server: RunningServer, names: TenantNames) -> Iterator[psycopg.Connection[Any]]:
    """A superuser session in the tenant's database, for inspection only."""
    settings = server.superuser_settings(names.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        yield conn


def as_login(server: RunningServer, names: TenantNames, which: str) -> psycopg.Connection[Any]:
    user, password = {
        "login": (names.login_role, PASSWORD),
        "iam": (names.iam_user, IAM_PASSWORD),
    }[which]
    settings = server.settings(user, password, names.database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


def write(directory: Path, files: dict[str, str]) -> tuple[Migration, ...]:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return load_migrations(directory)


def owner_of(conn: psycopg.Connection[Any], relation: str) -> str | None:
    row = conn.execute(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass(%s)", (relation,)
    ).fetchone()
    return None if row is None else str(row[0])


def recorded(conn: psycopg.Connection[Any]) -> list[tuple[int, str, str]]:
    if conn.execute("SELECT to_regclass('tenantkit_schema.applied_migrations')").fetchone() == (
        None,
    ):
        return []
    return [
        (int(v), str(n), str(c))
        for v, n, c in conn.execute(
            "SELECT version, name, checksum FROM tenantkit_schema.applied_migrations "
            "ORDER BY version"
        )
    ]


def test_a_fresh_database_is_migrated_as_the_objects_role_for_both_logins(
    tmp_path: Path,
    names: TenantNames,
    server: RunningServer,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
) -> None:
    # GIVEN two migrations and a tenant database that never saw one
    migrations = write(
        tmp_path, {"V0001__create_items.sql": CREATE_ITEMS, "V0002__add_price.sql": ADD_PRICE}
    )
    before = database_status(admin, migrations)
    assert (before.current, before.applied, before.drift, before.tracked) == (None, (), (), False)
    assert [m.version for m in before.pending] == [1, 2]
    # (reading the status created nothing)
    assert recorded(inspect) == []
    # WHEN they are applied as the tenant's objects role
    result = apply_migrations(admin, migrations, role=names.objects_role)
    # THEN both ran, in order, and the database is at version 2 with nothing pending
    assert result == ApplyResult(applied=(1, 2), current=2, failed=None)
    after = database_status(admin, migrations)
    assert (after.current, after.pending, after.drift) == (2, (), ())
    assert [(a.version, a.name, a.checksum) for a in after.applied] == [
        (m.version, m.name, m.checksum) for m in migrations
    ]
    assert all(a.applied_by == names.objects_role and a.duration_ms >= 0 for a in after.applied)
    # and what they made belongs to the objects role, not the admin
    assert owner_of(inspect, "public.items") == names.objects_role
    assert owner_of(inspect, "public.item_names") == names.objects_role
    # and both logins use it as an application does, with no grants of their own
    with as_login(server, names, "login") as conn:
        conn.execute("INSERT INTO items (name, price_cents) VALUES ('from the login', 100)")
    with as_login(server, names, "iam") as conn:
        conn.execute("INSERT INTO items (name) VALUES ('from the iam user')")
        conn.execute("UPDATE items SET price_cents = 5 WHERE price_cents IS NULL")
        assert sorted(conn.execute("SELECT name FROM item_names").fetchall()) == [
            ("from the iam user",),
            ("from the login",),
        ]
    # and the admin's session is back to itself, without the migration timeouts
    assert admin.execute("SELECT current_user").fetchone() == (ADMIN_USER,)
    assert admin.execute("SHOW lock_timeout").fetchone() == ("0",)


def test_a_second_apply_changes_nothing(
    tmp_path: Path, names: TenantNames, admin: psycopg.Connection[Any]
) -> None:
    # GIVEN a database at the newest version
    migrations = write(tmp_path, {"V1__create_items.sql": CREATE_ITEMS})
    assert apply_migrations(admin, migrations, role=names.objects_role).applied == (1,)
    rows = recorded(admin)
    # WHEN the same directory is applied again THEN nothing runs and nothing is recorded
    assert apply_migrations(admin, migrations, role=names.objects_role) == ApplyResult((), 1)
    assert recorded(admin) == rows


def test_a_new_file_applies_on_top_of_the_current_version(
    tmp_path: Path, names: TenantNames, admin: psycopg.Connection[Any]
) -> None:
    migrations = write(tmp_path, {"V1__create_items.sql": CREATE_ITEMS})
    apply_migrations(admin, migrations, role=names.objects_role)
    migrations = write(tmp_path, {"V2__add_price.sql": ADD_PRICE})
    assert [m.version for m in database_status(admin, migrations).pending] == [2]
    assert apply_migrations(admin, migrations, role=names.objects_role) == ApplyResult((2,), 2)


def test_an_applied_file_edited_afterwards_is_drift_and_nothing_runs(
    tmp_path: Path,
    names: TenantNames,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
) -> None:
    # GIVEN V1 applied, then edited, and a new V2 beside it
    apply_migrations(
        admin, write(tmp_path, {"V1__create_items.sql": CREATE_ITEMS}), role=names.objects_role
    )
    rows = recorded(inspect)
    edited = write(
        tmp_path,
        {
            "V1__create_items.sql": CREATE_ITEMS + "CREATE TABLE sneaked_in ();\n",
            "V2__add_price.sql": ADD_PRICE,
        },
    )
    # WHEN the status is read THEN V1 is drift, naming the file and both checksums
    (drift,) = database_status(admin, edited).drift
    assert (drift.version, drift.path, drift.kind) == (1, "V1__create_items.sql", "changed")
    assert drift.recorded == rows[0][2]
    assert drift.now == edited[0].checksum
    # WHEN an apply is tried THEN it refuses, naming the database and the file
    with pytest.raises(MigrationError, match="refusing to migrate") as raised:
        apply_migrations(admin, edited, role=names.objects_role)
    assert names.database in str(raised.value)
    assert "V1__create_items.sql" in str(raised.value)
    # and touched nothing: the edit did not run, neither did V2
    assert owner_of(inspect, "public.sneaked_in") is None
    columns = inspect.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'items'"
    ).fetchall()
    assert ("price_cents",) not in columns
    assert recorded(inspect) == rows


def test_an_applied_file_missing_from_the_directory_is_drift(
    tmp_path: Path, names: TenantNames, admin: psycopg.Connection[Any]
) -> None:
    apply_migrations(
        admin, write(tmp_path, {"V1__create_items.sql": CREATE_ITEMS}), role=names.objects_role
    )
    (tmp_path / "V1__create_items.sql").unlink()
    remaining = write(tmp_path, {"V2__add_price.sql": ADD_PRICE})
    (drift,) = database_status(admin, remaining).drift
    assert (drift.version, drift.kind, drift.name) == (1, "missing", "create_items")
    with pytest.raises(MigrationError, match="V1 \\(create_items\\) was applied but its file"):
        apply_migrations(admin, remaining, role=names.objects_role)


def test_a_file_failing_half_way_leaves_the_previous_version_and_a_retry_resumes(
    tmp_path: Path,
    names: TenantNames,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
) -> None:
    # GIVEN V2 whose second statement fails, and a V3 after it
    migrations = write(
        tmp_path,
        {
            "V1__create_items.sql": CREATE_ITEMS,
            "V2__half_way.sql": "CREATE TABLE partial (id int);\nSELECT * FROM no_such_table;\n",
            "V3__add_price.sql": ADD_PRICE,
        },
    )
    # WHEN they are applied
    result = apply_migrations(admin, migrations, role=names.objects_role)
    # THEN V1 is applied, V2 failed with the server's message, V3 never ran
    assert (result.applied, result.current) == ((1,), 1)
    assert result.failed is not None
    assert (result.failed.version, result.failed.path) == (2, "V2__half_way.sql")
    assert result.failed.error == 'relation "no_such_table" does not exist'
    # and nothing of V2 stays: the database is at version 1
    assert owner_of(inspect, "public.partial") is None
    assert [row[0] for row in recorded(inspect)] == [1]
    assert database_status(admin, migrations).current == 1
    # WHEN the file is fixed (it never applied, so it is no drift) and applied again
    fixed = write(tmp_path, {"V2__half_way.sql": "CREATE TABLE partial (id int);\n"})
    # THEN the run resumes at V2
    assert apply_migrations(admin, fixed, role=names.objects_role) == ApplyResult((2, 3), 3)


def test_two_concurrent_applies_apply_each_migration_once(
    tmp_path: Path, names: TenantNames, server: RunningServer, inspect: psycopg.Connection[Any]
) -> None:
    # GIVEN migrations slow enough for two runs to overlap
    migrations = write(
        tmp_path,
        {
            "V1__create_items.sql": CREATE_ITEMS + "SELECT pg_sleep(0.4);\n",
            "V2__add_price.sql": ADD_PRICE,
        },
    )
    results: list[ApplyResult] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            with admin_connection(server, names) as conn:
                start.wait()
                results.append(apply_migrations(conn, migrations, role=names.objects_role))
        except BaseException as error:  # reported below
            failures.append(error)

    # WHEN two applies start at once on their own connections
    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # THEN the second waited for the first and found nothing left to do
    assert failures == []
    assert sorted(r.applied for r in results) == [(), (1, 2)]
    assert all(r.current == 2 and r.failed is None for r in results)
    assert [row[0] for row in recorded(inspect)] == [1, 2]


def test_an_apply_that_cannot_get_the_lock_in_time_fails_naming_the_database(
    tmp_path: Path, names: TenantNames, server: RunningServer, admin: psycopg.Connection[Any]
) -> None:
    # GIVEN another session holding the database's migration lock
    migrations = write(tmp_path, {"V1__create_items.sql": CREATE_ITEMS})
    key = migration_lock(names.database).key
    with admin_connection(server, names) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (key,))
        for wait_ms in (0, 300):
            # WHEN an apply waits (or not at all) THEN it gives up, naming the database
            started = time.monotonic()
            with pytest.raises(MigrationError, match="another migration run holds the lock") as e:
                apply_migrations(admin, migrations, role=names.objects_role, lock_wait_ms=wait_ms)
            assert f"on database {names.database}" in str(e.value)
            assert time.monotonic() - started < 5
    # and ran nothing
    assert recorded(admin) == []
    # WHEN the other session is gone THEN the apply goes through
    assert apply_migrations(admin, migrations, role=names.objects_role).applied == (1,)


def test_a_no_transaction_file_builds_an_index_concurrently(
    tmp_path: Path,
    names: TenantNames,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
) -> None:
    migrations = write(
        tmp_path,
        {
            "V1__create_items.sql": CREATE_ITEMS,
            "V2__index_names.sql": (
                "-- tenantkit: no-transaction\n"
                "CREATE INDEX CONCURRENTLY items_name_idx ON items (name);\n"
            ),
        },
    )
    assert migrations[1].transactional is False
    assert apply_migrations(admin, migrations, role=names.objects_role) == ApplyResult((1, 2), 2)
    row = inspect.execute(
        "SELECT i.indisvalid, pg_get_userbyid(c.relowner) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'items_name_idx'"
    ).fetchone()
    assert row == (True, names.objects_role)
    assert admin.execute("SELECT current_user").fetchone() == (ADMIN_USER,)


def test_a_failed_concurrent_index_build_is_named_as_left_invalid(
    tmp_path: Path,
    names: TenantNames,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
) -> None:
    # GIVEN rows that break a unique index built concurrently
    migrations = write(
        tmp_path,
        {
            "V1__create_items.sql": CREATE_ITEMS,
            "V2__duplicates.sql": "INSERT INTO items (name) VALUES ('a'), ('a');\n",
            "V3__unique_names.sql": (
                "-- tenantkit: no-transaction\n"
                "CREATE UNIQUE INDEX CONCURRENTLY items_name_key ON items (name);\n"
            ),
        },
    )
    result = apply_migrations(admin, migrations, role=names.objects_role)
    # THEN V2 failed, is not recorded, and the error names the INVALID index PostgreSQL left
    assert (result.applied, result.current) == ((1, 2), 2)
    assert result.failed is not None
    assert result.failed.path == "V3__unique_names.sql"
    assert "could not create unique index" in result.failed.error
    assert "invalid indexes left in the database: items_name_key" in result.failed.error
    assert [row[0] for row in recorded(inspect)] == [1, 2]


def test_a_migration_blocked_by_another_sessions_lock_fails_after_lock_timeout(
    tmp_path: Path,
    names: TenantNames,
    server: RunningServer,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
) -> None:
    # GIVEN items, and an application transaction reading it (ACCESS SHARE, held)
    migrations = write(tmp_path, {"V1__create_items.sql": CREATE_ITEMS})
    apply_migrations(admin, migrations, role=names.objects_role)
    migrations = write(tmp_path, {"V2__add_price.sql": ADD_PRICE})
    with as_login(server, names, "login") as app, app.transaction():
        app.execute("SELECT count(*) FROM items")
        # WHEN a migration needs ACCESS EXCLUSIVE on it
        started = time.monotonic()
        result = apply_migrations(admin, migrations, role=names.objects_role, lock_timeout_ms=200)
        elapsed = time.monotonic() - started
    # THEN it gave up after the lock_timeout, not the statement_timeout, and says so
    assert result.failed is not None
    assert result.failed.path == "V2__add_price.sql"
    assert result.failed.error == "canceling statement due to lock timeout (lock_timeout 200 ms)"
    assert elapsed < 5
    assert result.current == 1
    assert [row[0] for row in recorded(inspect)] == [1]


def test_a_statement_running_past_statement_timeout_is_cancelled(
    tmp_path: Path, names: TenantNames, admin: psycopg.Connection[Any]
) -> None:
    migrations = write(tmp_path, {"V1__slow.sql": "SELECT pg_sleep(3);"})
    result = apply_migrations(admin, migrations, role=names.objects_role, statement_timeout_ms=100)
    assert result.failed is not None
    assert result.failed.error == (
        "canceling statement due to statement timeout (statement_timeout 100 ms)"
    )


def test_migrations_never_run_as_the_admin(
    tmp_path: Path,
    names: TenantNames,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
) -> None:
    # GIVEN a migration that records who runs it, and one that tries what only the admin may
    migrations = write(
        tmp_path,
        {
            "V1__who.sql": "CREATE TABLE t ();\nCREATE TABLE who AS SELECT current_user AS u;\n",
            "V2__create_role.sql": "CREATE ROLE sneaky_admin_role;\n",
        },
    )
    result = apply_migrations(admin, migrations, role=names.objects_role)
    # THEN the first ran as the objects role and what it made is the objects role's
    assert inspect.execute("SELECT u FROM who").fetchone() == (names.objects_role,)
    assert owner_of(inspect, "public.t") == names.objects_role
    # and the second was refused by the server: the objects role cannot create roles
    assert result.failed is not None
    assert result.failed.version == 2
    assert result.failed.error == "permission denied to create role"
    assert inspect.execute(
        "SELECT count(*) FROM pg_roles WHERE rolname = 'sneaky_admin_role'"
    ).fetchone() == (0,)


@pytest.mark.parametrize("which", ["login_role", "iam_user"])
def test_a_login_is_refused_as_the_role_to_run_migrations_as(
    tmp_path: Path,
    names: TenantNames,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
    which: str,
) -> None:
    migrations = write(tmp_path, {"V1__create_items.sql": CREATE_ITEMS})
    login = getattr(names, which)
    with pytest.raises(MigrationError, match=f"{login} has LOGIN"):
        apply_migrations(admin, migrations, role=login)
    assert recorded(inspect) == []
    assert owner_of(inspect, "public.items") is None


def test_the_tracking_table_is_out_of_reach_of_the_logins_and_the_objects_role(
    tmp_path: Path,
    names: TenantNames,
    server: RunningServer,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
) -> None:
    # GIVEN a migrated database, and a migration that tries to forge its own history
    apply_migrations(
        admin, write(tmp_path, {"V1__create_items.sql": CREATE_ITEMS}), role=names.objects_role
    )
    forged = write(
        tmp_path,
        {
            "V2__forge.sql": "INSERT INTO tenantkit_schema.applied_migrations "
            "VALUES (99, 'forged', 'x', now(), 0, 'me');\n"
        },
    )
    result = apply_migrations(admin, forged, role=names.objects_role)
    # THEN the migration is refused by the server
    assert result.failed is not None
    assert result.failed.error == "permission denied for schema tenantkit_schema"
    # and neither login can read or write the record
    for which in ("login", "iam"):
        with as_login(server, names, which) as conn:
            for statement in (
                "SELECT * FROM tenantkit_schema.applied_migrations",
                "DELETE FROM tenantkit_schema.applied_migrations",
            ):
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute(statement)
    # and the record's owner is the admin
    assert owner_of(inspect, "tenantkit_schema.applied_migrations") == ADMIN_USER
    assert [row[0] for row in recorded(inspect)] == [1]


def test_after_each_runs_in_the_files_transaction_and_a_raise_rolls_it_back(
    tmp_path: Path,
    names: TenantNames,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
) -> None:
    # GIVEN a hook that sees each file's tables before the commit and refuses one of them
    seen: list[tuple[int, str, bool]] = []

    def refuse_unprotected(conn: psycopg.Connection[Any], migration: Migration) -> None:
        row = conn.execute("SELECT current_user, to_regclass('public.unprotected')").fetchone()
        assert row is not None
        seen.append((migration.version, str(row[0]), row[1] is not None))
        if row[1] is not None:
            raise MigrationError("table unprotected has no tenant_id column")

    migrations = write(
        tmp_path,
        {
            "V1__create_items.sql": CREATE_ITEMS,
            "V2__unprotected.sql": "CREATE TABLE unprotected (v text);\n",
        },
    )
    # WHEN they are applied with the hook
    result = apply_migrations(
        admin, migrations, role=names.objects_role, after_each=refuse_unprotected
    )
    # THEN the hook ran as the admin after each file, inside its transaction
    assert seen == [(1, ADMIN_USER, False), (2, ADMIN_USER, True)]
    # and its refusal rolled V2 back and is the failure
    assert result.failed is not None
    assert (result.failed.version, result.failed.error) == (
        2,
        "table unprotected has no tenant_id column",
    )
    assert owner_of(inspect, "public.unprotected") is None
    assert [row[0] for row in recorded(inspect)] == [1]


def test_a_file_that_commits_its_own_transaction_is_a_failure(
    tmp_path: Path,
    names: TenantNames,
    admin: psycopg.Connection[Any],
    inspect: psycopg.Connection[Any],
) -> None:
    migrations = write(
        tmp_path,
        {
            "V1__commits.sql": (
                "CREATE TABLE a ();\nCOMMIT;\nCREATE TABLE b AS SELECT current_user AS u;\n"
            )
        },
    )
    result = apply_migrations(admin, migrations, role=names.objects_role)
    assert result.failed is not None
    assert "the file ended its own transaction" in result.failed.error
    assert recorded(inspect) == []
    # (what ran after the COMMIT still ran as the objects role, never as the admin)
    assert inspect.execute("SELECT u FROM b").fetchone() == (names.objects_role,)
    assert admin.execute("SELECT current_user").fetchone() == (ADMIN_USER,)
