"""A strict pool behind a real PgBouncer 1.18 in transaction mode: PgBouncer admits each tenant's
own login by auth_query (the SCRAM verifier looked up on the server, so a tenant onboarded
after PgBouncer started needs nothing of it), pools per login under one bound on all server
connections (max_db_connections), and the strict attack suite and a soak through
TenantLoginPools find no leak, no error and no foreign row."""

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from lambda_src.core.connection import RetryPolicy
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.tenancy import POOL
from lambda_src.tenant_runtime import tenant_transaction
from tenantkit.embedded_pg import EmbeddedPostgres, RunningServer
from tenantkit.pgbouncer import EmbeddedPgBouncer, RunningPgBouncer, install_login_lookup
from tenantkit.verify import run_pool_attacks, run_runtime_attacks
from tenantkit.verify.pool import attacks_for
from tenantkit.verify.soak import run_login_soak

from ..strict_pool_fixtures import login_of, login_settings, provision_strict_pool
from .conftest import PASSWORD

TENANTS = tuple(f"pb-{n}" for n in range(6))
LATE = "pb-late"
"""Onboarded after PgBouncer started."""
PER_LOGIN, SERVER_BOUND = 2, 4
"""PgBouncer's default_pool_size (server connections per login) and max_db_connections (all
logins together)."""


@pytest.fixture(scope="module")
def strict_server(pg_root: Path) -> Iterator[RunningServer]:
    pg = EmbeddedPostgres(pg_root / "pooler-strict", durable=False)
    yield pg.start()
    pg.destroy()


@pytest.fixture(scope="module")
def bouncer(strict_server: RunningServer, pg_root: Path) -> Iterator[RunningPgBouncer]:
    """A strict pool with TENANTS, PgBouncer in front of it admitting tenant logins by
    auth_query, then LATE onboarded."""
    config = HandlerConfig(
        admin_settings=strict_server.admin_settings(),
        retry=RetryPolicy(attempts=2, first_delay_s=0.01),
    )
    with mock_aws():
        secrets = boto3.client("secretsmanager")
        runtime = secrets.create_secret(
            Name=POOL.secret_name, SecretString=json.dumps({"password": PASSWORD})
        )["ARN"]
        provision_strict_pool(strict_server, config, secrets, TENANTS, runtime_secret_arn=runtime)
        lookup = install_login_lookup(
            strict_server.superuser_settings(POOL.database), password="pgbouncer-lookup-password"
        )
        pgbouncer = EmbeddedPgBouncer(
            pg_root / "pgbouncer-strict",
            upstream=strict_server,
            database=POOL.database,
            logins={POOL.login_role: PASSWORD},
            pool_size=PER_LOGIN,
            login_lookup=lookup,
            max_db_connections=SERVER_BOUND,
        )
        server = pgbouncer.start()
        provision_strict_pool(strict_server, config, secrets, (LATE,), runtime_secret_arn=runtime)
    yield server
    pgbouncer.stop()


def seen_through(bouncer: RunningPgBouncer, tenant: str) -> tuple[str, set[str]]:
    """(session_user, tenants of the projects read) for `tenant`'s login through PgBouncer."""
    with (
        psycopg.connect(
            **login_settings(bouncer, tenant).connect_kwargs(), autocommit=True
        ) as conn,
        tenant_transaction(conn, tenant, strict=True),
    ):
        row = conn.execute("SELECT session_user").fetchone()
        seen = {r[0] for r in conn.execute("SELECT tenant_id FROM tenantkit_sample.projects")}
    assert row is not None
    return str(row[0]), seen


def test_pgbouncer_admits_each_tenant_login_by_auth_query_a_late_one_too(
    bouncer: RunningPgBouncer,
) -> None:
    for tenant in (TENANTS[0], LATE):
        assert seen_through(bouncer, tenant) == (login_of(tenant), {tenant})
    with psycopg.connect(**bouncer.admin_settings().connect_kwargs(), autocommit=True) as console:
        config = {row[0]: row[1] for row in console.execute("SHOW CONFIG")}
    assert config["auth_user"] == "tenantkit_pgbouncer_auth"
    assert "login_secret" in config["auth_query"]
    assert config["max_db_connections"] == str(SERVER_BOUND)


def test_a_wrong_password_and_a_role_that_is_not_a_tenant_login_are_refused(
    bouncer: RunningPgBouncer, strict_server: RunningServer
) -> None:
    wrong = bouncer.settings(login_of(TENANTS[1]), "guess", POOL.database)
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(**wrong.connect_kwargs())
    # the lookup serves the tenant logins only: the server's admin is unknown to PgBouncer
    admin = strict_server.admin_settings(POOL.database)
    through = bouncer.settings(admin.user, admin.password, POOL.database)
    with pytest.raises(psycopg.OperationalError, match="no such user"):
        psycopg.connect(**through.connect_kwargs())


def test_every_strict_attack_through_pgbouncer_is_blocked(bouncer: RunningPgBouncer) -> None:
    runtime = bouncer.settings(POOL.login_role, PASSWORD, POOL.database)
    results = run_pool_attacks(runtime, logins=lambda tenant: login_settings(bouncer, tenant))
    results += run_runtime_attacks(runtime)
    assert [(r.attack, r.detail) for r in results if not r.blocked] == []
    assert {r.attack for r in results} >= set(attacks_for("strict"))
    assert "log in as an offboarded tenant" in {r.attack for r in results}


def test_tenants_and_threads_through_tenant_login_pools_and_pgbouncer_see_only_their_own_rows(
    bouncer: RunningPgBouncer, strict_server: RunningServer
) -> None:
    # GIVEN 8 threads serving 6 tenants through TenantLoginPools (8 client connections at most,
    # 2 per tenant) and PgBouncer (2 server connections per login, 4 in all: fewer than the
    # tenants, so PgBouncer must close one login's idle server connection for another's)
    done = threading.Event()
    peak = [0]
    superuser = strict_server.superuser_settings(POOL.database)

    def watch() -> None:  # the server's own count of the tenant logins' sessions
        with psycopg.connect(**superuser.connect_kwargs(), autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'tenant\\_pb-%'"
                ).fetchone()
                peak[0] = max(peak[0], row[0] if row else 0)
                time.sleep(0.005)

    def open_login(tenant: str) -> psycopg.Connection[Any]:
        settings = login_settings(bouncer, tenant)
        return psycopg.connect(**settings.connect_kwargs(), autocommit=True)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # WHEN each thread runs 30 strict tenant transactions, tenants in turn
        result, client_peak = run_login_soak(
            open_login, TENANTS, threads=8, transactions=30, max_total=8, max_per_tenant=2
        )
    finally:
        done.set()
        watcher.join()
    with psycopg.connect(**bouncer.admin_settings().connect_kwargs(), autocommit=True) as console:
        cursor = console.execute("SHOW POOLS")
        columns = [c.name for c in cursor.description or ()]
        pool_users = {dict(zip(columns, row, strict=True))["user"] for row in cursor}

    # THEN none failed or saw another tenant's rows (or none of its own), PgBouncer kept a pool
    # per tenant login, and the server never had more than max_db_connections of them
    summary = f"{result.summary()}; server sessions at most {peak[0]}"
    assert result.failed == 0, summary
    assert result.cross_tenant == 0, summary
    assert result.own_rows_missing == 0, summary
    assert client_peak == 8, summary
    assert {login_of(t) for t in TENANTS} <= pool_users
    assert 1 <= peak[0] <= SERVER_BOUND, summary
