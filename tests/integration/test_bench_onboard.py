"""The onboarding benchmark runs end to end at a tiny size (figures come from the command)."""

from pathlib import Path

import pytest

from tenantkit.bench.onboard import OnboardBenchConfig, run_onboard_bench

pytestmark = pytest.mark.slow


def test_bench_onboards_sequentially_concurrently_and_in_the_pool(pg_root: Path) -> None:
    root = pg_root / "bench-onboard"
    root.mkdir()
    config = OnboardBenchConfig(bridge_tenants=3, concurrent=4, pool_tenants=50, pool_single=5)
    results = run_onboard_bench(root, config, progress=lambda _step: None)
    assert results["bridge"]["tenants"] == 3
    assert results["bridge"]["onboard"]["median_ms"] > 0
    concurrent = results["concurrent"]
    assert concurrent["errors"] == []
    assert concurrent["databases"] == 4
    assert concurrent["roles"] == concurrent["expected_roles"] == 16  # 4 roles each
    assert results["pool"]["batched"]["tenants"] == 50
    assert results["pool"]["one_per_request"]["tenants"] == 5
