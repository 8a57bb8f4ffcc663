"""tenantctl move on the embedded servers: a tenant moved pool -> bridge -> silo -> pool keeps
every row, checksum and sequence position, the others are untouched and the attacks still fail;
a move killed at any step boundary ends in one place on the next run; bad input changes
nothing."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambda_src.mobility.journal import STEPS
from tenantkit.move import FAULT_ENV, FAULT_EXIT

from .migrate_cli import TENANTCTL, cli_args, copy_state, make_workdir, stop_servers, tenantctl
from .mobility_data import V1, bystanders, digests, positions, rows_of, seed

CATALOG = """\
schema:
  directory: migrations
tenants:
  - id: mover
    tier: pool
  - id: pool-bystander
    tier: pool
  - id: bridge-bystander
    tier: bridge
"""
OTHERS = {"pool-bystander": "pool", "bridge-bystander": "bridge"}


def provisioned(pg_root: Path) -> Path:
    """A work directory with the catalog provisioned and rows in every tenant."""
    root = make_workdir(pg_root, CATALOG, {"V1__vaults.sql": V1})
    for tenant_id, tier in (("mover", "pool"), *OTHERS.items()):
        code, onboarded = tenantctl(root, "onboard", tenant_id, "--tier", tier)
        assert code == 0, onboarded
    seed(root, "pool-bystander", "pool", 3)
    seed(root, "mover", "pool", 5)
    seed(root, "bridge-bystander", "bridge", 2)
    return root


@pytest.fixture(scope="module")
def template(pg_root: Path) -> Path:
    """The provisioned work directory, its servers stopped: each test moves on a copy of it
    (provisioning is most of a test's time; a copy takes about a second)."""
    root = provisioned(pg_root)
    stop_servers(root)
    return root


def copied(pg_root: Path, template: Path) -> Path:
    """A work directory of its own holding the template's catalog and servers."""
    root = make_workdir(pg_root, CATALOG, {"V1__vaults.sql": V1})
    shutil.copy(template / "tenants.yaml", root / "tenants.yaml")
    copy_state(template, root)
    return root


@pytest.fixture
def workdir(pg_root: Path, template: Path) -> Iterator[Path]:
    root = copied(pg_root, template)
    try:
        yield root
    finally:
        stop_servers(root)


def tier_in_catalog(workdir: Path, tenant_id: str) -> str:
    code, document = tenantctl(workdir, "status", tenant_id)
    assert code == 0, document
    return str(document["tier"])


def statuses(workdir: Path, tenant_id: str) -> dict[str, str]:
    """Tier -> the tenant's status in that tier's registry."""
    code, listed = tenantctl(workdir, "list")
    assert code == 0, listed
    return {t["tier"]: t["status"] for t in listed["tenants"] if t["id"] == tenant_id}


@pytest.mark.slow
def test_a_tenant_moves_pool_bridge_silo_and_back_to_the_pool_with_every_row(
    workdir: Path,
) -> None:
    rows = rows_of(workdir, "mover", "pool")
    sums = digests(workdir, "mover", "pool")
    at = positions(workdir, "mover", "pool")
    others = bystanders(workdir, OTHERS, but="")
    tier = "pool"
    for target in ("bridge", "silo", "pool"):
        # WHEN the tenant is moved to the next tier
        code, moved = tenantctl(workdir, "move", "mover", "--to", target)

        # THEN every step ran, its rows, checksums and sequences are there, the source's rows
        # are kept, marked moved, the others are untouched and every attack still fails
        assert code == 0, moved
        assert moved["steps"] == list(STEPS)
        assert moved["from"] == tier
        assert {t["name"]: (t["rows"], t["sha256"]) for t in moved["tables"]} == sums
        assert rows_of(workdir, "mover", target) == rows
        assert digests(workdir, "mover", target) == sums
        if target != "pool":
            assert positions(workdir, "mover", target) == at
        assert tier_in_catalog(workdir, "mover") == target
        assert statuses(workdir, "mover") == {tier: "moved", target: "active"}
        assert bystanders(workdir, OTHERS, but="") == others
        code, verified = tenantctl(workdir, "verify")
        assert code == 0, verified
        assert verified["leaks"] == []

        # WHEN the source is purged THEN it is exported first and its rows are gone
        code, purged = tenantctl(workdir, "move", "mover", "--purge-source")
        assert code == 0, purged
        assert purged["purged"] == tier
        assert (Path(purged["export"]) / "manifest.json").is_file()
        assert statuses(workdir, "mover") == {target: "active"}
        assert bystanders(workdir, OTHERS, but="") == others
        tier = target
    assert rows_of(workdir, "mover", "pool") == rows


def killed_move(workdir: Path, step: str) -> tuple[int, str]:
    env = {**os.environ, FAULT_ENV: step}
    process = subprocess.run(
        [str(TENANTCTL), *cli_args(workdir, "move", "mover", "--to", "bridge")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return process.returncode, process.stdout + process.stderr


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS[:-1])
def test_a_move_killed_at_a_step_boundary_ends_in_one_place_on_the_next_run(
    pg_root: Path, template: Path, step: str
) -> None:
    workdir = copied(pg_root, template)
    try:
        rows = rows_of(workdir, "mover", "pool")
        others = bystanders(workdir, OTHERS, but="")

        # WHEN the move is killed right after the step
        code, output = killed_move(workdir, step)
        assert code == FAULT_EXIT, output

        # THEN the registry shows the move until the next run finishes it or rolls it back
        if step in ("freeze", "copy", "verify", "switch"):
            assert statuses(workdir, "mover").get("pool") == "moving"
        # (`tenantctl status` finishes it as `tenantctl move` does)
        if step in ("freeze", "switch"):
            code, status = tenantctl(workdir, "status", "mover")
            resumed = status["move"]
        else:
            code, resumed = tenantctl(workdir, "move", "mover")
        assert code == 0, resumed
        assert resumed["resumed"] is True
        switched = step == "switch"
        assert resumed["outcome"] == ("done" if switched else "rolled-back")
        where = "bridge" if switched else "pool"
        assert tier_in_catalog(workdir, "mover") == where
        assert statuses(workdir, "mover") == (
            {"pool": "moved", "bridge": "active"} if switched else {"pool": "active"}
        )
        assert rows_of(workdir, "mover", where) == rows
        assert bystanders(workdir, OTHERS, but="") == others

        # and a rolled-back tenant can still be moved
        if not switched:
            code, moved = tenantctl(workdir, "move", "mover", "--to", "bridge")
            assert code == 0, moved
            assert rows_of(workdir, "mover", "bridge") == rows
    finally:
        stop_servers(workdir)


@pytest.mark.slow
def test_bad_moves_are_refused_and_change_nothing(workdir: Path) -> None:
    before = bystanders(workdir, {"mover": "pool", **OTHERS}, but="")
    refusals: list[tuple[list[str], str]] = [
        (["move", "nobody", "--to", "bridge"], "nobody"),
        (["move", "mover", "--to", "pool"], "mover is already in pool"),
        (["move", "mover"], "--to"),
    ]
    for args, named in refusals:
        code, refused = tenantctl(workdir, *args)
        assert code == 2, (args, refused)
        assert named in refused["error"]

    # GIVEN a newer migration the tenant's database is not at
    (workdir / "migrations" / "V2__labels.sql").write_text(
        "CREATE TABLE labels (tenant_id text NOT NULL, id bigint, PRIMARY KEY (tenant_id, id));"
    )
    code, refused = tenantctl(workdir, "move", "bridge-bystander", "--to", "silo")
    assert code == 2, refused
    assert "is at V1" in refused["error"]
    assert "V2" in refused["error"]
    assert tier_in_catalog(workdir, "bridge-bystander") == "bridge"
    assert bystanders(workdir, {"mover": "pool", **OTHERS}, but="") == before
    assert statuses(workdir, "bridge-bystander") == {"bridge": "active"}
