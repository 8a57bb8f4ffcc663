"""The pool's tenant context on asyncio (psycopg AsyncConnection and AsyncConnectionPool),
against a provisioned pool on the embedded PostgreSQL: the sync tenant_transaction's
guarantees, pooled connections, concurrent tasks and cancelled ones."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import errors
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from lambda_src.core.connection import ConnectionSettings
from lambda_src.tenancy import POOL, InvalidTenantIdError
from lambda_src.tenant_runtime import (
    TenantContextError,
    async_tenant_connection,
    async_tenant_pool,
    async_tenant_transaction,
)
from lambda_src.tenant_runtime import context as runtime_context

from .pool_fixtures import aws, config, pool_server  # noqa: F401 (fixtures)
from .tenant_pool_fixtures import (  # noqa: F401 (fixtures)
    TENANTS,
    all_rows,
    pool,
    project_name,
    superuser,
)

pytestmark = pytest.mark.asyncio

SETTING = "SELECT current_setting(%s, true)"


@pytest_asyncio.fixture
async def conn(pool: ConnectionSettings) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A runtime connection in autocommit, as a pool hands them out."""
    async with await psycopg.AsyncConnection.connect(**pool.connect_kwargs(), autocommit=True) as c:
        yield c


@pytest_asyncio.fixture
async def one_connection_pool(
    pool: ConnectionSettings,
) -> AsyncIterator[AsyncConnectionPool[psycopg.AsyncConnection[Any]]]:
    """A tenant pool of exactly one connection: every borrower gets the previous one's."""
    async with async_tenant_pool(kwargs=pool.connect_kwargs(), min_size=1, max_size=1) as p:
        yield p


