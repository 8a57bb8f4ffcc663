"""SQLAlchemy 2.1 on the pool (tenant_runtime.orm), sync and asyncio, against a provisioned pool
on the embedded PostgreSQL: ORM models on the pool's sample tables, and every ORM behaviour that
reaches the database (lazy and eager loads, joins, bulk UPDATE/DELETE, merge, flushes) seeing
and writing one tenant only; sessions reused across tenants; pooled engines shared by tenants."""

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import errors
from sqlalchemy import (
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import (
    Session,
    joinedload,
    selectinload,
    sessionmaker,
)

from lambda_src.core.connection import ConnectionSettings
from lambda_src.tenancy import POOL, InvalidTenantIdError
from lambda_src.tenant_runtime import TenantContextError
from lambda_src.tenant_runtime.orm import (
    TENANT_OPTION,
    async_tenant_engine,
    async_tenant_session,
    install_tenant_context,
    tenant_engine,
    tenant_session,
)
from tenantkit.bench.latency_proxy import latency_proxy

from .orm_models import Project, Task
from .pool_fixtures import aws, config, pool_server  # noqa: F401 (fixtures)
from .tenant_pool_fixtures import (  # noqa: F401 (fixtures)
    TENANTS,
    all_rows,
    pool,
    project_name,
    superuser,
    task_title,
)

WRITE_REFUSED = (errors.InsufficientPrivilege,)
"""What PostgreSQL raises when a row fails the tenant policy's WITH CHECK."""


def refused(error: DBAPIError) -> bool:
    return isinstance(error.orig, WRITE_REFUSED)


@pytest.fixture(scope="module")
def engine(pool: ConnectionSettings) -> Iterator[Engine]:
    """A tenant engine on the runtime login: a pool of 2 connections shared by every test."""
    engine = tenant_engine(
        "postgresql+psycopg://", connect_args=pool.connect_kwargs(), pool_size=2, max_overflow=0
    )
    yield engine
    engine.dispose()


@pytest.fixture
def one_connection(pool: ConnectionSettings) -> Iterator[Engine]:
    """A tenant engine with a single connection: each session gets the previous one's."""
    engine = tenant_engine(
        "postgresql+psycopg://", connect_args=pool.connect_kwargs(), pool_size=1, max_overflow=0
    )
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement the engine sends during the test, in order."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


def raw_setting(engine: Engine) -> tuple[Any, Any]:
    """(transaction status, tenant setting) of a pooled connection, read on the driver
    connection itself (outside any tenant transaction, which the engine would refuse)."""
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert isinstance(driver, psycopg.Connection)
        row = driver.execute("SELECT current_setting(%s, true)", (POOL.tenant_setting,)).fetchone()
        return driver.info.transaction_status, row[0] if row else None
    finally:
        raw.close()


# -- reading: one tenant's rows, however the ORM loads them -----------------------------------


def test_a_tenant_session_reads_only_its_tenants_rows(sessions: sessionmaker[Session]) -> None:
    with tenant_session(sessions, "red") as session:
        names = session.scalars(select(Project.name).order_by(Project.project_id)).all()
        tasks = session.scalar(select(func.count()).select_from(Task))
    assert names == [project_name("red", 1), project_name("red", 2)]
    assert tasks == 3


def test_lazy_loads_across_related_tables_stay_in_the_tenant(
    sessions: sessionmaker[Session],
) -> None:
    # The probe tenants have a project 1 and a task 1 too: the lazy loads' WHERE clauses carry
    # the tenant_id of the object they start from, and the policy the session's tenant.
    with tenant_session(sessions, "blue") as session:
        project = session.get_one(Project, ("blue", 1))
        titles = [task.title for task in project.tasks]  # lazy one-to-many
        task = session.get_one(Task, ("blue", 3))
        parent = task.project.name  # lazy many-to-one
    assert titles == [task_title("blue", 1), task_title("blue", 2)]
    assert parent == project_name("blue", 2)


@pytest.mark.parametrize(
    "option",
    [selectinload(Project.tasks), joinedload(Project.tasks)],
    ids=["selectinload", "joinedload"],
)
def test_eager_loads_see_only_the_tenants_related_rows(
    option: Any, sessions: sessionmaker[Session], statements: list[str]
) -> None:
    with tenant_session(sessions, "green") as session:
        loaded = session.scalars(select(Project).options(option)).unique().all()
        sent = len(statements)
        tree = {p.project_id: [t.task_id for t in p.tasks] for p in loaded}
        owners = {p.tenant_id for p in loaded} | {t.tenant_id for p in loaded for t in p.tasks}
        assert len(statements) == sent  # loaded eagerly: nothing more was sent
    assert tree == {1: [1, 2], 2: [3]}
    assert owners == {"green"}


def test_joins_pair_only_the_tenants_rows_even_without_tenant_id_in_the_join(
    sessions: sessionmaker[Session],
) -> None:
    with tenant_session(sessions, "red") as session:
        by_relationship = session.execute(
            select(Task.tenant_id, Task.title, Project.name)
            .join(Task.project)
            .where(Project.project_id == 1)
            .order_by(Task.task_id)
        ).all()
        # A join on project_id alone would pair every tenant's project 1 with every tenant's
        # tasks of project 1; each table's own policy keeps both sides to red.
        careless = session.execute(
            select(Task.tenant_id, Project.tenant_id).join(
                Project, Project.project_id == Task.project_id
            )
        ).all()
    assert by_relationship == [
        ("red", task_title("red", 1), project_name("red", 1)),
        ("red", task_title("red", 2), project_name("red", 1)),
    ]
    assert set(careless) == {("red", "red")}
    assert len(careless) == 3


# -- writing: one tenant's rows, however the ORM writes them -----------------------------------


@pytest.fixture
def scratch_tasks(sessions: sessionmaker[Session]) -> Iterator[range]:
    """Tasks 100-102 of project 1 for red and for blue, removed afterwards."""
    ids = range(100, 103)
    for tenant in ("red", "blue"):
        with tenant_session(sessions, tenant) as session:
            session.add_all(Task(tenant_id=tenant, task_id=n, project_id=1, title="s") for n in ids)
    yield ids
    for tenant in ("red", "blue"):
        with tenant_session(sessions, tenant) as session:
            session.execute(delete(Task).where(Task.task_id.in_(ids)))


def test_bulk_update_and_delete_touch_only_the_tenants_rows(
    sessions: sessionmaker[Session], scratch_tasks: range, superuser: psycopg.Connection[Any]
) -> None:
    # WHEN red bulk-updates and then bulk-deletes "every" task from 100 on
    with tenant_session(sessions, "red") as session:
        updated = session.execute(
            update(Task).where(Task.task_id >= 100).values(title="bulk"), execution_options={}
        )
        assert updated.rowcount == 3  # type: ignore[attr-defined]
        deleted = session.execute(delete(Task).where(Task.task_id >= 100))
        assert deleted.rowcount == 3  # type: ignore[attr-defined]
    # THEN blue's tasks 100-102 are there, untouched
    rows = [r for r in all_rows(superuser, "tasks") if r[1] in scratch_tasks]
    assert [(r[0], r[1], r[3]) for r in rows] == [("blue", n, "s") for n in scratch_tasks]


def test_a_bulk_update_naming_another_tenant_changes_nothing(
    sessions: sessionmaker[Session], superuser: psycopg.Connection[Any]
) -> None:
    before = all_rows(superuser, "projects")
    with tenant_session(sessions, "red") as session:
        result = session.execute(
            update(Project).where(Project.tenant_id == "blue").values(name="owned by red")
        )
        assert result.rowcount == 0  # type: ignore[attr-defined]
        gone = session.execute(delete(Task).where(Task.tenant_id == "blue"))
        assert gone.rowcount == 0  # type: ignore[attr-defined]
    assert all_rows(superuser, "projects") == before


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda s: s.add(Project(tenant_id="blue", project_id=77, name="planted")),
            id="add-a-row-of-another-tenant",
        ),
        pytest.param(
            lambda s: setattr(s.get_one(Project, ("red", 2)), "tenant_id", "blue"),
            id="move-own-row-to-another-tenant",
        ),
        pytest.param(
            lambda s: s.merge(Project(tenant_id="blue", project_id=1, name="stolen")),
            id="merge-another-tenants-row",
        ),
        pytest.param(
            lambda s: s.get_one(Task, ("red", 1)).__setattr__(
                "project", Project(tenant_id="blue", project_id=88, name="x")
            ),
            id="attach-to-a-new-parent-of-another-tenant",
        ),
    ],
)
def test_a_flush_that_writes_another_tenants_row_is_refused(
    write: Callable[[Session], Any],
    sessions: sessionmaker[Session],
    superuser: psycopg.Connection[Any],
) -> None:
    before = (all_rows(superuser, "projects"), all_rows(superuser, "tasks"))

    def as_red() -> None:
        with tenant_session(sessions, "red") as session:
            write(session)
            session.flush()

    with pytest.raises(DBAPIError) as raised:
        as_red()
    assert refused(raised.value), raised.value
    assert (all_rows(superuser, "projects"), all_rows(superuser, "tasks")) == before


