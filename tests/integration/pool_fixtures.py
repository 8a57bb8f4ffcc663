"""Fixtures for test modules that need a pool of their own: import them into the module.

Module-scoped, so each importing module gets its own server (named after the module), its own
moto holding the pool runtime's secret, and a handler config for that server.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from lambda_src.core.connection import RetryPolicy
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.tenancy import POOL
from tenantkit.embedded_pg import EmbeddedPostgres, RunningServer

PASSWORD = "pool-runtime-password"
"""The pool runtime login's password in the module's moto secret."""


@pytest.fixture(scope="module")
def pool_server(pg_root: Path, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """A server of the module's own: its tests change what the (one per server) pool holds."""
    pg = EmbeddedPostgres(pg_root / request.module.__name__.rsplit(".", 1)[-1], durable=False)
    server = pg.start()
    yield server
    pg.destroy()


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    """moto for the module, holding the pool runtime's secret."""
    with mock_aws():
        client = boto3.client("secretsmanager")
        client.create_secret(Name=POOL.secret_name, SecretString=json.dumps({"password": PASSWORD}))
        yield client


@pytest.fixture(scope="module")
def config(pool_server: RunningServer) -> HandlerConfig:
    """Handler configuration for the module's server (fast retries)."""
    return HandlerConfig(
        admin_settings=pool_server.admin_settings(),
        retry=RetryPolicy(attempts=2, first_delay_s=0.01),
    )
