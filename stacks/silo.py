"""The silo tier: a tenant's own VPC and Aurora cluster, one stack per tenant."""

import aws_cdk as cdk
from constructs import Construct

from tenant_constructs import ClusterCapacity, DatabaseHost, HostReference
from tenantkit.catalog import Tenant

from .tenant_database import tenant_database


class SiloTenantStack(cdk.Stack):
    """Everything of one silo tenant; deploying it touches no other tenant's stack."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        tenant: Tenant,
        capacity: ClusterCapacity = ClusterCapacity(),
        ca_bundle: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, id_, **kwargs)  # type: ignore[arg-type]
        if tenant.tier != "silo":
            raise ValueError(f"SiloTenantStack: tenant {tenant.id!r} is in tier {tenant.tier!r}")
        self.host = DatabaseHost(
            self,
            "Host",
            reference=HostReference.named(tenant.names.silo_stack_name),
            capacity=capacity,
            ca_bundle=ca_bundle,
        )
        self.tenant_database = tenant_database(
            self, "Tenant", host=self.host.reference, tenant=tenant
        )
        # Same stack: the cluster must be up and the provisioner reachable first.
        self.tenant_database.node.add_dependency(self.host)
        cdk.Tags.of(self).add("tenant", tenant.id)
