"""Attacks on database-per-tenant isolation (bridge and silo), run as each tenant's own login.

What stays visible by design (PostgreSQL's shared catalogs, readable by every login): the names
of databases and roles, and so the tenant ids in them. Use opaque tenant ids if that matters.
statement_timeout is a default the tenant may change in its own session, not a limit.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from psycopg import errors

from lambda_src.core.connection import ConnectionSettings
from lambda_src.provisioner.plans.host import ADMIN_DATABASES

from ..catalog import Tenant
from .report import AttackResult

SettingsFor = Callable[[str, str, str], ConnectionSettings]
"""(user, password, database) -> connection settings on the server under test."""


@dataclass(frozen=True)
class Login:
    """One tenant's login, on the server that holds its database."""

    tenant: Tenant
    password: str
    settings_for: SettingsFor
    """Connection settings on this tenant's server (a silo tenant has one of its own)."""

    def settings(
        self, database: str | None = None, on: SettingsFor | None = None
    ) -> ConnectionSettings:
        """Settings for this login to `database` (its own by default) on a server (its own by
        default)."""
        names = self.tenant.names
        server = on or self.settings_for
        return server(names.login_role, self.password, database or names.database)

    @contextmanager
    def connect(
        self, database: str | None = None, on: SettingsFor | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit connection as this login."""
        settings = self.settings(database, on)
        with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
            yield conn


def _connect_error(login: Login, database: str, on: SettingsFor | None = None) -> str:
    """'' when the login reaches `database`, else the server's reason."""
    try:
        with login.connect(database, on) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        return str(error).splitlines()[0]
    return ""


# A login is refused by another database on its own server for lack of CONNECT, and by
# another server (a silo tenant's) because it does not exist there.
_REFUSALS = {
    "permission denied for database": "refused: permission denied for database",
    "password authentication failed": "refused: no such login on that server",
    # The same login on another server, disabled there: what a tenant moved away from that
    # server leaves until its source is purged (tenantctl move --purge-source).
    "is not permitted to log in": "refused: its login is disabled on that server",
}


def _refused(login: Login, database: str, on: SettingsFor | None = None) -> tuple[bool, str]:
    error = _connect_error(login, database, on)
    for reason, verdict in _REFUSALS.items():
        if reason in error:
            return True, verdict
    return False, error or "connected"


_AS_THE_LOGIN_ITSELF = "SET ROLE NONE"
"""A login's sessions start as its database's objects role; anyone with SQL on the connection
can step back to the login itself, so a privilege attack must fail both ways."""


def _denied(login: Login, statement: str) -> tuple[bool, str]:
    denials = []
    for first in (None, _AS_THE_LOGIN_ITSELF):
        as_whom = " as the login itself" if first else ""
        with login.connect() as conn:
            if first:
                conn.execute(first)
            try:
                conn.execute(statement)
            # Outside the objects role a login has no schema to create in at all.
            except (errors.InsufficientPrivilege, errors.InvalidSchemaName) as error:
                denials.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
                continue
            except psycopg.Error as error:
                return (
                    False,
                    f"expected InsufficientPrivilege{as_whom}, got {type(error).__name__}: {error}",
                )
        return False, f"the statement succeeded{as_whom}"
    return True, denials[0]


def _connection_limit(login: Login) -> tuple[bool, str]:
    limit = login.tenant.connection_limit
    with ExitStack() as open_connections:
        for _ in range(limit):
            open_connections.enter_context(login.connect())
        try:
            with login.connect():
                pass
        except psycopg.OperationalError as error:
            if "too many connections" in str(error):
                return True, f"connection {limit + 1} refused: too many connections"
            return False, str(error).splitlines()[0]
    return False, f"connection {limit + 1} accepted"


def _statement_timeout(login: Login) -> tuple[bool, str]:
    expected = login.tenant.statement_timeout_ms
    with login.connect() as conn:
        row = conn.execute(
            "SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'"
        ).fetchone()
    if row and row[0] == expected:
        return True, f"statement_timeout {expected} ms in force in the tenant's database"
    return False, f"statement_timeout is {row[0] if row else None}, catalog says {expected}"


def _other_sessions(login: Login) -> tuple[bool, str]:
    with login.connect() as conn:
        rows = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE usename IS DISTINCT FROM session_user AND query NOT IN ('', "
            "'<insufficient privilege>') AND query IS NOT NULL"
        ).fetchone()
    if rows and rows[0] == 0:
        return True, "other sessions' statements hidden"
    return False, f"{rows[0] if rows else '?'} other sessions' statements visible"


def _attacks_of(login: Login) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    names = login.tenant.names
    attacks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        (f"connect to the {db} database", partial(_refused, login, db)) for db in ADMIN_DATABASES
    ]
    attacks += [
        ("create a role", lambda: _denied(login, "CREATE ROLE tenantkit_attacker")),
        ("create a database", lambda: _denied(login, "CREATE DATABASE tenantkit_attacker")),
        (
            "grant itself the owner role",
            lambda: _denied(login, f'GRANT "{names.owner_role}" TO CURRENT_USER'),
        ),
        ("give itself CREATEDB", lambda: _denied(login, "ALTER ROLE CURRENT_USER CREATEDB")),
        (
            "reach other databases through dblink",
            lambda: _denied(login, "CREATE EXTENSION IF NOT EXISTS dblink"),
        ),
        ("read password hashes", lambda: _denied(login, "SELECT rolpassword FROM pg_authid")),
        (
            "read server files",
            lambda: _denied(login, "SELECT pg_read_file('postgresql.conf')"),
        ),
        ("read other sessions' statements", lambda: _other_sessions(login)),
        ("exceed its connection limit", lambda: _connection_limit(login)),
        ("statement_timeout from the catalog", lambda: _statement_timeout(login)),
    ]
    return attacks


def run_database_attacks(
    tenants: Sequence[tuple[Tenant, str, SettingsFor]],
) -> list[AttackResult]:
    """For each (tenant, its login password, its server's settings): every other tenant's
    database (on whichever server holds it) and its own server's admin databases must refuse
    it, and inside its own database it must not gain privileges.

    Its own database must accept it, or the refusals prove nothing: a login that cannot
    reach its own database is reported as a failed precondition."""
    results = []
    logins = [Login(tenant, password, settings_for) for tenant, password, settings_for in tenants]
    for login in logins:
        tenant = login.tenant
        own_error = _connect_error(login, tenant.names.database)
        if own_error:
            results.append(
                AttackResult(
                    tenant.tier,
                    f"precondition: {tenant.id} reaches its own database",
                    False,
                    own_error,
                )
            )
            continue
        for other in logins:
            if other is login:
                continue
            refused, detail = _refused(login, other.tenant.names.database, on=other.settings_for)
            results.append(
                AttackResult(
                    tenant.tier,
                    f"{tenant.id} connects to {other.tenant.id}'s database",
                    refused,
                    detail,
                )
            )
        for name, attack in _attacks_of(login):
            try:
                blocked, detail = attack()
            except psycopg.Error as error:
                blocked, detail = False, f"unexpected {type(error).__name__}: {error}"
            results.append(AttackResult(tenant.tier, f"{tenant.id}: {name}", blocked, detail))
    return results
