"""The move's streamed copy (lambda_src/mobility/stream.py) on the embedded servers: a target
that does not hold what the source sent fails the verify and is rolled back, and rows of
another tenant in a bridge database refuse a move into the pool, which then changes nothing."""

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lambda_src.mobility import CopyFailedError, TenantScope, streamed_copy
from lambda_src.mobility.tables import acting_as
from lambda_src.tenancy import POOL, tenant_names

from .migrate_cli import as_superuser, make_workdir, server_of, stop_servers, tenantctl
from .mobility_data import V1, bystanders, rows_of, seed

pytestmark = pytest.mark.slow

CATALOG = """\
schema:
  directory: migrations
tenants:
  - id: mover
    tier: bridge
  - id: stray
    tier: bridge
  - id: pool-bystander
    tier: pool
"""
OTHERS = {"mover": "bridge", "pool-bystander": "pool"}


@pytest.fixture(scope="module")
def workdir(pg_root: Path) -> Iterator[Path]:
    root = make_workdir(pg_root, CATALOG, {"V1__vaults.sql": V1})
    try:
        for tenant_id, tier in (
            ("mover", "bridge"),
            ("stray", "bridge"),
            ("pool-bystander", "pool"),
        ):
            code, onboarded = tenantctl(root, "onboard", tenant_id, "--tier", tier)
            assert code == 0, onboarded
        seed(root, "mover", "bridge", 3)
        seed(root, "stray", "bridge", 2)
        seed(root, "pool-bystander", "pool", 2)
        yield root
    finally:
        stop_servers(root)


def admin(workdir: Path, database: str) -> psycopg.Connection:
    settings = server_of(workdir).admin_settings(database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


def copy_changing_a_row_before_the_verify(
    source: psycopg.Connection, target: psycopg.Connection
) -> None:
    """mover's bridge rows streamed into the pool's tables; one of them deleted in the target's
    transaction after the copy, before the verify."""
    with streamed_copy(
        source, target, TenantScope("mover", "database"), TenantScope("mover", "pool")
    ) as stream:
        sent = stream.copy()
        assert sent["public.items"].rows == 9
        with acting_as(target, POOL.maintainer_role):
            target.execute(
                "DELETE FROM items WHERE tenant_id = %s AND item_id = "
                "(SELECT min(item_id) FROM items WHERE tenant_id = %s)",
                ("mover", "mover"),
            )
        stream.verify()


def test_a_target_that_differs_from_what_the_source_sent_fails_the_verify_and_rolls_back(
    workdir: Path,
) -> None:
    # WHEN a row goes missing in the target between the copy and the verify
    with (
        admin(workdir, tenant_names("mover").database) as source,
        admin(workdir, POOL.database) as target,
        # THEN the verify (the target read back) names the table
        pytest.raises(CopyFailedError, match=r"public\.items differ\(s\) from the source"),
    ):
        copy_changing_a_row_before_the_verify(source, target)

    # and nothing was committed
    with as_superuser(server_of(workdir), POOL.database) as conn:
        held = conn.execute("SELECT count(*) FROM vaults WHERE tenant_id = 'mover'").fetchone()
    assert held == (0,)


def test_rows_of_another_tenant_in_a_bridge_database_refuse_a_move_to_the_pool(
    workdir: Path,
) -> None:
    # GIVEN stray's bridge database holding a row that names another tenant
    with as_superuser(server_of(workdir), tenant_names("stray").database) as conn:
        conn.execute("INSERT INTO vaults (tenant_id, name) VALUES ('pool-bystander', 'planted')")
    rows = rows_of(workdir, "stray", "bridge")
    others = bystanders(workdir, OTHERS, but="")

    # WHEN it is moved into the pool
    code, failed = tenantctl(workdir, "move", "stray", "--to", "pool")

    # THEN the move fails naming the foreign row, is rolled back, and nothing changed
    assert code == 1, failed
    assert "1 row(s) of public.vaults belong to another tenant than stray" in failed["error"]
    assert "rolled back" in failed["error"]
    code, status = tenantctl(workdir, "status", "stray")
    assert code == 0, status
    assert status["tier"] == "bridge"
    assert rows_of(workdir, "stray", "bridge") == rows
    assert rows_of(workdir, "stray", "pool") == {"vaults": [], "items": []}
    assert bystanders(workdir, OTHERS, but="") == others
