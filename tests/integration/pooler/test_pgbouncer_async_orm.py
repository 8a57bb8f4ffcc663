"""The asyncio and SQLAlchemy integrations through a real PgBouncer in transaction mode: more
concurrent clients than server connections, tenants alternating, no errors and no rows of
another tenant; and the control that shows what prepared statements would do there."""

import asyncio
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import text

from lambda_src.core.connection import ConnectionSettings
from lambda_src.tenant_runtime import async_tenant_connection, async_tenant_pool
from lambda_src.tenant_runtime.orm import (
    async_tenant_engine,
    async_tenant_session,
    tenant_engine,
    tenant_session,
)

from .conftest import SERVER_CONNECTIONS, TENANTS

CLIENTS, TRANSACTIONS = 8, 50
"""Per integration: 8 concurrent clients (PgBouncer has 4 server connections), 50 each."""
READ = "SELECT tenant_id FROM tenantkit_sample.projects WHERE project_id >= :first"
BACKEND = "SELECT pg_backend_pid()"  # the server's, not the pooler's


class Tally:
    """What the clients saw: errors, rows of another tenant, own rows missing, backends."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.backends: set[int] = set()
        self._lock = threading.Lock()

    def saw(self, tenant: str, tenants: list[str], backend: int) -> None:
        with self._lock:
            self.counts["transactions"] += 1
            self.counts["foreign"] += sum(1 for t in tenants if t != tenant)
            self.counts["own missing"] += tenant not in tenants
            self.backends.add(backend)

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")

    def assert_clean(self) -> None:
        summary = f"{dict(self.counts)} errors={Counter(self.errors).most_common(3)}"
        assert self.errors == [], summary
        assert self.counts["transactions"] == CLIENTS * TRANSACTIONS, summary
        assert (self.counts["foreign"], self.counts["own missing"]) == (0, 0), summary
        assert 1 < len(self.backends) <= SERVER_CONNECTIONS, summary


@pytest.mark.asyncio
async def test_async_tenant_transactions_through_pgbouncer(
    pooled_runtime: ConnectionSettings,
) -> None:
    tally = Tally()
    pool = async_tenant_pool(
        kwargs=pooled_runtime.connect_kwargs(), min_size=CLIENTS, max_size=CLIENTS
    )

    async def client(index: int) -> None:
        for n in range(TRANSACTIONS):
            tenant = TENANTS[(index + n) % len(TENANTS)]
            try:
                async with async_tenant_connection(pool, tenant) as conn:
                    query = READ.replace(":first", "%s")
                    rows = await (await conn.execute(query, (1,))).fetchall()
                    rows += await (await conn.execute(query, (0,))).fetchall()
                    backend = await (await conn.execute(BACKEND)).fetchone()
                tally.saw(tenant, [r[0] for r in rows], backend[0] if backend else 0)
            except Exception as error:  # counted, reported by assert_clean
                tally.failed(error)

    async with pool:
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    tally.assert_clean()


def _sqlalchemy_soak(runtime: ConnectionSettings, *, prepared_statements: bool) -> Tally:
    tally = Tally()
    engine = tenant_engine(
        "postgresql+psycopg://",
        connect_args=runtime.connect_kwargs(),
        pool_size=CLIENTS,
        max_overflow=0,
        prepared_statements=prepared_statements,
    )

    def client(index: int) -> None:
        for n in range(TRANSACTIONS):
            tenant = TENANTS[(index + n) % len(TENANTS)]
            try:
                with tenant_session(engine, tenant) as session:
                    tenants = list(session.scalars(text(READ), {"first": 1}))
                    tenants += list(session.scalars(text(READ), {"first": 0}))
                    backend = session.scalar(text(BACKEND))
                tally.saw(tenant, tenants, int(backend or 0))
            except Exception as error:  # counted, reported by assert_clean
                tally.failed(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    engine.dispose()
    return tally


def test_sqlalchemy_sessions_through_pgbouncer(pooled_runtime: ConnectionSettings) -> None:
    _sqlalchemy_soak(pooled_runtime, prepared_statements=False).assert_clean()


def test_sqlalchemy_with_prepared_statements_breaks_behind_pgbouncer_1_18(
    pooled_runtime: ConnectionSettings,
) -> None:
    # The control: what prepared_statements=False keeps away (psycopg prepares each read after
    # 5 runs; the next transaction gets a server connection that never saw it).
    tally = _sqlalchemy_soak(pooled_runtime, prepared_statements=True)
    assert any("does not exist" in error for error in tally.errors), tally.counts
    assert tally.counts["foreign"] == 0


@pytest.mark.asyncio
async def test_async_sqlalchemy_sessions_through_pgbouncer(
    pooled_runtime: ConnectionSettings,
) -> None:
    tally = Tally()
    engine = async_tenant_engine(
        "postgresql+psycopg://",
        connect_args=pooled_runtime.connect_kwargs(),
        pool_size=CLIENTS,
        max_overflow=0,
    )

    async def client(index: int) -> None:
        for n in range(TRANSACTIONS):
            tenant = TENANTS[(index + n) % len(TENANTS)]
            try:
                async with async_tenant_session(engine, tenant) as session:
                    tenants: list[Any] = list(await session.scalars(text(READ), {"first": 1}))
                    tenants += list(await session.scalars(text(READ), {"first": 0}))
                    backend = await session.scalar(text(BACKEND))
                tally.saw(tenant, tenants, int(backend or 0))
            except Exception as error:  # counted, reported by assert_clean
                tally.failed(error)

    try:
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    finally:
        await engine.dispose()
    tally.assert_clean()
