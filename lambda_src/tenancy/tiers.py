"""The isolation tiers, named once: the catalog, the stacks, the CLI and the reserved tenant ids
all read them here."""

from typing import Literal, get_args

Tier = Literal["silo", "bridge", "pool"]
"""silo: a VPC and a database server per tenant; bridge: a database per tenant on a shared
cluster; pool: shared tables under row-level security."""
TIERS: tuple[Tier, ...] = get_args(Tier)
"""Every tier, from the most isolated to the least."""
TIERS_WITH_TENANT_DATABASES: tuple[Tier, ...] = ("silo", "bridge")
"""The tiers whose tenants have a database of their own (TenantDatabase)."""
TIERS_ON_SHARED_CLUSTERS: tuple[Tier, ...] = ("bridge", "pool")
"""The tiers whose tenants share one cluster (a stack and a VPC for the tier, not per tenant)."""

PoolMode = Literal["settable", "strict"]
"""How the pool's policies learn the tenant. settable: from the transaction-local setting
app.tenant_id, for the tenant the registry has active (one shared runtime login; any code that
can run SQL on it can set any active tenant). strict: from the session's own login (a login per
tenant, disabled while the tenant is suspended or offboarded; nothing to set)."""
POOL_MODES: tuple[PoolMode, ...] = get_args(PoolMode)
