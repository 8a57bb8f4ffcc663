"""The pool tier's tenant context for asyncio: psycopg's AsyncConnection and AsyncConnectionPool.

    pool = async_tenant_pool(kwargs=settings.connect_kwargs(), max_size=10)
    async with pool:
        async with async_tenant_connection(pool, tenant_id) as conn:
            rows = await (await conn.execute("SELECT ...")).fetchall()  # this tenant's rows

The same guarantees as the sync `tenant_transaction`, with the same messages (context.py): the
id is validated before anything is sent, BEGIN and the transaction-local setting travel in one
round trip, WITH HOLD cursors are closed before COMMIT, the connection must be idle, an error
rolls back (a failed first message included), autocommit is restored, and nothing is prepared
on the server unless prepared_statements=True (a transaction-mode pooler may be in the path).
In a strict pool (`strict=True`) the connection is the tenant's own login's, checked before
anything is sent, and the transaction a plain BEGIN ... COMMIT. Asyncio adds one case: a task
cancelled while its statement runs. psycopg cancels the statement and the transaction is
rolled back; a connection still busy after that would be closed (the server ends the
transaction with the session), never handed on mid-transaction.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from ..tenancy import validate_tenant_id
from .context import ROLLBACK, TenantContextError, is_idle, tenant_messages


def _status(conn: psycopg.AsyncConnection[Any]) -> TransactionStatus:
    return TransactionStatus(conn.info.transaction_status)


class async_tenant_transaction:  # noqa: N801 - used like a function: `async with ...(...)`
    """A transaction on the pool database scoped to one tenant, on an AsyncConnection.

    `async with async_tenant_transaction(conn, tenant_id) as conn:` commits when the body
    returns and rolls back when it raises. The connection must be idle; its autocommit setting
    is restored afterwards. The id is validated against the tenant-id rules before anything is
    sent (here, in the constructor). `prepared_statements` as for tenant_transaction: False
    (the default), nothing of the transaction is prepared on the server (a transaction-mode
    pooler may be in the path); True, the connection's prepare_threshold applies.

    `strict=True` (a strict pool), as for tenant_transaction: the connection must have logged
    in as the tenant's own login (checked in the constructor, nothing sent otherwise), and the
    transaction is a plain BEGIN ... COMMIT.
    """

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant_id: str,
        *,
        allow_probes: bool = False,
        prepared_statements: bool = False,
        strict: bool = False,
    ) -> None:
        self._conn = conn
        messages = tenant_messages(tenant_id, conn.info, strict=strict, allow_probes=allow_probes)
        self._begin, self._end_message = messages.begin, messages.end
        self._autocommit = conn.autocommit
        self._prepared_statements = prepared_statements
        self._prepare_threshold = conn.prepare_threshold

    async def __aenter__(self) -> psycopg.AsyncConnection[Any]:
        conn = self._conn
        if not is_idle(conn.info.transaction_status):
            raise TenantContextError(
                "async_tenant_transaction needs an idle connection: it opens its own transaction"
            )
        if not self._prepared_statements:
            conn.prepare_threshold = None
        try:
            if not self._autocommit:
                await conn.set_autocommit(True)  # BEGIN is ours, sent with the setting
            await conn.execute(self._begin, prepare=False)
        except BaseException:
            # The body will not run and __aexit__ will not be called: end what the first
            # message may have opened here, so the connection is usable (or closed) after it.
            await self._end_failed()
            raise
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        if conn.closed:
            return
        if exc_type is not None:
            await self._end_failed()
            return
        status = _status(conn)
        try:
            if status == TransactionStatus.INTRANS:
                await conn.execute(self._end_message, prepare=False)
            elif status == TransactionStatus.INERROR:
                await conn.execute(ROLLBACK, prepare=False)
                raise TenantContextError("the transaction failed and was rolled back")
        except BaseException:
            await self._end_failed()
            raise
        await self._restore()

    async def _end_failed(self) -> None:
        """Roll back whatever is open; close a connection whose statement is still in flight
        (a cancelled task) or whose rollback failed, since its transaction cannot be ended
        any other way."""
        conn = self._conn
        try:
            status = _status(conn)
            if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                await conn.execute(ROLLBACK, prepare=False)
            elif status != TransactionStatus.IDLE:
                await conn.close()
        except BaseException:
            await conn.close()
            raise
        finally:
            await self._restore()

    async def _restore(self) -> None:
        conn = self._conn
        conn.prepare_threshold = self._prepare_threshold
        if not self._autocommit and not conn.closed and is_idle(conn.info.transaction_status):
            await conn.set_autocommit(False)


async def configure_pooled_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """A new pooled connection: autocommit, since async_tenant_transaction sends its own BEGIN."""
    await conn.set_autocommit(True)


async def reset_pooled_connection_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """Whatever the borrower left: no held cursor, no session setting (a tenant set with SET)."""
    await conn.execute("CLOSE ALL; RESET ALL")


ConnectKwargs = (
    dict[str, Any] | Callable[[], dict[str, Any]] | Callable[[], Awaitable[dict[str, Any]]]
)
"""psycopg connection keyword arguments, or a (sync or async) callable returning them for each
new connection (a fresh IAM token, a password read from its secret)."""


def async_tenant_pool(
    *, kwargs: ConnectKwargs, min_size: int = 1, max_size: int = 10, **pool_options: Any
) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """An AsyncConnectionPool for the pool database's runtime login, not yet open (`async with
    pool:` or `await pool.open()`): autocommit connections, reset when returned."""
    return AsyncConnectionPool(
        kwargs=kwargs,
        min_size=min_size,
        max_size=max_size,
        configure=configure_pooled_connection,
        reset=reset_pooled_connection_async,
        open=False,
        **pool_options,
    )


@asynccontextmanager
async def async_tenant_connection(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]],
    tenant_id: str,
    *,
    prepared_statements: bool = False,
    strict: bool = False,
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection inside async_tenant_transaction (committed when the body returns).
    `strict=True`: `pool` is the tenant's own login's pool (a connection of any other login is
    refused before anything is sent on it)."""
    validate_tenant_id(tenant_id)  # before a connection is borrowed
    async with (
        pool.connection() as conn,
        async_tenant_transaction(
            conn, tenant_id, prepared_statements=prepared_statements, strict=strict
        ) as scoped,
    ):
        yield scoped


__all__ = [
    "async_tenant_connection",
    "async_tenant_pool",
    "async_tenant_transaction",
    "configure_pooled_connection",
    "reset_pooled_connection_async",
]
