"""A strict pool provisioned by the handler, for the suites that run the runtime integrations on
one (the ORM and asyncio strict tests, the pooler's strict suite): each tenant and each verify
probe with a password login of its own (their secrets in the caller's moto), and every tenant
seeded through its own login with the rows tenant_pool_fixtures seeds in a settable pool."""

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from lambda_src.core.connection import ConnectionSettings
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import (
    pool_batches,
    pool_database_properties,
    pool_tenants_properties,
)
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS, tenant_names
from lambda_src.tenant_runtime import tenant_transaction
from tenantkit.embedded_pg import RunningServer

from .tenant_pool_fixtures import SEED_PROJECTS, SEED_TASKS, project_name, task_title


def password_of(tenant: str) -> str:
    """The password of a tenant's (or a probe tenant's) own login."""
    return f"login-password-of-{tenant}"


def login_of(tenant: str) -> str:
    """A tenant's (or a probe tenant's) own login."""
    return tenant_names(tenant, allow_probes=True).pool_login


def login_settings(server: Any, tenant: str) -> ConnectionSettings:
    """How `tenant` logs in as itself to the pool database of `server` (a RunningServer, or a
    RunningPgBouncer in front of one)."""
    settings: ConnectionSettings = server.settings(
        login_of(tenant), password_of(tenant), POOL.database
    )
    return settings


def _login_secret(secrets: Any, tenant: str) -> str:
    """The tenant's login secret (created on first use); its ARN."""
    name = tenant_names(tenant, allow_probes=True).secret_name
    try:
        return str(secrets.describe_secret(SecretId=name)["ARN"])
    except secrets.exceptions.ResourceNotFoundException:
        value = {"username": login_of(tenant), "password": password_of(tenant)}
        return str(secrets.create_secret(Name=name, SecretString=json.dumps(value))["ARN"])


def provision_strict_pool(
    server: RunningServer,
    config: HandlerConfig,
    secrets: Any,
    tenants: Sequence[str],
    *,
    runtime_secret_arn: str,
) -> None:
    """Create (or converge) a strict pool on `server` with `tenants` registered (login secrets
    created in the Secrets Manager client `secrets`), then seed each tenant's projects and
    tasks as its own login (once: call it again for other tenants only)."""
    probes = {tenant: _login_secret(secrets, tenant) for tenant in PROBE_TENANT_IDS}
    properties = pool_database_properties(
        runtime_secret_arn=runtime_secret_arn,
        iam_auth=True,
        removal_policy="retain",
        mode="strict",
        probe_secrets=probes,
    )
    handle(provider_event("Create", properties), config)
    logins = {tenant: _login_secret(secrets, tenant) for tenant in tenants}
    batches = pool_batches([(t, "retain") for t in tenants], password_secrets=logins)
    for batch, entries in batches.items():
        handle(
            provider_event("Create", pool_tenants_properties(batch, entries, mode="strict")),
            config,
        )
    for tenant in tenants:
        with (
            psycopg.connect(**login_settings(server, tenant).connect_kwargs()) as conn,
            tenant_transaction(conn, tenant, strict=True),
        ):
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
