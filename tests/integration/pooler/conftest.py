"""A pool behind a real PgBouncer for the session: the pooler suites' fixtures.

One embedded server with the pool provisioned by the provisioner's own handler (probe tenants
and sample schema included), and PgBouncer 1.18 (the pinned Debian build `make setup`
installs) in transaction mode in front of its pool database: TLS verify-full on both sides,
SCRAM, the runtime login's password in PgBouncer's auth file, fewer server connections (4) than
the soak's client threads so that transactions really move between server connections. A
missing PgBouncer fails these tests (find_pgbouncer says to run `make setup`); nothing skips.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg import sql

from lambda_src.core.connection import ConnectionSettings, RetryPolicy
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import (
    pool_batches,
    pool_database_properties,
    pool_tenants_properties,
)
from lambda_src.tenancy import POOL
from lambda_src.tenant_runtime import tenant_transaction
from tenantkit.embedded_pg import EmbeddedPostgres, RunningServer
from tenantkit.pgbouncer import EmbeddedPgBouncer, RunningPgBouncer

PASSWORD = "pooler-runtime-password"
"""The pool runtime login's password (its secret, in moto while the pool is provisioned)."""
SERVER_CONNECTIONS = 4
"""PgBouncer's default_pool_size: server connections for the runtime login's pool."""
TENANTS = ("red", "blue")
"""Pool tenants registered besides the verify probes, one sample project each."""


@pytest.fixture(scope="session")
def pooler_server(pg_root: Path) -> Iterator[RunningServer]:
    """The session's server behind PgBouncer, with the pool provisioned."""
    pg = EmbeddedPostgres(pg_root / "pooler", durable=False)
    server = pg.start()
    # moto only while the handler reads the runtime secret: a session-long mock would be reset
    # by the modules that start their own.
    with mock_aws():
        client = boto3.client("secretsmanager")
        arn = client.create_secret(
            Name=POOL.secret_name, SecretString=json.dumps({"password": PASSWORD})
        )["ARN"]
        properties = pool_database_properties(
            runtime_secret_arn=arn, iam_auth=True, removal_policy="retain"
        )
        config = HandlerConfig(
            admin_settings=server.admin_settings(),
            retry=RetryPolicy(attempts=2, first_delay_s=0.01),
        )
        handle(provider_event("Create", properties), config)
        for batch, entries in pool_batches([(t, "retain") for t in TENANTS]).items():
            handle(provider_event("Create", pool_tenants_properties(batch, entries)), config)
    runtime = server.settings(POOL.login_role, PASSWORD, POOL.database)
    with psycopg.connect(**runtime.connect_kwargs(), autocommit=True) as conn:
        for number, tenant in enumerate(TENANTS, start=1):
            with tenant_transaction(conn, tenant):
                conn.execute(
                    sql.SQL("INSERT INTO {}.projects VALUES (%s, %s, %s)").format(
                        sql.Identifier(POOL.sample_schema)
                    ),
                    (tenant, number, f"{tenant}'s project"),
                )
    yield server
    pg.destroy()


def start_pgbouncer(
    server: RunningServer, root: Path, *, reset_always: bool = True
) -> EmbeddedPgBouncer:
    """A PgBouncer in front of `server`'s pool database for the runtime login."""
    bouncer = EmbeddedPgBouncer(
        root,
        upstream=server,
        database=POOL.database,
        logins={POOL.login_role: PASSWORD},
        pool_size=SERVER_CONNECTIONS,
        reset_always=reset_always,
    )
    bouncer.start()
    return bouncer


@pytest.fixture(scope="session")
def pgbouncer(pooler_server: RunningServer, pg_root: Path) -> Iterator[RunningPgBouncer]:
    """PgBouncer for the session, resetting server connections after every transaction."""
    bouncer = start_pgbouncer(pooler_server, pg_root / "pgbouncer")
    assert bouncer.server is not None
    yield bouncer.server
    bouncer.stop()


@pytest.fixture(scope="session")
def direct_runtime(pooler_server: RunningServer) -> ConnectionSettings:
    """The runtime login straight to the server."""
    return pooler_server.settings(POOL.login_role, PASSWORD, POOL.database)


@pytest.fixture(scope="session")
def pooled_runtime(pgbouncer: RunningPgBouncer) -> ConnectionSettings:
    """The runtime login through PgBouncer."""
    return pgbouncer.settings(POOL.login_role, PASSWORD, POOL.database)
