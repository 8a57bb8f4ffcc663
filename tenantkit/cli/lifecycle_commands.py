"""tenantctl onboard, suspend, resume, offboard, list and status: a tenant's lifecycle, in the
catalog and provisioned locally (the embedded PostgreSQL) or in AWS (cdk deploy)."""

import json
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table

from lambda_src.core.connection import ssl_root_cert_from_env
from lambda_src.core.errors import TenantkitError
from lambda_src.mobility import ExportError, default_export_dir
from lambda_src.provisioner.migrate import PoolSchema
from lambda_src.provisioner.plans.lifecycle import RegistryEntry

from ..catalog import Catalog, Tenant
from ..catalog_edit import add_tenant, remove_tenant, set_setting
from ..deployment import DeployTarget
from ..fleet import CONNECT_TIMEOUT_S, FleetReading, fleet_hosts, read_fleet, secrets_manager
from ..lifecycle import (
    REQUESTED,
    UNKNOWN,
    RecordedTenant,
    TenantStatus,
    histories,
    recorded_tenants,
    tenant_statuses,
    tier_moves,
)
from ..local import (
    EXPORTS_DIR,
    LocalServers,
    LocalSession,
    ProvisionResult,
    export_local_tenant,
    offboard_pool_tenant,
    offboard_tenant_database,
    provision_pool,
    provision_tenant_databases,
)
from ..mobility_aws import MobilityHost
from ..move import Move
from .deploy_commands import cdk, deploy_argv, deploy_tenant, refuse_drops, run_cdk
from .mobility_aws_commands import export_aws
from .options import (
    Approval,
    ApprovalOption,
    CatalogOption,
    ConnectTimeoutOption,
    DryRunOption,
    JsonOption,
    Provision,
    ProvisionOption,
    RegionOption,
    RegistrySource,
    RegistrySourceOption,
    StateDirOption,
    TierOption,
)
from .output import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_INVALID,
    checked_id,
    configure_logging,
    edit,
    fail,
    load,
    out,
    session,
)


def catalog_tenant(loaded: Catalog, tenant_id: str, as_json: bool) -> Tenant:
    """The catalog's entry for `tenant_id`; exit 2 naming the catalog if it has none."""
    try:
        return loaded.get(tenant_id)
    except KeyError as error:
        fail(EXIT_INVALID, str(error.args[0]), as_json)


def refuse_tier_moves(
    servers: LocalServers, wanted: Sequence[tuple[str, str]], as_json: bool
) -> None:
    """Exit 2, before anything is changed, if a local registry holds a tenant in another tier."""
    moves = tier_moves(wanted, recorded_tenants(servers))
    if moves:
        fail(EXIT_INVALID, "\n".join(moves), as_json)


def status_of(servers: LocalServers, tenant: Tenant) -> str:
    """The tenant's status in its tier's local registry (`requested` if it has none)."""
    recorded = [
        r for r in recorded_tenants(servers) if (r.tenant_id, r.tier) == (tenant.id, tenant.tier)
    ]
    return recorded[0].status if recorded else REQUESTED