async def projects(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(
        "SELECT tenant_id, project_id, name FROM tenantkit_sample.projects ORDER BY project_id"
    )
    return await cursor.fetchall()


async def setting(conn: psycopg.AsyncConnection[Any]) -> Any:
    row = await (await conn.execute(SETTING, (POOL.tenant_setting,))).fetchone()
    return row[0] if row else None


# -- one connection --------------------------------------------------------------------------


async def test_a_tenant_reads_its_own_rows_only(conn: psycopg.AsyncConnection[Any]) -> None:
    async with async_tenant_transaction(conn, "red"):
        seen = await projects(conn)
    assert seen == [("red", 1, project_name("red", 1)), ("red", 2, project_name("red", 2))]


async def test_a_tenant_cannot_write_another_tenants_rows(
    conn: psycopg.AsyncConnection[Any], superuser: psycopg.Connection[Any]
) -> None:
    before = all_rows(superuser, "projects")
    # GIVEN red's transaction WHEN it inserts a row of blue's THEN WITH CHECK refuses it
    with pytest.raises(errors.InsufficientPrivilege):
        async with async_tenant_transaction(conn, "red"):
            await conn.execute(
                "INSERT INTO tenantkit_sample.projects VALUES ('blue', 99, 'planted by red')"
            )
    # WHEN it updates and deletes blue's rows, or moves its own to blue THEN nothing changes
    async with async_tenant_transaction(conn, "red"):
        updated = await conn.execute(
            "UPDATE tenantkit_sample.projects SET name = 'renamed' WHERE tenant_id = 'blue'"
        )
        deleted = await conn.execute("DELETE FROM tenantkit_sample.tasks WHERE tenant_id = 'blue'")
        assert (updated.rowcount, deleted.rowcount) == (0, 0)
    with pytest.raises(errors.InsufficientPrivilege):
        async with async_tenant_transaction(conn, "red"):
            await conn.execute(
                "UPDATE tenantkit_sample.projects SET tenant_id = 'blue' WHERE project_id = 2"
            )
    assert all_rows(superuser, "projects") == before


async def test_an_invalid_id_is_refused_before_anything_is_sent(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    with pytest.raises(InvalidTenantIdError):
        async_tenant_transaction(conn, "x' OR '1'='1")
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert await setting(conn) is None  # never set on this connection


async def test_it_needs_an_idle_connection(pool: ConnectionSettings) -> None:
    async with await psycopg.AsyncConnection.connect(**pool.connect_kwargs()) as conn:
        await conn.execute("SELECT 1")  # not autocommit: psycopg opened a transaction
        with pytest.raises(TenantContextError, match="idle connection"):
            async with async_tenant_transaction(conn, "red"):
                pass


async def test_autocommit_is_restored_and_the_setting_ends_with_the_transaction(
    pool: ConnectionSettings,
) -> None:
    async with await psycopg.AsyncConnection.connect(**pool.connect_kwargs()) as conn:
        assert conn.autocommit is False
        async with async_tenant_transaction(conn, "red"):
            inside = await setting(conn)
        assert conn.autocommit is False
        after = await setting(conn)
        await conn.rollback()
    assert (inside, after) == ("red", "")


async def test_a_failed_statement_rolls_the_transaction_back(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    insert = "INSERT INTO tenantkit_sample.projects VALUES ('red', 555, %s)"

    async def insert_twice() -> None:
        async with async_tenant_transaction(conn, "red"):
            await conn.execute(insert, ("a",))
            await conn.execute(insert, ("b",))

    with pytest.raises(errors.UniqueViolation):
        await insert_twice()
    assert conn.info.transaction_status == TransactionStatus.IDLE
    async with async_tenant_transaction(conn, "red"):
        assert 555 not in [row[1] for row in await projects(conn)]


async def test_an_error_swallowed_in_the_body_is_reported_and_rolled_back(
    conn: psycopg.AsyncConnection[Any],
) -> None:

    async def carry_on_after_an_error() -> None:
        async with async_tenant_transaction(conn, "red"):
            with contextlib.suppress(errors.DivisionByZero):
                await conn.execute("SELECT 1 / 0")
            # the application carries on; the commit must not pretend it committed

    with pytest.raises(TenantContextError, match="failed and was rolled back"):
        await carry_on_after_an_error()
    assert conn.info.transaction_status == TransactionStatus.IDLE


async def test_a_held_cursor_does_not_outlive_the_tenant_transaction(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    async with async_tenant_transaction(conn, "red"):
        await conn.execute(
            "DECLARE red_rows CURSOR WITH HOLD FOR SELECT name FROM tenantkit_sample.projects"
        )
    with pytest.raises(errors.InvalidCursorName):
        async with async_tenant_transaction(conn, "blue"):
            await conn.execute("FETCH ALL FROM red_rows")


async def test_a_first_message_that_fails_leaves_the_connection_idle_and_usable(
    pool: ConnectionSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a connection whose tenant transaction fails inside its first message (as a pooler
    # that lost a prepared statement would make it fail)
    async with await psycopg.AsyncConnection.connect(**pool.connect_kwargs()) as conn:
        monkeypatch.setattr(runtime_context, "begin_as_tenant", lambda *_: b"BEGIN; SELECT 1/0")
        with pytest.raises(errors.DivisionByZero):
            async with async_tenant_transaction(conn, "red"):
                pytest.fail("the body runs only after the context is set")
        monkeypatch.undo()
        # THEN it is idle, autocommit as it was, and the next tenant transaction works
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.autocommit is False
        async with async_tenant_transaction(conn, "blue"):
            assert {row[0] for row in await projects(conn)} == {"blue"}


@pytest.mark.parametrize(("prepared_statements", "prepared"), [(False, 0), (True, 1)])
async def test_nothing_is_prepared_on_the_server_unless_asked(
    prepared_statements: bool, prepared: int, conn: psycopg.AsyncConnection[Any]
) -> None:
    # GIVEN a connection that would prepare a statement after its second run
    conn.prepare_threshold = 2
    async with async_tenant_transaction(conn, "red", prepared_statements=prepared_statements):
        for _ in range(4):
            await conn.execute(
                "SELECT name FROM tenantkit_sample.projects WHERE project_id = %s", (1,)
            )
        cursor = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
        on_server = await cursor.fetchone()
    # THEN the query is prepared only when asked, and the connection keeps its own threshold
    assert on_server == (prepared,)
    assert conn.prepare_threshold == 2


# -- pooled connections ----------------------------------------------------------------------


async def _commit(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SELECT 1")


async def _raise(conn: psycopg.AsyncConnection[Any]) -> None:
    raise RuntimeError("the application failed")


async def _sql_error(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SELECT 1 / 0")


async def _session_set(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SELECT set_config(%s, 'red', false)", (POOL.tenant_setting,))


@pytest.mark.parametrize(
    "body",
    [_commit, _raise, _sql_error, _session_set],
    ids=["after-commit", "after-rollback", "after-an-error", "after-a-session-set"],
)
async def test_nothing_of_a_tenant_reaches_the_next_borrower_of_the_connection(
    body: Any, one_connection_pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]
) -> None:
    # GIVEN red's request on the pool's only connection, ended by `body`
    try:
        async with async_tenant_connection(one_connection_pool, "red") as conn:
            red_backend = conn.info.backend_pid
            await body(conn)
    except (RuntimeError, errors.DivisionByZero):
        pass
    # WHEN the next request borrows the connection THEN no tenant is set on it, and as blue
    # it sees blue's rows only
    async with one_connection_pool.connection() as conn:
        assert conn.info.backend_pid == red_backend
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert await setting(conn) in (None, "")
    async with async_tenant_connection(one_connection_pool, "blue") as conn:
        assert {row[0] for row in await projects(conn)} == {"blue"}


async def test_concurrent_tasks_for_different_tenants_see_only_their_own_rows(
    pool: ConnectionSettings,
) -> None:
    # GIVEN a pool of 3 connections and 30 requests of 3 tenants in flight at once, each
    # holding its transaction across an await so that they interleave
    backends: set[int] = set()

    async def request(tenant: str) -> tuple[str, set[str], int]:
        async with async_tenant_connection(shared, tenant) as conn:
            backends.add(conn.info.backend_pid)
            first = await projects(conn)
            await conn.execute("SELECT pg_sleep(0.02)")
            second = await projects(conn)
            return tenant, {row[0] for row in first + second}, len(first)

    async with async_tenant_pool(kwargs=pool.connect_kwargs(), min_size=3, max_size=3) as shared:
        results = await asyncio.gather(*(request(TENANTS[n % 3]) for n in range(30)))
    # THEN every request saw exactly its own tenant's two projects, on shared connections
    assert all(seen == {tenant} and count == 2 for tenant, seen, count in results)
    assert len(backends) == 3


async def test_a_task_cancelled_mid_statement_leaves_no_tenant_on_a_reused_connection(
    one_connection_pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
) -> None:
    started = asyncio.Event()

    async def slow_red() -> None:
        async with async_tenant_connection(one_connection_pool, "red") as conn:
            started.set()
            await conn.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow_red())
    await started.wait()
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with one_connection_pool.connection(timeout=10) as conn:
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert await setting(conn) in (None, "")
    async with async_tenant_connection(one_connection_pool, "blue") as conn:
        assert {row[0] for row in await projects(conn)} == {"blue"}


async def test_a_cancelled_task_leaves_its_connection_idle_with_autocommit_restored(
    pool: ConnectionSettings,
) -> None:
    async with await psycopg.AsyncConnection.connect(**pool.connect_kwargs()) as conn:
        # GIVEN red's transaction waiting on a statement WHEN its task is cancelled
        async def slow_red() -> None:
            async with async_tenant_transaction(conn, "red"):
                await conn.execute("SELECT pg_sleep(30)")

        task = asyncio.create_task(slow_red())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # THEN psycopg cancelled the statement and the transaction was rolled back
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.autocommit is False
        assert await setting(conn) in (None, "")
        await conn.rollback()


async def test_an_invalid_id_is_refused_before_a_connection_is_borrowed(
    one_connection_pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
) -> None:
    with pytest.raises(InvalidTenantIdError):
        async with async_tenant_connection(one_connection_pool, "Robert'); --"):
            pytest.fail("no connection for an invalid id")
    assert one_connection_pool.get_stats().get("requests_num", 0) == 0
