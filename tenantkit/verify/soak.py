"""A concurrency soak of the pool runtime: threads of tenant transactions, each on a connection
of its own (directly to the server or through a pooler), each transaction reading its tenant's
rows with parameterized statements, as an application does. It counts errors, transactions that
saw another tenant's rows (or none of their own), and the server backends that served them.

A thread keeps its connection after an error, as an application's pool would hand it out again:
a connection an error left unusable shows up as errors in every later transaction. In a strict
pool (run_login_soak) the connections are the tenants' own logins', from TenantLoginPools.
"""

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from lambda_src.core.connection import ConnectionSettings
from lambda_src.tenancy import POOL
from lambda_src.tenant_runtime import TenantContextError, tenant_transaction
from lambda_src.tenant_runtime.access import reset_pooled_connection
from lambda_src.tenant_runtime.login_pools import PoolTimeoutError, TenantLoginPools

PROJECTS = sql.SQL("{}.projects").format(sql.Identifier(POOL.sample_schema))
TASKS = sql.SQL("{}.tasks").format(sql.Identifier(POOL.sample_schema))
# Two parameterized statements per transaction: psycopg prepares each on the server once it has
# run prepare_threshold (5) times on a connection, unless the transaction says otherwise.
_READ = sql.SQL("SELECT tenant_id, pg_backend_pid() FROM {} WHERE project_id > %s").format(PROJECTS)
_COUNT = sql.SQL("SELECT count(*) FROM {} WHERE project_id >= %s").format(TASKS)

Transaction = Callable[[psycopg.Connection[Any], str], AbstractContextManager[Any]]


@dataclass(frozen=True)
class SoakResult:
    """What a soak saw."""

    transactions: int
    errors: dict[str, int]
    """Each error's first line (psycopg's statement names as _pg3_<n>) and how often."""
    cross_tenant: int
    """Transactions that read a row of another tenant."""
    own_rows_missing: int
    """Transactions that read none of their own tenant's rows (the context was lost)."""
    backends: int
    """Distinct server backends that ran the reads (fewer than threads: a pooler multiplexed)."""
    seconds: float

    @property
    def failed(self) -> int:
        """Transactions that raised."""
        return sum(self.errors.values())

    def summary(self) -> str:
        """One line for a report or an assertion message."""
        top = ", ".join(f"{count} x {text}" for text, count in Counter(self.errors).most_common(4))
        return (
            f"{self.transactions} transactions in {self.seconds:.1f} s: {self.failed} failed"
            f"{f' ({top})' if top else ''}, {self.cross_tenant} saw another tenant's rows, "
            f"{self.own_rows_missing} saw none of their own, {self.backends} server backends"
        )


class _WrongStatementError(Exception):
    """The read returned rows of another shape: the server ran a statement of the same name
    that another client of the pooler had prepared on that server connection."""

    def __str__(self) -> str:
        return "the read returned another statement's columns"


def _error_text(error: BaseException) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"_pg3_\d+", "_pg3_<n>", f"{type(error).__name__}: {first}")


def run_soak(
    settings: ConnectionSettings,
    tenants: Sequence[str],
    *,
    threads: int = 8,
    transactions: int = 100,
    transaction: Transaction | None = None,
    prepared_statements: bool = False,
) -> SoakResult:
    """`threads` x `transactions` tenant transactions as the login in `settings`, tenants taken
    in turn from `tenants` (each must have rows in the sample tables: the verify probes do).

    `transaction` replaces the runtime's tenant_transaction (to measure another version);
    `prepared_statements` is passed to tenant_transaction.
    """

    def default(conn: psycopg.Connection[Any], tenant: str) -> AbstractContextManager[Any]:
        return tenant_transaction(
            conn, tenant, allow_probes=True, prepared_statements=prepared_statements
        )

    scoped = transaction or default
    lock = threading.Lock()
    errors: Counter[str] = Counter()
    totals = {"cross": 0, "missing": 0}
    backends: set[int] = set()

    def worker(index: int) -> None:
        conn = psycopg.connect(**settings.connect_kwargs(), autocommit=True)
        try:
            for n in range(transactions):
                tenant = tenants[(index + n) % len(tenants)]
                try:
                    with scoped(conn, tenant):
                        rows = conn.execute(_READ, (0,)).fetchall()
                        conn.execute(_COUNT, (0,)).fetchone()
                    if any(len(row) != 2 for row in rows):  # another statement's result
                        raise _WrongStatementError
                except (psycopg.Error, TenantContextError, _WrongStatementError) as error:
                    with lock:
                        errors[_error_text(error)] += 1
                    if conn.closed:  # a broken connection: the application's pool replaces it
                        conn = psycopg.connect(**settings.connect_kwargs(), autocommit=True)
                    continue
                with lock:
                    backends.update(row[1] for row in rows)
                    totals["cross"] += any(row[0] != tenant for row in rows)
                    totals["missing"] += not any(row[0] == tenant for row in rows)
        finally:
            conn.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return SoakResult(
        transactions=threads * transactions,
        errors=dict(errors),
        cross_tenant=totals["cross"],
        own_rows_missing=totals["missing"],
        backends=len(backends),
        seconds=time.perf_counter() - started,
    )


def run_login_soak(
    open_login: Callable[[str], psycopg.Connection[Any]],
    tenants: Sequence[str],
    *,
    threads: int = 8,
    transactions: int = 30,
    max_total: int = 8,
    max_per_tenant: int = 2,
) -> tuple[SoakResult, int]:
    """The soak for a strict pool: `threads` x `transactions` strict tenant transactions, tenants
    taken in turn from `tenants`, each on a connection of the tenant's own login from one
    TenantLoginPools (`open_login(tenant)` opens one; at most `max_total` open in all and
    `max_per_tenant` per tenant). Also the most client connections the pools had open."""
    pools = TenantLoginPools(
        open_login,
        max_total=max_total,
        max_per_tenant=max_per_tenant,
        reset=reset_pooled_connection,
    )
    lock = threading.Lock()
    errors: Counter[str] = Counter()
    totals = {"cross": 0, "missing": 0}
    backends: set[int] = set()

    def worker(index: int) -> None:
        for n in range(transactions):
            tenant = tenants[(index + n) % len(tenants)]
            try:
                with (
                    pools.connection(tenant) as conn,
                    tenant_transaction(conn, tenant, allow_probes=True, strict=True),
                ):
                    rows = conn.execute(_READ, (0,)).fetchall()
                    conn.execute(_COUNT, (0,)).fetchone()
            except (psycopg.Error, TenantContextError, PoolTimeoutError) as error:
                with lock:
                    errors[_error_text(error)] += 1
                continue
            with lock:
                backends.update(row[1] for row in rows)
                totals["cross"] += any(row[0] != tenant for row in rows)
                totals["missing"] += not any(row[0] == tenant for row in rows)

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    try:
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    finally:
        pools.close()
    result = SoakResult(
        transactions=threads * transactions,
        errors=dict(errors),
        cross_tenant=totals["cross"],
        own_rows_missing=totals["missing"],
        backends=len(backends),
        seconds=time.perf_counter() - started,
    )
    return result, pools.high_water