def provision_one(tenant: Tenant, catalog: Catalog, local: LocalSession) -> ProvisionResult:
    """Provision one tenant through the handler (a pool tenant: the pool, brought to the newest
    migration, and its batches)."""
    if tenant.tier != "pool":
        return provision_tenant_databases(
            [tenant],
            local.servers.server_for,
            local.store,
            migrations_dir=catalog.application_migrations,
        )[0]
    results = provision_pool(
        list(catalog.in_tier("pool")),
        local.servers.server_for_pool(),
        local.store,
        migrations_dir=catalog.application_migrations,
        pool_schema=catalog.schema.pool_schema if catalog.schema else PoolSchema(),
        mode=catalog.pool.mode,
    )
    return next((r for r in results if r.tenant_id == tenant.id), results[0])


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
    configure_logging(False)
    tenant_id = checked_id(tenant_id, as_json)
    tier_name = tier.value
    report_fields: dict[str, Any] = {"tenant": tenant_id, "tier": tier_name}
    error: str | None = None
    if provision is Provision.local:
        current = load(catalog, as_json)
        extra = [tenant_id] if tier_name == "silo" else []
        with session(state_dir, current, as_json, extra_silos=extra) as local:
            refuse_tier_moves(local.servers, [(tenant_id, tier_name)], as_json)
            loaded, outcome = edit(catalog, add_tenant(tenant_id, tier_name, str(catalog)), as_json)
            result = provision_one(loaded.get(tenant_id), loaded, local)
            status = status_of(local.servers, loaded.get(tenant_id))
        report_fields.update(
            catalog=outcome,
            provision="local",
            status=status,
            server=result.server,
            changes=result.changes,
            seconds=round(result.seconds, 4),
            error=result.error,
        )
        ok, error = result.ok, result.error
    else:
        loaded, outcome = edit(catalog, add_tenant(tenant_id, tier_name, str(catalog)), as_json)
        report_fields.update(catalog=outcome, provision=provision.value)
        ok = provision is not Provision.aws or deploy_tenant(
            tenant_id, loaded, catalog, approval, as_json, report_fields
        )
    if not as_json:
        verb = {"added": "added to", "unchanged": "already in"}[outcome]
        out.print(f"{tenant_id} ({tier_name}) {verb} {catalog}", highlight=False)
        if provision is Provision.local:
            out.print(
                f"provisioned locally on {report_fields['server']}: {report_fields['status']}, "
                f"{report_fields['changes']} changes in {result.seconds * 1000:.0f} ms",
                highlight=False,
            )
    finish(ok, error, report_fields, as_json)


def finish(ok: bool, error: str | None, fields: dict[str, Any], as_json: bool) -> None:
    """End a provisioning command: exit 1 naming why if it failed (the provisioner's error, or
    cdk deploy's exit code), else the JSON document with --json."""
    if not ok:
        reason = error or f"cdk deploy exited with {fields.get('exit_code')}"
        fail(EXIT_FAILED, reason, as_json, label="failed", **fields)
    if as_json:
        print(json.dumps({"ok": True, **fields}))


