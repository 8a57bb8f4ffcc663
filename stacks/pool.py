"""The pool tier: one shared Aurora cluster, shared tables guarded by Row-Level Security."""

from collections.abc import Mapping, Sequence
from pathlib import Path

import aws_cdk as cdk
from constructs import Construct

from lambda_src.core import environment as env_names
from lambda_src.migrations.files import load_migrations
from lambda_src.provisioner.kinds import PoolMigrations
from lambda_src.provisioner.migrate import PoolSchema
from lambda_src.tenancy import POOL, POOL_LOGIN_SUFFIX
from tenant_constructs import (
    DatabaseHost,
    PoolDatabase,
    PoolProxy,
    PoolTenants,
    SampleFunctions,
    SharedCompute,
    TenantAccessRole,
)
from tenantkit.catalog import ClusterSettings, PoolSettings, Tenant
from tenantkit.deployment import TENANTS_METADATA

from .host_settings import cluster_capacity, database_operations


class PoolStack(cdk.Stack):
    """Shared cluster, the pool database and every pool tenant of the catalog."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        tenants: Sequence[Tenant],
        settings: PoolSettings = PoolSettings(),
        cluster: ClusterSettings = ClusterSettings(),
        ca_bundle: str | None = None,
        samples: Mapping[str, str] | None = None,
        migrations: Path | None = None,
        pool_schema: PoolSchema = PoolSchema(),
        **kwargs: object,
    ) -> None:
        """`settings`: the catalog's `pool:`; `cluster`: its `clusters.pool`. `migrations`:
        the application's migrations (the catalog's schema: directory, whose `pool_schema`
        says which tables are the tenants' and which are shared): the provisioner carries
        them and every deploy brings the pool database to them (no rollout: one database)."""
        super().__init__(scope, id_, **kwargs)
        wrong_tier = [t.id for t in tenants if t.tier != "pool"]
        if wrong_tier:
            raise ValueError(f"PoolStack: tenants {wrong_tier} are not in the pool tier")
        # What the deployed stack holds, for `tenantctl deploy` to refuse a catalog that
        # would drop a tenant (tenantkit.deployed_state); sorted, so the template is stable.
        self.template_options.metadata = {TENANTS_METADATA: sorted(t.id for t in tenants)}
        self.host = DatabaseHost(
            self,
            "Host",
            host=POOL.stack_name,
            tier="pool",
            capacity=cluster_capacity(cluster),
            operations=database_operations(cluster),
            ca_bundle=ca_bundle,
            registry_database=POOL.database,
            migrations=migrations,
            rollout=False,
        )
        # Read at synth (a bad file fails it, naming the file): the fingerprint is what makes
        # CloudFormation send the pool database an Update when a migration is added.
        pool_migrations = (
            None
            if migrations is None
            else PoolMigrations.of(load_migrations(migrations), pool_schema)
        )
        self.pool = PoolDatabase(
            self,
            "Pool",
            host=self.host.reference,
            tenant_tables=settings.tenant_tables,
            tenant_views=settings.tenant_views,
            iam_auth=settings.iam_auth,
            removal_policy=settings.removal_policy,
            verify_probes=settings.verify_probes,
            migrations=pool_migrations,
            mode=settings.mode,
        )
        self.tenants = PoolTenants(
            self,
            "Tenants",
            pool=self.pool,
            host=self.host.reference,
            tenants=[(t.id, t.removal_policy) for t in tenants],
            suspended=[t.id for t in tenants if t.suspended],
        )
        # Same stack: the cluster must be up and the provisioner reachable first.
        self.pool.node.add_dependency(self.host)
        self.compute = SharedCompute(self, "SharedCompute", host=self.host)
        patterns: dict[str, dict[str, str]] = {"pool-iam": {}, "pool-secret": {}}
        # pool.proxy: the runtime logins multiplexed by an RDS Proxy (none by default; the
        # catalog refuses one for a strict pool, whose tenants log in as themselves).
        self.proxy: PoolProxy | None = None
        if settings.mode == "strict":
            # Each tenant logs in as its own login, with an IAM token that only the
            # tenant-access role, assumed with the tenant's session tag, may mint: as for
            # bridge, STS in the VPC, and the shared role reaches nothing else. The tenants
            # have no secrets (IAM auth only), so pool-secret has no sample here.
            sts = self.host.network.add_sts_endpoint()
            sts.connections.allow_default_port_from(self.compute.security_group, "shared compute")
            self.tenant_access = TenantAccessRole(
                self,
                "TenantAccess",
                shared=self.compute,
                db_user_suffix=POOL_LOGIN_SUFFIX,
                secrets=False,
            )
            patterns = {
                "pool-iam": {
                    env_names.POOL_MODE: "strict",
                    env_names.TENANT_ACCESS_ROLE_ARN: self.tenant_access.role.role_arn,
                    env_names.DB_RESOURCE_ID: self.host.database.resource_id,
                }
            }
        else:
            # Pooled compute, pooled database: the shared functions log in as the pool's
            # runtime user (IAM) or read its secret; the tenant is the transaction-local setting.
            self.compute.allow_pool_login(iam_user=POOL.iam_user, secret=self.pool.secret)
            if settings.proxy is not None:
                self.proxy = PoolProxy(
                    self,
                    "Proxy",
                    host=self.host,
                    login_secret=self.pool.secret,
                    clients=self.compute.security_group,
                    iam_auth=settings.iam_auth,
                    idle_client_timeout_s=settings.proxy.idle_client_timeout_s,
                    max_connections_percent=settings.proxy.max_connections_percent,
                )
                if settings.iam_auth:
                    self.compute.allow_pool_proxy_login(
                        proxy_resource_id=self.proxy.resource_id, user=POOL.login_role
                    )
        if samples is not None:
            if not settings.verify_probes:
                # The pool sample functions read tenantkit_sample.projects.
                raise ValueError(
                    "PoolStack: the sample functions (-c samples=true) read the sample schema, "
                    "which pool: verify_probes: false removes"
                )
            SampleFunctions(
                self,
                "Samples",
                patterns={
                    pattern: environment
                    | (
                        self.proxy.client_environment()
                        if self.proxy is not None and pattern in self.proxy.patterns
                        else {}
                    )
                    for pattern, environment in patterns.items()
                },
                role=self.compute.role,
                security_group=self.compute.security_group,
                vpc=self.host.vpc,
                subnets=self.host.network.compute_subnets,
                host_logs=self.host.logs,
                environment={**samples, **self.host.endpoint_environment()},
            )
