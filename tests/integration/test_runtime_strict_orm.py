"""SQLAlchemy (sync and asyncio) and psycopg's asyncio on a strict pool (the embedded
PostgreSQL, provisioned by the handler): an engine, pool or connection of a tenant's own login
reads and writes that tenant only, sends no tenant setting, and is refused before anything is
sent when asked to serve another tenant."""

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import errors
from psycopg.pq import TransactionStatus
from sqlalchemy import event, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import selectinload, sessionmaker

from lambda_src.core.connection import ConnectionSettings
from lambda_src.tenancy import POOL
from lambda_src.tenant_runtime import (
    TenantContextError,
    async_tenant_connection,
    async_tenant_pool,
    async_tenant_transaction,
)
from lambda_src.tenant_runtime.orm import (
    async_tenant_engine,
    async_tenant_session,
    install_tenant_context,
    tenant_engine,
    tenant_session,
)
from tenantkit.embedded_pg import RunningServer

from .orm_models import Project, Task
from .pool_fixtures import PASSWORD, aws, config, pool_server  # noqa: F401 (fixtures)
from .strict_pool_fixtures import login_settings, provision_strict_pool
from .tenant_pool_fixtures import project_name

RED, BLUE = "so-red", "so-blue"
SETTING = text("SELECT current_setting('app.tenant_id', true)")


@pytest.fixture(scope="module")
def strict_pool(pool_server: RunningServer, aws: Any, config: Any) -> RunningServer:
    """A strict pool with RED and BLUE, each seeded through its own login."""
    provision_strict_pool(
        pool_server,
        config,
        aws,
        (RED, BLUE),
        runtime_secret_arn=aws.describe_secret(SecretId=POOL.secret_name)["ARN"],
    )
    return pool_server


@pytest.fixture
def superuser(strict_pool: RunningServer) -> Iterator[psycopg.Connection[Any]]:
    settings = strict_pool.superuser_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        yield conn


def engine_of(settings: ConnectionSettings) -> Engine:
    return tenant_engine(
        "postgresql+psycopg://",
        strict=True,
        connect_args=settings.connect_kwargs(),
        pool_size=1,
        max_overflow=0,
    )


@pytest.fixture
def red_engine(strict_pool: RunningServer) -> Iterator[Engine]:
    """A strict engine of RED's login: one connection, so every session reuses it."""
    engine = engine_of(login_settings(strict_pool, RED))
    yield engine
    engine.dispose()


