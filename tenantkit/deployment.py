"""Which CloudFormation stacks a deploy target needs: one tenant, one tier, or everything.

app.py instantiates only these stacks (`cdk synth -c tenant=<id>` / `-c tier=<tier>`), and
`tenantctl deploy` hands the same names to `cdk deploy --exclusively`, so both agree on what a
per-tenant deploy touches.
"""

from dataclasses import dataclass

from lambda_src.tenancy import BRIDGE_HOST, POOL, SILO_MONITORING

from .catalog import TIERS, Catalog, CatalogError, Tenant

TENANTS_METADATA = "TenantkitTenants"
"""Template Metadata key under which a stack that holds several tenants (the pool) lists their
ids, sorted, so the deployed stack says which tenants it holds (tenantkit.deployed_state)."""


def tenant_stacks(tenant: Tenant) -> tuple[str, ...]:
    """The stacks one tenant's deploy needs. A bridge tenant's stack finds its shared cluster by
    fixed names, so the cluster stack is not among them (deploy the tier once first); a pool
    tenant lives in the pool stack with every other pool tenant (its batches hold them all). A
    silo tenant's deploy touches its own stack only: the silo tier's dashboard
    (SILO_MONITORING) finds every silo by metric search, so a new silo needs no change to it,
    and parallel onboardings never share a stack (the tier's deploy brings the dashboard)."""
    if tenant.tier == "silo":
        return (tenant.names.silo_stack_name,)
    if tenant.tier == "bridge":
        return (tenant.names.bridge_stack_name,)
    return (POOL.stack_name,)


def stack_tenants(catalog: Catalog) -> dict[str, frozenset[str]]:
    """Stack name -> the tenant ids the catalog puts in it (the bridge cluster holds none)."""
    held: dict[str, set[str]] = {}
    for tenant in catalog.tenants:
        for stack in tenant_stacks(tenant):
            held.setdefault(stack, set()).add(tenant.id)
    return {stack: frozenset(ids) for stack, ids in held.items()}


def tier_stacks(catalog: Catalog, tier: str) -> tuple[str, ...]:
    """Every stack of one tier, shared stacks first (the order to deploy them in); the silo
    tier's own stack (its dashboard) only when the catalog has a silo tenant."""
    tenants = catalog.in_tier(tier)  # type: ignore[arg-type]
    if tier == "bridge":
        return (BRIDGE_HOST, *(t.names.bridge_stack_name for t in tenants)) if tenants else ()
    if tier == "pool":
        return (POOL.stack_name,) if tenants else ()
    return (SILO_MONITORING, *(t.names.silo_stack_name for t in tenants)) if tenants else ()


@dataclass(frozen=True)
class DeployTarget:
    """A tenant id or a tier, as `tenantctl deploy` and the app's context take it."""

    tenant: str | None = None
    tier: str | None = None

    @classmethod
    def parse(cls, value: str) -> "DeployTarget":
        """A tier name (silo, bridge, pool) or else a tenant id."""
        return cls(tier=value) if value in TIERS else cls(tenant=value)

    def stacks(self, catalog: Catalog) -> tuple[str, ...]:
        """The stack names this target needs; CatalogError naming the catalog if unknown."""
        if self.tenant is not None:
            try:
                return tenant_stacks(catalog.get(self.tenant))
            except KeyError as error:
                raise CatalogError(str(error.args[0])) from None
        if self.tier is not None:
            if self.tier not in TIERS:
                raise CatalogError(f"unknown tier {self.tier!r}; tiers: {', '.join(TIERS)}")
            return tier_stacks(catalog, self.tier)
        return tuple(name for tier in TIERS for name in tier_stacks(catalog, tier))


EVERY_STACK = DeployTarget()
"""No tenant, no tier: every stack of the catalog."""
