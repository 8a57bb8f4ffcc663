"""The bridge/silo attack suite: blocked on provisioned tenants, and it notices breakage."""

from typing import Any

import psycopg
import pytest

from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.handler import handle
from tenantkit.catalog import Tenant, parse_catalog
from tenantkit.embedded_pg import RunningServer
from tenantkit.verify import run_database_attacks
from tenantkit.verify.databases import SettingsFor

from .conftest import SecretFactory, create_event, properties

PASSWORD = "attack-suite-password-1"


@pytest.fixture
def two_tenants(
    tenant_id: str, make_secret: SecretFactory, config: HandlerConfig, server: RunningServer
) -> list[tuple[Tenant, str, SettingsFor]]:
    ids = [tenant_id, f"{tenant_id}-b"]
    catalog = parse_catalog(
        {
            "tenants": [
                {"id": t, "tier": "bridge", "connection_limit": 3, "statement_timeout_ms": 2000}
                for t in ids
            ]
        }
    )
    for tenant in catalog.tenants:
        props = properties(
            tenant.id, make_secret(tenant.id, PASSWORD), connection_limit=3, iam_auth=False
        )
        handle(create_event(props), config)
    return [(tenant, PASSWORD, server.settings) for tenant in catalog.tenants]


def leaks(results: list[Any]) -> dict[str, str]:
    return {r.attack: r.detail for r in results if not r.blocked}


def test_every_attack_by_a_tenant_login_is_blocked(
    two_tenants: list[tuple[Tenant, str, SettingsFor]], server: RunningServer
) -> None:
    results = run_database_attacks(two_tenants)
    assert len(results) >= 2 * 13
    assert leaks(results) == {}


@pytest.mark.parametrize(
    ("breakage", "undo", "leak"),
    [
        (
            "GRANT CONNECT ON DATABASE postgres TO PUBLIC",
            "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC",
            "connect to the postgres database",
        ),
        ("ALTER ROLE {login} CREATEROLE", "ALTER ROLE {login} NOCREATEROLE", "create a role"),
        (
            "ALTER DATABASE {db} CONNECTION LIMIT -1",
            "ALTER DATABASE {db} CONNECTION LIMIT 3",
            "exceed its connection limit",
        ),
        (
            "GRANT CONNECT ON DATABASE {db} TO PUBLIC",
            "REVOKE CONNECT ON DATABASE {db} FROM PUBLIC",
            "connects to",
        ),
    ],
)
def test_the_suite_reports_a_leak_when_isolation_is_broken(
    breakage: str,
    undo: str,
    leak: str,
    two_tenants: list[tuple[Tenant, str, SettingsFor]],
    server: RunningServer,
) -> None:
    first = two_tenants[0][0].names
    values = {"login": f'"{first.login_role}"', "db": f'"{first.database}"'}
    with psycopg.connect(**server.superuser_settings().connect_kwargs(), autocommit=True) as su:
        su.execute(breakage.format(**values))
        try:
            found = leaks(run_database_attacks(two_tenants))
        finally:
            su.execute(undo.format(**values))
    assert any(leak in attack for attack in found), found