def test_merge_updates_the_tenants_own_row(
    sessions: sessionmaker[Session], superuser: psycopg.Connection[Any]
) -> None:
    with tenant_session(sessions, "green") as session:
        merged = session.merge(Project(tenant_id="green", project_id=2, name="green renamed"))
        assert merged in session
    try:
        assert ("green", 2, "green renamed") in all_rows(superuser, "projects")
        assert ("blue", 2, project_name("blue", 2)) in all_rows(superuser, "projects")
    finally:
        with tenant_session(sessions, "green") as session:
            session.merge(Project(tenant_id="green", project_id=2, name=project_name("green", 2)))


# -- one Session, several tenants one after the other ------------------------------------------


@pytest.mark.parametrize("ending", ["commit", "rollback"])
def test_a_session_reused_for_another_tenant_sees_that_tenant_only(
    ending: str, engine: Engine
) -> None:
    session = Session(engine, expire_on_commit=False)  # loaded state stays in memory

    loaded: list[Project] = []  # a reference keeps red's object in the identity map

    def use_for_red() -> None:
        with tenant_session(session, "red"):
            loaded.append(session.get_one(Project, ("red", 1)))
            if ending == "rollback":
                raise RuntimeError("red's request failed")

    try:
        # GIVEN the session used for red, ended by a commit or by an error
        if ending == "rollback":
            with pytest.raises(RuntimeError):
                use_for_red()
        else:
            use_for_red()
        # WHEN it serves blue
        with tenant_session(session, "blue"):
            from_memory = session.get(Project, ("red", 1))
            names = session.scalars(select(Project.name)).all()
        # THEN red's object is not served from the identity map, and blue sees blue's rows
        assert from_memory is None
        assert loaded[0] not in session
        assert sorted(names) == [project_name("blue", 1), project_name("blue", 2)]
    finally:
        session.close()


