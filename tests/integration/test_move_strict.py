"""tenantctl move with a strict pool (`pool: {mode: strict}`: each pool tenant logs in as its
own login): a tenant moved out to the bridge and back keeps every row and checksum, its pool
login is disabled while it is away and lets it in, to its own rows only, once it is back; the
other pool tenant and the strict attack suite are untouched."""

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lambda_src.tenant_runtime import tenant_transaction
from tenantkit.local import LocalSecrets, pool_login_settings

from .migrate_cli import make_workdir, server_of, stop_servers, tenantctl
from .mobility_data import V1, bystanders, digests, rows_of, seed

pytestmark = pytest.mark.slow

CATALOG = """\
schema:
  directory: migrations
pool:
  mode: strict
tenants:
  - id: mover
    tier: pool
  - id: pool-bystander
    tier: pool
"""
OTHERS = {"pool-bystander": "pool"}


@pytest.fixture
def workdir(pg_root: Path) -> Iterator[Path]:
    root = make_workdir(pg_root, CATALOG, {"V1__vaults.sql": V1})
    try:
        for tenant_id in ("mover", "pool-bystander"):
            code, onboarded = tenantctl(root, "onboard", tenant_id, "--tier", "pool")
            assert code == 0, onboarded
        seed(root, "pool-bystander", "pool", 3)
        seed(root, "mover", "pool", 4)
        yield root
    finally:
        stop_servers(root)


def vaults_seen_by_own_login(workdir: Path, tenant_id: str) -> list[str] | str:
    """The tenant ids of the vault rows the tenant's own pool login reads (strict runtime), or
    the login's refusal."""
    store = LocalSecrets(workdir / "state" / "secrets.json")
    settings = pool_login_settings(server_of(workdir), store, tenant_id)
    try:
        with psycopg.connect(**settings.connect_kwargs()) as conn:
            with tenant_transaction(conn, tenant_id, strict=True):
                rows = conn.execute("SELECT tenant_id FROM vaults ORDER BY vault_id").fetchall()
            return [str(r[0]) for r in rows]
    except psycopg.OperationalError as error:
        return str(error)


def test_a_strict_pool_tenant_moves_to_the_bridge_and_back_with_every_row(
    workdir: Path,
) -> None:
    # GIVEN a strict pool tenant whose own login reads its rows
    rows = rows_of(workdir, "mover", "pool")
    sums = digests(workdir, "mover", "pool")
    others = bystanders(workdir, OTHERS, but="")
    assert vaults_seen_by_own_login(workdir, "mover") == ["mover"] * 4

    # WHEN it is moved to the bridge
    code, moved = tenantctl(workdir, "move", "mover", "--to", "bridge")

    # THEN its rows and checksums are there and its pool login no longer gets in
    assert code == 0, moved
    assert {t["name"]: (t["rows"], t["sha256"]) for t in moved["tables"]} == sums
    assert rows_of(workdir, "mover", "bridge") == rows
    refused = vaults_seen_by_own_login(workdir, "mover")
    assert isinstance(refused, str)
    assert "not permitted to log in" in refused
    assert bystanders(workdir, OTHERS, but="") == others

    # WHEN the pool's rows are purged and it is moved back into the strict pool
    code, purged = tenantctl(workdir, "move", "mover", "--purge-source")
    assert code == 0, purged
    code, back = tenantctl(workdir, "move", "mover", "--to", "pool")

    # THEN every row is back, its own login reads them (and no one else's), the other tenant
    # is untouched and every strict attack is still blocked
    assert code == 0, back
    assert back["from"] == "bridge"
    assert rows_of(workdir, "mover", "pool") == rows
    assert digests(workdir, "mover", "pool") == sums
    assert vaults_seen_by_own_login(workdir, "mover") == ["mover"] * 4
    assert vaults_seen_by_own_login(workdir, "pool-bystander") == ["pool-bystander"] * 3
    assert bystanders(workdir, OTHERS, but="") == others
    code, verified = tenantctl(workdir, "verify")
    assert code == 0, verified
    assert verified["leaks"] == []