@pytest.fixture
def statements(red_engine: Engine) -> Iterator[list[str]]:
    """Every statement the engine sends during the test, tenantkit's own included."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(red_engine, "before_cursor_execute", record)
    yield sent
    event.remove(red_engine, "before_cursor_execute", record)


# -- SQLAlchemy, sync ------------------------------------------------------------------------


def test_a_strict_session_reads_its_tenant_eagerly_and_lazily_with_a_plain_begin(
    red_engine: Engine, statements: list[str]
) -> None:
    with tenant_session(sessionmaker(red_engine), RED) as session:
        projects = session.scalars(
            select(Project).options(selectinload(Project.tasks)).order_by(Project.project_id)
        ).all()
        tree = {p.project_id: [t.task_id for t in p.tasks] for p in projects}
        names = [p.name for p in projects]
        owners = {p.tenant_id for p in projects}
        parent = session.get_one(Task, (RED, 3)).project  # a lazy load
        parent_key = (parent.tenant_id, parent.project_id)
        setting = session.scalar(SETTING)
    assert names == [project_name(RED, 1), project_name(RED, 2)]
    assert owners == {RED}
    assert tree == {1: [1, 2], 2: [3]}
    assert parent_key == (RED, 2)
    # no tenant setting anywhere: the transaction is BEGIN ... COMMIT on the tenant's login
    assert setting is None
    assert (statements[0], statements[-1]) == ("BEGIN", "COMMIT")
    assert not any("tenant_id =" in s or "SET LOCAL" in s for s in statements)


def test_a_strict_session_writes_its_own_rows_and_never_another_tenants(
    red_engine: Engine, superuser: psycopg.Connection[Any]
) -> None:
    sessions = sessionmaker(red_engine)
    try:
        with tenant_session(sessions, RED) as session:
            session.add(Project(tenant_id=RED, project_id=70, name="red's new project"))
        with tenant_session(sessions, RED) as session:
            result = session.execute(
                update(Project).where(Project.tenant_id == BLUE).values(name="renamed")
            )
            renamed = result.rowcount  # type: ignore[attr-defined]

        def plant_blue() -> None:
            with tenant_session(sessions, RED) as session:
                session.add(Project(tenant_id=BLUE, project_id=71, name="planted"))
                session.flush()

        with pytest.raises(DBAPIError) as refused:
            plant_blue()
        rows = superuser.execute(
            "SELECT tenant_id, project_id FROM tenantkit_sample.projects WHERE project_id >= 70"
        ).fetchall()
        blue_names = superuser.execute(
            "SELECT count(*) FROM tenantkit_sample.projects WHERE tenant_id = %s AND name = %s",
            (BLUE, "renamed"),
        ).fetchone()
    finally:
        superuser.execute("DELETE FROM tenantkit_sample.projects WHERE project_id >= 70")
    assert rows == [(RED, 70)]
    assert renamed == 0
    assert blue_names == (0,)
    assert isinstance(refused.value.orig, errors.InsufficientPrivilege)


def test_a_session_for_another_tenant_on_a_tenants_login_is_refused_before_anything_is_sent(
    red_engine: Engine, statements: list[str]
) -> None:
    with (
        pytest.raises(TenantContextError, match="not as 'tenant_so-blue_pool'"),
        tenant_session(red_engine, BLUE) as session,
    ):
        session.scalars(select(Project)).all()
    assert statements == []
    assert red_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # the connection is left as it was: RED's next session on it works
    with tenant_session(red_engine, RED) as session:
        assert set(session.scalars(select(Project.tenant_id))) == {RED}


def test_a_strict_engine_of_the_shared_runtime_login_serves_no_tenant(
    strict_pool: RunningServer,
) -> None:
    shared = engine_of(strict_pool.settings(POOL.login_role, PASSWORD, POOL.database))
    try:
        with (
            pytest.raises(TenantContextError, match="logged in as 'tenantkit_pool_app'"),
            tenant_session(shared, RED) as session,
        ):
            session.scalars(select(Project)).all()
    finally:
        shared.dispose()


def test_an_engine_serves_one_pool_mode(red_engine: Engine) -> None:
    with pytest.raises(TenantContextError, match="already has the strict tenant context"):
        install_tenant_context(red_engine)
    install_tenant_context(red_engine, strict=True)  # idempotent in its own mode


# -- SQLAlchemy, asyncio ---------------------------------------------------------------------


@pytest_asyncio.fixture
async def blue_async_engine(strict_pool: RunningServer) -> AsyncIterator[AsyncEngine]:
    engine = async_tenant_engine(
        "postgresql+psycopg://",
        strict=True,
        connect_args=login_settings(strict_pool, BLUE).connect_kwargs(),
        pool_size=1,
        max_overflow=0,
    )
    yield engine
    await engine.dispose()


@pytest.mark.asyncio
async def test_a_strict_async_session_reads_writes_and_is_refused_as_the_orm_sync_one(
    blue_async_engine: AsyncEngine, superuser: psycopg.Connection[Any]
) -> None:
    sessions = async_sessionmaker(blue_async_engine)
    try:
        async with async_tenant_session(sessions, BLUE) as session:
            projects = (
                await session.scalars(select(Project).options(selectinload(Project.tasks)))
            ).all()
            owners = {p.tenant_id for p in projects} | {
                t.tenant_id for p in projects for t in p.tasks
            }
            task = await session.get_one(Task, (BLUE, 1))
            parent = await task.awaitable_attrs.project
            parent_key = (parent.tenant_id, parent.project_id)
            setting = await session.scalar(SETTING)
            session.add(Project(tenant_id=BLUE, project_id=80, name="blue's new project"))

        async def plant_red() -> None:
            async with async_tenant_session(sessions, BLUE) as session:
                session.add(Project(tenant_id=RED, project_id=81, name="planted"))
                await session.flush()

        with pytest.raises(DBAPIError) as refused:
            await plant_red()
        with pytest.raises(TenantContextError, match="not as 'tenant_so-red_pool'"):
            async with async_tenant_session(sessions, RED) as session:
                await session.scalars(select(Project))
        rows = superuser.execute(
            "SELECT tenant_id, project_id FROM tenantkit_sample.projects WHERE project_id >= 80"
        ).fetchall()
    finally:
        superuser.execute("DELETE FROM tenantkit_sample.projects WHERE project_id >= 80")
    assert owners == {BLUE}
    assert parent_key == (BLUE, 1)
    assert setting is None
    assert isinstance(refused.value.orig, errors.InsufficientPrivilege)
    assert rows == [(BLUE, 80)]


# -- psycopg on asyncio ----------------------------------------------------------------------


def last_query(superuser: psycopg.Connection[Any], conn: psycopg.AsyncConnection[Any]) -> str:
    """What the server last ran for `conn`'s session ('' if nothing yet)."""
    row = superuser.execute(
        "SELECT query FROM pg_stat_activity WHERE pid = %s", (conn.info.backend_pid,)
    ).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.asyncio
