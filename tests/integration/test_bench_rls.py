"""The RLS benchmark runs end to end at a tiny size (its figures come from the command, not
from tests) and proves the tenant context costs no extra round trip, straight to the server
and through PgBouncer."""

from pathlib import Path

import pytest

from lambda_src.core import environment as env_names
from tenantkit.bench.rls import PGBOUNCER_VARIANTS, VARIANTS, RlsBenchConfig, run_rls_bench
from tenantkit.pgbouncer import PgBouncerError


@pytest.mark.slow
def test_bench_measures_every_variant_and_equal_round_trips(pg_root: Path) -> None:
    root = pg_root / "bench"
    root.mkdir()
    config = RlsBenchConfig(
        tenants=12,
        rows_per_tenant=10,
        database_sample=2,
        strict_sample=2,
        blocks=2,
        block_size=12,
        block_warmup=2,
        connections=3,
        tenantkit_copies=2,
        latency_rounds=8,
        latency_ms=2.0,
    )
    results = run_rls_bench(root, config, progress=lambda _step: None)
    assert set(results["variants"]) == {*VARIANTS, "tenantkit-2"}
    assert set(PGBOUNCER_VARIANTS) <= set(VARIANTS)
    for name, variant in results["variants"].items():
        assert variant["server_side"]["median_ms"] > 0
        assert variant["end_to_end"]["median_ms"] >= variant["server_side"]["median_ms"]
        assert set(variant["steps_median_us"]) == {"context", "list", "read", "write", "commit"}
        # the pool variants draw from one shared set of connections; database, strict and
        # where-logins have one per tenant of their sample
        expected_backends = 2 if name in ("database", "strict", "where-logins") else 3
        assert variant["backends"] == expected_backends, name
    trips = results["round_trips"]
    # counted by the relay, not estimated from time: setting the tenant adds no round trip
    assert trips["tenantkit"]["round_trips"] == trips["where"]["round_trips"]
    assert trips["strict"]["round_trips"] == trips["where"]["round_trips"]
    # BEGIN (with the context for tenantkit), list, read, write, COMMIT
    assert trips["where"]["round_trips"] == 5
    # through PgBouncer too (the relay between the client and PgBouncer), nothing prepared
    assert trips["where-pgbouncer"]["round_trips"] == 5
    assert trips["tenantkit-pgbouncer"]["round_trips"] == 5
    # each of the pooled and strict variants is also compared with its own layout's baseline
    pairs = {(p["variant"], p["baseline"]) for p in results["pairs"].values()}
    assert pairs == {("strict", "where-logins"), ("tenantkit-pgbouncer", "where-pgbouncer")}
    for pair in results["pairs"].values():
        assert pair["server_side_median"] > 0
        assert pair["end_to_end_median"] > 0


def test_a_block_without_timed_requests_is_refused_before_anything_starts(tmp_path: Path) -> None:
    config = RlsBenchConfig(block_size=10, block_warmup=10)
    refused = r"block warmup must be .* less than the block size \(10\), not 10"
    with pytest.raises(ValueError, match=refused):
        run_rls_bench(tmp_path / "never", config, progress=lambda _step: None)
    assert not (tmp_path / "never").exists()


def test_pgbouncer_asked_for_and_missing_fails_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env_names.PGBOUNCER_BIN, str(tmp_path / "no-pgbouncer"))
    with pytest.raises(PgBouncerError, match="no-pgbouncer: no such file"):
        run_rls_bench(tmp_path / "never", RlsBenchConfig(), progress=lambda _step: None)
    assert not (tmp_path / "never").exists()
