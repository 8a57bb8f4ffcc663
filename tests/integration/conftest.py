"""Fixtures for handler tests: moto Secrets Manager, handler config, event builders."""

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from lambda_src.core.connection import RetryPolicy
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import provider_event, tenant_database_physical_id
from lambda_src.provisioner.settings import TenantDatabaseSettings
from tenantkit.embedded_pg import RunningServer


@pytest.fixture(scope="module")
def secretsmanager() -> Iterator[Any]:
    """A moto Secrets Manager for a test module (starting one costs about 0.2 s); tests name
    their secrets after their own fresh tenant ids, so they never see each other's."""
    with mock_aws():
        yield boto3.client("secretsmanager")


@pytest.fixture
def config(server: RunningServer) -> HandlerConfig:
    """Handler configuration for the session's embedded server (fast retries)."""
    return HandlerConfig(
        admin_settings=server.admin_settings(), retry=RetryPolicy(attempts=2, first_delay_s=0.01)
    )


@pytest.fixture
def tenant_id() -> str:
    """A fresh tenant id per test, so tests never see each other's tenants."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def superuser(server: RunningServer) -> Iterator[psycopg.Connection]:
    """A superuser connection for inspecting what the provisioner did."""
    with psycopg.connect(**server.superuser_settings().connect_kwargs(), autocommit=True) as conn:
        yield conn


SecretFactory = Callable[[str, str], str]


@pytest.fixture
def make_secret(secretsmanager: Any) -> SecretFactory:
    """Create a tenant login secret in moto; returns its ARN."""

    def make(tenant_id: str, password: str) -> str:
        created = secretsmanager.create_secret(
            Name=f"tenantkit/{tenant_id}/app",
            SecretString=json.dumps({"username": "ignored", "password": password}),
        )
        return str(created["ARN"])

    return make


def properties(tenant_id: str, secret_arn: str, **overrides: Any) -> dict[str, str]:
    """TenantDatabase properties as CloudFormation sends them (the settings `overrides` say)."""
    settings = {"connection_limit": 5, "statement_timeout_ms": 2000, **overrides}
    return TenantDatabaseSettings(**settings).properties(
        tenant_id=tenant_id, password_secret_arn=secret_arn
    )


def create_event(props: dict[str, str]) -> dict[str, Any]:
    """A Provider Create event."""
    return provider_event("Create", props, logical_id="Tenant")


def update_event(props: dict[str, str], old: dict[str, str]) -> dict[str, Any]:
    """A Provider Update event (of the resource the old properties made)."""
    physical_id = tenant_database_physical_id(old["TenantId"])
    return provider_event(
        "Update", props, physical_id=physical_id, old_properties=old, logical_id="Tenant"
    )


def delete_event(props: dict[str, str]) -> dict[str, Any]:
    """A Provider Delete event."""
    physical_id = tenant_database_physical_id(props["TenantId"])
    return provider_event("Delete", props, physical_id=physical_id, logical_id="Tenant")