def test_a_session_that_commits_inside_its_block_stays_with_its_tenant(
    sessions: sessionmaker[Session],
) -> None:
    with tenant_session(sessions, "red") as session:
        session.scalars(select(Project)).all()
        session.commit()
        owners = set(session.scalars(select(Project.tenant_id)).all())
    assert owners == {"red"}


def test_a_session_with_unflushed_changes_cannot_switch_tenant(engine: Engine) -> None:
    with Session(engine) as session:
        with tenant_session(session, "red"):
            session.scalars(select(Project)).all()
        session.add(Project(tenant_id="red", project_id=66, name="unflushed"))
        unflushed = "unflushed changes made for tenant 'red'"
        with pytest.raises(TenantContextError, match=unflushed), tenant_session(session, "blue"):
            pytest.fail("blue's block must not start")


# -- refused before anything is sent ------------------------------------------------------------


def test_a_session_without_a_tenant_is_refused_before_anything_is_sent(
    engine: Engine, statements: list[str]
) -> None:
    with Session(engine) as session, pytest.raises(TenantContextError, match="one tenant per"):
        session.scalars(select(Project)).all()
    assert statements == []


def test_after_its_block_a_session_begins_nothing(engine: Engine, statements: list[str]) -> None:
    with Session(engine) as session:
        with tenant_session(session, "red"):
            session.scalars(select(Project)).all()
        sent = len(statements)
        with pytest.raises(TenantContextError, match="one tenant per"):
            session.scalars(select(Project)).all()
    assert len(statements) == sent


def test_an_invalid_tenant_id_is_refused_before_a_connection_is_taken(
    engine: Engine, statements: list[str]
) -> None:
    checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
    with pytest.raises(InvalidTenantIdError), tenant_session(engine, "red'; --"):
        pytest.fail("no session for an invalid id")
    assert statements == []
    assert engine.pool.checkedout() == checked_out  # type: ignore[attr-defined]


def test_an_engine_whose_connections_are_not_in_autocommit_is_refused(
    pool: ConnectionSettings,
) -> None:
    plain = create_engine("postgresql+psycopg://", connect_args=pool.connect_kwargs())
    install_tenant_context(plain)
    try:
        with (
            pytest.raises(TenantContextError, match="autocommit"),
            tenant_session(plain, "red") as s,
        ):
            s.scalars(select(Project)).all()
    finally:
        plain.dispose()


