"""tenantctl migrate plan, apply and status: the application's schema (the catalog's `schema:`
directory) across every bridge and silo tenant database and the pool, on the embedded servers
or (--provision aws, tenantkit.cli.migrate_aws) in the deployed fleet.

Before any database is touched the directory is read and linted (squawk): a bad directory or a
finding the file does not acknowledge is exit 2. `apply` reads every target's status first and
refuses (exit 2) if any has drifted; then it migrates in waves (tenantkit.migrate.waves), each
target through the engine (lambda_src.migrations) as its objects role (the pool: its owner).
One apply runs at a time per state directory: a second is refused at once (exit 2, naming
the running one's pid and start time; tenantkit.migrate.apply_lock). In AWS, `apply` starts
each host's rollout state machine and follows it; the engine in each tenant's migrate request
refuses drift there.
Exit codes: 0 every target at the newest version; 1 a target failed, was not started or is
still running (or, for plan/status, could not be read); 2 invalid or refused (catalog,
directory, lint, drift, options, another apply running, in AWS an execution of a host's
rollout running); 3 environment (the embedded servers; in AWS: no Region or credentials, a
state machine not deployed, a call AWS refuses).
"""

import json
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lambda_src.migrations.files import Migration

from ..catalog import Catalog
from ..fleet import CONNECT_TIMEOUT_S
from ..migrate.apply_lock import ApplyHolder, ApplyRunningError, holding_apply_lock
from ..migrate.rollout import (
    MigrationTarget,
    Skipped,
    apply_target,
    local_targets,
    read_last_apply,
    write_last_apply,
)
from ..migrate.waves import FAILED, WavePlanError, plan_waves, run_waves
from .local_commands import progress
from .migrate_aws import apply_aws, print_rollouts, read_deployed_rows, status_aws
from .migrate_report import (
    TenantsOption,
    canary_ids,
    findings_json,
    lint,
    migrations_of,
    print_findings,
    print_skipped,
    print_statuses,
    rollout_cells,
    status_json,
    statuses,
    version,
)
from .options import (
    CatalogOption,
    ConnectTimeoutOption,
    JsonOption,
    RegionOption,
    RegistrySource,
    StateDirOption,
)
from .output import EXIT_FAILED, EXIT_INVALID, configure_logging, err, fail, load, out, session

WhereOption = Annotated[
    RegistrySource,
    typer.Option(
        "--provision",
        help="local: the embedded servers; aws: the deployed fleet (apply starts each host's "
        "<host>-migrate state machine and follows it; plan and status read each database as "
        "its host's admin, secret tenantkit/<host>/admin, TLS verify-full).",
    ),
]


def refuse_unknown(loaded: Catalog, tenants: Sequence[str], as_json: bool) -> None:
    """Exit 2 naming a --tenant id the catalog does not have."""
    known = {t.id for t in loaded.tenants}
    unknown = [t for t in tenants if t not in known]
    if unknown:
        fail(EXIT_INVALID, f"--tenant: not in {loaded.source}: {', '.join(unknown)}", as_json)


def targets_of(
    loaded: Catalog, local: Any, tenants: Sequence[str], as_json: bool
) -> tuple[list[MigrationTarget], list[Skipped]]:
    """The targets (--tenant: only those; exit 2 naming an id the catalog does not have)."""
    refuse_unknown(loaded, tenants, as_json)
    return local_targets(loaded, local.servers, tenants)


