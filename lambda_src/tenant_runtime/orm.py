"""SQLAlchemy 2.1 (sync and asyncio) on the pool tier: a Session bound to one tenant.

    engine = tenant_engine("postgresql+psycopg://", connect_args=settings.connect_kwargs())
    Session = sessionmaker(engine)
    with tenant_session(Session, tenant_id) as session:  # validated id
        session.scalars(select(Order)).all()  # only this tenant's rows; committed at the end

    engine = async_tenant_engine("postgresql+psycopg://", connect_args=...)
    async with async_tenant_session(async_sessionmaker(engine), tenant_id) as session:
        ...

How it works, with the messages of context.py:
- The engine's DBAPI connections are in autocommit (isolation_level="AUTOCOMMIT"), so psycopg
  never sends a BEGIN of its own. SQLAlchemy still begins a transaction before any statement
  and fires its `begin` event; the listener sends tenantkit's first message there, BEGIN and
  SET LOCAL of the tenant in one round trip, for the tenant the Connection carries in its
  execution options (TENANT_OPTION). A Session applies its own execution options to every
  connection it procures before that connection begins (SQLAlchemy 2.1), which is how
  tenant_session hands the tenant over; a Session that commits and goes on begins as the same
  tenant again.
- The `commit` event sends CLOSE ALL; COMMIT (psycopg's own commit() then finds nothing to
  commit); a rollback is psycopg's ROLLBACK. The setting is transaction-local either way.
- Refused before anything is sent: a transaction without a tenant (a Session outside
  tenant_session, `engine.connect()` without the option), an invalid tenant id, a connection
  that is not idle or not in autocommit. Refused before it is sent: a statement that would run
  outside any transaction (after a COMMIT written in SQL text).
- A Session entering tenant_session for another tenant than the last one starts with an empty
  identity map: an object loaded for one tenant is never served to another from memory.
- A strict pool (`strict=True`): an engine's connections log in as one tenant's own login
  (`tenant_<id>_pool`), so an engine serves one tenant. The `begin` listener checks the
  connection's login against the tenant it is asked for (libpq knows it: no round trip) and
  sends a plain BEGIN, the `commit` listener a plain COMMIT; a Session bound to any other
  tenant is refused at its first begin, before anything is sent.

Ships in lambda_src beside the rest of the runtime, but SQLAlchemy does not: an application
that uses this module bundles SQLAlchemy (and greenlet, for asyncio) itself.
"""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import sqlalchemy
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import immutabledict

from ..tenancy import validate_tenant_id
from .context import END_AS_LOGIN, END_AS_TENANT, TenantContextError, is_idle, tenant_messages

if tuple(int(part) for part in sqlalchemy.__version__.split(".")[:2]) < (2, 1):
    # 2.0 applies a Session's execution options to its statements only, not to the
    # connection it begins: the tenant would never reach the `begin` event.
    raise ImportError(
        f"tenant_runtime.orm needs SQLAlchemy 2.1 or newer, not {sqlalchemy.__version__}"
    )

TENANT_OPTION = "tenantkit_tenant_id"
"""The execution option that names a Connection's tenant (set by tenant_session)."""

_OWN_MESSAGE = "tenantkit_context_message"
"""Marks the listeners' own BEGIN/COMMIT messages, which the statement check lets through."""

_LAST_TENANT = "tenantkit_last_tenant"
"""Session.info key: the tenant whose objects the session's identity map may hold."""

_SEND = immutabledict({"no_parameters": True, _OWN_MESSAGE: True})
# no_parameters: psycopg gets the message without parameters, so it goes out as one simple
# query (several statements in one message) and no '%' in it is read as a placeholder.


def _driver_connection(conn: Connection) -> Any:
    """The psycopg connection (or SQLAlchemy's asyncio adapter of one) under `conn`."""
    return conn.connection.dbapi_connection


def _begin(conn: Connection, *, strict: bool) -> None:
    tenant = conn.get_execution_options().get(TENANT_OPTION)
    if tenant is None:
        raise TenantContextError(
            "this engine serves one tenant per transaction: use tenant_session() (or a "
            f"connection with the execution option {TENANT_OPTION}); nothing was sent"
        )
    dbapi = _driver_connection(conn)
    # strict: a connection of another login is refused here, before anything is sent on it
    message = tenant_messages(tenant, dbapi.info, strict=strict).begin
    if not dbapi.autocommit:
        raise TenantContextError(
            "the engine's connections must be in autocommit (create_engine(..., "
            "isolation_level='AUTOCOMMIT'), as tenant_engine() does): tenantkit sends BEGIN "
            "itself, with the tenant"
        )
    if not is_idle(dbapi.info.transaction_status):
        raise TenantContextError("a tenant transaction needs an idle connection")
    conn.exec_driver_sql(message.decode(), execution_options=_SEND)


