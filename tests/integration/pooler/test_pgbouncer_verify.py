"""`tenantctl verify`'s pool and runtime attacks through a real PgBouncer in transaction mode,
and proof that the runtime suite catches a pooler that carries one client's session SET to the
next client."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lambda_src.core.connection import ConnectionSettings
from lambda_src.tenancy import POOL
from tenantkit.cli import app
from tenantkit.embedded_pg import RunningServer
from tenantkit.pgbouncer import RunningPgBouncer
from tenantkit.verify import run_pool_attacks, run_runtime_attacks
from tenantkit.verify.pool import attacks_for

from .conftest import PASSWORD, start_pgbouncer

SESSION_SET_ATTACK = "session SET by one client read by the next (transaction pooler)"


def test_every_pool_attack_through_pgbouncer_is_blocked(
    pooled_runtime: ConnectionSettings,
) -> None:
    results = run_pool_attacks(pooled_runtime)
    assert len(results) == len(attacks_for("settable"))
    assert [(r.attack, r.detail) for r in results if not r.blocked] == []


def test_every_runtime_attack_through_pgbouncer_is_blocked(
    pooled_runtime: ConnectionSettings,
) -> None:
    results = run_runtime_attacks(pooled_runtime)
    assert SESSION_SET_ATTACK in {r.attack for r in results}
    assert [(r.attack, r.detail) for r in results if not r.blocked] == []


def test_tenantctl_verify_dsn_through_pgbouncer_blocks_everything(
    pgbouncer: RunningPgBouncer, pooled_runtime: ConnectionSettings
) -> None:
    dsn = (
        f"host={pgbouncer.host} port={pgbouncer.port} dbname={POOL.database} "
        f"user={pooled_runtime.user} password={PASSWORD} sslrootcert={pgbouncer.ca_cert}"
    )
    result = CliRunner().invoke(app, ["verify", "--json", "--dsn", dsn])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["attacks"] == len(attacks_for("settable")) + len(
        run_runtime_attacks(pooled_runtime)
    )
    assert verdict["leaks"] == []


@pytest.fixture
def keeping_pgbouncer(pooler_server: RunningServer, pg_root: Path) -> Iterator[ConnectionSettings]:
    """A second PgBouncer as Debian configures one: no reset after a transaction-mode
    transaction (server_reset_query_always = 0). In pg_root, which its unprivileged user (as
    root) can reach."""
    bouncer = start_pgbouncer(pooler_server, pg_root / "pgbouncer-keeping", reset_always=False)
    assert bouncer.server is not None
    try:
        yield bouncer.server.settings(POOL.login_role, PASSWORD, POOL.database)
    finally:
        bouncer.stop()


def test_the_runtime_attacks_catch_a_pooler_that_keeps_session_settings(
    keeping_pgbouncer: ConnectionSettings,
) -> None:
    # GIVEN a PgBouncer that leaves a client's session SET on the server connection
    # WHEN the runtime attacks run through it
    leaks = {r.attack: r.detail for r in run_runtime_attacks(keeping_pgbouncer) if not r.blocked}
    # THEN the next client, with no tenant of its own, read the tenant the first one set
    assert list(leaks) == [SESSION_SET_ATTACK]
    assert "tenantkit-probe-b" in leaks[SESSION_SET_ATTACK]
    assert "the same server backend" in leaks[SESSION_SET_ATTACK]
