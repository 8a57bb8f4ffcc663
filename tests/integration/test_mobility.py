"""tenantctl export and import on the embedded servers: a tenant's rows, checksums and sequence
positions survive bridge -> pool -> bridge and silo -> bridge -> silo round trips; other tenants
are untouched; a bad export or target is refused and changes nothing."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .migrate_cli import make_workdir, stop_servers, tenantctl
from .mobility_data import TABLES, V1, bystanders, digests, positions, rows_of, seed

CATALOG = """\
schema:
  directory: migrations
tenants:
  - id: mover
    tier: bridge
  - id: neighbour
    tier: bridge
  - id: pooled-one
    tier: pool
  - id: pooled-two
    tier: pool
  - id: solo
    tier: silo
"""
TIERS = {"mover": "bridge", "neighbour": "bridge", "pooled-one": "pool", "pooled-two": "pool"}


@pytest.fixture(scope="module")
def workdir(pg_root: Path) -> Iterator[Path]:
    """The catalog provisioned with rows in every tenant (servers stopped afterwards)."""
    root = make_workdir(pg_root, CATALOG, {"V1__vaults.sql": V1})
    try:
        code, run = tenantctl(root, "run")
        assert code == 0, run
        for tenant_id, tier, count in (
            ("mover", "bridge", 7),
            ("neighbour", "bridge", 3),
            ("pooled-one", "pool", 4),
            ("pooled-two", "pool", 5),
            ("solo", "silo", 6),
        ):
            seed(root, tenant_id, tier, count)
        yield root
    finally:
        stop_servers(root)


def move_by_hand(workdir: Path, tenant_id: str, tier: str) -> None:
    """What a tier change takes with export and import alone: destroy, onboard elsewhere."""
    code, gone = tenantctl(workdir, "offboard", tenant_id, "--destroy-data", "--no-export")
    assert code == 0, gone
    code, onboarded = tenantctl(workdir, "onboard", tenant_id, "--tier", tier)
    assert code == 0, onboarded


@pytest.mark.slow
def test_a_bridge_tenant_goes_to_the_pool_and_back_with_every_row_and_sequence(
    workdir: Path, tmp_path: Path
) -> None:
    # GIVEN a bridge tenant's rows, checksums and sequence positions, and the others' checksums
    rows = rows_of(workdir, "mover", "bridge")
    sums = digests(workdir, "mover", "bridge")
    at = positions(workdir, "mover", "bridge")
    others = bystanders(workdir, TIERS, but="mover")

    # WHEN it is exported
    code, exported = tenantctl(workdir, "export", "mover", "--out", str(tmp_path / "e1"))

    # THEN the export names its tables parents first, with the counts and checksums of the data
    assert code == 0, exported
    assert [t["name"] for t in exported["tables"]] == list(TABLES)
    assert {t["name"]: (t["rows"], t["sha256"]) for t in exported["tables"]} == sums
    assert exported["rows"] == 7 + 21
    manifest = json.loads((tmp_path / "e1" / "manifest.json").read_text())
    assert manifest["tenant"] == "mover"
    assert manifest["tier"] == "bridge"
    assert manifest["schema"]["version"] == 1
    assert {(s["table"], s["last_value"]) for s in manifest["sequences"]} == {
        ("public.vaults", at["vaults"]),
        ("public.items", at["items"]),
    }

    # WHEN offboarded with its data destroyed THEN an export is taken first, the same data
    code, gone = tenantctl(workdir, "offboard", "mover", "--destroy-data")
    assert code == 0, gone
    final = json.loads((Path(gone["export"]) / "manifest.json").read_text())
    assert {t["name"]: (t["rows"], t["sha256"]) for t in final["tables"]} == sums

    # WHEN it comes back in the pool and the export is imported
    code, onboarded = tenantctl(workdir, "onboard", "mover", "--tier", "pool")
    assert code == 0, onboarded
    pool_at_before = positions(workdir, "mover", "pool")
    code, imported = tenantctl(workdir, "import", "mover", str(tmp_path / "e1"))

    # THEN every row is there as it was, with the same checksums, the shared sequences are not
    # moved backwards, and no other tenant changed
    assert code == 0, imported
    assert imported["rows"] == 28
    assert imported["source_tier"] == "bridge"
    assert rows_of(workdir, "mover", "pool") == rows
    assert digests(workdir, "mover", "pool") == sums
    pool_at = positions(workdir, "mover", "pool")
    for table in ("vaults", "items"):
        assert pool_at[table] == max(pool_at_before[table], at[table])
    assert bystanders(workdir, TIERS, but="mover") == others

    # WHEN exported from the pool, moved back to the bridge and imported there
    code, from_pool = tenantctl(workdir, "export", "mover", "--out", str(tmp_path / "e2"))
    assert code == 0, from_pool
    assert {t["name"]: (t["rows"], t["sha256"]) for t in from_pool["tables"]} == sums
    move_by_hand(workdir, "mover", "bridge")
    code, imported = tenantctl(workdir, "import", "mover", str(tmp_path / "e2"))

    # THEN the rows and checksums are the original ones, the sequences at the export's position
    assert code == 0, imported
    assert rows_of(workdir, "mover", "bridge") == rows
    assert digests(workdir, "mover", "bridge") == sums
    assert positions(workdir, "mover", "bridge") == pool_at
    assert bystanders(workdir, TIERS, but="mover") == others


@pytest.mark.slow
def test_a_silo_tenant_goes_to_the_bridge_and_back_with_every_row_and_sequence(
    workdir: Path, tmp_path: Path
) -> None:
    rows = rows_of(workdir, "solo", "silo")
    sums = digests(workdir, "solo", "silo")
    at = positions(workdir, "solo", "silo")
    others = bystanders(workdir, TIERS, but="solo")

    code, exported = tenantctl(workdir, "export", "solo", "--out", str(tmp_path / "s1"))
    assert code == 0, exported
    move_by_hand(workdir, "solo", "bridge")
    code, imported = tenantctl(workdir, "import", "solo", str(tmp_path / "s1"))
    assert code == 0, imported
    assert rows_of(workdir, "solo", "bridge") == rows
    assert digests(workdir, "solo", "bridge") == sums
    assert positions(workdir, "solo", "bridge") == at

    code, exported = tenantctl(workdir, "export", "solo", "--out", str(tmp_path / "s2"))
    assert code == 0, exported
    move_by_hand(workdir, "solo", "silo")
    code, imported = tenantctl(workdir, "import", "solo", str(tmp_path / "s2"))
    assert code == 0, imported
    assert rows_of(workdir, "solo", "silo") == rows
    assert digests(workdir, "solo", "silo") == sums
    assert positions(workdir, "solo", "silo") == at
    assert bystanders(workdir, TIERS, but="solo") == others


@pytest.mark.slow
def test_an_export_is_private_to_its_owner(workdir: Path) -> None:
    code, exported = tenantctl(workdir, "export", "pooled-one")
    assert code == 0, exported
    directory = Path(exported["path"])
    assert directory.parent == workdir / "state" / "exports"
    assert directory.name.startswith("pooled-one-")
    assert directory.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in directory.iterdir()} == {0o600}
    assert len(list(directory.iterdir())) == 3  # the manifest and one file per table


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="module")
def pooled_one_export(workdir: Path, pg_root: Path) -> Path:
    """An export of pooled-one, for the refusals to spoil copies of."""
    target = pg_root / f"export-{workdir.name}"
    code, exported = tenantctl(workdir, "export", "pooled-one", "--out", str(target))
    assert code == 0, exported
    return target


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _manifest(directory: Path, change: Any) -> None:
    path = directory / "manifest.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


SPOILS: dict[str, tuple[Any, str]] = {
    "a truncated data file": (lambda d: _truncate(d / "002-public.items.copy"), "002-public.items"),
    "a corrupted data file": (lambda d: _flip(d / "001-public.vaults.copy"), "001-public.vaults"),
    "a missing data file": (lambda d: (d / "002-public.items.copy").unlink(), "is missing"),
    "a file the manifest does not list": (
        lambda d: (d / "003-public.extra.copy").write_text("x\n"),
        "003-public.extra.copy",
    ),
    "a truncated manifest": (
        lambda d: (d / "manifest.json").write_text((d / "manifest.json").read_text()[:200]),
        "manifest.json is not valid JSON",
    ),
    "a manifest whose row count was changed": (
        lambda d: _manifest(d, lambda m: m["tables"][0].update(rows=m["tables"][0]["rows"] + 1)),
        "001-public.vaults.copy does not match",
    ),
    "a data file path outside the export": (
        lambda d: _manifest(d, lambda m: m["tables"][0].update(file="../secrets.json")),
        "not a plain file name",
    ),
    "an export of another tenant": (
        lambda d: None,
        "an export of tenant 'pooled-one', not of 'pooled-two'",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("spoil", list(SPOILS))
def test_a_bad_export_is_refused_naming_what_and_nothing_changes(
    workdir: Path, pooled_one_export: Path, tmp_path: Path, spoil: str
) -> None:
    # GIVEN an export of pooled-one, spoiled
    change, named = SPOILS[spoil]
    spoiled = _copy(pooled_one_export, tmp_path / "spoiled")
    change(spoiled)
    before = bystanders(workdir, TIERS, but="")

    # WHEN it is imported, replacing the tenant's rows
    target = "pooled-two" if spoil == "an export of another tenant" else "pooled-one"
    code, refused = tenantctl(workdir, "import", target, str(spoiled), "--replace")

    # THEN it is refused as bad input, naming the file or the tenants, and nothing changed
    assert code == 2, refused
    assert named in refused["error"]
    assert bystanders(workdir, TIERS, but="") == before


@pytest.mark.slow
def test_a_tenant_with_rows_is_refused_unless_replace(
    workdir: Path, pooled_one_export: Path
) -> None:
    before = bystanders(workdir, TIERS, but="")

    code, refused = tenantctl(workdir, "import", "pooled-one", str(pooled_one_export))
    assert code == 2, refused
    assert "pooled-one already has rows" in refused["error"]
    assert "--replace" in refused["error"]
    assert bystanders(workdir, TIERS, but="") == before

    code, replaced = tenantctl(workdir, "import", "pooled-one", str(pooled_one_export), "--replace")
    assert code == 0, replaced
    assert replaced["replaced_rows"] == 4 + 12
    assert bystanders(workdir, TIERS, but="") == before


@pytest.mark.slow
def test_rows_of_another_tenant_fail_the_load_and_the_replace_is_rolled_back(
    workdir: Path, pooled_one_export: Path, tmp_path: Path
) -> None:
    # GIVEN pooled-one's files presented as an export of pooled-two (the checksums still hold)
    forged = _copy(pooled_one_export, tmp_path / "forged")
    _manifest(forged, lambda m: m.update(tenant="pooled-two"))
    before = bystanders(workdir, TIERS, but="")

    # WHEN imported into pooled-two with --replace
    code, failed = tenantctl(workdir, "import", "pooled-two", str(forged), "--replace")

    # THEN the load fails on pooled-one's rows and pooled-two's deleted rows are back
    assert code == 1, failed
    assert "belong to another tenant than pooled-two" in failed["error"]
    assert bystanders(workdir, TIERS, but="") == before


@pytest.mark.slow
def test_an_offboard_whose_export_fails_destroys_nothing(workdir: Path) -> None:
    # GIVEN exports cannot be written (a file where the exports directory goes)
    exports = workdir / "state" / "exports"
    kept = exports.with_name("exports.kept")
    if exports.exists():
        exports.rename(kept)
    exports.write_text("not a directory")
    before = digests(workdir, "pooled-two", "pool")
    try:
        # WHEN the tenant is offboarded with its data destroyed
        code, failed = tenantctl(workdir, "offboard", "pooled-two", "--destroy-data")
    finally:
        exports.unlink()
        if kept.exists():
            kept.rename(exports)

    # THEN it fails before anything is destroyed: rows, registry and catalog as they were
    assert code == 1, failed
    assert "nothing was destroyed" in failed["error"]
    assert digests(workdir, "pooled-two", "pool") == before
    code, status = tenantctl(workdir, "status", "pooled-two")
    assert code == 0, status
    assert status["status"] == "active"
    assert status["in_catalog"] is True


@pytest.mark.slow
def test_an_import_names_both_schema_versions_when_they_differ(
    workdir: Path, tmp_path: Path
) -> None:
    # GIVEN an export of neighbour at V1, then neighbour alone brought to V2
    code, exported = tenantctl(workdir, "export", "neighbour", "--out", str(tmp_path / "n1"))
    assert code == 0, exported
    (workdir / "migrations" / "V2__labels.sql").write_text(
        "CREATE TABLE labels (tenant_id text NOT NULL, id bigint, PRIMARY KEY (tenant_id, id));"
    )
    code, applied = tenantctl(workdir, "migrate", "apply", "--tenant", "neighbour")
    assert code == 0, applied
    before = bystanders(workdir, TIERS, but="")

    # WHEN the V1 export is imported into neighbour
    code, refused = tenantctl(workdir, "import", "neighbour", str(tmp_path / "n1"), "--replace")

    # THEN it is refused naming both versions, and nothing changed
    assert code == 2, refused
    assert "neighbour is at V2" in refused["error"]
    assert "the export at V1" in refused["error"]
    assert bystanders(workdir, TIERS, but="") == before
