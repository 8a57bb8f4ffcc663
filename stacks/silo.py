"""The silo tier: a tenant's own VPC and database (Aurora or RDS), one stack per tenant, and
the tier's own stack of its dashboard."""

from collections.abc import Mapping
from pathlib import Path

import aws_cdk as cdk
from constructs import Construct

from lambda_src.core import environment as env_names
from tenant_constructs import (
    DatabaseHost,
    SampleFunctions,
    SiloTierDashboard,
    TenantCompute,
    TenantDatabase,
)
from tenantkit.catalog import Tenant
from tenantkit.quotas import silo_consumption

from .host_settings import database_operations, silo_capacity


class SiloTenantStack(cdk.Stack):
    """Everything of one silo tenant: its VPC (database and compute subnets, flow logs), its
    database, provisioner and rotator, its database and roles, and the role and security group
    its compute runs with. Deploying it touches no other stack."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        tenant: Tenant,
        ca_bundle: str | None = None,
        samples: Mapping[str, str] | None = None,
        migrations: Path | None = None,
        **kwargs: object,
    ) -> None:
        """`migrations`: the application's migrations (the catalog's schema: directory), which
        the silo's provisioner applies to the tenant's database and rolls out (FleetMigration)."""
        super().__init__(scope, id_, **kwargs)
        if tenant.tier != "silo" or tenant.silo is None:
            raise ValueError(f"SiloTenantStack: tenant {tenant.id!r} is in tier {tenant.tier!r}")
        self.host = DatabaseHost(
            self,
            "Host",
            host=tenant.names.silo_stack_name,
            tier="silo",
            tenant=tenant.id,
            capacity=silo_capacity(tenant.silo),
            operations=database_operations(tenant.silo),
            ca_bundle=ca_bundle,
            migrations=migrations,
        )
        self.tenant_database = TenantDatabase(
            self,
            "Tenant",
            host=self.host.reference,
            tenant_id=tenant.id,
            settings=tenant.database_settings,
        )
        # Same stack: the database must be up and the provisioner reachable first.
        self.tenant_database.node.add_dependency(self.host)
        self.compute = TenantCompute(
            self,
            "Compute",
            host=self.host,
            names=tenant.names,
            secret=self.tenant_database.secret,
        )
        if samples is not None:
            SampleFunctions(
                self,
                "Samples",
                patterns={
                    "silo-iam": {env_names.SILO_TENANT: tenant.id},
                    "silo-secret": {env_names.SILO_TENANT: tenant.id},
                },
                role=self.compute.role,
                security_group=self.compute.security_group,
                vpc=self.host.vpc,
                subnets=self.host.network.compute_subnets,
                host_logs=self.host.logs,
                environment={**samples, **self.host.endpoint_environment()},
            )
        cdk.Tags.of(self).add("tenant", tenant.id)
        cdk.Annotations.of(self).add_info(
            silo_consumption(tenant.silo.engine, tenant.silo.multi_az)
        )


class SiloMonitoringStack(cdk.Stack):
    """The silo tier's dashboard, one for every silo tenant (SiloTierDashboard). It holds no
    tenant and no tenant's name, so no silo tenant's deploy needs it changed."""

    def __init__(self, scope: Construct, id_: str, **kwargs: object) -> None:
        super().__init__(scope, id_, **kwargs)
        self.dashboard = SiloTierDashboard(self, "Tier", name=id_).dashboard
