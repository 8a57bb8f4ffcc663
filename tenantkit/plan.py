"""`tenantctl plan`: what a catalog change would do, before anything is deployed.

Pure functions over catalogs and synthesized templates; the CLI reads the files and synthesizes.
"""

from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog, Tenant
from .catalog_edit import tier_move_message

CLOUDFORMATION_RESOURCE_LIMIT = 500
"""Resources per CloudFormation template (AWS quota, archive 2023)."""


@dataclass(frozen=True)
class CatalogChanges:
    """Tenants added, removed, changed (field names) and moved between tiers (refused)."""

    added: list[Tenant] = field(default_factory=list)
    removed: list[Tenant] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)
    moves: list[str] = field(default_factory=list)
    """One message per tenant whose tier changed by an edit: `tenantctl move` moves it."""


def catalog_changes(before: Catalog | None, after: Catalog) -> CatalogChanges:
    """Compare two catalogs; with no `before`, every tenant is new."""
    old = {t.id: t for t in before.tenants} if before is not None else {}
    new = {t.id: t for t in after.tenants}
    changes = CatalogChanges(
        added=[t for tid, t in new.items() if tid not in old],
        removed=[t for tid, t in old.items() if tid not in new],
    )
    for tenant_id in new.keys() & old.keys():
        was, now = old[tenant_id], new[tenant_id]
        if was.tier != now.tier:
            where = f"in {before.source if before is not None else 'the baseline'}"
            changes.moves.append(tier_move_message(tenant_id, was.tier, now.tier, where))
            continue
        fields = [k for k, v in now.model_dump().items() if was.model_dump()[k] != v]
        if fields:
            changes.changed[tenant_id] = fields
    return changes


@dataclass(frozen=True)
class StackSize:
    """A synthesized stack's resource count against CloudFormation's limit."""

    name: str
    resources: int

    @property
    def within_limit(self) -> bool:
        """Whether CloudFormation accepts it."""
        return self.resources < CLOUDFORMATION_RESOURCE_LIMIT


def stack_sizes(templates: dict[str, Any]) -> list[StackSize]:
    """Resources per stack, largest first."""
    sizes = [StackSize(name, len(t.get("Resources", {}))) for name, t in templates.items()]
    return sorted(sizes, key=lambda s: (-s.resources, s.name))
