"""`tenantctl bench migrate` at a tiny size: every level applies exactly one file per tenant
database and to the pool (whose new tables all come under the tenant policies), and the report
has what the README's table is made of."""

from pathlib import Path

import pytest

from tenantkit.bench.migrate import MigrateBenchConfig, plot, run_migrate_bench


@pytest.mark.slow
def test_bench_measures_the_engine_against_raw_sql_and_the_fleet_per_parallelism(
    pg_root: Path,
) -> None:
    root = pg_root / "bench-migrate"
    root.mkdir()
    config = MigrateBenchConfig(bridge_tenants=4, parallelism=(1, 2))
    results = run_migrate_bench(root, config, progress=lambda _step: None)
    for run in ("first", "later"):
        measured = results["overhead"][run]
        assert measured["raw"]["median_ms"] > 0
        assert measured["engine"]["median_ms"] > 0
        pool = results["overhead"]["pool"][run]
        assert pool["raw_ms"] > 0
        assert pool["engine_ms"] > 0
    assert [level["parallelism"] for level in results["fleet"]] == [1, 2]
    assert all(level["seconds"] > 0 for level in results["fleet"])
    assert all(level["databases"] == 5 for level in results["fleet"])
    assert all(level["pool_ms"] > 0 for level in results["fleet"])
    # the pool got the engine's two files and one per level, each table protected; the raw
    # side's tables were dropped
    assert results["pool_tables"] == {"protected": 4, "unprotected": 0}
    plot(results, root / "migrate.png")
    assert (root / "migrate.png").stat().st_size > 1000