def set_suspended(
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
    configure_logging(False)
    tenant_id = checked_id(tenant_id, as_json)
    fields: dict[str, Any] = {"tenant": tenant_id, "provision": provision.value}
    change = set_setting(tenant_id, "suspended", suspended, default=False)
    error: str | None = None
    if provision is Provision.local:
        current = load(catalog, as_json)
        catalog_tenant(current, tenant_id, as_json)  # before any server starts
        # The edit is made under the session's lock, so concurrent suspends and resumes of
        # one tenant apply in the order they changed the catalog.
        with session(state_dir, current, as_json) as local:
            loaded, fields["catalog"] = edit(catalog, change, as_json)
            tenant = loaded.get(tenant_id)
            result = provision_one(tenant, loaded, local)
            fields.update(tier=tenant.tier, status=status_of(local.servers, tenant))
        fields.update(changes=result.changes, error=result.error)
        ok, error = result.ok, result.error
    else:
        loaded, fields["catalog"] = edit(catalog, change, as_json)
        fields["tier"] = loaded.get(tenant_id).tier
        ok = provision is not Provision.aws or deploy_tenant(
            tenant_id, loaded, catalog, approval, as_json, fields
        )
    if not as_json:
        state = fields.get("status", "suspended" if suspended else "active (after deploy)")
        out.print(f"{tenant_id} ({fields['tier']}): {state}", highlight=False)
    finish(ok, error, fields, as_json)


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
    set_suspended(tenant_id, True, catalog, state_dir, provision, approval, as_json)


def resume(
    tenant_id: str,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    provision: ProvisionOption = Provision.local,
    approval: ApprovalOption = Approval.broadening,
    as_json: JsonOption = False,
) -> None:
    """Resume a suspended tenant: its logins (or its pool rows) work again."""
    set_suspended(tenant_id, False, catalog, state_dir, provision, approval, as_json)


def offboard(
    tenant_id: str,
    destroy_data: Annotated[
        bool,
        typer.Option(
            "--destroy-data", help="Delete the tenant's data too (default: keep it, logins off)."
        ),
    ] = False,
    no_export: Annotated[
        bool,
        typer.Option(
            "--no-export",
            help="With --destroy-data: destroy without taking an export first.",
        ),
    ] = False,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    provision: ProvisionOption = Provision.local,
    approval: ApprovalOption = Approval.broadening,
    dry_run: DryRunOption = False,
    region: RegionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Offboard a tenant: its data is kept (logins disabled, the pool policy denies it) unless
    --destroy-data; then it leaves the catalog.

    --destroy-data first takes an export (its path is printed) unless --no-export; if the
    export fails, nothing is destroyed.

    --provision aws: the export is taken through the host's mobility function, into its bucket."""
    configure_logging(False)
    tenant_id = checked_id(tenant_id, as_json)
    data = "destroyed" if destroy_data else "retained"
    fields: dict[str, Any] = {"tenant": tenant_id, "data": data, "provision": provision.value}
    loaded = load(catalog, as_json)
    tenant = catalog_tenant(loaded, tenant_id, as_json)
    fields["tier"] = tenant.tier
    exporting = destroy_data and not no_export
    if provision is Provision.local:
        with session(state_dir, loaded, as_json) as local:
            if exporting and status_of(local.servers, tenant) != REQUESTED:
                directory = default_export_dir(state_dir / EXPORTS_DIR, tenant_id)
                try:
                    export_local_tenant(local.servers, tenant_id, tenant.tier, directory)
                except ExportError as error:
                    fail(
                        EXIT_FAILED,
                        f"{error}; nothing was destroyed (--no-export to destroy without one)",
                        as_json,
                        **fields,
                    )
                fields["export"] = str(directory)
            try:
                if tenant.tier == "pool":
                    changes = offboard_pool_tenant(
                        tenant,
                        list(loaded.in_tier("pool")),
                        local.servers.server_for_pool(),
                        destroy=destroy_data,
                        mode=loaded.pool.mode,
                        store=local.store,
                    )
                else:
                    changes = offboard_tenant_database(
                        tenant, local.servers.server_for(tenant), local.store, destroy=destroy_data
                    )
                status = status_of(local.servers, tenant)
            except TenantkitError as error:
                fail(EXIT_FAILED, f"offboarding {tenant_id} failed: {error}", as_json, **fields)
            _, outcome = edit(catalog, remove_tenant(tenant_id), as_json)
        fields.update(
            catalog=outcome,
            status="offboarded" if status == REQUESTED else status,
            changes=changes,
        )
    elif provision is Provision.aws:
        offboard_aws(
            tenant,
            catalog,
            loaded,
            destroy_data,
            approval,
            dry_run,
            as_json,
            fields,
            export=exporting,
            region=region,
        )
    else:
        _, fields["catalog"] = edit(catalog, remove_tenant(tenant_id), as_json)
    if as_json:
        print(json.dumps({"ok": True, **fields}))
    else:
        out.print(
            f"{tenant_id} ({fields['tier']}) offboarded, data {data}; "
            f"{'removed from' if fields.get('catalog') == 'removed' else 'catalog:'} {catalog}",
            highlight=False,
        )
        if "export" in fields:
            out.print(f"export taken first: {fields['export']}", highlight=False)


def offboard_aws(
    tenant: Tenant,
    catalog: Path,
    loaded: Catalog,
    destroy_data: bool,
    approval: Approval,
    dry_run: bool,
    as_json: bool,
    fields: dict[str, Any],
    *,
    export: bool = False,
    region: str | None = None,
) -> None:
    """Offboard in AWS: with `export`, first an export through the host's mobility function
    (a failed one stops here, nothing changed); then deploy the removal policy the caller chose
    (CloudFormation's Delete reads the deployed one), then delete the tenant's stack (bridge)
    or its batch entry (pool)."""
    if tenant.tier == "silo":
        fail(
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
        ("deploy it", deploy_argv(target, stacks, catalog, approval)),
    ]
    if tenant.tier == "bridge":
        destroy = cdk(
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
                deploy_argv(DeployTarget(tier="pool"), stacks, catalog, approval),
            ),
        ]
    if export:
        host = MobilityHost.of(tenant)
        steps.insert(0, (f"export {tenant.id} through {host.function} into its bucket", []))
    fields["steps"] = [{"step": what, "command": argv} for what, argv in steps]
    if dry_run:
        fields["dry_run"] = True
        if not as_json:
            for what, argv in steps:
                out.print(f"{what}{': ' + shlex.join(argv) if argv else ''}", highlight=False)
        return
    removed = False
    for what, argv in steps:
        if what.startswith("export "):
            exported = export_aws(tenant, region, as_json, fields)
            fields["export"] = exported.get("uri")
        elif what.startswith("set removal_policy"):
            edit(catalog, set_setting(tenant.id, "removal_policy", policy), as_json)
        elif what.startswith("remove it from"):
            _, fields["catalog"] = edit(catalog, remove_tenant(tenant.id), as_json)
            removed = True
        else:
            if argv[1] == "deploy":
                # Only this tenant may leave the stack, and only once it has left the catalog.
                offboarded = [tenant.id] if removed else []
                refuse_drops(stacks, load(catalog, as_json), catalog, offboarded, as_json, fields)
            if run_cdk(argv, as_json) != 0:
                fail(EXIT_FAILED, f"offboarding {tenant.id} stopped at: {what}", as_json, **fields)


def recorded(
    state_dir: Path, catalog: Catalog, as_json: bool, tenant_id: str | None = None
) -> tuple[list[RecordedTenant], dict[str, list[RegistryEntry]]]:
    """What the local registries hold (nothing if nothing was ever provisioned here), and the
    history of `tenant_id` in each tier's registry."""
    if not (state_dir / "pg").is_dir():
        return [], {}
    with session(state_dir, catalog, as_json) as local:
        return recorded_tenants(local.servers), (
            histories(local.servers, tenant_id) if tenant_id else {}
        )


def read_deployed(
    catalog: Catalog,
    region: str | None,
    connect_timeout: int,
    as_json: bool,
    tenant_id: str | None = None,
) -> FleetReading:
    """Every deployed host's registry (and `tenant_id`'s history), read as the host's admin;
    exit 3 if there is no Region or no CA bundle to verify the hosts against."""
    try:
        ssl_root_cert = ssl_root_cert_from_env(os.environ)
        secrets = secrets_manager(region)
    except TenantkitError as error:
        fail(EXIT_ENVIRONMENT, str(error), as_json, provision="aws")
    return read_fleet(
        fleet_hosts(catalog),
        secrets,
        ssl_root_cert=ssl_root_cert,
        connect_timeout_s=connect_timeout,
        tenant_id=tenant_id,
    )


def report_unreachable(fleet: FleetReading, as_json: bool, **fields: object) -> None:
    """After the answer was printed: exit 1 naming each host that could not be read and why
    (with --json, the whole answer is this one document)."""
    down = fleet.unreachable
    if not down:
        if as_json:
            print(json.dumps({"ok": True, **fields, "unreachable": []}))
        return
    message = f"{len(down)} of {len(fleet.readings)} host(s) could not be read: " + "; ".join(
        f"{r.host.name}: {r.reason}" for r in down
    )
    fail(
        EXIT_FAILED,
        message,
        as_json,
        label="unreachable",
        **fields,
        unreachable=fleet.unreachable_json(),
    )


def list_tenants(
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    provision: RegistrySourceOption = RegistrySource.local,
    region: RegionOption = None,
    connect_timeout: ConnectTimeoutOption = CONNECT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Every tenant of the catalog with its lifecycle state, and tenants a registry still knows
    that the catalog does not (offboarded, or removed by hand).

    With --provision aws each host's registry is read through its admin secret; a host that
    cannot be read is named with the reason, its tenants are `unknown`, and the exit code is 1.
    """
    configure_logging(False)
    loaded = load(catalog, as_json)
    fleet: FleetReading | None = None
    if provision is RegistrySource.aws:
        fleet = read_deployed(loaded, region, connect_timeout, as_json)
        statuses = tenant_statuses(loaded, fleet.recorded, fleet.unknown(loaded))
        where = f"registries of {len(fleet.readings)} host(s) in AWS"
    else:
        registered, _ = recorded(state_dir, loaded, as_json)
        statuses = tenant_statuses(loaded, registered)
        where = f"registries in {state_dir}"
    tenants = [s.as_json() for s in statuses]
    if fleet is not None:
        if not as_json:
            print_statuses(statuses, f"tenants ({catalog}, {where})")
        report_unreachable(fleet, as_json, provision="aws", tenants=tenants)
        return
    if as_json:
        print(json.dumps({"tenants": tenants}))
        return
    print_statuses(statuses, f"tenants ({catalog}, {where})")


def print_statuses(statuses: Sequence[TenantStatus], title: str) -> None:
    """The table of `tenantctl list`."""
    table = Table(title=title)
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


def status(
    tenant_id: str,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    provision: RegistrySourceOption = RegistrySource.local,
    region: RegionOption = None,
    connect_timeout: ConnectTimeoutOption = CONNECT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """One tenant's lifecycle state, its failure cause if any, and its recorded history.

    With --provision aws the registries are read in AWS, as by `list --provision aws`; exit 1
    if a host could not be read (what was read is still shown).
    """
    configure_logging(False)
    tenant_id = checked_id(tenant_id, as_json)
    loaded = load(catalog, as_json)
    fleet: FleetReading | None = None
    if provision is RegistrySource.aws:
        fleet = read_deployed(loaded, region, connect_timeout, as_json, tenant_id)
        registered, by_tier = fleet.recorded, fleet.histories
        unknown = fleet.unknown(loaded)
    else:
        finished = finish_interrupted_move(state_dir, catalog, loaded, tenant_id, as_json)
        if finished is not None:
            loaded = load(catalog, as_json)  # the move may have switched the tenant's tier
        registered, by_tier = recorded(state_dir, loaded, as_json, tenant_id)
        unknown = {}
    found = [s for s in tenant_statuses(loaded, registered, unknown) if s.tenant_id == tenant_id]
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
    if not found and not (fleet and fleet.unreachable):
        where = "the registries in AWS" if fleet else "a local registry"
        fail(
            EXIT_INVALID,
            f"tenant {tenant_id!r} is in neither {catalog} nor {where}",
            as_json,
        )
    entries = [
        {"tier": tier, "status": e.status, "cause": e.cause, "at": e.at.isoformat()}
        for tier, history in by_tier.items()
        for e in history
    ]
    document = (
        {**found[0].as_json(), "history": entries}
        if found
        else {**TenantStatus(tenant_id, "", False, UNKNOWN).as_json(), "tier": None}
    )
    if fleet is None:
        document["move"] = finished
        if finished is not None and not as_json:
            out.print(
                f"{tenant_id}: an interrupted move {finished['from']} -> {finished['to']} was "
                f"{'finished' if finished['outcome'] == 'done' else 'rolled back'}",
                highlight=False,
            )
    if fleet is None and as_json:
        print(json.dumps(document))
        return
    if not as_json:
        print_status(tenant_id, found, entries)
    if fleet is not None:
        report_unreachable(fleet, as_json, provision="aws", **document)


def finish_interrupted_move(
    state_dir: Path, catalog_path: Path, loaded: Catalog, tenant_id: str, as_json: bool
) -> dict[str, Any] | None:
    """Finish (after the catalog switched) or roll back (before) a move of the tenant that a
    killed process left running; what it did, or None if there was none."""
    if not (state_dir / "pg").is_dir() or tenant_id not in {t.id for t in loaded.tenants}:
        return None
    with session(state_dir, loaded, as_json) as local:
        mover = Move(local, catalog_path, state_dir, tenant_id)
        try:
            interrupted = mover.find_open()
            if interrupted is None:
                return None
            return mover.resume(loaded, interrupted).as_json()
        except (TenantkitError, psycopg.Error) as error:
            fail(EXIT_FAILED, f"finishing {tenant_id}'s interrupted move: {error}", as_json)


def print_status(
    tenant_id: str, found: Sequence[TenantStatus], entries: Sequence[dict[str, Any]]
) -> None:
    """What `tenantctl status` prints."""
    if not found:
        out.print(f"{tenant_id}: {UNKNOWN}", highlight=False)
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
