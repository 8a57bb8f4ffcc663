"""The pool runtime through a real PgBouncer in transaction mode: concurrent tenant transactions
without errors or cross-tenant rows, prepared statements kept off the server by default, and a
connection that an error in the transaction's first message leaves ready for the next tenant."""

import json
import threading
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from lambda_src.core.connection import ConnectionSettings
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS
from lambda_src.tenant_runtime import AccessConfig, Pattern, TenantDataAccess, tenant_transaction
from lambda_src.tenant_runtime import context as runtime_context
from tenantkit.pgbouncer import PGBOUNCER_VERSION, RunningPgBouncer
from tenantkit.verify.soak import run_soak

from .conftest import SERVER_CONNECTIONS, TENANTS

A, B, _GONE = PROBE_TENANT_IDS
PROJECTS = sql.SQL("{}.projects").format(sql.Identifier(POOL.sample_schema))
THREADS, TRANSACTIONS = 8, 100
"""The soak: more client threads than PgBouncer's server connections (4)."""


@pytest.fixture(params=["direct", "pgbouncer"])
def runtime(request: pytest.FixtureRequest) -> ConnectionSettings:
    """The runtime login, straight to the server and through PgBouncer."""
    name = "direct_runtime" if request.param == "direct" else "pooled_runtime"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def tenants_read(conn: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(PROJECTS))}


def test_the_pooler_is_the_pinned_pgbouncer_in_transaction_mode(
    pgbouncer: RunningPgBouncer,
) -> None:
    with psycopg.connect(**pgbouncer.admin_settings().connect_kwargs(), autocommit=True) as console:
        version = console.execute("SHOW VERSION").fetchone()
        config = {row[0]: row[1] for row in console.execute("SHOW CONFIG")}
    assert version is not None
    assert f"PgBouncer {PGBOUNCER_VERSION}" in version[0]
    assert config["pool_mode"] == "transaction"
    assert config["default_pool_size"] == str(SERVER_CONNECTIONS)
    assert config["server_reset_query_always"] == "1"


def test_concurrent_tenant_transactions_through_pgbouncer_have_no_errors_and_no_foreign_rows(
    pooled_runtime: ConnectionSettings,
) -> None:
    # GIVEN 8 client threads and 4 server connections behind PgBouncer
    # WHEN each runs 100 tenant transactions of parameterized reads, tenants alternating
    result = run_soak(pooled_runtime, [A, B], threads=THREADS, transactions=TRANSACTIONS)
    # THEN none fails, each sees its own tenant's rows and no other's, and the transactions
    # really were spread over the pooler's few server connections
    assert result.failed == 0, result.summary()
    assert result.cross_tenant == 0, result.summary()
    assert result.own_rows_missing == 0, result.summary()
    assert 1 < result.backends <= SERVER_CONNECTIONS, result.summary()


def test_prepared_statements_break_tenant_transactions_behind_pgbouncer_1_18(
    pooled_runtime: ConnectionSettings,
) -> None:
    # The control for the soak above: what the default keeps away. psycopg prepares each read
    # after 5 runs on a connection; PgBouncer 1.18 knows nothing of it, and the next
    # transaction runs on a server connection without the statement (reset after every
    # transaction, so it never holds another client's).
    result = run_soak(pooled_runtime, [A, B], threads=2, transactions=20, prepared_statements=True)
    assert "does not exist" in " ".join(result.errors), result.summary()
    assert result.cross_tenant == 0, result.summary()


def test_the_runtime_library_serves_concurrent_tenants_through_pgbouncer(
    pgbouncer: RunningPgBouncer, pooled_runtime: ConnectionSettings
) -> None:
    # GIVEN the application's entry point (pool-secret), its secret naming PgBouncer, with
    # more request threads than server connections
    secret = {
        "host": pgbouncer.host,
        "port": pgbouncer.port,
        "username": pooled_runtime.user,
        "password": pooled_runtime.password,
        "dbname": POOL.database,
    }
    outcomes: list[str] = []
    with mock_aws():
        boto3.client("secretsmanager").create_secret(
            Name=POOL.secret_name, SecretString=json.dumps(secret)
        )
        access = TenantDataAccess(
            AccessConfig(
                pattern=Pattern.POOL_SECRET, region="us-east-1", ssl_root_cert=pgbouncer.ca_cert
            ),
            pool_size=THREADS,
        )

        def requests(first: int) -> None:
            for n in range(50):
                tenant = TENANTS[(first + n) % 2]
                try:
                    with access.connection(tenant) as conn:
                        seen = tenants_read(conn)
                    outcomes.append("ok" if seen == {tenant} else f"saw {sorted(seen)}")
                except psycopg.Error as error:
                    outcomes.append(f"{type(error).__name__}: {error}")

        # WHEN each thread serves 50 requests for alternating tenants
        workers = [threading.Thread(target=requests, args=(i,)) for i in range(THREADS)]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            access.close()
    # THEN every request saw exactly its own tenant
    assert outcomes == ["ok"] * (THREADS * 50), [o for o in outcomes if o != "ok"][:5]


