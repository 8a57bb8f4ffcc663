"""tenantctl: the tenantkit command line (Typer + Rich).

Exit codes: 0 success; 1 provisioning failure or an isolation leak; 2 invalid input (catalog,
tenant id, arguments); 3 environment problem (PostgreSQL binaries missing, server would not
start, nothing provisioned yet; for `verify --dsn`, a pool it cannot reach or without verify
probes).
"""

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lambda_src.core.connection import settings_from_dsn
from lambda_src.core.errors import TenantkitError
from lambda_src.provisioner.plans.lifecycle import RegistryEntry
from lambda_src.tenancy import POOL, InvalidTenantIdError, tenant_names, validate_tenant_id

from .catalog import Catalog, CatalogError, Tenant, load_catalog
from .catalog_edit import Change, add_tenant, edit_catalog, remove_tenant, set_setting
from .deployment import DeployTarget
from .embedded_pg import EmbeddedPostgresError, RunningServer
from .lifecycle import (
    REQUESTED,
    RecordedTenant,
    TenantStatus,
    histories,
    local_silo_ids,
    recorded_tenants,
    state_lock,
    tenant_statuses,
    tier_moves,
)
from .local import (
    LocalSecrets,
    LocalServers,
    ProvisionResult,
    offboard_pool_tenant,
    offboard_tenant_database,
    pool_runtime_settings,
    provision_pool,
    provision_tenant_databases,
)
from .local_aws import local_aws
from .plan import CLOUDFORMATION_RESOURCE_LIMIT, catalog_changes, stack_sizes
from .quotas import quota_use
from .synth import REPO_ROOT, synth_templates, with_repo_node
from .verify import (
    AttackResult,
    PoolProbesOffError,
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


class TierName(StrEnum):
    """The isolation tiers."""

    silo = "silo"
    bridge = "bridge"
    pool = "pool"


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


def _start_embedded(
    state_dir: Path, catalog: Catalog, extra_silos: Sequence[str] = ()
) -> tuple[LocalServers, RunningServer, float]:
    """The shared embedded server and one per silo tenant (the catalog's, those left on disk,
    and `extra_silos`)."""
    servers = LocalServers(state_dir, local_silo_ids(state_dir, catalog) + list(extra_silos))
    try:
        started = time.perf_counter()
        shared = servers.start()
    except EmbeddedPostgresError as error:
        servers.stop()
        err.print(f"[red]embedded PostgreSQL[/red]: {error}", highlight=False)
        raise typer.Exit(EXIT_ENVIRONMENT) from None
    return servers, shared, time.perf_counter() - started


@contextmanager
def _progress(total: int, what: str, quiet: bool) -> Iterator[Callable[[ProvisionResult], None]]:
    """A progress bar on stderr while tenants are provisioned (none with --json or when
    stderr is not a terminal); yields the callback that advances it."""
    if quiet or not err.is_terminal:
        yield lambda _result: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(what, total=total)

        def advance(result: ProvisionResult) -> None:
            progress.update(task, advance=1, description=f"{what} {result.tenant_id}")

        yield advance


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
    with state_lock(state_dir):
        servers, server, start_seconds = _start_embedded(state_dir, loaded)
        try:
            _refuse_tier_moves(servers, [(t.id, t.tier) for t in loaded.tenants], as_json)
            with local_aws():
                store = LocalSecrets(state_dir / "secrets.json")
                pool = list(loaded.in_tier("pool"))
                with _progress(len(db_tenants) + len(pool) + 1, "provisioning", as_json) as done:
                    results = provision_tenant_databases(
                        db_tenants, servers.server_for, store, done=done
                    )
                    results += provision_pool(pool, server, store, done=done)
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
                    "server": {
                        "host": server.host,
                        "port": server.port,
                        "postgresql": servers.shared.install.version,
                        "files": str(servers.shared.root),
                    },
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
        _print_summary(results, server.port, start_seconds, servers)
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
            "the pool's runtime login (password from it or PGPASSWORD; TLS verify-full against "
            "its sslrootcert or the shipped RDS CA bundle)."
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
        try:
            attacks = run_pool_attacks(settings) + run_runtime_attacks(settings)
        except PoolProbesOffError as error:
            _fail(EXIT_ENVIRONMENT, str(error), as_json)
        except psycopg.OperationalError as error:  # TLS refused, wrong password, unreachable
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
            _fail(EXIT_ENVIRONMENT, f"cannot connect to the pool: {reason}", as_json)
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
        with state_lock(state_dir):
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


class Provision(StrEnum):
    """Where onboarding and offboarding provision."""

    local = "local"
    aws = "aws"
    none = "none"


class Approval(StrEnum):
    """cdk deploy's --require-approval."""

    never = "never"
    any_change = "any-change"
    broadening = "broadening"


TierOption = Annotated[TierName, typer.Option("--tier", help="silo, bridge or pool.")]
ProvisionOption = Annotated[
    Provision,
    typer.Option(
        "--provision",
        help="local: on the embedded PostgreSQL; aws: cdk deploy the stacks it needs; "
        "none: edit the catalog only.",
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the cdk commands instead of running them.")
]
ApprovalOption = Annotated[
    Approval,
    typer.Option(
        "--require-approval",
        help="Passed to cdk deploy; `never` for pipelines whose environment is gated.",
    ),
]


def _fail(code: int, message: str, as_json: bool, **fields: object) -> NoReturn:
    """Report a failure (as JSON on stdout with --json) and exit with `code`."""
    if as_json:
        print(json.dumps({"ok": False, "error": message, **fields}))
    else:
        err.print(f"[red]error[/red]: {message}", highlight=False)
    raise typer.Exit(code)


def _checked_id(tenant_id: str, as_json: bool) -> str:
    try:
        return validate_tenant_id(tenant_id)
    except InvalidTenantIdError as error:
        _fail(EXIT_INVALID, f"invalid tenant id: {error}", as_json)


def _edit(catalog: Path, change: Change, as_json: bool) -> tuple[Catalog, str]:
    try:
        return edit_catalog(catalog, change)
    except CatalogError as error:
        _fail(EXIT_INVALID, str(error), as_json)


def _refuse_tier_moves(
    servers: LocalServers, wanted: Sequence[tuple[str, str]], as_json: bool
) -> None:
    """Exit 2, before anything is changed, if a local registry holds a tenant in another tier."""
    moves = tier_moves(wanted, recorded_tenants(servers))
    if moves:
        _fail(EXIT_INVALID, "\n".join(moves), as_json)


def _status_of(servers: LocalServers, tenant: Tenant) -> str:
    recorded = [
        r for r in recorded_tenants(servers) if (r.tenant_id, r.tier) == (tenant.id, tenant.tier)
    ]
    return recorded[0].status if recorded else REQUESTED


def _provision_one(
    tenant: Tenant, catalog: Catalog, servers: LocalServers, store: LocalSecrets
) -> ProvisionResult:
    """Provision one tenant through the handler (a pool tenant: the pool and its batches)."""
    if tenant.tier != "pool":
        return provision_tenant_databases([tenant], servers.server_for, store)[0]
    results = provision_pool(list(catalog.in_tier("pool")), servers.server_for_pool(), store)
    return next((r for r in results if r.tenant_id == tenant.id), results[0])


def _cdk(*args: str) -> list[str]:
    return ["cdk", *args]


def _deploy_argv(
    target: DeployTarget, stacks: Sequence[str], catalog: Path, approval: Approval
) -> list[str]:
    context = f"tenant={target.tenant}" if target.tenant else f"tier={target.tier}"
    return _cdk(
        "deploy",
        *stacks,
        "--exclusively",
        "-c",
        f"catalog={catalog.resolve()}",
        "-c",
        context,
        "--require-approval",
        approval.value,
    )


def _run_cdk(argv: Sequence[str], as_json: bool) -> int:
    """Run the pinned CDK CLI from the project root; its output goes to stderr."""
    env = dict(os.environ)
    env["PATH"] = with_repo_node(env.get("PATH", ""))
    if not as_json:
        err.print(f"[dim]$ {shlex.join(argv)}[/dim]", highlight=False)
    try:
        return subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=sys.stderr).returncode
    except FileNotFoundError:
        _fail(EXIT_ENVIRONMENT, "the CDK CLI is not installed: run `make setup`", as_json)


def _deploy_tenant(
    tenant_id: str,
    loaded: Catalog,
    catalog: Path,
    approval: Approval,
    as_json: bool,
    fields: dict[str, Any],
) -> bool:
    """cdk deploy the stacks one tenant needs; records the command and exit code in `fields`."""
    target = DeployTarget(tenant=tenant_id)
    argv = _deploy_argv(target, target.stacks(loaded), catalog, approval)
    code = _run_cdk(argv, as_json)
    fields.update(command=argv, exit_code=code)
    return code == 0


@app.command()
def onboard(
    tenant_id: str,
    tier: TierOption,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    provision: ProvisionOption = Provision.local,
    approval: ApprovalOption = Approval.broadening,
    as_json: JsonOption = False,
) -> None:
    """Add a tenant to the catalog (validated; a tenant already there in that tier is left as
    it is, one in another tier is refused) and provision it."""
    _configure_logging(False)
    tenant_id = _checked_id(tenant_id, as_json)
    tier_name = tier.value
    report_fields: dict[str, Any] = {"tenant": tenant_id, "tier": tier_name}
    if provision is Provision.local:
        with state_lock(state_dir):
            current = _load(catalog)
            extra = [tenant_id] if tier_name == "silo" else []
            servers, _, _ = _start_embedded(state_dir, current, extra)
            try:
                _refuse_tier_moves(servers, [(tenant_id, tier_name)], as_json)
                loaded, outcome = _edit(
                    catalog, add_tenant(tenant_id, tier_name, str(catalog)), as_json
                )
                with local_aws():
                    store = LocalSecrets(state_dir / "secrets.json")
                    result = _provision_one(loaded.get(tenant_id), loaded, servers, store)
                status = _status_of(servers, loaded.get(tenant_id))
            finally:
                servers.stop()
        report_fields.update(
            catalog=outcome,
            provision="local",
            status=status,
            server=result.server,
            changes=result.changes,
            seconds=round(result.seconds, 4),
            error=result.error,
        )
        ok = result.ok
    else:
        loaded, outcome = _edit(catalog, add_tenant(tenant_id, tier_name, str(catalog)), as_json)
        report_fields.update(catalog=outcome, provision=provision.value)
        ok = provision is not Provision.aws or _deploy_tenant(
            tenant_id, loaded, catalog, approval, as_json, report_fields
        )
    if as_json:
        print(json.dumps({"ok": ok, **report_fields}))
    else:
        verb = {"added": "added to", "unchanged": "already in"}[outcome]
        out.print(f"{tenant_id} ({tier_name}) {verb} {catalog}", highlight=False)
        if provision is Provision.local:
            out.print(
                f"provisioned locally on {report_fields['server']}: {report_fields['status']}, "
                f"{report_fields['changes']} changes in {result.seconds * 1000:.0f} ms",
                highlight=False,
            )
            if result.error:
                err.print(f"[red]failed[/red]: {result.error}", highlight=False)
    if not ok:
        raise typer.Exit(EXIT_FAILED)


def _set_suspended(
    tenant_id: str,
    suspended: bool,
    catalog: Path,
    state_dir: Path,
    provision: Provision,
    approval: Approval,
    as_json: bool,
) -> None:
    """Mark the tenant (un)suspended in the catalog and apply it: locally through the handler
    (an Update of its resource), or by deploying its stacks."""
    _configure_logging(False)
    tenant_id = _checked_id(tenant_id, as_json)
    fields: dict[str, Any] = {"tenant": tenant_id, "provision": provision.value}
    if provision is Provision.local:
        with state_lock(state_dir):
            loaded, fields["catalog"] = _edit(
                catalog, set_setting(tenant_id, "suspended", suspended, default=False), as_json
            )
            tenant = loaded.get(tenant_id)
            servers, _, _ = _start_embedded(state_dir, loaded)
            try:
                with local_aws():
                    store = LocalSecrets(state_dir / "secrets.json")
                    result = _provision_one(tenant, loaded, servers, store)
                fields.update(tier=tenant.tier, status=_status_of(servers, tenant))
            finally:
                servers.stop()
        fields.update(changes=result.changes, error=result.error)
        ok = result.ok
    else:
        loaded, fields["catalog"] = _edit(
            catalog, set_setting(tenant_id, "suspended", suspended, default=False), as_json
        )
        fields["tier"] = loaded.get(tenant_id).tier
        ok = provision is not Provision.aws or _deploy_tenant(
            tenant_id, loaded, catalog, approval, as_json, fields
        )
    if as_json:
        print(json.dumps({"ok": ok, **fields}))
    else:
        state = fields.get("status", "suspended" if suspended else "active (after deploy)")
        out.print(f"{tenant_id} ({fields['tier']}): {state}", highlight=False)
        if fields.get("error"):
            err.print(f"[red]failed[/red]: {fields['error']}", highlight=False)
    if not ok:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def suspend(
    tenant_id: str,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    provision: ProvisionOption = Provision.local,
    approval: ApprovalOption = Approval.broadening,
    as_json: JsonOption = False,
) -> None:
    """Suspend a tenant: data kept, logins disabled and sessions ended (bridge, silo), the pool
    policy denies it; `suspended: true` in the catalog."""
    _set_suspended(tenant_id, True, catalog, state_dir, provision, approval, as_json)


@app.command()
def resume(
    tenant_id: str,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    provision: ProvisionOption = Provision.local,
    approval: ApprovalOption = Approval.broadening,
    as_json: JsonOption = False,
) -> None:
    """Resume a suspended tenant: its logins (or its pool rows) work again."""
    _set_suspended(tenant_id, False, catalog, state_dir, provision, approval, as_json)


@app.command()
def offboard(
    tenant_id: str,
    destroy_data: Annotated[
        bool,
        typer.Option(
            "--destroy-data", help="Delete the tenant's data too (default: keep it, logins off)."
        ),
    ] = False,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    provision: ProvisionOption = Provision.local,
    approval: ApprovalOption = Approval.broadening,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Offboard a tenant: its data is kept (logins disabled, the pool policy denies it) unless
    --destroy-data; then it leaves the catalog."""
    _configure_logging(False)
    tenant_id = _checked_id(tenant_id, as_json)
    data = "destroyed" if destroy_data else "retained"
    fields: dict[str, Any] = {"tenant": tenant_id, "data": data, "provision": provision.value}
    if provision is Provision.local:
        with state_lock(state_dir):
            loaded = _load(catalog)
            try:
                tenant = loaded.get(tenant_id)
            except KeyError:
                _fail(EXIT_INVALID, f"tenant {tenant_id!r} is not in {catalog}", as_json)
            servers, _, _ = _start_embedded(state_dir, loaded)
            try:
                with local_aws():
                    store = LocalSecrets(state_dir / "secrets.json")
                    if tenant.tier == "pool":
                        changes = offboard_pool_tenant(
                            tenant,
                            list(loaded.in_tier("pool")),
                            servers.server_for_pool(),
                            destroy=destroy_data,
                        )
                    else:
                        changes = offboard_tenant_database(
                            tenant, servers.server_for(tenant), store, destroy=destroy_data
                        )
                status = _status_of(servers, tenant)
            except TenantkitError as error:
                _fail(EXIT_FAILED, f"offboarding {tenant_id} failed: {error}", as_json, **fields)
            finally:
                servers.stop()
            _, outcome = _edit(catalog, remove_tenant(tenant_id), as_json)
        fields.update(
            tier=tenant.tier,
            catalog=outcome,
            status="offboarded" if status == REQUESTED else status,
            changes=changes,
        )
    else:
        loaded = _load(catalog)
        try:
            tenant = loaded.get(tenant_id)
        except KeyError:
            _fail(EXIT_INVALID, f"tenant {tenant_id!r} is not in {catalog}", as_json)
        fields["tier"] = tenant.tier
        if provision is Provision.aws:
            _offboard_aws(tenant, catalog, loaded, destroy_data, approval, dry_run, as_json, fields)
        else:
            _, fields["catalog"] = _edit(catalog, remove_tenant(tenant_id), as_json)
    if as_json:
        print(json.dumps({"ok": True, **fields}))
    else:
        out.print(
            f"{tenant_id} ({fields['tier']}) offboarded, data {data}; "
            f"{'removed from' if fields.get('catalog') == 'removed' else 'catalog:'} {catalog}",
            highlight=False,
        )


def _offboard_aws(
    tenant: Tenant,
    catalog: Path,
    loaded: Catalog,
    destroy_data: bool,
    approval: Approval,
    dry_run: bool,
    as_json: bool,
    fields: dict[str, Any],
) -> None:
    """Offboard in AWS: deploy the removal policy the caller chose (CloudFormation's Delete reads
    the deployed one), then delete the tenant's stack (bridge) or its batch entry (pool)."""
    if tenant.tier == "silo":
        _fail(
            EXIT_INVALID,
            f"{tenant.id} is a silo tenant: its database has deletion protection, so removing "
            "its stack is a deliberate manual step (disable deletion protection, then "
            f"`npx cdk destroy {tenant.names.silo_stack_name}`; the cluster leaves a final "
            "snapshot). Use --provision none to remove it from the catalog.",
            as_json,
        )
    policy = "destroy" if destroy_data else "retain"
    target = DeployTarget(tenant=tenant.id)
    stacks = target.stacks(loaded)
    steps: list[tuple[str, list[str]]] = [
        (f"set removal_policy: {policy} in {catalog}", []),
        ("deploy it", _deploy_argv(target, stacks, catalog, approval)),
    ]
    if tenant.tier == "bridge":
        destroy = _cdk(
            "destroy",
            *stacks,
            "--force",
            "-c",
            f"catalog={catalog.resolve()}",
            "-c",
            f"tenant={tenant.id}",
        )
        steps += [("delete the tenant's stack", destroy), (f"remove it from {catalog}", [])]
    else:
        steps += [
            (f"remove it from {catalog}", []),
            (
                "deploy the pool without it",
                _deploy_argv(DeployTarget(tier="pool"), stacks, catalog, approval),
            ),
        ]
    fields["steps"] = [{"step": what, "command": argv} for what, argv in steps]
    if dry_run:
        fields["dry_run"] = True
        if not as_json:
            for what, argv in steps:
                out.print(f"{what}{': ' + shlex.join(argv) if argv else ''}", highlight=False)
        return
    for what, argv in steps:
        if what.startswith("set removal_policy"):
            _edit(catalog, set_setting(tenant.id, "removal_policy", policy), as_json)
        elif what.startswith("remove it from"):
            _, fields["catalog"] = _edit(catalog, remove_tenant(tenant.id), as_json)
        elif _run_cdk(argv, as_json) != 0:
            _fail(EXIT_FAILED, f"offboarding {tenant.id} stopped at: {what}", as_json, **fields)


@app.command()
def deploy(
    target: Annotated[str, typer.Argument(help="A tenant id, or a tier: silo, bridge, pool.")],
    catalog: CatalogOption = Path("tenants.yaml"),
    approval: ApprovalOption = Approval.broadening,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """`cdk deploy --exclusively` exactly the stacks a tenant (or a tier) needs, synthesized
    with `-c tenant=<id>` (or `-c tier=`) so no other stack is even built."""
    loaded = _load(catalog)
    parsed = DeployTarget.parse(target)
    if parsed.tenant is not None:
        _checked_id(parsed.tenant, as_json)
    try:
        stacks = parsed.stacks(loaded)
    except CatalogError as error:
        _fail(EXIT_INVALID, str(error), as_json)
    if not stacks:
        _fail(
            EXIT_INVALID, f"tier {target} has no tenants in {catalog}: nothing to deploy", as_json
        )
    argv = _deploy_argv(parsed, stacks, catalog, approval)
    code = 0 if dry_run else _run_cdk(argv, as_json)
    if as_json:
        print(
            json.dumps(
                {
                    "ok": code == 0,
                    "target": target,
                    "stacks": list(stacks),
                    "command": argv,
                    "dry_run": dry_run,
                    "exit_code": code,
                }
            )
        )
    elif dry_run:
        out.print(shlex.join(argv), highlight=False)
    if code != 0:
        raise typer.Exit(EXIT_FAILED)


def _recorded(
    state_dir: Path, catalog: Catalog, tenant_id: str | None = None
) -> tuple[list[RecordedTenant], dict[str, list[RegistryEntry]]]:
    """What the local registries hold (nothing if nothing was ever provisioned here), and the
    history of `tenant_id` in each tier's registry."""
    if not (state_dir / "pg").is_dir():
        return [], {}
    with state_lock(state_dir):
        servers, _, _ = _start_embedded(state_dir, catalog)
        try:
            recorded = recorded_tenants(servers)
            found = histories(servers, tenant_id) if tenant_id else {}
        finally:
            servers.stop()
    return recorded, found


@app.command("list")
def list_tenants(
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    as_json: JsonOption = False,
) -> None:
    """Every tenant of the catalog with its lifecycle state, and offboarded tenants the local
    registries still know."""
    _configure_logging(False)
    loaded = _load(catalog)
    recorded, _ = _recorded(state_dir, loaded)
    statuses = tenant_statuses(loaded, recorded)
    if as_json:
        print(json.dumps({"tenants": [s.as_json() for s in statuses]}))
        return
    table = Table(title=f"tenants ({catalog}, registries in {state_dir})")
    for column in ("tenant", "tier", "status", "since", "in catalog", "cause"):
        table.add_column(column)
    for s in statuses:
        table.add_row(
            s.tenant_id,
            s.tier,
            s.status,
            s.since.strftime("%Y-%m-%d %H:%M:%S") if s.since else "",
            "yes" if s.in_catalog else "no",
            s.cause or "",
        )
    out.print(table)


@app.command()
def status(
    tenant_id: str,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    as_json: JsonOption = False,
) -> None:
    """One tenant's lifecycle state, its failure cause if any, and its recorded history."""
    _configure_logging(False)
    tenant_id = _checked_id(tenant_id, as_json)
    loaded = _load(catalog)
    recorded, by_tier = _recorded(state_dir, loaded, tenant_id)
    found = [s for s in tenant_statuses(loaded, recorded) if s.tenant_id == tenant_id]
    if not found:
        # Offboarded with its data destroyed: no row is left, only the history.
        found = [
            TenantStatus(
                tenant_id,
                tier,
                False,
                entries[-1].status,
                entries[-1].cause,
                entries[-1].at,
                data_destroyed=True,
            )
            for tier, entries in by_tier.items()
        ]
    if not found:
        _fail(
            EXIT_INVALID,
            f"tenant {tenant_id!r} is in neither {catalog} nor a local registry",
            as_json,
        )
    entries = [
        {"tier": tier, "status": e.status, "cause": e.cause, "at": e.at.isoformat()}
        for tier, history in by_tier.items()
        for e in history
    ]
    if as_json:
        print(json.dumps({**found[0].as_json(), "history": entries}))
        return
    for s in found:
        out.print(
            f"{tenant_id} ({s.tier}): {s.status}"
            f"{' since ' + s.since.strftime('%Y-%m-%d %H:%M:%S') if s.since else ''}"
            f"{'' if s.in_catalog else ' (not in the catalog)'}"
            f"{'; its data was destroyed, only its history is left' if s.data_destroyed else ''}",
            highlight=False,
        )
        if s.cause:
            out.print(f"  cause: {s.cause}", highlight=False)
    for entry in entries:
        out.print(
            f"  {entry['at']}  {entry['status']}"
            + (f"  {entry['cause']}" if entry["cause"] else ""),
            highlight=False,
        )


@app.command()
def plan(
    catalog: CatalogOption = Path("tenants.yaml"),
    baseline: Annotated[
        Path | None,
        typer.Option(help="The catalog as deployed (e.g. from the main branch), to compare with."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """What the catalog would change: tenants added, removed, changed and (refused) moved
    between tiers; every stack's resources against the 500 limit; default AWS quotas. Exit 2
    when the change is refused."""
    loaded = _load(catalog)
    before = None
    if baseline is not None:
        try:
            before = load_catalog(baseline)
        except CatalogError as error:
            _fail(EXIT_INVALID, f"baseline: {error}", as_json)
    changes = catalog_changes(before, loaded)
    try:
        sizes = stack_sizes(synth_templates(loaded))
    except Exception as error:  # synth failures: cdk-nag, a bad setting named by its stack
        _fail(EXIT_FAILED, f"synth failed: {error}", as_json)
    quotas = quota_use(loaded)
    too_big = [s for s in sizes if not s.within_limit]
    refused = changes.moves + [
        f"stack {s.name} has {s.resources} resources; CloudFormation accepts fewer than "
        f"{CLOUDFORMATION_RESOURCE_LIMIT}"
        for s in too_big
    ]
    result = {
        "ok": not refused,
        "refused": refused,
        "tenants": {
            "added": [{"id": t.id, "tier": t.tier} for t in changes.added],
            "removed": [{"id": t.id, "tier": t.tier} for t in changes.removed],
            "changed": changes.changed,
            "total": len(loaded.tenants),
        },
        "stacks": [
            {"name": s.name, "resources": s.resources, "limit": CLOUDFORMATION_RESOURCE_LIMIT}
            for s in sizes
        ],
        "quotas": [
            {"quota": q.quota, "used": q.used, "default": q.default, "exceeded": q.exceeded}
            for q in quotas
        ],
    }
    if as_json:
        print(json.dumps(result))
    else:
        for t in changes.added:
            out.print(f"+ {t.id} ({t.tier})", highlight=False)
        for t in changes.removed:
            out.print(
                f"- {t.id} ({t.tier}): offboarded, data kept unless removal_policy destroy",
                highlight=False,
            )
        for tenant_id, changed in sorted(changes.changed.items()):
            out.print(f"~ {tenant_id}: {', '.join(changed)}", highlight=False)
        table = Table(
            title=f"{len(sizes)} stacks, limit {CLOUDFORMATION_RESOURCE_LIMIT} resources each"
        )
        table.add_column("stack")
        table.add_column("resources", justify="right")
        for s in sizes[:10]:
            table.add_row(s.name, str(s.resources))
        if len(sizes) > 10:
            table.add_row(f"... {len(sizes) - 10} more, each smaller", "")
        out.print(table)
        for q in quotas:
            out.print(f"quota: {q.describe()}", highlight=False)
        for problem in refused:
            err.print(f"[red]refused[/red]: {problem}", highlight=False)
    if refused:
        raise typer.Exit(EXIT_INVALID)


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
    work_dir: Annotated[
        Path, typer.Option(help="Scratch directory for the benchmark's own server.")
    ] = Path(".tenantkit/bench"),
) -> None:
    """RLS cost: explicit WHERE vs tenantkit's RLS vs a naive policy vs schema- and
    database-per-tenant, interleaved in one run on a fresh embedded server."""
    from .bench.rls import (
        RlsBenchConfig,
        check_config,
        plot,
        run_rls_bench,
        timed_per_variant,
    )

    _configure_logging(False)
    config = RlsBenchConfig(
        tenants=tenants,
        rows_per_tenant=rows_per_tenant,
        blocks=blocks,
        block_size=block_size,
        block_warmup=block_warmup,
        tenantkit_copies=tenantkit_copies,
    )
    try:
        check_config(config)
    except ValueError as error:
        err.print(f"[red]invalid[/red]: {error}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
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
        f"floor; the pool variants shared {config.connections} connections",
        highlight=False,
    )
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
    repo = REPO_ROOT
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


def _print_summary(
    results: list[ProvisionResult], port: int, start_seconds: float, servers: LocalServers
) -> None:
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
        f"embedded PostgreSQL {servers.shared.install.version} servers up in "
        f"{start_seconds * 1000:.0f} ms: {shared} (bridge, pool)"
        + "".join(f", {server}" for server in own),
        highlight=False,
    )
    if note := servers.placement_note():
        out.print(note, highlight=False, soft_wrap=True)


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
