"""What the deployed stacks hold, read from CloudFormation, and the tenants a deploy of a catalog
would drop from them.

A deploy drops a tenant when the stack it updates holds the tenant and the catalog does not:
CloudFormation then deletes the tenant's resource (a pool batch that loses it, or the batch
itself), which offboards the tenant. That happens to the first of two onboardings when the
second deploys a catalog made before the first one landed; only an explicit offboard of that
tenant may do it.
"""

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lambda_src.provisioner.kinds.pool import PoolTenantsSpec

from .catalog import Catalog
from .deployment import TENANTS_METADATA, stack_tenants

HOLDS_NOTHING = frozenset({"REVIEW_IN_PROGRESS", "ROLLBACK_COMPLETE"})
"""Stack statuses whose template was never (REVIEW_IN_PROGRESS) or is no longer (a create
rolled back) backed by resources."""


class DeployedStateError(RuntimeError):
    """CloudFormation could not be read (no credentials, no region, access denied)."""


@dataclass(frozen=True)
class DroppedTenant:
    """A tenant a deployed stack holds that the deploy would remove from it."""

    tenant: str
    stack: str

    def as_json(self) -> dict[str, str]:
        """As `--json` reports it."""
        return {"tenant": self.tenant, "stack": self.stack}


def template_tenants(template: Mapping[str, Any]) -> frozenset[str]:
    """The tenant ids a stack template holds: the list in its Metadata (the pool stack writes
    one) and the tenant of every PoolTenants batch and TenantDatabase resource (what a stack
    deployed before that Metadata holds)."""
    listed = (template.get("Metadata") or {}).get(TENANTS_METADATA) or []
    held = {str(tenant_id) for tenant_id in listed}
    for resource in (template.get("Resources") or {}).values():
        properties = resource.get("Properties") or {}
        kind = properties.get("Kind")
        if kind == "PoolTenants":
            held |= PoolTenantsSpec.parse(properties).tenants.keys()
        elif kind == "TenantDatabase" and isinstance(properties.get("TenantId"), str):
            held.add(properties["TenantId"])
    return frozenset(held)


def read_deployed(stacks: Iterable[str], client: Any = None) -> dict[str, frozenset[str]]:
    """Stack name -> the tenants its deployed template holds, for each of `stacks` that is
    deployed (a stack that does not exist holds nothing and is left out). Read with boto3 from
    the account and region the deploy would use; DeployedStateError naming the stack if
    CloudFormation cannot be read."""
    import boto3
    import botocore.exceptions

    deployed: dict[str, frozenset[str]] = {}
    for stack in stacks:
        try:
            client = client or boto3.client("cloudformation")
            found = client.describe_stacks(StackName=stack)["Stacks"]
            if not found or found[0]["StackStatus"] in HOLDS_NOTHING:
                continue
            body = client.get_template(StackName=stack, TemplateStage="Original")["TemplateBody"]
        except botocore.exceptions.ClientError as error:
            message = str(error.response.get("Error", {}).get("Message", error))
            if "does not exist" in message:
                continue
            raise DeployedStateError(f"cannot read stack {stack}: {message}") from None
        except botocore.exceptions.BotoCoreError as error:
            raise DeployedStateError(f"cannot read stack {stack}: {error}") from None
        template = json.loads(body) if isinstance(body, str) else body
        deployed[stack] = template_tenants(template)
    return deployed


def dropped_tenants(
    deployed: Mapping[str, frozenset[str]], catalog: Catalog, offboard: Collection[str] = ()
) -> list[DroppedTenant]:
    """The tenants the deployed stacks hold that `catalog` would remove from them, except those
    being offboarded (`offboard`), sorted by stack and tenant."""
    wanted = stack_tenants(catalog)
    return sorted(
        (
            DroppedTenant(tenant, stack)
            for stack, held in deployed.items()
            for tenant in held - wanted.get(stack, frozenset()) - set(offboard)
        ),
        key=lambda d: (d.stack, d.tenant),
    )


def describe_drops(dropped: Collection[DroppedTenant], catalog: str) -> str:
    """One line per stack: which tenants it would lose, and what to do instead."""
    by_stack: dict[str, list[str]] = {}
    for drop in dropped:
        by_stack.setdefault(drop.stack, []).append(drop.tenant)
    lines = [
        f"stack {stack} holds {', '.join(tenants)}, which {catalog} lacks: deploying it would "
        "offboard them"
        for stack, tenants in by_stack.items()
    ]
    lines.append(
        "deploy a catalog that holds them (bring the branch up to date with main), or pass "
        "--offboard <id> for each tenant that is meant to go"
    )
    return "\n".join(lines)
