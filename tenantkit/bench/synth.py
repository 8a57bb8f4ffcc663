"""`tenantctl bench synth`: what a per-tenant synth costs as the catalog grows.

Runs the real `cdk synth` (the repo's pinned CLI, Lambda bundling on), in one run and
interleaved: for one tenant of each tier, `cdk synth -c tenant=<id>` from a catalog holding only
that tenant and from a catalog of `tenants` tenants; then a full synth of the large catalog.
The large catalog mixes tiers as a SaaS product's plans would: premium tenants silo, standard
bridge, basic pool.
"""

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ..catalog import TIERS, Tier
from ..synth import with_repo_node

# Share of each tier in a mixed catalog: 1 % premium (silo), 29 % standard, 70 % basic.
MIX: dict[Tier, float] = {"silo": 0.01, "bridge": 0.29, "pool": 0.70}


def mixed_catalog(count: int) -> dict[str, Any]:
    """A catalog document of `count` tenants, mixed by MIX (at least one per tier), with bridge
    connection limits that fit one cluster."""
    silo = max(1, round(count * MIX["silo"]))
    bridge = max(1, round(count * MIX["bridge"]))
    pool = max(1, count - silo - bridge)
    tenants: list[dict[str, Any]] = [
        {"id": f"premium-{n:04d}", "tier": "silo"} for n in range(silo)
    ]
    tenants += [
        {"id": f"standard-{n:04d}", "tier": "bridge", "connection_limit": 2} for n in range(bridge)
    ]
    tenants += [{"id": f"basic-{n:04d}", "tier": "pool"} for n in range(pool)]
    return {"tenants": tenants}


@dataclass(frozen=True)
class SynthBenchConfig:
    """Sizes of one run."""

    tenants: int = 1000
    runs: int = 3
    """Synths of each single-tenant case (interleaved); the full synth runs once."""
    tiers: tuple[Tier, ...] = TIERS
    """The tiers whose first tenant is synthesized alone."""


def _cdk_synth(repo: Path, catalog: Path, out: Path, *context: str) -> tuple[float, int]:
    """Run `cdk synth` as a user would; return (seconds, number of templates written)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = with_repo_node(env.get("PATH", ""))
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    command = ["cdk", "synth", "--quiet", "--output", str(out), "-c", f"catalog={catalog}"]
    for item in context:
        command += ["-c", item]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return seconds, len(list(out.glob("*.template.json")))


def _seconds(values: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(values), 3), "max_s": round(max(values), 3)}


def run_synth_bench(
    repo: Path, config: SynthBenchConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Write the catalogs to a scratch directory, synthesize, return the figures."""
    doc = mixed_catalog(config.tenants)
    first = {tier: next(t for t in doc["tenants"] if t["tier"] == tier) for tier in config.tiers}
    with tempfile.TemporaryDirectory(prefix="tenantkit-bench-synth-") as scratch:
        root = Path(scratch)
        large = root / "large.yaml"
        large.write_text(yaml.safe_dump(doc))
        small = {}
        for tier, tenant in first.items():
            small[tier] = root / f"one-{tier}.yaml"
            small[tier].write_text(yaml.safe_dump({"tenants": [tenant]}))

        times: dict[str, dict[str, list[float]]] = {t: {"one": [], "large": []} for t in first}
        stacks: dict[str, int] = {}
        for run in range(config.runs):
            for tier, tenant in first.items():
                for size, catalog in (("one", small[tier]), ("large", large)):
                    progress(f"run {run + 1}/{config.runs}: {tier} tenant, {size} catalog")
                    out = root / f"out-{tier}-{size}-{run}"
                    seconds, written = _cdk_synth(repo, catalog, out, f"tenant={tenant['id']}")
                    times[tier][size].append(seconds)
                    stacks[tier] = written
        progress(f"full synth of {config.tenants} tenants")
        full_seconds, full_stacks = _cdk_synth(repo, large, root / "out-full")

    single = {}
    for tier, tenant in first.items():
        one, many = times[tier]["one"], times[tier]["large"]
        single[tier] = {
            "tenant": tenant["id"],
            "stacks": stacks[tier],
            "one_tenant_catalog": _seconds(one),
            "large_catalog": _seconds(many),
            "ratio": round(statistics.median(many) / statistics.median(one), 3),
        }
    counts = {tier: sum(1 for t in doc["tenants"] if t["tier"] == tier) for tier in TIERS}
    return {
        "config": asdict(config),
        "catalog": counts,
        "single_tenant": single,
        "full": {"stacks": full_stacks, "seconds": round(full_seconds, 3)},
    }
