"""tenantctl bench rls, onboard and synth: each prints a table and writes its JSON."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..embedded_pg import EmbeddedPostgresError
from ..synth import REPO_ROOT
from .output import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_INVALID, configure_logging, err, fail, out


def _on_fresh_server(
    run: Callable[[Path, Any, Callable[[str], None]], dict[str, Any]],
    config: Any,
    work_dir: Path,
    out_json: Path,
) -> dict[str, Any]:
    """Run a benchmark on its own embedded server in an emptied `work_dir` (the server user
    must reach it when running as root), with progress on stderr; write its JSON."""
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    work_dir.chmod(0o711)
    try:
        results = run(
            work_dir, config, lambda step: err.print(f"[dim]{step}[/dim]", highlight=False)
        )
    except EmbeddedPostgresError as error:
        fail(EXIT_ENVIRONMENT, str(error), False, label="embedded PostgreSQL")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def bench_rls(
    out_json: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path(
        "bench/results/rls.json"
    ),
    plot_png: Annotated[
        Path | None, typer.Option("--plot", help="Also draw a PNG (needs matplotlib).")
    ] = None,
    tenants: Annotated[int, typer.Option(min=10, max=5000)] = 1000,
    rows_per_tenant: Annotated[int, typer.Option(min=10, max=10_000)] = 100,
    blocks: Annotated[
        int, typer.Option(min=2, max=100_000, help="Timed blocks of requests per variant.")
    ] = 150,
    block_size: Annotated[int, typer.Option(min=1, max=10_000, help="Requests per block.")] = 100,
    block_warmup: Annotated[
        int,
        typer.Option(min=0, help="Untimed requests at the start of each block (< block size)."),
    ] = 20,
    tenantkit_copies: Annotated[
        int,
        typer.Option(
            min=1, max=5, help="Identical copies of the tenantkit variant (a check of the layout)."
        ),
    ] = 1,
    pgbouncer: Annotated[
        bool,
        typer.Option(
            help="Also measure where and tenantkit through PgBouncer (installed by make setup; "
            "missing, the run fails)."
        ),
    ] = True,
    work_dir: Annotated[
        Path, typer.Option(help="Scratch directory for the benchmark's own server.")
    ] = Path(".tenantkit/bench"),
) -> None:
    """RLS cost: WHERE vs tenantkit's RLS (settable, strict, via PgBouncer) vs a naive policy
    vs schema- and database-per-tenant, interleaved in one run on a fresh embedded server."""
    from ..bench.rls import (
        RlsBenchConfig,
        check_config,
        plot,
        run_rls_bench,
        timed_per_variant,
    )
    from ..pgbouncer import PgBouncerError, find_pgbouncer

    configure_logging(False)
    config = RlsBenchConfig(
        tenants=tenants,
        rows_per_tenant=rows_per_tenant,
        blocks=blocks,
        block_size=block_size,
        block_warmup=block_warmup,
        tenantkit_copies=tenantkit_copies,
        pgbouncer=pgbouncer,
    )
    try:
        check_config(config)
    except ValueError as error:
        fail(EXIT_INVALID, str(error), False, label="invalid")
    try:
        if pgbouncer:  # before the scratch directory is emptied
            find_pgbouncer()
        results = _on_fresh_server(run_rls_bench, config, work_dir, out_json)
    except PgBouncerError as error:
        fail(EXIT_ENVIRONMENT, f"{error} (or run with --no-pgbouncer)", False, label="PgBouncer")
    table = Table(
        title=f"RLS benchmark ({tenants} tenants x {rows_per_tenant} rows, "
        f"{timed_per_variant(config)} requests per variant)"
    )
    for column in (
        "variant",
        "server median",
        "server p95",
        "x where",
        "e2e median",
        "e2e p95",
        "x where",
    ):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, v in results["variants"].items():
        table.add_row(
            name,
            f"{v['server_side']['median_ms']:.3f} ms",
            f"{v['server_side']['p95_ms']:.3f} ms",
            f"{v['ratio']['server_side_median']:.3f}",
            f"{v['end_to_end']['median_ms']:.3f} ms",
            f"{v['end_to_end']['p95_ms']:.3f} ms",
            f"{v['ratio']['end_to_end_median']:.3f}",
        )
    out.print(table)
    trips = results["round_trips"]
    out.print(
        "control is the baseline again on a copy of its table: its ratio is this run's noise "
        f"floor; the pool variants shared {config.connections} connections, strict and "
        f"where-logins one per tenant of {config.strict_sample} (strict vs where-logins: "
        f"{_ratio(results, 'strict', 'where-logins')})",
        highlight=False,
    )
    for pair in results["pairs"].values():
        if pair["variant"] != "strict":  # said above
            out.print(
                f"{pair['variant']} vs {pair['baseline']} (the pooler in the path of both): "
                + _ratio(results, pair["variant"], pair["baseline"]),
                highlight=False,
            )
    out.print(
        f"round trips per request through a {trips['delay_ms_each_way']} ms relay: "
        + ", ".join(
            f"{name} {measured['round_trips']}"
            for name, measured in trips.items()
            if name != "delay_ms_each_way"
        ),
        highlight=False,
    )
    out.print(f"wrote {out_json}", highlight=False)
    if plot_png is not None:
        plot(results, plot_png)
        out.print(f"wrote {plot_png}", highlight=False)


def _ratio(results: dict[str, Any], name: str, baseline: str) -> str:
    """`name`'s medians over `baseline`'s, server-side and end to end."""
    variants = results["variants"]
    parts = []
    for key in ("server_side", "end_to_end"):
        ratio = variants[name][key]["median_ms"] / variants[baseline][key]["median_ms"]
        parts.append(f"{ratio:.3f}x {key.replace('_', ' ')}")
    return ", ".join(parts)


def bench_onboard(
    out_json: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path(
        "bench/results/onboard.json"
    ),
    bridge_tenants: Annotated[int, typer.Option(min=5, max=500)] = 40,
    concurrent: Annotated[int, typer.Option(min=2, max=100)] = 20,
    pool_tenants: Annotated[int, typer.Option(min=10, max=100_000)] = 2000,
    work_dir: Annotated[
        Path, typer.Option(help="Scratch directory for the benchmark's own server.")
    ] = Path(".tenantkit/bench"),
) -> None:
    """Onboarding latency (bridge vs a bare CREATE DATABASE), concurrent onboarding, and pool
    onboarding throughput, on a fresh embedded server."""
    from ..bench.onboard import OnboardBenchConfig, run_onboard_bench

    configure_logging(False)
    config = OnboardBenchConfig(
        bridge_tenants=bridge_tenants, concurrent=concurrent, pool_tenants=pool_tenants
    )
    results = _on_fresh_server(run_onboard_bench, config, work_dir, out_json)
    bridge, parallel, pool = results["bridge"], results["concurrent"], results["pool"]
    table = Table(title="onboarding benchmark")
    for column in ("what", "median", "p95", "note"):
        table.add_column(column, justify="left" if column in ("what", "note") else "right")
    table.add_row(
        "bridge tenant (handler)",
        f"{bridge['onboard']['median_ms']:.1f} ms",
        f"{bridge['onboard']['p95_ms']:.1f} ms",
        f"{bridge['ratio_median']:.2f}x CREATE DATABASE (p95 {bridge['ratio_p95']:.2f}x)",
    )
    table.add_row(
        "bare CREATE DATABASE",
        f"{bridge['raw_create_database']['median_ms']:.1f} ms",
        f"{bridge['raw_create_database']['p95_ms']:.1f} ms",
        f"{bridge['tenants']} of each, interleaved",
    )
    table.add_row(
        f"{parallel['tenants']} concurrent (x2)",
        f"{parallel['seconds'] * 1000:.0f} ms total",
        "",
        f"{len(parallel['errors'])} errors, {parallel['databases']} databases, "
        f"{parallel['roles']}/{parallel['expected_roles']} roles",
    )
    table.add_row(
        "pool tenant, alone",
        f"{pool['one_per_request']['median_ms']:.1f} ms",
        f"{pool['one_per_request']['p95_ms']:.1f} ms",
        f"{pool['one_per_request']['tenants_per_second']:.0f} tenants/s",
    )
    table.add_row(
        f"pool, {pool['batched']['tenants']} in {pool['batched']['batches']} batches",
        f"{pool['batched']['seconds'] * 1000:.0f} ms total",
        "",
        f"{pool['batched']['tenants_per_second']:.0f} tenants/s",
    )
    out.print(table)
    out.print(
        f"load average at the end: {results['load_average_1m']} (times are this machine's, the "
        "ratio is within one run); wrote " + str(out_json),
        highlight=False,
    )
    if parallel["errors"] or parallel["roles"] != parallel["expected_roles"]:
        fail(
            EXIT_FAILED,
            f"concurrent onboarding: {len(parallel['errors'])} errors, "
            f"{parallel['roles']} of {parallel['expected_roles']} roles",
            False,
        )


def bench_synth(
    out_json: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path(
        "bench/results/synth.json"
    ),
    tenants: Annotated[
        int, typer.Option(min=3, max=10_000, help="Tenants in the large catalog.")
    ] = 1000,
    runs: Annotated[int, typer.Option(min=1, max=20, help="Synths per single-tenant case.")] = 3,
) -> None:
    """`cdk synth -c tenant=<id>` from a one-tenant and a large mixed catalog, per tier, and a
    full synth of the large catalog, through the pinned CDK CLI."""
    from ..bench.synth import SynthBenchConfig, run_synth_bench

    config = SynthBenchConfig(tenants=tenants, runs=runs)
    repo = REPO_ROOT
    try:
        results = run_synth_bench(
            repo, config, lambda step: err.print(f"[dim]{step}[/dim]", highlight=False)
        )
    except (RuntimeError, OSError) as error:
        fail(EXIT_ENVIRONMENT, str(error), False, label="synth failed")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    counts = results["catalog"]
    table = Table(
        title=f"cdk synth, {tenants} tenants ({counts['silo']} silo, {counts['bridge']} bridge, "
        f"{counts['pool']} pool)"
    )
    for column in ("what", "stacks", "1-tenant catalog", f"{tenants}-tenant catalog", "ratio"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for tier, single in results["single_tenant"].items():
        table.add_row(
            f"-c tenant={single['tenant']} ({tier})",
            str(single["stacks"]),
            f"{single['one_tenant_catalog']['median_s']:.2f} s",
            f"{single['large_catalog']['median_s']:.2f} s",
            f"{single['ratio']:.2f}x",
        )
    full = results["full"]
    table.add_row("full synth", str(full["stacks"]), "", f"{full['seconds']:.2f} s", "")
    out.print(table)
    out.print(f"median of {runs} run(s) each; wrote {out_json}", highlight=False)


MIGRATE_TARGET_MS = 20.0
"""What the engine may add to the same SQL per tenant database (issue target, median)."""


def bench_migrate(
    out_json: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path(
        "bench/results/migrate.json"
    ),
    plot_path: Annotated[Path, typer.Option("--plot", help="Where to write the PNG.")] = Path(
        "bench/results/migrate.png"
    ),
    bridge_tenants: Annotated[int, typer.Option(min=4, max=2000)] = 200,
    work_dir: Annotated[
        Path, typer.Option(help="Scratch directory for the benchmark's own server.")
    ] = Path(".tenantkit/bench"),
) -> None:
    """The migration engine's cost per database against the same SQL raw, and a fleet's wall
    time at 1, 2, 4 and 8 databases at once: bridge tenants and the pool, on a fresh server."""
    from ..bench.migrate import MigrateBenchConfig, plot, run_migrate_bench

    configure_logging(False)
    config = MigrateBenchConfig(bridge_tenants=bridge_tenants)
    results = _on_fresh_server(run_migrate_bench, config, work_dir, out_json)
    plot(results, plot_path)
    overhead = results["overhead"]
    table = Table(
        title=f"migrations across {overhead['tenants']} bridge tenant databases and the pool"
    )
    for column in ("what", "median", "p95", "note"):
        table.add_column(column, justify="left" if column in ("what", "note") else "right")
    for run, label in (("first", "first migration"), ("later", "a later migration")):
        measured = overhead[run]
        table.add_row(
            f"{label}: same SQL, raw",
            f"{measured['raw']['median_ms']:.1f} ms",
            f"{measured['raw']['p95_ms']:.1f} ms",
            "BEGIN ... COMMIT on one open connection",
        )
        table.add_row(
            f"{label}: the engine",
            f"{measured['engine']['median_ms']:.1f} ms",
            f"{measured['engine']['p95_ms']:.1f} ms",
            f"adds {measured['added_median_ms']:.1f} ms (p95 {measured['added_p95_ms']:.1f})"
            + ("; creates the tracking table" if run == "first" else "")
            + (f"; target <= {MIGRATE_TARGET_MS:.0f} ms" if run == "later" else ""),
        )
    for run, label in (("first", "first migration"), ("later", "a later migration")):
        pool = overhead["pool"][run]
        table.add_row(f"pool, {label}: same SQL, raw", f"{pool['raw_ms']:.1f} ms", "", "one run")
        table.add_row(
            f"pool, {label}: the engine",
            f"{pool['engine_ms']:.1f} ms",
            "",
            f"adds {pool['added_ms']:.1f} ms: protect_table"
            + (", creates the tracking table" if run == "first" else ""),
        )
    for level in results["fleet"]:
        table.add_row(
            f"fleet, {level['parallelism']} at once",
            f"{level['seconds']:.2f} s total",
            f"{level['per_tenant']['p95_ms']:.1f} ms",
            f"{level['databases_per_second']:.0f} databases/s; the pool {level['pool_ms']:.0f} ms",
        )
    out.print(table)
    tables = results["pool_tables"]
    out.print(
        f"pool: {tables['protected']} migrated table(s) under the tenant policies, "
        f"{tables['unprotected']} outside",
        highlight=False,
    )
    out.print(f"wrote {out_json} and {plot_path}", highlight=False)


def bench_move(
    out_json: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path(
        "bench/results/move.json"
    ),
    rows: Annotated[int, typer.Option(min=1_000, max=10_000_000)] = 100_000,
    work_dir: Annotated[
        Path, typer.Option(help="Scratch directory for the benchmark's own state.")
    ] = Path(".tenantkit/bench-move"),
) -> None:
    """A pool tenant of --rows rows moved to the bridge by tenantctl move's state machine.

    Total time, freeze time and the copy's rows/s against a raw COPY TO -> COPY FROM pipe
    between the same two databases in the same run.

    Then the freeze of two more such tenants moved while their application writes, offline
    and --online."""
    from ..bench.move import MoveBenchConfig, run_move_bench

    configure_logging(False)
    results = _on_fresh_server(run_move_bench, MoveBenchConfig(rows=rows), work_dir, out_json)
    table = Table(
        title=f"tenantctl move: a pool tenant of {results['tenant_rows']:,} rows to the bridge"
    )
    for column in ("what", "time", "rows/s", "note"):
        table.add_column(column, justify="left" if column in ("what", "note") else "right")
    table.add_row("move, total", f"{results['total_seconds']:.2f} s", "", "every step")
    table.add_row(
        "  provision the target",
        f"{results['provision_target_seconds']:.2f} s",
        "",
        "CREATE DATABASE + migrations, suspended",
    )
    table.add_row(
        "  freeze", f"{results['freeze_seconds']:.2f} s", "", "suspended -> target active"
    )
    table.add_row(
        "  copy",
        f"{results['copy_seconds']:.2f} s",
        f"{results['copy_rows_per_second']:,}",
        "streamed source -> target, hashed",
    )
    table.add_row("  verify", f"{results['verify_seconds']:.2f} s", "", "target read back, commit")
    raw = results["raw"]
    table.add_row(
        "raw COPY pipe",
        f"{raw['median_seconds']:.2f} s",
        f"{raw['rows_per_second']:,}",
        f"median of {len(raw['runs_seconds'])}, same databases",
    )
    binary = results["raw_binary"]
    table.add_row(
        "raw COPY pipe, binary",
        f"{binary['median_seconds']:.2f} s",
        f"{binary['rows_per_second']:,}",
        f"{binary['vs_raw_text']:.2f}x the text pipe",
    )
    table.add_row(
        "copy / raw", f"{results['copy_vs_raw']:.2f}x", "", f"target >= {results['target_ratio']}x"
    )
    for variant in results["with_writer"]:
        label = "--online" if variant["online"] else "offline"
        steps = ", ".join(f"{k} {v:.2f}" for k, v in variant["freeze_steps_seconds"].items())
        table.add_row(
            f"{label} with a writer: freeze",
            f"{variant['freeze_seconds']:.2f} s",
            "",
            steps
            + (
                f"; target < {results['online_freeze_target_seconds']:.0f} s"
                if variant["online"]
                else ""
            ),
        )
        blocked = variant["writer_blocked_seconds"]
        table.add_row(
            f"{label} with a writer: writes refused",
            f"{blocked:.2f} s" if blocked is not None else "-",
            "",
            "the writer's last commit in the pool -> its first in the bridge",
        )
        table.add_row(
            f"{label} with a writer: total",
            f"{variant['total_seconds']:.2f} s",
            "",
            f"{variant['writer_commits_during_move']:,} writes committed during the move, "
            f"{variant['writer_commits_before_freeze']:,} before the freeze"
            + (f"; catch-up {variant['catch_up_seconds']:.2f} s" if variant["online"] else ""),
        )
    out.print(table)
    out.print(
        f"load average at the end: {results['load_average_1m']} (times are this machine's, the "
        "ratio is within one run); wrote " + str(out_json),
        highlight=False,
    )


USAGE_TARGET_RATIO = 10.0
"""Metering must read at least 10x fewer blocks than an exact count (issue target)."""


def bench_usage(
    out_json: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path(
        "bench/results/usage.json"
    ),
    pool_tenants: Annotated[int, typer.Option(min=3, max=10_000)] = 1000,
    pool_rows: Annotated[int, typer.Option(min=100, max=20_000_000)] = 1_000_000,
    bridge_tenants: Annotated[int, typer.Option(min=1, max=1000)] = 200,
    bridge_rows: Annotated[int, typer.Option(min=1, max=100_000)] = 200,
    work_dir: Annotated[
        Path, typer.Option(help="Scratch directory for the benchmark's own server.")
    ] = Path(".tenantkit/bench"),
) -> None:
    """Metering's cost against an exact count(*) GROUP BY tenant_id, and its error, on a fresh
    embedded server: a pool (skewed tenants) and bridge tenant databases.

    Exit 1 if an estimate falls outside its stated bound or steady-state metering is not 10x
    cheaper (blocks read) than the exact count."""
    from ..bench.usage import UsageBenchConfig, run_usage_bench

    configure_logging(False)
    config = UsageBenchConfig(
        pool_tenants=pool_tenants,
        pool_rows=pool_rows,
        bridge_tenants=bridge_tenants,
        bridge_rows=bridge_rows,
        churn_tenants=min(10, pool_tenants),
    )
    results = _on_fresh_server(run_usage_bench, config, work_dir, out_json)
    pool, bridge = results["pool"], results["bridge"]
    table = Table(
        title=f"metering: pool of {pool['tenants']} tenants, {pool['rows']:,} rows; "
        f"{bridge['tenants']} bridge tenants"
    )
    columns = ("what", "wall", "CPU", "data blocks", "catalog blocks", "error (rows)", "in bound")
    for column in columns:
        table.add_column(column, justify="left" if column == "what" else "right")
    table.add_row(
        "pool: exact count(*) GROUP BY tenant_id",
        f"{pool['exact_count']['seconds'] * 1000:.0f} ms",
        f"{pool['exact_count']['cpu_seconds']:.2f} s",
        f"{pool['exact_count']['blocks']:,}",
        f"{pool['exact_count']['catalog_blocks']:,}",
        "0",
        "",
    )
    for key, label in (
        (
            "metering_with_analyze",
            "pool: metering, ANALYZE first ("
            + (
                "whole table: autovacuum's was due"
                if pool["metering_with_analyze"].get("analyzed_whole_table")
                else "tenant_id"
            )
            + ")",
        ),
        ("metering", "pool: metering, statistics fresh"),
        ("metering_after_churn", "pool: metering, stale (churn < threshold)"),
    ):
        run = pool[key]
        error = run["error"]
        table.add_row(
            label,
            f"{run['seconds'] * 1000:.0f} ms",
            f"{run['cpu_seconds']:.2f} s",
            f"{run['blocks']:,}",
            f"{run['catalog_blocks']:,}",
            f"max {error['max_abs_error_rows']:,} (bound {error['max_bound_rows']:,})",
            f"{error['within_bound']}/{error['tenants']}",
        )
    analyze = pool["analyze"]
    lower = sorted(
        (k for k in analyze if k.startswith("column_target_") and k != "column_target_10000"),
        key=lambda k: -int(k.rsplit("_", 1)[1]),
    )
    for key in ("target_10000", "column_target_10000", *lower, "target_100"):
        run = analyze[key]
        what = "ANALYZE (tenant_id)" if run["columns"] == "tenant_id" else "ANALYZE whole table"
        error = run.get("metering", {}).get("error")
        table.add_row(
            f"pool: {what}, target {run['statistics_target']:,} "
            f"({run['most_common_values']:,} common values of {run['sample_rows']:,} rows)"
            + (
                f", then metering ({run['metering']['counted_tenants']:,} counted)" if error else ""
            ),
            f"{run['seconds'] * 1000:.0f} ms",
            f"{run['cpu_seconds']:.2f} s",
            f"{run['blocks']:,} ({run['blocks_read']:,} read)",
            f"{run['catalog_blocks']:,}",
            f"max {error['max_abs_error_rows']:,} (bound {error['max_bound_rows']:,})"
            if error
            else "",
            f"{error['within_bound']}/{error['tenants']}" if error else "",
        )
    run = analyze["metering_target_100"]
    table.add_row(
        f"pool: metering at target 100 ({run['counted_tenants']:,} tenants counted)",
        f"{run['seconds'] * 1000:.0f} ms",
        f"{run['cpu_seconds']:.2f} s",
        f"{run['blocks']:,}",
        f"{run['catalog_blocks']:,}",
        f"max {run['error']['max_abs_error_rows']:,} (bound {run['error']['max_bound_rows']:,})",
        f"{run['error']['within_bound']}/{run['error']['tenants']}",
    )
    planner = analyze["planner_error_target_100"]
    table.add_row(
        "pool: the planner alone at target 100 (nothing counted)",
        "",
        "",
        "",
        "",
        f"max {planner['max_abs_error_rows']:,} "
        f"({planner['max_rel_error_100_rows_or_more']:.1%} of >= 100)",
        f"{planner['exact_tenants']} exact",
    )
    table.add_row(
        f"bridge: sample {bridge['tenants']} databases",
        f"{bridge['metering_seconds'] * 1000:.0f} ms",
        "",
        "",
        "",
        f"{bridge['tenants'] - bridge['rows_match']} tenants off",
        "",
    )
    table.add_row(
        f"bridge: count(*) in {bridge['tenants']} databases",
        f"{bridge['exact_count_seconds'] * 1000:.0f} ms",
        "",
        "",
        "",
        "0",
        "",
    )
    out.print(table)
    schedule = analyze["schedule"]
    rates = ", ".join(
        f"{r['rows_per_second']:,} rows/s: "
        + "; ".join(
            f"{label} {r[key]['whole_table_per_hour']:g} whole + "
            f"{r[key]['tenant_id_per_hour']:g} tenant_id /h = {r[key]['cpu_seconds_per_hour']:g} s"
            for key, label in (
                ("whole", "whole-table sampler"),
                ("column", "tenant_id only"),
                ("sampler", "now"),
            )
        )
        + f"; exact count at every sample {r['exact_count_cpu_seconds_per_hour']:g} s"
        for r in schedule["by_write_rate"]
    )
    out.print(
        f"ANALYZE runs when {schedule['sampler_rows']:,} rows changed at the sampler's next run "
        f"(every {schedule['sampler_schedule_minutes']} min), or {schedule['autovacuum_rows']:,} "
        f"at autovacuum's (scale factor {schedule['autovacuum_analyze_scale_factor']:g} + "
        f"{schedule['autovacuum_analyze_threshold']}); per hour at {rates}",
        highlight=False,
    )
    out.print(
        f"steady-state metering: {pool['ratio_blocks']}x fewer data blocks "
        f"({pool['ratio_all_blocks']}x with the catalogs), "
        f"{pool['ratio_seconds']}x less wall time than the exact count; with its ANALYZE: "
        f"{pool['ratio_blocks_with_analyze']}x (paid once a table changed by 2 %)",
        highlight=False,
    )
    out.print(f"wrote {out_json}", highlight=False)
    outside = [
        key
        for key in ("metering_with_analyze", "metering", "metering_after_churn")
        if pool[key]["error"]["within_bound"] != pool[key]["error"]["tenants"]
    ]
    if outside or pool["ratio_blocks"] < USAGE_TARGET_RATIO:
        fail(
            EXIT_FAILED,
            f"estimates outside their bound in {', '.join(outside) or 'none'}; "
            f"blocks ratio {pool['ratio_blocks']} (target {USAGE_TARGET_RATIO:.0f})",
            False,
        )