def _commit(conn: Connection, *, strict: bool) -> None:
    dbapi = _driver_connection(conn)
    if dbapi.closed or is_idle(dbapi.info.transaction_status):
        return
    if dbapi.info.transaction_status == TransactionStatus.INERROR:
        # COMMIT of a failed transaction rolls back and reports success: say so instead.
        conn.exec_driver_sql("ROLLBACK", execution_options=_SEND)
        raise TenantContextError("the transaction failed and was rolled back")
    end = END_AS_LOGIN if strict else END_AS_TENANT
    conn.exec_driver_sql(end.decode(), execution_options=_SEND)


def _on_statement(
    conn: Connection,
    _cursor: Any,
    _statement: str,
    _parameters: Any,
    context: ExecutionContext | None,
    _executemany: bool,
) -> None:
    options = context.execution_options if context is not None else conn.get_execution_options()
    if options.get(_OWN_MESSAGE):
        return
    if is_idle(_driver_connection(conn).info.transaction_status):
        # In autocommit, a statement with no transaction open would run with no tenant
        # (0 rows) and commit on its own: a COMMIT or ROLLBACK in SQL text ended ours.
        raise TenantContextError(
            "statement outside a tenant transaction (did SQL text end it?); nothing was sent"
        )


def _on_begin(conn: Connection) -> None:
    _begin(conn, strict=False)


def _on_commit(conn: Connection) -> None:
    _commit(conn, strict=False)


def _on_begin_strict(conn: Connection) -> None:
    _begin(conn, strict=True)


def _on_commit_strict(conn: Connection) -> None:
    _commit(conn, strict=True)


_LISTENERS = {
    False: (("begin", _on_begin), ("commit", _on_commit)),
    True: (("begin", _on_begin_strict), ("commit", _on_commit_strict)),
}
"""The begin and commit listeners of each mode (settable: False, strict: True)."""


def install_tenant_context(engine: Engine | AsyncEngine, *, strict: bool = False) -> None:
    """Make `engine` open every transaction as the tenant its connection carries (idempotent).

    The engine must use the psycopg driver (`postgresql+psycopg://`) with
    isolation_level="AUTOCOMMIT"; tenant_engine() and async_tenant_engine() create one so (and
    turn psycopg's prepared statements off, which an engine of your own does with
    connect_args={"prepare_threshold": None}). `strict=True` (a strict pool): the engine's
    connections log in as one tenant's own login, each transaction is a plain BEGIN ...
    COMMIT, and a transaction for any other tenant is refused before anything is sent.
    An engine is in one mode: installing the other one is refused.
    """
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    dialect = sync.dialect
    if (dialect.name, dialect.driver) != ("postgresql", "psycopg"):
        raise TenantContextError(
            f"tenant_runtime.orm needs postgresql+psycopg://, not {dialect.name}+{dialect.driver}"
        )
    if getattr(dialect, "skip_autocommit_rollback", False):
        raise TenantContextError("skip_autocommit_rollback would leave tenant transactions open")
    if any(event.contains(sync, name, fn) for name, fn in _LISTENERS[not strict]):
        raise TenantContextError(
            f"the engine already has the {'settable' if strict else 'strict'} tenant context: "
            "an engine serves one pool mode"
        )
    for name, listener in (*_LISTENERS[strict], ("before_cursor_execute", _on_statement)):
        if not event.contains(sync, name, listener):
            event.listen(sync, name, listener)


def _tenant_engine_options(options: dict[str, Any], prepared_statements: bool) -> dict[str, Any]:
    if options.get("isolation_level", "AUTOCOMMIT") != "AUTOCOMMIT":
        raise TenantContextError(
            "a tenant engine runs with isolation_level='AUTOCOMMIT' at the driver "
            "(tenantkit sends BEGIN itself); transactions are READ COMMITTED"
        )
    connect_args = dict(options.get("connect_args") or {})
    if not prepared_statements:
        # As tenant_transaction: psycopg prepares nothing on the server (a transaction-mode
        # pooler may hand the next transaction another server connection).
        connect_args["prepare_threshold"] = None
    return {**options, "isolation_level": "AUTOCOMMIT", "connect_args": connect_args}