def test_only_the_psycopg_driver_is_accepted() -> None:
    with pytest.raises(TenantContextError, match=r"postgresql\+psycopg://, not sqlite"):
        install_tenant_context(create_engine("sqlite://"))


def test_a_statement_after_a_commit_in_sql_text_is_refused(
    sessions: sessionmaker[Session], statements: list[str]
) -> None:

    def commit_in_text_and_go_on() -> None:
        with tenant_session(sessions, "red") as session:
            session.execute(text("COMMIT"))
            session.scalars(select(Project)).all()

    with pytest.raises(TenantContextError, match="outside a tenant transaction"):
        commit_in_text_and_go_on()
    assert not any("projects" in s for s in statements)


def test_a_commit_after_a_swallowed_error_is_refused_not_turned_into_a_rollback(
    sessions: sessionmaker[Session], superuser: psycopg.Connection[Any]
) -> None:
    def write_then_swallow_an_error() -> None:
        with tenant_session(sessions, "red") as session:
            session.add(Project(tenant_id="red", project_id=31, name="written before"))
            session.flush()
            with contextlib.suppress(DBAPIError):
                session.execute(text("SELECT 1 / 0"))
            # the application carries on; PostgreSQL would answer COMMIT with ROLLBACK

    with pytest.raises(TenantContextError, match="failed and was rolled back"):
        write_then_swallow_an_error()
    assert [r for r in all_rows(superuser, "projects") if r[1] == 31] == []


# -- the wire: one round trip for BEGIN and the tenant, nothing left on the connection ---------


def test_begin_and_the_tenant_travel_in_one_message_and_commit_closes_held_cursors(
    sessions: sessionmaker[Session], statements: list[str]
) -> None:
    with tenant_session(sessions, "red") as session:
        session.scalars(select(Project)).all()
    assert statements[0] == 'BEGIN; SET LOCAL "app"."tenant_id" = \'red\''
    assert statements[-1] == "CLOSE ALL; COMMIT"
    assert len(statements) == 3


@pytest.mark.parametrize(("prepared_statements", "prepared"), [(False, 0), (True, 1)])
def test_a_tenant_engine_prepares_nothing_on_the_server_unless_asked(
    prepared_statements: bool, prepared: int, pool: ConnectionSettings
) -> None:
    engine = tenant_engine(
        "postgresql+psycopg://",
        connect_args=pool.connect_kwargs(),
        prepared_statements=prepared_statements,
    )
    try:
        with tenant_session(engine, "red") as session:
            for _ in range(8):  # past psycopg's prepare threshold (5)
                session.execute(select(Project.name).where(Project.project_id == 1)).all()
            on_server = session.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
    finally:
        engine.dispose()
    assert on_server == prepared


def test_the_tenant_context_adds_no_round_trip_to_a_plain_sqlalchemy_transaction(
    pool: ConnectionSettings,
) -> None:
    def round_trips(make: Callable[[dict[str, Any]], Engine], tenant: str | None) -> float:
        with latency_proxy(pool.port, 0) as relay:
            kwargs = {**pool.connect_kwargs(), "port": relay.port}
            engine = make(kwargs)
            try:

                def request() -> None:
                    if tenant is None:  # plain SQLAlchemy: psycopg's BEGIN, no tenant at all
                        with Session(engine) as session, session.begin():
                            session.scalars(select(Project)).all()
                    else:
                        with tenant_session(engine, tenant) as session:
                            session.scalars(select(Project)).all()

                for _ in range(7):  # connect, and past psycopg's prepare threshold (5)
                    request()
                before = relay.round_trips
                for _ in range(10):
                    request()
                return (relay.round_trips - before) / 10
            finally:
                engine.dispose()

    plain = round_trips(lambda kw: create_engine("postgresql+psycopg://", connect_args=kw), None)
    ours = round_trips(lambda kw: tenant_engine("postgresql+psycopg://", connect_args=kw), "red")
    assert plain == ours == 3  # BEGIN (with the tenant), SELECT, COMMIT


def _end_with_commit(session: Session) -> None:
    session.scalars(select(Project)).all()


def _end_with_error(session: Session) -> None:
    raise RuntimeError("the request failed")


def _end_with_sql_error(session: Session) -> None:
    session.execute(text("SELECT 1 / 0"))


def _end_with_held_cursor(session: Session) -> None:
    session.execute(
        text("DECLARE held CURSOR WITH HOLD FOR SELECT * FROM tenantkit_sample.projects")
    )


