"""The bridge tier: one shared Aurora cluster, one database per tenant."""

from collections.abc import Sequence

import aws_cdk as cdk
from constructs import Construct

from tenant_constructs import ClusterCapacity, DatabaseHost
from tenantkit.catalog import Tenant

from .tenant_database import tenant_database

BRIDGE_STACK_NAME = "tenantkit-bridge"


class BridgeStack(cdk.Stack):
    """Shared cluster plus a TenantDatabase for every bridge tenant of the catalog."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        tenants: Sequence[Tenant],
        capacity: ClusterCapacity = ClusterCapacity(),
        ca_bundle: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, id_, **kwargs)  # type: ignore[arg-type]
        wrong_tier = [t.id for t in tenants if t.tier != "bridge"]
        if wrong_tier:
            raise ValueError(f"BridgeStack: tenants {wrong_tier} are not in the bridge tier")
        self.host = DatabaseHost(
            self,
            "Host",
            cluster_identifier=self.stack_name,
            capacity=capacity,
            ca_bundle=ca_bundle,
        )
        self.tenant_databases = [
            tenant_database(self, f"Tenant-{tenant.id}", host=self.host, tenant=tenant)
            for tenant in tenants
        ]
