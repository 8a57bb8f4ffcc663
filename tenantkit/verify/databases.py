"""Attacks on database-per-tenant isolation (bridge and silo): each tenant's login against
every other tenant's database."""

from collections.abc import Callable, Sequence

import psycopg

from lambda_src.provisioner.config import ConnectionSettings

from ..catalog import Tenant
from .report import AttackResult

SettingsFor = Callable[[str, str, str], ConnectionSettings]
"""(user, password, database) -> connection settings on the server under test."""


def _connect_error(settings: ConnectionSettings) -> str:
    try:
        with psycopg.connect(**settings.connect_kwargs()) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        return str(error)
    return ""


def run_database_attacks(
    tenants: Sequence[tuple[Tenant, str]], settings_for: SettingsFor
) -> list[AttackResult]:
    """For each (tenant, its login password): every other tenant's database must refuse it for
    lack of CONNECT privilege. Its own database must accept it, or the refusals prove nothing:
    a login that cannot reach its own database is reported as a failed precondition."""
    results = []
    for tenant, password in tenants:
        login = tenant.names.login_role
        own = _connect_error(settings_for(login, password, tenant.names.database))
        if own:
            results.append(
                AttackResult(
                    tenant.tier,
                    f"precondition: {tenant.id} reaches its own database",
                    False,
                    own.splitlines()[0],
                )
            )
        for other, _ in tenants:
            if other.id == tenant.id:
                continue
            error = _connect_error(settings_for(login, password, other.names.database))
            refused = "permission denied for database" in error
            results.append(
                AttackResult(
                    tenant.tier,
                    f"{tenant.id} connects to {other.id}'s database",
                    refused,
                    "refused: permission denied for database"
                    if refused
                    else (error.splitlines()[0] if error else "connected"),
                )
            )
    return results