def _end_with_session_set(session: Session) -> None:
    session.execute(text("SELECT set_config('app.tenant_id', 'red', false)"))


@pytest.mark.parametrize(
    "body",
    [_end_with_commit, _end_with_error, _end_with_sql_error, _end_with_held_cursor],
    ids=["after-commit", "after-rollback", "after-an-error", "after-a-held-cursor"],
)
def test_nothing_of_a_tenant_reaches_the_next_user_of_the_pooled_connection(
    body: Callable[[Session], None], one_connection: Engine
) -> None:
    # GIVEN red's session on the engine's only connection, ended by `body`
    try:
        with tenant_session(one_connection, "red") as session:
            body(session)
    except (RuntimeError, DBAPIError):
        pass
    # THEN the connection is idle with no tenant set, and blue on it sees blue's rows only
    assert raw_setting(one_connection) in (
        (psycopg.pq.TransactionStatus.IDLE, ""),
        (psycopg.pq.TransactionStatus.IDLE, None),
    )
    with tenant_session(one_connection, "blue") as session:
        assert set(session.scalars(select(Project.tenant_id)).all()) == {"blue"}
    held = 'cursor "held" does not exist'
    with pytest.raises(DBAPIError, match=held), tenant_session(one_connection, "blue") as session:
        session.execute(text("FETCH ALL FROM held"))


def test_a_session_level_setting_left_by_sql_text_does_not_reach_the_next_tenant(
    one_connection: Engine,
) -> None:
    # Every transaction on a tenant engine sets its tenant locally, which overrides a session
    # value; a transaction without a tenant is refused. So even SQL text that sets the
    # tenant for the session cannot make the next transaction another tenant's.
    with tenant_session(one_connection, "red") as session:
        _end_with_session_set(session)
    with tenant_session(one_connection, "blue") as session:
        owners = set(session.scalars(select(Project.tenant_id)).all())
    assert owners == {"blue"}