async def test_a_strict_async_transaction_sees_its_tenant_and_writes_no_other(
    strict_pool: RunningServer,
) -> None:
    kwargs = login_settings(strict_pool, RED).connect_kwargs()
    async with await psycopg.AsyncConnection.connect(**kwargs, autocommit=True) as conn:
        async with async_tenant_transaction(conn, RED, strict=True):
            seen = {
                r[0]
                for r in await (
                    await conn.execute("SELECT tenant_id FROM tenantkit_sample.projects")
                ).fetchall()
            }
            setting = await (await conn.execute(SETTING.text)).fetchone()
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            async with async_tenant_transaction(conn, RED, strict=True):
                await conn.execute(
                    "INSERT INTO tenantkit_sample.projects VALUES (%s, 90, 'planted')", (BLUE,)
                )
        status = conn.info.transaction_status
    assert seen == {RED}
    assert setting == (None,)
    assert status == TransactionStatus.IDLE


@pytest.mark.asyncio
async def test_a_strict_async_transaction_on_another_login_is_refused_before_anything_is_sent(
    strict_pool: RunningServer, superuser: psycopg.Connection[Any]
) -> None:
    kwargs = login_settings(strict_pool, RED).connect_kwargs()
    async with await psycopg.AsyncConnection.connect(**kwargs, autocommit=True) as conn:
        before = last_query(superuser, conn)
        with pytest.raises(TenantContextError, match="not as 'tenant_so-blue_pool'"):
            async with async_tenant_transaction(conn, BLUE, strict=True):
                pytest.fail("BLUE's block must not start on RED's login")
        after = last_query(superuser, conn)
        status = conn.info.transaction_status
    assert after == before  # the server never heard of it
    assert status == TransactionStatus.IDLE


@pytest.mark.asyncio
async def test_a_pool_of_a_tenants_login_serves_that_tenant_strictly(
    strict_pool: RunningServer,
) -> None:
    pool = async_tenant_pool(
        kwargs=login_settings(strict_pool, BLUE).connect_kwargs(), min_size=1, max_size=1
    )
    async with pool:
        async with async_tenant_connection(pool, BLUE, strict=True) as conn:
            cursor = await conn.execute("SELECT DISTINCT tenant_id FROM tenantkit_sample.tasks")
            seen = await cursor.fetchall()
        with pytest.raises(TenantContextError, match="not as 'tenant_so-red_pool'"):
            async with async_tenant_connection(pool, RED, strict=True):
                pytest.fail("RED's block must not start on BLUE's pool")
        async with async_tenant_connection(pool, BLUE, strict=True) as conn:  # still usable
            again = await (
                await conn.execute("SELECT count(*) FROM tenantkit_sample.tasks")
            ).fetchone()
    assert seen == [(BLUE,)]
    assert again == (3,)
