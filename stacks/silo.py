"""The silo tier: a tenant's own VPC and Aurora cluster, one stack per tenant."""

import aws_cdk as cdk
from constructs import Construct

from tenant_constructs import ClusterCapacity, DatabaseHost, TenantDatabase
from tenantkit.catalog import Tenant


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
            cluster_identifier=self.stack_name,
            capacity=capacity,
            ca_bundle=ca_bundle,
        )
        self.tenant_database = TenantDatabase(
            self,
            "Tenant",
            host=self.host,
            tenant_id=tenant.id,
            connection_limit=tenant.connection_limit,
            statement_timeout_ms=tenant.statement_timeout_ms,
            removal_policy=tenant.removal_policy,
            iam_auth=tenant.iam_auth,
        )
        cdk.Tags.of(self).add("tenant", tenant.id)
