"""The metering benchmark runs end to end at a tiny size (figures come from the command)."""

from pathlib import Path

import pytest

from tenantkit.bench.usage import UsageBenchConfig, run_usage_bench

pytestmark = pytest.mark.slow


def test_bench_meters_the_pool_and_bridge_and_checks_every_estimate(pg_root: Path) -> None:
    root = pg_root / "bench-usage"
    root.mkdir()
    config = UsageBenchConfig(
        pool_tenants=150, pool_rows=8000, bridge_tenants=3, bridge_rows=50, churn_tenants=4
    )
    results = run_usage_bench(root, config, progress=lambda _step: None)
    pool = results["pool"]
    for run in ("metering_with_analyze", "metering", "metering_after_churn"):
        error = pool[run]["error"]
        assert error["within_bound"] == error["tenants"] == 150, run
    assert pool["metering"]["error"]["max_abs_error_rows"] == 0  # fresh statistics, small table
    assert pool["metering"]["analyzed"] == []  # the steady state reads statistics only
    # after the load autovacuum's ANALYZE is due: the sampler's first does the whole table
    assert pool["metering_with_analyze"]["analyzed_whole_table"] == ["public.customers"]
    assert pool["metering_after_churn"]["error"]["total_exact"] == 8000 + 80
    assert pool["exact_count"]["blocks"] > pool["metering"]["blocks"]
    assert results["bridge"]["rows_match"] == 3


def test_bench_measures_analyze_at_both_statistics_targets_and_metering_at_the_default(
    pg_root: Path,
) -> None:
    root = pg_root / "bench-usage-analyze"
    root.mkdir()
    config = UsageBenchConfig(
        pool_tenants=150, pool_rows=8000, bridge_tenants=1, bridge_rows=10, churn_tenants=4
    )
    analyze = run_usage_bench(root, config, progress=lambda _step: None)["pool"]["analyze"]
    rows = 8000 + 80  # after the churn
    high, default = analyze["target_10000"], analyze["target_100"]
    assert len(high["runs_seconds"]) == len(default["runs_cpu_seconds"]) == 2
    assert high["sample_rows"] == default["sample_rows"] == rows  # both fit the whole table
    assert high["blocks"] > 0
    assert default["blocks"] > 0
    # 150 tenants: the default keeps at most 100 in its list, tenantkit's target every one
    # that has rows
    assert default["most_common_values"] <= 100 < high["most_common_values"]
    # The sampler's own ANALYZE of tenant_id alone, at tenantkit's target and lower ones: the
    # metering after each does not analyze again and every estimate is within its bound
    column = analyze["column_target_10000"]
    assert column["columns"] == "tenant_id"
    assert column["most_common_values"] == high["most_common_values"]
    assert len(column["runs_cpu_seconds"]) == 2
    for target in (1000, 2500):
        lower = analyze[f"column_target_{target}"]
        assert lower["statistics_target"] == target
        assert lower["metering"]["analyzed"] == []
        assert lower["metering"]["error"]["within_bound"] == 150
    metering = analyze["metering_target_100"]
    assert metering["counted_tenants"] >= 150 - 100
    assert metering["error"]["within_bound"] == 150
    assert analyze["planner_error_target_100"]["tenants"] == 150
    schedule = analyze["schedule"]
    assert schedule["rows"] == rows
    assert schedule["autovacuum_rows"] == round(50 + 0.1 * rows)  # the server's defaults
    assert schedule["sampler_rows"] == round(100 + 0.02 * rows)
    for rate in schedule["by_write_rate"]:
        now, before = rate["sampler"], rate["whole"]
        # the sampler's tenant_id ANALYZEs replace whole-table ones, never add any
        assert now["whole_table_per_hour"] <= before["whole_table_per_hour"]
        assert (
            now["whole_table_per_hour"] + now["tenant_id_per_hour"]
            <= 60 + 60 / schedule["sampler_schedule_minutes"]
        )  # no more often than autovacuum's naptime and the sampler's schedule
    hourly = [
        r["sampler"]["whole_table_per_hour"] + r["sampler"]["tenant_id_per_hour"]
        for r in schedule["by_write_rate"]
    ]
    assert hourly == sorted(hourly)
