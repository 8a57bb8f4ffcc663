"""The bridge tier: one shared Aurora cluster (its own stack) and one stack per tenant.

Layout decision: one stack per bridge tenant. `cdk deploy tenantkit-bridge-<id>` deploys that
tenant only, a failed deploy rolls back that tenant only, and a tenant stack holds a handful of
resources whatever the number of tenants. The tenant stacks reach the cluster stack by fixed
names (HostReference), not exports, so the cluster stack never changes when a tenant comes or
goes. The cost: one CloudFormation stack per tenant (2,000 stacks per account by default).
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import aws_cdk as cdk
from constructs import Construct

from lambda_src.core import environment as env_names
from lambda_src.tenancy import BRIDGE_HOST
from tenant_constructs import (
    ClusterCapacity,
    DatabaseHost,
    HostReference,
    SampleFunctions,
    SharedCompute,
    TenantAccessRole,
    TenantDatabase,
)
from tenantkit.catalog import ClusterSettings, Tenant

from .host_settings import cluster_capacity, database_operations

# Connections kept free for the admin, the provisioner, the rotator and PostgreSQL's
# superuser_reserved_connections.
RESERVED_CONNECTIONS = 20


def check_connection_budget(
    scope: Construct, capacity: ClusterCapacity, tenants: Sequence[Tenant]
) -> None:
    """Compare the tenants' CONNECTION LIMITs with the cluster's max_connections (estimated
    from its configured capacity, tenantkit.capacity).

    A single tenant above what the cluster can ever give is an error (synth stops, naming it);
    a sum above it is a warning: limits are ceilings, not reservations, and tenants rarely
    peak together.
    """
    available = capacity.max_connections - RESERVED_CONNECTIONS
    too_big = [t for t in tenants if t.connection_limit > available]
    if too_big:
        listed = ", ".join(f"{t.id} ({t.connection_limit})" for t in too_big)
        raise ValueError(
            f"bridge tenants {listed}: connection_limit above the {available} connections the "
            f"cluster offers at {capacity.describe()} (max_connections "
            f"{capacity.max_connections} minus {RESERVED_CONNECTIONS} reserved); raise "
            "clusters.bridge.max_acu or instance_class in the catalog, or lower connection_limit"
        )
    total = sum(t.connection_limit for t in tenants)
    if total > available:
        largest = sorted(tenants, key=lambda t: -t.connection_limit)[:3]
        cdk.Annotations.of(scope).add_warning_v2(
            "tenantkit:connection-budget",
            f"the {len(tenants)} bridge tenants' connection limits add up to {total}, above "
            f"the {available} connections the cluster offers at {capacity.describe()} "
            f"(largest: {', '.join(f'{t.id} {t.connection_limit}' for t in largest)}); raise "
            "clusters.bridge.max_acu or instance_class, or lower connection_limit, or accept "
            "that not all tenants can peak at once",
        )


class BridgeClusterStack(cdk.Stack):
    """The bridge tier's shared cluster, provisioner and rotator; no tenant resources."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        tenants: Sequence[Tenant] = (),
        cluster: ClusterSettings = ClusterSettings(),
        ca_bundle: str | None = None,
        samples: Mapping[str, str] | None = None,
        migrations: Path | None = None,
        **kwargs: object,
    ) -> None:
        """`tenants` are only checked against the cluster's connection budget here; each is
        deployed by its own BridgeTenantStack. `cluster`: the catalog's `clusters.bridge`.
        `samples`: the sample functions' auth environment, to deploy the two pooled-compute
        samples (bridge-iam, bridge-secret)."""
        super().__init__(scope, id_, **kwargs)
        capacity = cluster_capacity(cluster)
        self.host = DatabaseHost(
            self,
            "Host",
            host=BRIDGE_HOST,
            tier="bridge",
            capacity=capacity,
            operations=database_operations(cluster),
            ca_bundle=ca_bundle,
            referenced_by_name=True,
            migrations=migrations,
        )
        check_connection_budget(self, capacity, tenants)
        # Pooled compute: one shared role, one tenant-access role for every tenant, and STS
        # in the VPC so the shared functions can assume it from subnets with no way out.
        self.compute = SharedCompute(self, "SharedCompute", host=self.host)
        sts = self.host.network.add_sts_endpoint()
        sts.connections.allow_default_port_from(self.compute.security_group, "shared compute")
        self.tenant_access = TenantAccessRole(self, "TenantAccess", shared=self.compute)
        if samples is not None:
            SampleFunctions(
                self,
                "Samples",
                patterns={"bridge-iam": {}, "bridge-secret": {}},
                role=self.compute.role,
                security_group=self.compute.security_group,
                vpc=self.host.vpc,
                subnets=self.host.network.compute_subnets,
                host_logs=self.host.logs,
                environment={
                    **samples,
                    **self.host.endpoint_environment(),
                    env_names.TENANT_ACCESS_ROLE_ARN: self.tenant_access.role.role_arn,
                    env_names.DB_RESOURCE_ID: self.host.database.resource_id,
                },
            )


class BridgeTenantStack(cdk.Stack):
    """One bridge tenant: its secret and its database on the shared cluster."""

    def __init__(self, scope: Construct, id_: str, *, tenant: Tenant, **kwargs: object) -> None:
        super().__init__(scope, id_, **kwargs)
        if tenant.tier != "bridge":
            raise ValueError(f"BridgeTenantStack: tenant {tenant.id!r} is in tier {tenant.tier!r}")
        cluster = HostReference.named(BRIDGE_HOST)
        # Found by name, not by export: a tenant stack deployed before the cluster's (`cdk
        # deploy -c tenant=<id>`) must stop before it creates anything, saying so.
        cluster.require_deployed(self, "BridgeClusterInterface")
        self.tenant_database = TenantDatabase(
            self,
            "Tenant",
            host=cluster,
            tenant_id=tenant.id,
            settings=tenant.database_settings,
        )
        cdk.Tags.of(self).add("tenant", tenant.id)
