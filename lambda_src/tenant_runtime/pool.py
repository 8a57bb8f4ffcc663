"""The pool tier's tenant context: a transaction that sees exactly one tenant's rows."""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from ..tenancy import POOL, validate_tenant_id


class TenantContextError(RuntimeError):
    """The tenant context could not be opened or ended as asked."""


# BEGIN and the setting travel in one message (simple-query protocol, value escaped by
# psycopg.sql.Literal): the transaction's first round trip carries both, so setting the tenant
# costs no extra round trip. set_config(..., true) is transaction-local: it ends with COMMIT or
# ROLLBACK and never leaks into the next use of a pooled connection.
_BEGIN_AS_TENANT = sql.SQL("BEGIN; SELECT set_config({}, {}, true)")
# WITH HOLD cursors outlive COMMIT: close them before it, so nothing read as this tenant
# remains fetchable by the connection's next user.
_END = sql.SQL("CLOSE ALL; COMMIT")


def _status(conn: psycopg.Connection) -> TransactionStatus:
    return TransactionStatus(conn.info.transaction_status)


@contextmanager
def tenant_transaction(
    conn: psycopg.Connection, tenant_id: str, *, allow_probes: bool = False
) -> Iterator[psycopg.Connection]:
    """Run the body in a transaction scoped to `tenant_id` on the pool database.

    Commits when the body returns, rolls back when it raises. The connection must be idle (not
    inside a transaction); its autocommit setting is restored afterwards. The id is validated
    against the tenant-id rules before anything is sent.
    """
    validate_tenant_id(tenant_id, allow_probes=allow_probes)
    if _status(conn) != TransactionStatus.IDLE:
        raise TenantContextError(
            "tenant_transaction needs an idle connection: it opens its own transaction"
        )
    autocommit = conn.autocommit
    conn.autocommit = True  # BEGIN is ours, sent together with the setting
    try:
        conn.execute(
            _BEGIN_AS_TENANT.format(sql.Literal(POOL.tenant_setting), sql.Literal(tenant_id))
        )
        try:
            yield conn
        except BaseException:
            if not conn.closed and _status(conn) != TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise
        status = _status(conn)
        if status == TransactionStatus.INTRANS:
            conn.execute(_END)
        elif status == TransactionStatus.INERROR:
            conn.execute("ROLLBACK")
            raise TenantContextError("the transaction failed and was rolled back")
    finally:
        if not conn.closed and _status(conn) == TransactionStatus.IDLE:
            conn.autocommit = autocommit
