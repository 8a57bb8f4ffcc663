"""tenantctl: the tenantkit command line (Typer + Rich).

Exit codes: 0 success; 1 provisioning failure or an isolation leak; 2 invalid input (catalog,
tenant id, arguments); 3 local environment problem (PostgreSQL binaries missing, server would not
start, nothing provisioned yet).
"""

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lambda_src.provisioner.config import settings_from_dsn
from lambda_src.tenancy import POOL, InvalidTenantIdError, tenant_names

from .catalog import Catalog, CatalogError, Tenant, load_catalog
from .embedded_pg import EmbeddedPostgresError, RunningServer
from .local import (
    LocalSecrets,
    LocalServers,
    ProvisionResult,
    pool_runtime_settings,
    provision_pool,
    provision_tenant_databases,
)
from .local_aws import local_aws
from .verify import (
    AttackResult,
    report,
    run_database_attacks,
    run_pool_attacks,
    run_runtime_attacks,
)

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_ENVIRONMENT = 3

app = typer.Typer(
    help="tenantkit: tenant isolation tiers for PostgreSQL on AWS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Piped output (make, CI logs) gets a fixed width rather than Rich's 80-column fallback.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

CatalogOption = Annotated[
    Path, typer.Option("--catalog", "-c", help="Tenant catalog file.", show_default=True)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]


def _load(catalog: Path) -> Catalog:
    try:
        return load_catalog(catalog)
    except CatalogError as error:
        err.print(f"[red]invalid catalog[/red]\n{error}", markup=True, highlight=False)
        raise typer.Exit(EXIT_INVALID) from None


@app.command()
def validate(catalog: CatalogOption = Path("tenants.yaml"), as_json: JsonOption = False) -> None:
    """Check the tenant catalog and print its tenants."""
    loaded = _load(catalog)
    if as_json:
        print(json.dumps({"tenants": [t.model_dump() for t in loaded.tenants]}))
        return
    out.print(f"{catalog}: {len(loaded.tenants)} tenants, valid")


@app.command()
def names(tenant_id: str, as_json: JsonOption = False) -> None:
    """Show every physical name derived from a tenant id."""
    try:
        derived = tenant_names(tenant_id)
    except InvalidTenantIdError as error:
        err.print(f"[red]invalid tenant id[/red]: {error}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    fields = {k: v for k, v in vars(derived).items()}
    if as_json:
        print(json.dumps(fields))
        return
    for key, value in fields.items():
        out.print(f"{key:16} {value}", highlight=False)


StateDirOption = Annotated[
    Path, typer.Option(help="Where the embedded PostgreSQL and local secrets are kept.")
]


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the local Secrets Manager's access log


def _start_embedded(state_dir: Path, catalog: Catalog) -> tuple[LocalServers, RunningServer, float]:
    """The shared embedded server and one per silo tenant."""
    servers = LocalServers(state_dir, [t.id for t in catalog.in_tier("silo")])
    try:
        started = time.perf_counter()
        shared = servers.start()
    except EmbeddedPostgresError as error:
        servers.stop()
        err.print(f"[red]embedded PostgreSQL[/red]: {error}", highlight=False)
        raise typer.Exit(EXIT_ENVIRONMENT) from None
    return servers, shared, time.perf_counter() - started


def _local_attacks(
    servers: LocalServers, store: LocalSecrets, db_tenants: list[Tenant], pool_ready: bool
) -> list[AttackResult]:
    """Every attack that applies locally: per-database logins and the pool's runtime login."""
    results = run_database_attacks(
        [
            (t, store.password(t.names.secret_name), servers.server_for(t).settings)
            for t in db_tenants
        ]
    )
    pool_runtime = None
    if pool_ready:
        pool_runtime = pool_runtime_settings(servers.server_for_pool(), store)
        results += run_pool_attacks(pool_runtime)
    return results + run_runtime_attacks(pool_runtime)


@app.command()
def run(
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    keep_running: Annotated[
        bool, typer.Option(help="Leave the embedded server running and print how to reach it.")
    ] = False,
    as_json: JsonOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every SQL step.")] = False,
) -> None:
    """Provision the whole catalog on the embedded PostgreSQL with the provisioner's own handler,
    then attack it: every tenant login against every other database, and the pool's policies."""
    _configure_logging(verbose)
    loaded = _load(catalog)
    db_tenants = [t for t in loaded.tenants if t.tier in ("bridge", "silo")]
    servers, server, start_seconds = _start_embedded(state_dir, loaded)
    try:
        with local_aws():
            store = LocalSecrets(state_dir / "secrets.json")
            results = provision_tenant_databases(db_tenants, servers.server_for, store)
            results += provision_pool(list(loaded.in_tier("pool")), server, store)
            ready = {r.tenant_id for r in results if r.ok}
            attacks = _local_attacks(
                servers, store, [t for t in db_tenants if t.id in ready], "(pool)" in ready
            )
    finally:
        if not keep_running:
            servers.stop()

    verdict = report(attacks)
    ok = all(r.ok for r in results) and not verdict["leaks"]
    if as_json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "server": {"host": server.host, "port": server.port},
                    "tenants": [
                        {
                            "id": r.tenant_id,
                            "tier": r.tier,
                            "database": r.database,
                            "roles": list(r.roles),
                            "secret": r.secret,
                            "server": r.server,
                            "status": "ready" if r.ok else "failed",
                            "changes": r.changes,
                            "seconds": round(r.seconds, 4),
                            "error": r.error,
                        }
                        for r in results
                    ],
                    "verify": verdict,
                }
            )
        )
    else:
        _print_summary(results, server.port, start_seconds)
        _print_verdict(verdict, attacks)
        if keep_running:
            out.print(
                f"server left running on 127.0.0.1:{server.port} (TLS CA: {server.ca_cert}); "
                f"stop it with: pg_ctl stop -D {servers.shared.data_dir}",
                highlight=False,
            )
    if not ok:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def verify(
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    dsn: Annotated[
        str | None,
        typer.Option(
            help="Attack this pool instead of the embedded one: a libpq connection string of "
            "the pool's runtime login (password from it or PGPASSWORD; TLS is always on)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run the isolation attacks and report them; exit 1 on any leak.

    Locally (after `tenantctl run`): every bridge/silo login against every other tenant's
    database, and the pool attacks as the pool's runtime login. With --dsn: the pool attacks."""
    _configure_logging(False)
    if dsn is not None:
        try:
            settings = settings_from_dsn(dsn, os.environ)
        except ValueError as error:
            err.print(f"[red]invalid --dsn[/red]: {error}", highlight=False)
            raise typer.Exit(EXIT_INVALID) from None
        attacks = run_pool_attacks(settings) + run_runtime_attacks(settings)
    else:
        loaded = _load(catalog)
        db_tenants = [t for t in loaded.tenants if t.tier in ("bridge", "silo")]
        store = LocalSecrets(state_dir / "secrets.json")
        missing = [t.id for t in db_tenants if not store.has(t.names.secret_name)]
        if missing or not store.has(POOL.secret_name):
            err.print(
                f"nothing provisioned locally for {', '.join(missing) or 'the pool'}: "
                "run `tenantctl run` first",
                highlight=False,
            )
            raise typer.Exit(EXIT_ENVIRONMENT)
        servers, _, _ = _start_embedded(state_dir, loaded)
        try:
            attacks = _local_attacks(servers, store, db_tenants, pool_ready=True)
        finally:
            servers.stop()
    verdict = report(attacks)
    if as_json:
        print(json.dumps(verdict))
    else:
        _print_verdict(verdict, attacks, every_attack=True)
    if verdict["leaks"]:
        raise typer.Exit(EXIT_FAILED)


bench_app = typer.Typer(help="Benchmarks: print a table, write JSON (and a plot).")
app.add_typer(bench_app, name="bench")


@bench_app.command("rls")
def bench_rls(
    out_json: Annotated[Path, typer.Option("--out", help="Where to write the JSON.")] = Path(
        "bench/results/rls.json"
    ),
    plot_png: Annotated[
        Path | None, typer.Option("--plot", help="Also draw a PNG (needs matplotlib).")
    ] = None,
    tenants: Annotated[int, typer.Option(min=10, max=5000)] = 1000,
    rows_per_tenant: Annotated[int, typer.Option(min=10, max=10_000)] = 100,
    rounds: Annotated[int, typer.Option(min=100, max=100_000)] = 2000,
    work_dir: Annotated[
        Path, typer.Option(help="Scratch directory for the benchmark's own server.")
    ] = Path(".tenantkit/bench"),
) -> None:
    """RLS cost: explicit WHERE vs tenantkit's RLS vs a naive policy vs schema- and
    database-per-tenant, interleaved in one run on a fresh embedded server."""
    from .bench.rls import VARIANTS, RlsBenchConfig, plot, run_rls_bench

    _configure_logging(False)
    config = RlsBenchConfig(tenants=tenants, rows_per_tenant=rows_per_tenant, rounds=rounds)
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    work_dir.chmod(0o711)  # the server user must reach it when running as root
    try:
        results = run_rls_bench(
            work_dir, config, lambda step: err.print(f"[dim]{step}[/dim]", highlight=False)
        )
    except EmbeddedPostgresError as error:
        err.print(f"[red]embedded PostgreSQL[/red]: {error}", highlight=False)
        raise typer.Exit(EXIT_ENVIRONMENT) from None
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    table = Table(
        title=f"RLS benchmark ({tenants} tenants x {rows_per_tenant} rows, {rounds} rounds)"
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
    for name in VARIANTS:
        v = results["variants"][name]
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
        f"round trips per request through a {trips['delay_ms_each_way']} ms relay: "
        f"where {trips['where']['round_trips']}, tenantkit {trips['tenantkit']['round_trips']}",
        highlight=False,
    )
    out.print(f"wrote {out_json}", highlight=False)
    if plot_png is not None:
        plot(results, plot_png)
        out.print(f"wrote {plot_png}", highlight=False)


@bench_app.command("onboard")
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
    from .bench.onboard import OnboardBenchConfig, run_onboard_bench

    _configure_logging(False)
    config = OnboardBenchConfig(
        bridge_tenants=bridge_tenants, concurrent=concurrent, pool_tenants=pool_tenants
    )
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    work_dir.chmod(0o711)  # the server user must reach it when running as root
    try:
        results = run_onboard_bench(
            work_dir, config, lambda step: err.print(f"[dim]{step}[/dim]", highlight=False)
        )
    except EmbeddedPostgresError as error:
        err.print(f"[red]embedded PostgreSQL[/red]: {error}", highlight=False)
        raise typer.Exit(EXIT_ENVIRONMENT) from None
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2) + "\n")
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
    out.print(f"wrote {out_json}", highlight=False)
    if parallel["errors"] or parallel["roles"] != parallel["expected_roles"]:
        raise typer.Exit(EXIT_FAILED)


@bench_app.command("synth")
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
    from .bench.synth import SynthBenchConfig, run_synth_bench

    config = SynthBenchConfig(tenants=tenants, runs=runs)
    repo = Path(__file__).resolve().parents[1]
    try:
        results = run_synth_bench(
            repo, config, lambda step: err.print(f"[dim]{step}[/dim]", highlight=False)
        )
    except (RuntimeError, OSError) as error:
        err.print(f"[red]synth failed[/red]: {error}", highlight=False)
        raise typer.Exit(EXIT_ENVIRONMENT) from None
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


def _print_summary(results: list[ProvisionResult], port: int, start_seconds: float) -> None:
    table = Table(title=f"tenants on the embedded PostgreSQL (127.0.0.1:{port})")
    for column in ("tenant", "tier", "database", "roles", "secret", "status", "changes", "time"):
        table.add_column(column, justify="right" if column in ("changes", "time") else "left")
    for r in results:
        table.add_row(
            r.tenant_id,
            r.tier,
            r.database,
            ", ".join(role.removeprefix(r.database + "_") for role in r.roles),
            r.secret or "-",
            "[green]ready[/green]" if r.ok else f"[red]failed[/red]: {r.error}",
            str(r.changes) if r.ok else "-",
            f"{r.seconds * 1000:.0f} ms",
        )
    out.print(table)
    out.print(
        "roles are <database>_<suffix> (tenant_acme_app); pool tenants share the runtime login",
        highlight=False,
    )
    shared = f"127.0.0.1:{port}"
    own = [f"{r.server} ({r.tenant_id})" for r in results if r.server != shared]
    out.print(
        f"embedded servers up in {start_seconds * 1000:.0f} ms: {shared} (bridge, pool)"
        + "".join(f", {server}" for server in own),
        highlight=False,
    )


def _print_verdict(
    verdict: dict[str, Any], attacks: list[AttackResult], *, every_attack: bool = False
) -> None:
    if every_attack:
        table = Table(title="isolation attacks")
        for column in ("tier", "attack", "result", "detail"):
            table.add_column(column)
        for a in attacks:
            result = "[green]blocked[/green]" if a.blocked else "[red]LEAK[/red]"
            table.add_row(a.tier, a.attack, result, a.detail)
        out.print(table)
    tiers = sorted({a.tier for a in attacks})
    per_tier = ", ".join(
        f"{tier} {sum(a.blocked for a in attacks if a.tier == tier)}/"
        f"{sum(1 for a in attacks if a.tier == tier)}"
        for tier in tiers
    )
    colour = "red" if verdict["leaks"] else "green"
    out.print(
        f"[{colour}]verify[/{colour}]: {verdict['attacks']} attacks, {verdict['blocked']} "
        f"blocked, {len(verdict['leaks'])} leaks ({per_tier})",
        highlight=False,
    )
    for leak in verdict["leaks"]:
        out.print(f"[red]leak[/red] {leak['tier']}: {leak['attack']}: {leak['detail']}")


def main() -> None:
    """Console-script entry point."""
    app()