def plan(
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    tenants: TenantsOption = None,
    provision: WhereOption = RegistrySource.local,
    region: RegionOption = None,
    connect_timeout: ConnectTimeoutOption = CONNECT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Show, per tenant database and for the pool, the current version, the migrations that
    would run and any drift, and the linter's findings. Exit 2 on a lint finding or drift."""
    configure_logging(False)
    loaded = load(catalog, as_json)
    directory, migrations = migrations_of(loaded, as_json)
    findings = lint(migrations, as_json)
    skipped: list[Skipped] = []
    if provision is RegistrySource.aws:
        refuse_unknown(loaded, tenants or [], as_json)
        rows = read_deployed_rows(
            loaded,
            migrations,
            region=region,
            connect_timeout=connect_timeout,
            tenants=tenants or [],
            as_json=as_json,
        )
    else:
        with session(state_dir, loaded, as_json) as local:
            targets, skipped = targets_of(loaded, local, tenants or [], as_json)
            read = statuses(targets, migrations)
        rows = [status_json(t, s) for t, s in zip(targets, read, strict=True)]
    drifted = [r["target"] for r in rows if r["drift"]]
    unreadable = [r["target"] for r in rows if r["error"]]
    result: dict[str, Any] = {
        "ok": not findings and not drifted and not unreadable,
        "provision": provision.value,
        "directory": str(directory),
        "latest": migrations[-1].version if migrations else None,
        "lint": findings_json(findings),
        "targets": rows,
        "skipped": [s.as_json() for s in skipped],
    }
    if not as_json:
        print_statuses(rows, f"migrations in {directory} (latest {version(result['latest'])})")
        print_skipped(skipped)
        print_findings(findings)
    problems = []
    if findings:
        problems.append(f"{len(findings)} lint finding(s) (acknowledge a rule in its file)")
    if drifted:
        problems.append(f"drift in {', '.join(drifted)}")
    if problems:
        fail(EXIT_INVALID, "; ".join(problems), as_json, label="refused", **result)
    if unreadable:
        fail(EXIT_FAILED, f"could not read {', '.join(unreadable)}", as_json, **result)
    if as_json:
        print(json.dumps(result))


@contextmanager
def exclusive_apply(state_dir: Path, as_json: bool) -> Iterator[ApplyHolder | None]:
    """The state directory's apply lock (tenantkit.migrate.apply_lock); exit 2 at once, naming
    the running apply, if another holds it. Yields the holder of a lock a killed apply left,
    which is taken over (and said so on stderr)."""
    with ExitStack() as stack:
        try:
            stale = stack.enter_context(holding_apply_lock(state_dir))
        except ApplyRunningError as error:
            running = error.holder.as_json() if error.holder is not None else None
            fail(EXIT_INVALID, str(error), as_json, label="refused", running=running)
        if stale is not None:
            err.print(
                f"[yellow]warning[/yellow]: took over the apply lock left by an apply that did "
                f"not finish ({stale.describe()}; no longer running): `tenantctl migrate "
                "status` shows where each database stands",
                highlight=False,
                soft_wrap=True,
            )
        yield stale


def apply(
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    canary: Annotated[
        str | None,
        typer.Option(
            "--canary", help="Tenants migrated first, alone in wave 1 (comma-separated ids)."
        ),
    ] = None,
    canary_count: Annotated[
        int, typer.Option("--canary-count", help="Or: the first N targets are the canary.")
    ] = 0,
    group_size: Annotated[
        int | None,
        typer.Option("--group-size", help="Targets per wave after the canary (default: all)."),
    ] = None,
    parallelism: Annotated[
        int, typer.Option("--parallelism", help="Targets migrated at once within a wave.")
    ] = 4,
    failure_budget: Annotated[
        int,
        typer.Option(
            "--failure-budget",
            help="Failures tolerated before the rollout stops starting targets (default 0: "
            "stop after the wave with the first failure).",
        ),
    ] = 0,
    tenants: TenantsOption = None,
    provision: WhereOption = RegistrySource.local,
    region: RegionOption = None,
    timeout: Annotated[
        int,
        typer.Option(
            "--timeout",
            min=1,
            help="--provision aws: seconds to follow the rollouts; they go on in AWS after.",
        ),
    ] = 3600,
    poll_interval: Annotated[
        float,
        typer.Option(
            "--poll-interval", min=0.01, help="--provision aws: seconds between status reads."
        ),
    ] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Migrate every tenant database and the pool to the newest migration, in waves.

    The canary first, then groups, each a few targets at a time; no target starts once more
    failed than the failure budget allows.

    With --provision aws each host's <host>-migrate state machine runs the waves inside the VPC
    (the hosts holding the canary first); the pool is migrated by its stack's deploy.

    Refused (exit 2, nothing touched) on a lint finding, drift, bad options or while another
    apply runs on the state directory."""
    configure_logging(False)
    loaded = load(catalog, as_json)
    directory, migrations = migrations_of(loaded, as_json)
    findings = lint(migrations, as_json)
    if findings:
        if not as_json:
            print_findings(findings)
        fail(
            EXIT_INVALID,
            f"{len(findings)} lint finding(s) in {directory}: no database was touched",
            as_json,
            label="refused",
            lint=findings_json(findings),
        )
    if provision is RegistrySource.aws:
        refuse_unknown(loaded, tenants or [], as_json)
        apply_aws(
            loaded,
            directory,
            migrations,
            canary=canary_ids(canary),
            canary_count=canary_count,
            group_size=group_size,
            parallelism=parallelism,
            failure_budget=failure_budget,
            tenants=tenants or [],
            region=region,
            timeout_s=timeout,
            poll_s=poll_interval,
            as_json=as_json,
        )
        return
    # The apply lock first: a second apply is refused at once, not queued on the state lock.
    with exclusive_apply(state_dir, as_json) as stale, session(state_dir, loaded, as_json) as local:
        targets, skipped = targets_of(loaded, local, tenants or [], as_json)
        by_label = {t.label: t for t in targets}
        try:
            waves = plan_waves(
                list(by_label),
                canary=canary_ids(canary),
                canary_count=canary_count,
                group_size=group_size,
                parallelism=parallelism,
            )
            if failure_budget < 0:
                raise WavePlanError(f"--failure-budget must be 0 or more, not {failure_budget}")
        except WavePlanError as error:
            fail(EXIT_INVALID, str(error), as_json)
        rows = [
            status_json(t, s) for t, s in zip(targets, statuses(targets, migrations), strict=True)
        ]
        drifted = [r for r in rows if r["drift"]]
        if drifted:
            where = "; ".join(f"{r['target']}: {', '.join(r['drift'])}" for r in drifted)
            fail(
                EXIT_INVALID,
                f"drift, no database was touched: {where}",
                as_json,
                label="refused",
                targets=rows,
            )
        with progress(len(targets), "migrating", as_json, lambda r: r.target) as done:
            result = run_waves(
                waves,
                lambda label: apply_target(by_label[label], migrations, directory),
                failure_budget=failure_budget,
                progress=done,
            )
        write_last_apply(state_dir, result, {t.label: t.tier for t in targets})
    latest = migrations[-1].version if migrations else None
    document: dict[str, Any] = {
        "ok": result.ok,
        "directory": str(directory),
        "latest": latest,
        "waves": [
            {
                "wave": w.number,
                "name": w.name,
                "targets": list(w.targets),
                "parallelism": w.parallelism,
            }
            for w in waves
        ],
        "waves_run": result.waves_run,
        "stopped": result.stopped,
        "targets": [{**t.as_json(), "tier": by_label[t.target].tier} for t in result.targets],
        "skipped": [s.as_json() for s in skipped],
        "stale_lock": stale.as_json() if stale is not None else None,
    }
    if not as_json:
        print_rollout(document)
        print_skipped(skipped)
    if not result.ok:
        failed = [t.target for t in result.targets if t.status == FAILED]
        message = f"failed: {', '.join(failed) or 'none'}"
        message += f"; {result.stopped}" if result.stopped else ""
        fail(EXIT_FAILED, message, as_json, label="migrate apply", **document)
    if as_json:
        print(json.dumps(document))


def print_rollout(document: dict[str, Any]) -> None:
    """The apply's targets as a table, and how far the waves got."""
    table = Table(
        title=f"migrate apply: {document['directory']} (latest {version(document['latest'])})"
    )
    for column in ("target", "tier", "wave", "result", "applied", "version"):
        table.add_column(column)
    for t in document["targets"]:
        table.add_row(t["target"], t["tier"], str(t["wave"]), *rollout_cells(t))
    out.print(table)
    out.print(
        f"{document['waves_run']} of {len(document['waves'])} wave(s) run"
        + (f"; {document['stopped']}" if document["stopped"] else ""),
        highlight=False,
    )


def status(
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    tenants: TenantsOption = None,
    provision: WhereOption = RegistrySource.local,
    region: RegionOption = None,
    connect_timeout: ConnectTimeoutOption = CONNECT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Show the fleet's schema versions: each target's current version, pending migrations and
    drift (read from its database), and the cause of its failure in the last apply.

    With --provision aws each database is read as its host's admin, and each host's last
    rollout execution says why a tenant still behind failed."""
    configure_logging(False)
    loaded = load(catalog, as_json)
    directory, migrations = migrations_of(loaded, as_json)
    if provision is RegistrySource.aws:
        refuse_unknown(loaded, tenants or [], as_json)
        status_in_aws(
            loaded, directory, migrations, region, connect_timeout, tenants or [], as_json
        )
        return
    with session(state_dir, loaded, as_json) as local:
        targets, skipped = targets_of(loaded, local, tenants or [], as_json)
        read = statuses(targets, migrations)
    last = read_last_apply(state_dir)
    last_errors = {
        t["target"]: t["error"]
        for t in (last or {}).get("targets", [])
        if isinstance(t, dict) and t.get("status") == FAILED
    }
    rows = []
    for target, state in zip(targets, read, strict=True):
        row = status_json(target, state)
        behind = isinstance(state, str) or bool(state.pending)
        row["last_error"] = last_errors.get(target.label) if behind else None
        rows.append(row)
    latest = migrations[-1].version if migrations else None
    at_latest = [r for r in rows if not r["error"] and not r["pending"] and not r["drift"]]
    document: dict[str, Any] = {
        "ok": len(at_latest) == len(rows),
        "directory": str(directory),
        "latest": latest,
        "at_latest": len(at_latest),
        "last_apply": (last or {}).get("finished_at"),
        "targets": rows,
        "skipped": [s.as_json() for s in skipped],
    }
    if not as_json:
        shown = {
            r["target"]: f"[red]failed[/red]: {r['last_error']}" for r in rows if r["last_error"]
        }
        print_statuses(rows, f"schema versions (latest {version(latest)} in {directory})", shown)
        out.print(
            f"{len(at_latest)} of {len(rows)} target(s) at the latest version", highlight=False
        )
        print_skipped(skipped)
    unreadable = [r["target"] for r in rows if r["error"]]
    if unreadable:
        fail(EXIT_FAILED, f"could not read {', '.join(unreadable)}", as_json, **document)
    if as_json:
        print(json.dumps(document))


def status_in_aws(
    loaded: Catalog,
    directory: Path,
    migrations: Sequence[Migration],
    region: str | None,
    connect_timeout: int,
    tenants: Sequence[str],
    as_json: bool,
) -> None:
    """`status --provision aws`: print (or exit 1 after printing, if a database could not be
    read) the deployed fleet's versions and each host's last rollout."""
    document = status_aws(
        loaded,
        directory,
        migrations,
        region=region,
        connect_timeout=connect_timeout,
        tenants=tenants,
        as_json=as_json,
    )
    rows = document["targets"]
    if not as_json:
        shown = {
            r["target"]: f"[red]failed[/red]: {r['last_error']}" for r in rows if r["last_error"]
        }
        title = f"schema versions in AWS (latest {version(document['latest'])} in {directory})"
        print_statuses(rows, title, shown)
        out.print(
            f"{document['at_latest']} of {len(rows)} target(s) at the latest version",
            highlight=False,
        )
        print_rollouts(document["rollouts"])
    unreadable = [r["target"] for r in rows if r["error"]]
    if unreadable:
        fail(EXIT_FAILED, f"could not read {', '.join(unreadable)}", as_json, **document)
    if as_json:
        print(json.dumps(document))
