"""A provisioned pool with registered tenants and known rows, for the runtime integrations'
tests (asyncio, SQLAlchemy, the example application): import the fixtures into the module.

Module-scoped on top of pool_fixtures: each importing module provisions its own server's pool
once. Every tenant in TENANTS has projects 1 and 2 and tasks 1-3 (project 1: tasks 1 and 2,
the second done; project 2: task 3), named after the tenant, beside the verify probes' rows,
which use the same ids: an id alone never tells two tenants' rows apart.
"""

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from lambda_src.core.connection import ConnectionSettings
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import (
    pool_batches,
    pool_database_properties,
    pool_tenants_properties,
)
from lambda_src.provisioner.settings import RemovalPolicy
from lambda_src.tenancy import POOL
from lambda_src.tenant_runtime import tenant_transaction
from tenantkit.embedded_pg import RunningServer

from .pool_fixtures import PASSWORD, aws, config, pool_server  # noqa: F401 (fixtures)

TENANTS = ("red", "blue", "green")

SEED_PROJECTS = [(1, "alpha"), (2, "beta")]
SEED_TASKS = [(1, 1, "first", False), (2, 1, "second", True), (3, 2, "third", False)]


def project_name(tenant: str, project_id: int) -> str:
    """The seeded name of a tenant's project."""
    return f"{tenant} {dict(SEED_PROJECTS)[project_id]}"


def task_title(tenant: str, task_id: int) -> str:
    """The seeded title of a tenant's task."""
    return f"{tenant} {next(t[2] for t in SEED_TASKS if t[0] == task_id)}"


def _seed(runtime: ConnectionSettings, tenant: str) -> None:
    with psycopg.connect(**runtime.connect_kwargs()) as conn, tenant_transaction(conn, tenant):
        for project_id, _ in SEED_PROJECTS:
            conn.execute(
                "INSERT INTO tenantkit_sample.projects VALUES (%s, %s, %s)",
                (tenant, project_id, project_name(tenant, project_id)),
            )
        for task_id, project_id, _, done in SEED_TASKS:
            conn.execute(
                "INSERT INTO tenantkit_sample.tasks VALUES (%s, %s, %s, %s, %s)",
                (tenant, task_id, project_id, task_title(tenant, task_id), done),
            )


@pytest.fixture(scope="module")
def pool(pool_server: RunningServer, aws: Any, config: HandlerConfig) -> ConnectionSettings:
    """The pool provisioned, TENANTS registered and seeded; the runtime login's settings."""
    props = pool_database_properties(
        runtime_secret_arn=aws.describe_secret(SecretId=POOL.secret_name)["ARN"],
        iam_auth=True,
        removal_policy="retain",
    )
    handle(provider_event("Create", props), config)
    entries: list[tuple[str, RemovalPolicy]] = [(tenant, "retain") for tenant in TENANTS]
    for batch, batch_entries in pool_batches(entries).items():
        handle(provider_event("Create", pool_tenants_properties(batch, batch_entries)), config)
    runtime = pool_server.settings(POOL.login_role, PASSWORD, POOL.database)
    for tenant in TENANTS:
        _seed(runtime, tenant)
    return runtime


@pytest.fixture
def superuser(
    pool_server: RunningServer, pool: ConnectionSettings
) -> Iterator[psycopg.Connection[Any]]:
    """A superuser in the pool database, to see every tenant's rows (RLS does not apply)."""
    settings = pool_server.superuser_settings(POOL.database)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        yield conn


def all_rows(superuser: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    """Every row of a sample table, every tenant's, in key order (as the superuser)."""
    query = f"SELECT * FROM tenantkit_sample.{table} ORDER BY 1, 2"  # noqa: S608 (a constant)
    return superuser.execute(query).fetchall()
