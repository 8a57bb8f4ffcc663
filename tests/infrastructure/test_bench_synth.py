"""The synth benchmark runs end to end through the CDK CLI at a tiny size (figures come from
`tenantctl bench synth`)."""

from pathlib import Path

import pytest

from tenantkit.bench.synth import SynthBenchConfig, run_synth_bench

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bench_synthesizes_one_tenant_from_both_catalogs_and_the_whole_catalog() -> None:
    config = SynthBenchConfig(tenants=6, runs=1, tiers=("bridge",))

    results = run_synth_bench(REPO_ROOT, config, progress=lambda _step: None)

    assert results["catalog"] == {"silo": 1, "bridge": 2, "pool": 3}
    bridge = results["single_tenant"]["bridge"]
    assert bridge["stacks"] == 1  # the tenant's own stack, nothing else
    assert bridge["one_tenant_catalog"]["median_s"] > 0
    assert bridge["ratio"] > 0
    assert results["full"]["stacks"] == 1 + 2 + 1 + 1 + 1  # and the silo tier's dashboard