def tenant_engine(
    url: str | sqlalchemy.URL,
    *,
    prepared_statements: bool = False,
    strict: bool = False,
    **options: Any,
) -> Engine:
    """create_engine() for the pool database, with the tenant context installed.

    `prepared_statements=False` (the default) gives every connection prepare_threshold=None:
    nothing is prepared on the server, as PgBouncer before 1.21 and RDS Proxy need; True leaves
    psycopg's own threshold (a direct connection, PgBouncer 1.21+ with prepared statements).
    `strict=True`: an engine of one tenant's own login in a strict pool (its connect_args log in
    as `tenant_<id>_pool`); its sessions serve that tenant only (install_tenant_context).
    """
    engine = sqlalchemy.create_engine(url, **_tenant_engine_options(options, prepared_statements))
    install_tenant_context(engine, strict=strict)
    return engine


def async_tenant_engine(
    url: str | sqlalchemy.URL,
    *,
    prepared_statements: bool = False,
    strict: bool = False,
    **options: Any,
) -> AsyncEngine:
    """create_async_engine() for the pool database, with the tenant context installed
    (`prepared_statements` and `strict` as for tenant_engine)."""
    engine = _create_async_engine(url, **_tenant_engine_options(options, prepared_statements))
    install_tenant_context(engine, strict=strict)
    return engine


def _bind(session: Session, tenant: str) -> None:
    # A session outside a tenant block never holds a connection of a tenant engine (its
    # begin is refused), so binding it applies to every connection it will procure.
    if TENANT_OPTION in session.execution_options:
        raise TenantContextError(
            "the session is already bound to tenant "
            f"{session.execution_options[TENANT_OPTION]!r}: tenant blocks do not nest"
        )
    last = session.info.get(_LAST_TENANT)
    if last is not None and last != tenant:
        if session.new or session.dirty or session.deleted:
            raise TenantContextError(
                f"the session holds unflushed changes made for tenant {last!r}: flush or "
                "discard them before it serves another tenant"
            )
        session.expunge_all()  # objects of the last tenant are never served from memory
    session.info[_LAST_TENANT] = tenant
    session.execution_options = session.execution_options.union({TENANT_OPTION: tenant})


def _unbind(session: Session) -> None:
    session.execution_options = immutabledict(
        {k: v for k, v in session.execution_options.items() if k != TENANT_OPTION}
    )


@contextmanager
def tenant_session(
    sessions: Engine | sessionmaker[Session] | Session, tenant_id: str
) -> Iterator[Session]:
    """A Session whose transactions see `tenant_id`'s rows only, committed when the body
    returns and rolled back when it raises.

    Given an engine or a sessionmaker, a new session, closed afterwards. Given a Session with
    no transaction in progress, that session, bound to the tenant for the block only: after it,
    the session begins no transaction until it is bound again. The id is validated before
    anything is sent.
    """
    tenant = validate_tenant_id(tenant_id)
    if isinstance(sessions, Session):
        session, owned = sessions, False
    else:
        session, owned = (Session(sessions) if isinstance(sessions, Engine) else sessions()), True
    try:
        _bind(session, tenant)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            _unbind(session)
    finally:
        if owned:
            session.close()


@asynccontextmanager
async def async_tenant_session(
    sessions: AsyncEngine | async_sessionmaker[AsyncSession] | AsyncSession, tenant_id: str
) -> AsyncIterator[AsyncSession]:
    """tenant_session for asyncio: an AsyncSession (new from an AsyncEngine or an
    async_sessionmaker, or the one given) bound to `tenant_id` for the block."""
    tenant = validate_tenant_id(tenant_id)
    if isinstance(sessions, AsyncSession):
        session, owned = sessions, False
    elif isinstance(sessions, AsyncEngine):
        session, owned = AsyncSession(sessions), True
    else:
        session, owned = sessions(), True
    try:
        _bind(session.sync_session, tenant)
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        finally:
            _unbind(session.sync_session)
    finally:
        if owned:
            await session.close()


__all__ = [
    "TENANT_OPTION",
    "async_tenant_engine",
    "async_tenant_session",
    "install_tenant_context",
    "tenant_engine",
    "tenant_session",
]
