"""The pool tier's tenant context: a transaction that sees exactly one tenant's rows.

The messages it sends are context.py's (shared with pool_async and orm)."""

from types import TracebackType
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from .context import ROLLBACK, TenantContextError, tenant_messages


def _status(conn: psycopg.Connection[Any]) -> TransactionStatus:
    return TransactionStatus(conn.info.transaction_status)


class tenant_transaction:  # noqa: N801 - used like a function: `with tenant_transaction(...)`
    """A transaction on the pool database scoped to one tenant.

    `with tenant_transaction(conn, tenant_id) as conn:` commits when the body returns and rolls
    back when it raises. The connection must be idle (not inside a transaction); its autocommit
    setting is restored afterwards. The id is validated against the tenant-id rules before
    anything is sent. If the first message fails (BEGIN and the setting), the connection is
    rolled back and left idle for its next user, and the error is raised.

    `prepared_statements=False` (the default): no statement of the transaction is prepared on
    the server, whatever the connection's `prepare_threshold` says. Behind a transaction-mode
    pooler (PgBouncer before 1.21, or with max_prepared_statements = 0) the next transaction
    runs on another server connection, where psycopg's `_pg3_<n>` statements do not exist or
    are another client's; RDS Proxy pins the session on a prepared statement. True: the
    connection's own setting applies (a direct connection, PgBouncer 1.21+ with
    max_prepared_statements > 0).

    `strict=True` (a strict pool): the connection must have logged in as the tenant's own login
    (TenantNames.pool_login; checked against the connection's user, no round trip), and the
    transaction opens with a plain BEGIN and ends with a plain COMMIT: the policies read the
    tenant from the login, and what the transaction leaves (a held cursor) stays with it.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
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

    def __enter__(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if _status(conn) != TransactionStatus.IDLE:
            raise TenantContextError(
                "tenant_transaction needs an idle connection: it opens its own transaction"
            )
        if not self._prepared_statements:
            conn.prepare_threshold = None
        try:
            if not self._autocommit:
                conn.autocommit = True  # BEGIN is ours, sent together with the setting
            conn.execute(self._begin, prepare=False)
        except BaseException:
            # BEGIN may have run and the setting failed (or the wait was interrupted): no
            # __exit__ follows a failed __enter__, so leave the connection idle here.
            self._end(rollback=True)
            raise
        return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        if exc_type is not None:
            self._end(rollback=True)
            return
        try:
            if conn.closed:
                return
            status = _status(conn)
            if status == TransactionStatus.INTRANS:
                conn.execute(self._end_message, prepare=False)
            elif status == TransactionStatus.INERROR:
                conn.execute(ROLLBACK, prepare=False)
                raise TenantContextError("the transaction failed and was rolled back")
        finally:
            self._restore()

    def _end(self, *, rollback: bool) -> None:
        """Roll back whatever is open (never raising over the error being handled), then
        restore the connection's settings."""
        conn = self._conn
        try:
            if rollback and not conn.closed and _status(conn) != TransactionStatus.IDLE:
                conn.execute(ROLLBACK, prepare=False)
        except psycopg.Error:
            # A connection that cannot even roll back is of no use to anyone: closed, a pool
            # replaces it (a broken one psycopg has closed already).
            if not conn.closed and _status(conn) != TransactionStatus.IDLE:
                conn.close()
        finally:
            self._restore()

    def _restore(self) -> None:
        conn = self._conn
        conn.prepare_threshold = self._prepare_threshold
        if not self._autocommit and not conn.closed and _status(conn) == TransactionStatus.IDLE:
            conn.autocommit = False
