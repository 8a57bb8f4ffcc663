"""Connection pools per tenant login, for a strict pool: a connection opened as one tenant's
login only ever serves that tenant, and all the pools together hold at most `max_total`.

A shared function serving many tenants cannot keep a pool per tenant of the size one pool
would have: 1,000 tenants x 2 connections is more than a cluster's max_connections. So the
bound is on the total. A tenant with an idle connection gets it; otherwise a new connection is
opened while the total is under the bound; at the bound, the least recently returned idle
connection of another tenant is closed to make room; when every connection is busy the request
waits (up to `timeout_s`, then PoolTimeoutError). Returned connections are reset (no held
cursor, no session setting) before they wait for their tenant's next request; a connection
that is broken, closed, or not idle is closed instead.

The bound holds on the server too: a connection closed to make room (or closed on return, with
a request waiting) is closed until its server session has ended, before another is opened in
its place. A backend outlives its client's close for a moment (it is still in pg_stat_activity
and still counts against max_connections); opening at once would let the server see one more.
"""

import os
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from .context import is_idle

Opener = Callable[[str], psycopg.Connection[Any]]
Reset = Callable[[psycopg.Connection[Any]], None]


SESSION_END_TIMEOUT_S = 2.0
"""How long a close waits for the server to end the session, at most (about 4 ms on average,
43 ms at worst, on the embedded server over TLS)."""


def close_until_ended(
    conn: psycopg.Connection[Any], timeout_s: float = SESSION_END_TIMEOUT_S
) -> None:
    """Close `conn` and wait until its server session has ended.

    libpq sends Terminate and closes its descriptor; a duplicate of the descriptor keeps the
    socket open here, and the server closes it when its backend exits, which is what is
    waited for (end of stream or a reset). A broken connection is closed without waiting: its
    Terminate may not have gone, and the server learns of the close only when the socket is."""
    if conn.closed or conn.broken:
        conn.close()
        return
    try:
        watch = socket.socket(fileno=os.dup(conn.fileno()))
    except (OSError, psycopg.Error):
        conn.close()
        return
    deadline = time.monotonic() + timeout_s
    try:
        conn.close()
        while True:
            watch.settimeout(max(deadline - time.monotonic(), 0.001))
            if not watch.recv(4096):
                break  # what the server sends as it ends (TLS close) is of no use here
    except OSError:
        pass  # reset by the server as it exits, or timed out: either way, stop waiting
    finally:
        watch.close()


class PoolTimeoutError(RuntimeError):
    """No connection could be had within the timeout: every one of the bound is in use."""


class TenantLoginPools:
    """Idle connections kept per tenant; at most `max_per_tenant` open for one tenant and
    `max_total` open in all (busy and idle)."""

    def __init__(
        self,
        open_: Opener,
        *,
        max_total: int,
        max_per_tenant: int,
        reset: Reset,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= max_per_tenant <= max_total:
            raise ValueError(
                f"need 1 <= max_per_tenant ({max_per_tenant}) <= max_total ({max_total})"
            )
        self._open = open_
        self._reset = reset
        self.max_total = max_total
        self.max_per_tenant = max_per_tenant
        self.timeout_s = timeout_s
        self._clock = clock
        self._idle: deque[tuple[str, psycopg.Connection[Any]]] = deque()
        """Idle connections, the least recently returned first."""
        self._open_count: Counter[str] = Counter()
        """Open connections (busy, idle or being opened) per tenant."""
        self._changed = threading.Condition()
        self._closed = False
        self.high_water = 0
        """The most connections that were ever open at once (for tests and metrics)."""

    @property
    def open_connections(self) -> int:
        """Connections open now, busy and idle."""
        with self._changed:
            return sum(self._open_count.values())

    @contextmanager
    def connection(self, tenant: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection as `tenant`'s login, returned to its pool afterwards."""
        conn = self._get(tenant)
        try:
            yield conn
        finally:
            self._put(tenant, conn)

    def close(self) -> None:
        """Close every idle connection; connections in use are closed when returned."""
        with self._changed:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            for tenant, _conn in idle:
                self._open_count[tenant] -= 1
            self._changed.notify_all()
        for _tenant, conn in idle:
            conn.close()

    def _get(self, tenant: str) -> psycopg.Connection[Any]:
        deadline = self._clock() + self.timeout_s
        evicted: psycopg.Connection[Any] | None = None
        with self._changed:
            while True:
                if self._closed:
                    raise PoolTimeoutError("the connection pools are closed")
                own = self._take_idle(tenant)
                if own is not None:
                    return own
                if self._open_count[tenant] < self.max_per_tenant:
                    if sum(self._open_count.values()) < self.max_total:
                        break
                    evicted = self._evict_other(tenant)
                    if evicted is not None:
                        break
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise PoolTimeoutError(
                        f"no connection for tenant {tenant!r} within {self.timeout_s} s: "
                        f"{sum(self._open_count.values())} of {self.max_total} open, "
                        f"{self._open_count[tenant]} of {self.max_per_tenant} of its own"
                    )
                self._changed.wait(remaining)
            self._open_count[tenant] += 1  # reserved before opening, outside the lock
            self.high_water = max(self.high_water, sum(self._open_count.values()))
        if evicted is not None:
            close_until_ended(evicted)
        try:
            return self._open(tenant)
        except BaseException:
            self._release(tenant)
            raise

    def _take_idle(self, tenant: str) -> psycopg.Connection[Any] | None:
        """The tenant's most recently returned idle connection (closed ones dropped)."""
        for index in range(len(self._idle) - 1, -1, -1):
            owner, conn = self._idle[index]
            if owner != tenant:
                continue
            del self._idle[index]
            if conn.closed:
                self._open_count[tenant] -= 1
                continue
            return conn
        return None

    def _evict_other(self, tenant: str) -> psycopg.Connection[Any] | None:
        """Make room: take the least recently returned idle connection of another tenant off
        the books (the caller closes it)."""
        for index, (owner, conn) in enumerate(self._idle):
            if owner != tenant:
                del self._idle[index]
                self._open_count[owner] -= 1
                return conn
        return None

    def _release(self, tenant: str) -> None:
        with self._changed:
            self._open_count[tenant] -= 1
            self._changed.notify_all()

    def _put(self, tenant: str, conn: psycopg.Connection[Any]) -> None:
        keep = not conn.closed and not conn.broken and is_idle(conn.info.transaction_status)
        if keep:
            try:
                self._reset(conn)
            except psycopg.Error:
                keep = False
        with self._changed:
            if keep and not self._closed:
                self._idle.append((tenant, conn))
                self._changed.notify_all()
                return
        close_until_ended(conn)
        self._release(tenant)
