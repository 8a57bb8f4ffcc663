"""The metering benchmark runs end to end at a tiny size (figures come from the command)."""

from pathlib import Path

import pytest

from tenantkit.bench.usage import UsageBenchConfig, run_usage_bench

pytestmark = pytest.mark.slow


def test_bench_meters_the_pool_and_bridge_and_checks_every_estimate(pg_root: Path) -> None:
    root = pg_root / "bench-usage"
    root.mkdir()
    config = UsageBenchConfig(
        pool_tenants=40, pool_rows=8000, bridge_tenants=3, bridge_rows=50, churn_tenants=4
    )
    results = run_usage_bench(root, config, progress=lambda _step: None)
    pool = results["pool"]
    for run in ("metering_with_analyze", "metering", "metering_after_churn"):
        error = pool[run]["error"]
        assert error["within_bound"] == error["tenants"] == 40, run
    assert pool["metering"]["error"]["max_abs_error_rows"] == 0  # fresh statistics, small table
    assert pool["metering"]["analyzed"] == []  # the steady state reads statistics only
    assert pool["metering_after_churn"]["error"]["total_exact"] == 8000 + 80
    assert pool["exact_count"]["blocks"] > pool["metering"]["blocks"]
    assert results["bridge"]["rows_match"] == 3