# -- prepared statements and recovery, straight to the server and through PgBouncer ---------------


def test_tenant_transactions_prepare_nothing_by_default_and_restore_the_connection_setting(
    direct_runtime: ConnectionSettings,
) -> None:
    # Straight to the server, where pg_prepared_statements shows this session's statements.
    with psycopg.connect(**direct_runtime.connect_kwargs()) as conn:
        conn.autocommit = True
        threshold = conn.prepare_threshold
        for _ in range(10):
            with tenant_transaction(conn, A, allow_probes=True):
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE project_id > %s").format(PROJECTS), (0,)
                )
        prepared = conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
        assert prepared == []
        assert conn.prepare_threshold == threshold == 5


def test_failed_tenant_transactions_never_prepare_rollback(
    direct_runtime: ConnectionSettings,
) -> None:
    # psycopg prepares any statement it has run 5 times; a prepared ROLLBACK behind a
    # transaction pooler is a Parse that fails on a server connection where another client
    # has a statement of that name, and the failed transaction then stays open.
    with psycopg.connect(**direct_runtime.connect_kwargs(), autocommit=True) as conn:
        for _ in range(8):
            with (
                pytest.raises(errors.DivisionByZero),
                tenant_transaction(conn, A, allow_probes=True, prepared_statements=True),
            ):
                conn.execute("SELECT 1 / %s", (0,))
        prepared = conn.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in prepared]
        assert not any("ROLLBACK" in s.upper() for s in statements), statements
        assert conn.info.transaction_status == TransactionStatus.IDLE


@pytest.fixture
def first_message_fails(runtime: ConnectionSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next tenant_transaction's first message fails after its BEGIN ran (a server error
    inside the message that opens the transaction); later ones are as usual. After `runtime`:
    the session's pool is seeded by then."""
    real = runtime_context.begin_as_tenant
    calls = {"n": 0}

    def begin_as(tenant_id: str, allow_probes: bool) -> bytes:
        calls["n"] += 1
        if calls["n"] == 1:
            return b"BEGIN; SELECT 1 / 0"
        return real(tenant_id, allow_probes)

    monkeypatch.setattr(runtime_context, "begin_as_tenant", begin_as)


@pytest.mark.usefixtures("first_message_fails")
def test_an_error_in_the_first_message_leaves_the_connection_ready_for_the_next_tenant(
    runtime: ConnectionSettings,
) -> None:
    with psycopg.connect(**runtime.connect_kwargs()) as conn:  # autocommit off, as by default
        # WHEN the first message of a tenant transaction fails after its BEGIN
        with pytest.raises(errors.DivisionByZero), tenant_transaction(conn, A, allow_probes=True):
            pytest.fail("the body must not run")
        # THEN the connection is idle again, with its own settings back
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.autocommit is False
        assert conn.prepare_threshold == 5
        # AND the next tenant transaction works and sees its tenant, and only it
        with tenant_transaction(conn, B, allow_probes=True):
            assert tenants_read(conn) == {B}


def test_a_failed_statement_leaves_the_connection_ready_for_the_next_tenant(
    runtime: ConnectionSettings,
) -> None:
    with psycopg.connect(**runtime.connect_kwargs(), autocommit=True) as conn:
        for _ in range(7):  # past psycopg's prepare threshold
            with (
                pytest.raises(errors.DivisionByZero),
                tenant_transaction(conn, A, allow_probes=True),
            ):
                conn.execute("SELECT 1 / %s", (0,))
        with tenant_transaction(conn, B, allow_probes=True):
            assert tenants_read(conn) == {B}
        assert tenants_read(conn) == set()  # and no context after it