def test_core_connections_carry_the_tenant_as_an_execution_option(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execution_options(**{TENANT_OPTION: "green"})
        with conn.begin():
            owners = set(conn.scalars(select(Project.tenant_id)).all())
    assert owners == {"green"}


# -- a pooled engine shared by tenants --------------------------------------------------------


def test_interleaved_sessions_of_several_tenants_on_a_pooled_engine(
    sessions: sessionmaker[Session],
) -> None:
    # Two sessions open at once on the engine's two connections, their statements interleaved.
    with tenant_session(sessions, "red") as red, tenant_session(sessions, "blue") as blue:
        seen = [
            set(red.scalars(select(Project.tenant_id)).all()),
            set(blue.scalars(select(Project.tenant_id)).all()),
            {t.tenant_id for t in red.get_one(Project, ("red", 1)).tasks},
            {t.tenant_id for t in blue.get_one(Project, ("blue", 1)).tasks},
        ]
    assert seen == [{"red"}, {"blue"}, {"red"}, {"blue"}]


def test_threads_of_several_tenants_share_a_pooled_engine(
    sessions: sessionmaker[Session],
) -> None:
    # GIVEN 3 tenants x 8 threads on an engine of 2 connections, each request holding its
    # transaction across a pause
    results: list[tuple[str, set[str]]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def request(tenant: str) -> None:
        try:
            with tenant_session(sessions, tenant) as session:
                first = set(session.scalars(select(Task.tenant_id)).all())
                session.execute(text("SELECT pg_sleep(0.01)"))
                project = session.get_one(Project, (tenant, 1))
                second = {t.tenant_id for t in project.tasks}
            with lock:
                results.append((tenant, first | second))
        except BaseException as error:  # reported below
            with lock:
                failures.append(error)

    threads = [threading.Thread(target=request, args=(TENANTS[n % 3],)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # THEN every request saw its own tenant only
    assert failures == []
    assert len(results) == 24
    assert all(seen == {tenant} for tenant, seen in results)


# -- asyncio: create_async_engine("postgresql+psycopg://...") ---------------------------------


@pytest_asyncio.fixture
async def async_engine(pool: ConnectionSettings) -> AsyncIterator[AsyncEngine]:
    """An async tenant engine of 3 connections (one per test: it belongs to the test's loop)."""
    engine = async_tenant_engine(
        "postgresql+psycopg://", connect_args=pool.connect_kwargs(), pool_size=3, max_overflow=0
    )
    yield engine
    await engine.dispose()


@pytest.mark.asyncio
async def test_async_sessions_load_lazily_and_eagerly_within_the_tenant(
    async_engine: AsyncEngine,
) -> None:
    async with async_tenant_session(async_sessionmaker(async_engine), "blue") as session:
        eager = (await session.scalars(select(Project).options(selectinload(Project.tasks)))).all()
        tree = {p.project_id: [t.task_id for t in p.tasks] for p in eager}
        owners = {p.tenant_id for p in eager}
        task = await session.get_one(Task, ("blue", 3))
        parent = await task.awaitable_attrs.project  # a lazy load, awaited
        assert (parent.tenant_id, parent.project_id) == ("blue", 2)
    assert tree == {1: [1, 2], 2: [3]}
    assert owners == {"blue"}


@pytest.mark.asyncio
async def test_async_bulk_writes_and_merge_stay_in_the_tenant(
    async_engine: AsyncEngine, superuser: psycopg.Connection[Any]
) -> None:
    before = all_rows(superuser, "projects")
    async with async_tenant_session(async_engine, "red") as session:
        moved = await session.execute(
            update(Project).where(Project.tenant_id != "red").values(name="red was here")
        )
        assert moved.rowcount == 0  # type: ignore[attr-defined]
    with pytest.raises(DBAPIError) as raised:
        async with async_tenant_session(async_engine, "red") as session:
            await session.merge(Project(tenant_id="blue", project_id=1, name="stolen"))
    assert refused(raised.value)
    assert all_rows(superuser, "projects") == before


@pytest.mark.asyncio
@pytest.mark.parametrize("ending", ["commit", "rollback"])
async def test_an_async_session_reused_for_another_tenant_sees_that_tenant_only(
    ending: str, async_engine: AsyncEngine
) -> None:
    session = async_sessionmaker(async_engine, expire_on_commit=False)()
    try:
        try:
            async with async_tenant_session(session, "red"):
                red_project = await session.get_one(Project, ("red", 1))  # kept: in the map
                if ending == "rollback":
                    raise RuntimeError("red's request failed")
        except RuntimeError:
            assert ending == "rollback"
        async with async_tenant_session(session, "blue"):
            from_memory = await session.get(Project, ("red", 1))
            owners = set((await session.scalars(select(Project.tenant_id))).all())
        assert from_memory is None
        assert red_project not in session
        assert owners == {"blue"}
    finally:
        await session.close()


@pytest.mark.asyncio
async def test_an_async_session_without_a_tenant_is_refused(async_engine: AsyncEngine) -> None:
    async with async_sessionmaker(async_engine)() as session:
        with pytest.raises(TenantContextError, match="one tenant per"):
            await session.scalars(select(Project))


@pytest.mark.asyncio
async def test_concurrent_async_sessions_of_several_tenants_share_a_pooled_engine(
    async_engine: AsyncEngine,
) -> None:
    factory = async_sessionmaker(async_engine)

    async def request(tenant: str) -> tuple[str, set[str]]:
        async with async_tenant_session(factory, tenant) as session:
            first = set((await session.scalars(select(Task.tenant_id))).all())
            await session.execute(text("SELECT pg_sleep(0.02)"))
            project = await session.get_one(
                Project, (tenant, 1), options=[selectinload(Project.tasks)]
            )
            return tenant, first | {t.tenant_id for t in project.tasks}

    results = await asyncio.gather(*(request(TENANTS[n % 3]) for n in range(30)))
    assert all(seen == {tenant} for tenant, seen in results)


@pytest.mark.asyncio
@pytest.mark.parametrize("ending", ["commit", "error"])
async def test_nothing_of_a_tenant_reaches_the_next_user_of_a_pooled_async_connection(
    ending: str, pool: ConnectionSettings
) -> None:
    engine = async_tenant_engine(
        "postgresql+psycopg://", connect_args=pool.connect_kwargs(), pool_size=1, max_overflow=0
    )
    try:
        try:
            async with async_tenant_session(engine, "red") as session:
                await session.execute(text("SELECT 1" if ending == "commit" else "SELECT 1 / 0"))
        except DBAPIError:
            assert ending == "error"
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert isinstance(driver, psycopg.AsyncConnection)
            cursor = await driver.execute(
                "SELECT current_setting(%s, true)", (POOL.tenant_setting,)
            )
            assert (await cursor.fetchone()) in (("",), (None,))
        async with async_tenant_session(engine, "blue") as session:
            assert set((await session.scalars(select(Project.tenant_id))).all()) == {"blue"}
    finally:
        await engine.dispose()
