"""The pool tier's tenant context on the wire: the messages that open and end a transaction
scoped to one tenant, shared by the sync, asyncio and SQLAlchemy integrations.

Each integration sends exactly these bytes; none builds SQL of its own around a tenant id.
"""

from dataclasses import dataclass
from functools import lru_cache

from psycopg import ConnectionInfo, sql
from psycopg.pq import TransactionStatus

from ..tenancy import POOL, tenant_names, validate_tenant_id


class TenantContextError(RuntimeError):
    """The tenant context could not be opened or ended as asked."""


# BEGIN and the setting travel in one message (simple-query protocol; the id, already checked
# against the tenant-id rules, escaped by psycopg.sql.Literal): the transaction's first round
# trip carries both, so setting the tenant costs no extra round trip. SET LOCAL (set_config(...,
# true) without a result row to send back) ends with COMMIT or ROLLBACK and never leaks into
# the next use of a pooled connection.
_BEGIN_AS_TENANT = sql.SQL("BEGIN; SET LOCAL {} = ").format(
    sql.Identifier(*POOL.tenant_setting.split("."))
)

END_AS_TENANT = b"CLOSE ALL; COMMIT"
"""The last message of a tenant's transaction. WITH HOLD cursors outlive COMMIT: closed before
it, nothing read as this tenant remains fetchable by the connection's next user."""

ROLLBACK = b"ROLLBACK"
"""How a tenant's transaction ends when it fails."""

# These and the first message go with prepare=False: psycopg would otherwise prepare ROLLBACK
# once it has run prepare_threshold times, and behind a transaction pooler that Parse fails on a
# server connection where another client has a statement of that name, leaving the transaction
# open (every later tenant_transaction on the connection then refused it as not idle).


@lru_cache(maxsize=4096)
def begin_as_tenant(tenant_id: str, allow_probes: bool = False) -> bytes:
    """The first message of a tenant's transaction, rendered once per tenant id (validated
    here, before anything can be sent)."""
    valid = validate_tenant_id(tenant_id, allow_probes=allow_probes)
    return sql.Composed([_BEGIN_AS_TENANT, sql.Literal(valid)]).as_bytes(None)


BEGIN_AS_LOGIN = b"BEGIN"
"""The first message of a tenant's transaction in a strict pool: the tenant is the login the
connection logged in as, so there is nothing to set."""
END_AS_LOGIN = b"COMMIT"
"""The last message of a tenant's transaction in a strict pool. A WITH HOLD cursor may outlive
it, but only on the tenant's own login, whose connections no other tenant is ever given (the
pools' reset closes it when the connection is returned)."""


@lru_cache(maxsize=4096)
def login_of(tenant_id: str, allow_probes: bool = False) -> str:
    """The login a connection must have logged in as to serve `tenant_id` in a strict pool
    (validated here, before anything can be sent)."""
    return tenant_names(tenant_id, allow_probes=allow_probes).pool_login


@dataclass(frozen=True)
class TenantMessages:
    """The first and the last message of one tenant's transaction."""

    begin: bytes
    end: bytes


_AS_LOGIN = TenantMessages(BEGIN_AS_LOGIN, END_AS_LOGIN)


def tenant_messages(
    tenant_id: str, info: ConnectionInfo, *, strict: bool, allow_probes: bool = False
) -> TenantMessages:
    """The messages that open and end `tenant_id`'s transaction on the connection `info`
    describes (`conn.info`), the id validated first.

    Settable: BEGIN with SET LOCAL of the tenant, then CLOSE ALL; COMMIT. Strict: a plain
    BEGIN and COMMIT, once the connection's user is the tenant's own login; any other login is
    refused with TenantContextError, so nothing is sent on a connection of another tenant
    (or of the shared runtime login, which sees no tenant in a strict pool).
    """
    if not strict:
        return TenantMessages(begin_as_tenant(tenant_id, allow_probes), END_AS_TENANT)
    login = login_of(tenant_id, allow_probes)
    user = info.user  # what the connection logged in as, known to libpq: no round trip
    if user != login:
        raise TenantContextError(
            f"this connection logged in as {user!r}, not as {login!r}: in a strict pool a "
            "tenant's transactions run on its own login's connections"
        )
    return _AS_LOGIN


def is_idle(status: int) -> bool:
    """Whether a libpq transaction status (`conn.info.transaction_status`) is IDLE: no
    transaction open, none failed, nothing in flight."""
    return TransactionStatus(status) == TransactionStatus.IDLE


__all__ = [
    "BEGIN_AS_LOGIN",
    "END_AS_LOGIN",
    "END_AS_TENANT",
    "ROLLBACK",
    "TenantContextError",
    "TenantMessages",
    "begin_as_tenant",
    "is_idle",
    "login_of",
    "tenant_messages",
]
