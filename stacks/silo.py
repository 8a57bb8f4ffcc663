"""The silo tier: a tenant's own VPC and database (Aurora or RDS), one stack per tenant."""

from collections.abc import Mapping

import aws_cdk as cdk
from constructs import Construct

from tenant_constructs import ClusterCapacity, DatabaseHost, SampleFunctions, TenantCompute
from tenantkit.catalog import SiloSettings, Tenant
from tenantkit.quotas import silo_consumption

from .tenant_database import tenant_database


def silo_capacity(settings: SiloSettings) -> ClusterCapacity:
    """The catalog's silo settings as the host database's size."""
    return ClusterCapacity(
        engine=settings.engine,
        min_acu=settings.min_acu,
        max_acu=settings.max_acu,
        readers=1 if settings.engine == "aurora" and settings.multi_az else 0,
        instance_class=settings.instance_class,
        storage_gb=settings.storage_gb,
        multi_az=settings.engine == "rds" and settings.multi_az,
        dedicated_key=settings.dedicated_kms_key,
    )


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
        **kwargs: object,
    ) -> None:
        super().__init__(scope, id_, **kwargs)  # type: ignore[arg-type]
        if tenant.tier != "silo" or tenant.silo is None:
            raise ValueError(f"SiloTenantStack: tenant {tenant.id!r} is in tier {tenant.tier!r}")
        self.host = DatabaseHost(
            self,
            "Host",
            host=tenant.names.silo_stack_name,
            capacity=silo_capacity(tenant.silo),
            ca_bundle=ca_bundle,
        )
        self.tenant_database = tenant_database(
            self, "Tenant", host=self.host.reference, tenant=tenant
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
                    "silo-iam": {"TENANTKIT_SILO_TENANT": tenant.id},
                    "silo-secret": {"TENANTKIT_SILO_TENANT": tenant.id},
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
