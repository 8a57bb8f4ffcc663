"""tenantctl deploy and plan: the CDK CLI run for exactly the stacks a target needs, and what a
catalog change would do before anything is deployed."""

import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..catalog import Catalog, CatalogError, load_catalog
from ..deployed_state import (
    DeployedStateError,
    DroppedTenant,
    describe_drops,
    dropped_tenants,
    read_deployed,
)
from ..deployment import DeployTarget, tenant_stacks
from ..plan import CLOUDFORMATION_RESOURCE_LIMIT, catalog_changes, stack_sizes
from ..quotas import quota_use
from ..retained import AwsCloud, RetainedResourceError, take_back
from ..synth import REPO_ROOT, synth_templates, with_repo_node
from .options import (
    Approval,
    ApprovalOption,
    CatalogOption,
    DryRunOption,
    JsonOption,
    OffboardOption,
)
from .output import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_INVALID, checked_id, err, fail, load, out


def cdk(*args: str) -> list[str]:
    """A command line of the pinned CDK CLI."""
    return ["cdk", *args]


def deploy_argv(
    target: DeployTarget, stacks: Sequence[str], catalog: Path, approval: Approval
) -> list[str]:
    """`cdk deploy --exclusively` of `stacks`, synthesized for `target` only."""
    context = f"tenant={target.tenant}" if target.tenant else f"tier={target.tier}"
    return cdk(
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


def import_argv(target: DeployTarget, stack: str, catalog: Path, mapping: Path) -> list[str]:
    """`cdk import` of one stack from the resources `mapping` names (a new stack holding only
    those), synthesized for `target` as the deploy that follows is."""
    context = f"tenant={target.tenant}" if target.tenant else f"tier={target.tier}"
    return cdk(
        "import",
        stack,
        "--resource-mapping",
        str(mapping),
        "--force",
        "-c",
        f"catalog={catalog.resolve()}",
        "-c",
        context,
    )


def take_back_retained(
    target: DeployTarget,
    stacks: Sequence[str],
    loaded: Catalog,
    catalog: Path,
    as_json: bool,
    *,
    fresh_database: bool = False,
) -> list[dict[str, Any]]:
    """Before `cdk deploy`: each of `stacks` that does not exist takes back what a deleted stack
    of its name left in the account (tenantkit.retained): secrets scheduled for deletion are
    restored, then `cdk import` creates the stack from them. What was taken back, per stack."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    def run_import(stack: str, mapping: dict[str, dict[str, str]]) -> None:
        with tempfile.TemporaryDirectory(prefix="tenantkit-import-") as scratch:
            path = Path(scratch) / "resource-mapping.json"
            path.write_text(json.dumps(mapping, indent=2))
            argv = import_argv(target, stack, catalog, path)
            code = run_cdk(argv, as_json)
        if code != 0:
            fail(EXIT_FAILED, f"cdk import of {stack} exited with {code}", as_json, command=argv)

    try:
        templates = synth_templates(loaded, target)
    except Exception as error:  # synth failures: cdk-nag, a bad setting named by its stack
        fail(EXIT_FAILED, f"synth failed: {error}", as_json)
    cloud = AwsCloud(boto3.Session(), run_import)
    taken: list[dict[str, Any]] = []
    for stack in stacks:
        try:
            plan = take_back(stack, templates[stack], cloud, fresh_database=fresh_database)
        except RetainedResourceError as error:
            fail(EXIT_INVALID, str(error), as_json, stack=stack)
        except (BotoCoreError, ClientError) as error:
            fail(EXIT_FAILED, f"{stack}: looking for what a deleted stack left: {error}", as_json)
        if plan is None or not plan.imports:
            continue
        taken.append({"stack": stack, "imported": plan.summary()})
        if not as_json:
            names = ", ".join(resource.name for resource, _ in plan.imports)
            err.print(f"{stack}: took back what it had retained: {names}", highlight=False)
    return taken


def run_cdk(argv: Sequence[str], as_json: bool) -> int:
    """Run the pinned CDK CLI from the project root; its output goes to stderr."""
    env = dict(os.environ)
    env["PATH"] = with_repo_node(env.get("PATH", ""))
    if not as_json:
        err.print(f"[dim]$ {shlex.join(argv)}[/dim]", highlight=False)
    try:
        return subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=sys.stderr).returncode
    except FileNotFoundError:
        fail(EXIT_ENVIRONMENT, "the CDK CLI is not installed: run `make setup`", as_json)


def offboarded_ids(
    offboard: Sequence[str], loaded: Catalog, catalog: Path, as_json: bool
) -> list[str]:
    """The --offboard ids, checked: each a valid id that is no longer in the catalog (an
    offboard takes the tenant out of the catalog first); exit 2 otherwise."""
    ids = [checked_id(tenant_id, as_json) for tenant_id in offboard]
    in_catalog = {t.id for t in loaded.tenants}
    still_there = [tenant_id for tenant_id in ids if tenant_id in in_catalog]
    if still_there:
        fail(
            EXIT_INVALID,
            f"--offboard {', '.join(still_there)}: still in {catalog}; remove the tenant from "
            "the catalog first (`tenantctl offboard <id> --provision aws` does both)",
            as_json,
        )
    return ids


def refuse_drops(
    stacks: Sequence[str],
    loaded: Catalog,
    catalog: Path,
    offboard: Sequence[str],
    as_json: bool,
    fields: dict[str, Any],
) -> None:
    """Exit 2, naming the tenants and the stack, if deploying `stacks` from `loaded` would drop
    a tenant a deployed stack holds (other than those in `offboard`); exit 3 if CloudFormation
    cannot be read (the deploy could not be checked, so it does not run). Records `dropped`
    in `fields`."""
    try:
        deployed = read_deployed(stacks)
    except DeployedStateError as error:
        fail(EXIT_ENVIRONMENT, f"{error}; not deploying unchecked", as_json, **fields)
    dropped = dropped_tenants(deployed, loaded, offboard)
    fields["dropped"] = [d.as_json() for d in dropped]
    if dropped:
        fail(
            EXIT_INVALID, describe_drops(dropped, str(catalog)), as_json, label="refused", **fields
        )


def deploy_tenant(
    tenant_id: str,
    loaded: Catalog,
    catalog: Path,
    approval: Approval,
    as_json: bool,
    fields: dict[str, Any],
) -> bool:
    """cdk deploy the stacks one tenant needs; records the command and exit code in `fields`."""
    target = DeployTarget(tenant=tenant_id)
    stacks = target.stacks(loaded)
    refuse_drops(stacks, loaded, catalog, (), as_json, fields)
    taken = take_back_retained(target, stacks, loaded, catalog, as_json)
    argv = deploy_argv(target, stacks, catalog, approval)
    code = run_cdk(argv, as_json)
    fields.update(command=argv, exit_code=code, taken_back=taken)
    return code == 0


def deploy(
    target: Annotated[str, typer.Argument(help="A tenant id, or a tier: silo, bridge, pool.")],
    catalog: CatalogOption = Path("tenants.yaml"),
    approval: ApprovalOption = Approval.broadening,
    offboard: OffboardOption = None,
    dry_run: DryRunOption = False,
    fresh_database: Annotated[
        bool,
        typer.Option(
            help="A cluster whose deleted stack left a final snapshot starts empty (the "
            "snapshot is kept); without it, such a deploy is refused."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """`cdk deploy --exclusively` exactly the stacks a tenant (or a tier) needs, synthesized
    with `-c tenant=<id>` (or `-c tier=`) so no other stack is even built.

    A stack that does not exist first takes back what a deleted stack of its name retained
    (`cdk import`).

    Refused (exit 2, naming them) when a deployed stack holds tenants the catalog lacks: the
    deploy would offboard them. Only the tenants given with --offboard may go.

    The deployed stacks are read from CloudFormation first (exit 3 if they cannot be); a dry
    run reads nothing, `plan --deployed` checks without deploying."""
    loaded = load(catalog, as_json)
    offboarded = offboarded_ids(offboard or [], loaded, catalog, as_json)
    parsed = DeployTarget.parse(target)
    if parsed.tenant is not None:
        checked_id(parsed.tenant, as_json)
    try:
        stacks = parsed.stacks(loaded)
    except CatalogError as error:
        fail(EXIT_INVALID, str(error), as_json)
    if not stacks:
        fail(EXIT_INVALID, f"tier {target} has no tenants in {catalog}: nothing to deploy", as_json)
    argv = deploy_argv(parsed, stacks, catalog, approval)
    result: dict[str, Any] = {
        "target": target,
        "stacks": list(stacks),
        "command": argv,
        "dry_run": dry_run,
        "offboard": offboarded,
    }
    # A dry run looks nothing up in AWS: the deployed stacks are read, and what a deleted
    # stack left is taken back, at deploy (the check first: taking back changes the account).
    taken = []
    if not dry_run:
        refuse_drops(stacks, loaded, catalog, offboarded, as_json, result)
        taken = take_back_retained(
            parsed, stacks, loaded, catalog, as_json, fresh_database=fresh_database
        )
    code = 0 if dry_run else run_cdk(argv, as_json)
    result = {"ok": code == 0, **result, "exit_code": code, "taken_back": taken}
    if code != 0:
        fail(EXIT_FAILED, f"cdk deploy exited with {code}", as_json, **result)
    if as_json:
        print(json.dumps(result))
    elif dry_run:
        out.print(shlex.join(argv), highlight=False)


def plan(
    catalog: CatalogOption = Path("tenants.yaml"),
    baseline: Annotated[
        Path | None,
        typer.Option(help="The catalog as deployed (e.g. from the main branch), to compare with."),
    ] = None,
    deployed: Annotated[
        bool,
        typer.Option(
            "--deployed",
            help="Also compare with the stacks deployed in AWS (CloudFormation; needs "
            "credentials).",
        ),
    ] = False,
    offboard: OffboardOption = None,
    as_json: JsonOption = False,
) -> None:
    """What the catalog would change: tenants added, removed, changed and (refused) moved
    between tiers; every stack's resources against the 500 limit; default AWS quotas.

    Exit 2 when the change is refused: a tier move, a stack too big, or a dropped tenant.

    A tenant is dropped when the baseline (with --deployed, a deployed stack too) holds it and
    the catalog lacks it, unless --offboard names it."""
    loaded = load(catalog, as_json)
    offboarded = offboarded_ids(offboard or [], loaded, catalog, as_json)
    before = None
    if baseline is not None:
        try:
            before = load_catalog(baseline)
        except CatalogError as error:
            fail(EXIT_INVALID, f"baseline: {error}", as_json)
    changes = catalog_changes(before, loaded)
    try:
        sizes = stack_sizes(synth_templates(loaded))
    except Exception as error:  # synth failures: cdk-nag, a bad setting named by its stack
        fail(EXIT_FAILED, f"synth failed: {error}", as_json)
    dropped = {
        DroppedTenant(t.id, tenant_stacks(t)[0]) for t in changes.removed if t.id not in offboarded
    }
    if deployed:
        stacks = [s.name for s in sizes] + [d.stack for d in dropped]
        try:
            held = read_deployed(dict.fromkeys(stacks))
        except DeployedStateError as error:
            fail(EXIT_ENVIRONMENT, str(error), as_json)
        dropped |= set(dropped_tenants(held, loaded, offboarded))
    drops = sorted(dropped, key=lambda d: (d.stack, d.tenant))
    quotas = quota_use(loaded)
    too_big = [s for s in sizes if not s.within_limit]
    refused = changes.moves + [
        f"stack {s.name} has {s.resources} resources; CloudFormation accepts fewer than "
        f"{CLOUDFORMATION_RESOURCE_LIMIT}"
        for s in too_big
    ]
    if drops:
        refused.append(describe_drops(drops, str(catalog)))
    result: dict[str, Any] = {
        "ok": not refused,
        "refused": refused,
        "dropped": [d.as_json() for d in drops],
        "offboard": offboarded,
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
    if not as_json:
        for t in changes.added:
            out.print(f"+ {t.id} ({t.tier})", highlight=False)
        for t in changes.removed:
            fate = "offboarded, data kept unless removal_policy destroy"
            if t.id not in offboarded:
                fate = "dropped without --offboard (refused)"
            out.print(f"- {t.id} ({t.tier}): {fate}", highlight=False)
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
    if refused:
        fail(EXIT_INVALID, "\n".join(refused), as_json, label="refused", **result)
    if as_json:
        print(json.dumps(result))
