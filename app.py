#!/usr/bin/env python3
"""The tenantkit CDK app: tenants.yaml -> one stack per tier (or per silo tenant).

Context (cdk.json or -c): `catalog` (path of the tenant catalog, default tenants.yaml),
`caBundle` (a PEM bundle inside lambda_src/ to verify the database against instead of the
shipped RDS CA bundle; TLS is verify-full either way), `samples` (true: deploy the
six sample tenant functions; needs the catalog's auth: section), `tenant` (an id: only the
stacks that tenant needs) or `tier` (only that tier's stacks).
"""

import json
from pathlib import Path

import aws_cdk as cdk

from lambda_src.provisioner.migrate import PoolSchema
from lambda_src.tenancy import BRIDGE_HOST, POOL, SILO_MONITORING
from stacks import (
    BridgeClusterStack,
    BridgeTenantStack,
    PoolStack,
    SiloMonitoringStack,
    SiloTenantStack,
)
from tenant_constructs import auth_environment
from tenantkit.catalog import Catalog, CatalogError, load_catalog
from tenantkit.compliance import compliance_packs
from tenantkit.deployment import EVERY_STACK, DeployTarget
from tenantkit.quotas import quota_use


def sample_environment(catalog: Catalog) -> dict[str, str]:
    """The sample functions' auth settings, from the catalog's auth: section."""
    if catalog.auth is None:
        raise CatalogError(
            f"{catalog.source}: the sample functions (-c samples=true) need an auth: section "
            "(issuer, audience, jwks_file)"
        )
    return auth_environment(
        json.dumps(catalog.jwks(), separators=(",", ":")),
        catalog.auth.issuer,
        catalog.auth.audience,
        catalog.auth.tenant_claim,
    )


def build_app(
    app: cdk.App,
    catalog: Catalog,
    *,
    ca_bundle: str | None = None,
    samples: bool = False,
    target: DeployTarget = EVERY_STACK,
) -> cdk.App:
    """Add the stacks `target` needs (default: every stack of the catalog) to `app`, with
    cdk-nag's AwsSolutions, HIPAA Security, NIST 800-53 rev. 5 and PCI DSS 3.2.1 packs as the
    synth gate; `samples` adds the six sample tenant functions (one per access pattern)."""
    env = sample_environment(catalog) if samples else None
    wanted = set(target.stacks(catalog))
    # Every host's provisioner carries the application's migrations: the bridge cluster and
    # each silo roll them out to their tenant databases (FleetMigration), the pool stack's
    # deploy migrates the pool database.
    migrations = catalog.application_migrations
    bridge = catalog.in_tier("bridge")
    cluster: cdk.Stack | None = None
    if BRIDGE_HOST in wanted:
        cluster = BridgeClusterStack(
            app,
            BRIDGE_HOST,
            tenants=bridge,
            cluster=catalog.clusters.bridge,
            ca_bundle=ca_bundle,
            samples=env,
            migrations=migrations,
        )
    for tenant in bridge:
        if tenant.names.bridge_stack_name in wanted:
            tenant_stack = BridgeTenantStack(app, tenant.names.bridge_stack_name, tenant=tenant)
            if cluster is not None:
                # `cdk deploy --all` (any --concurrency) deploys the cluster first; an order
                # only: no export, so the cluster's template is the same with or without it.
                tenant_stack.add_dependency(cluster)
    pool = catalog.in_tier("pool")
    if POOL.stack_name in wanted:
        PoolStack(
            app,
            POOL.stack_name,
            tenants=pool,
            settings=catalog.pool,
            cluster=catalog.clusters.pool,
            ca_bundle=ca_bundle,
            samples=env,
            migrations=migrations,
            pool_schema=catalog.schema.pool_schema if catalog.schema else PoolSchema(),
        )
    if SILO_MONITORING in wanted:
        SiloMonitoringStack(app, SILO_MONITORING)
    silos: list[cdk.Stack] = [
        SiloTenantStack(
            app,
            tenant.names.silo_stack_name,
            tenant=tenant,
            ca_bundle=ca_bundle,
            samples=env,
            migrations=migrations,
        )
        for tenant in catalog.in_tier("silo")
        if tenant.names.silo_stack_name in wanted
    ]
    for use in quota_use(catalog):
        if use.exceeded:
            # On every silo stack (each tenant adds to it), else on every stack.
            for stack in silos or [c for c in app.node.children if isinstance(c, cdk.Stack)]:
                cdk.Annotations.of(stack).add_warning_v2(
                    "tenantkit:quota", f"beyond a default AWS quota: {use.describe()}"
                )
    cdk.Tags.of(app).add("app", "tenantkit")
    cdk.Validations.of(app).add_plugins(*compliance_packs())
    return app


def target_from_context(app: cdk.App) -> DeployTarget:
    """`-c tenant=<id>` or `-c tier=<tier>` (not both); neither means every stack."""
    tenant, tier = app.node.try_get_context("tenant"), app.node.try_get_context("tier")
    if tenant and tier:
        raise CatalogError("give -c tenant=<id> or -c tier=<tier>, not both")
    return DeployTarget(tenant=str(tenant) if tenant else None, tier=str(tier) if tier else None)


def main() -> None:
    """Entry point of `cdk synth` (cdk.json: app)."""
    app = cdk.App()
    catalog_path = Path(str(app.node.try_get_context("catalog") or "tenants.yaml"))
    ca_bundle = app.node.try_get_context("caBundle")
    samples = str(app.node.try_get_context("samples") or "false").lower() == "true"
    build_app(
        app,
        load_catalog(catalog_path),
        ca_bundle=ca_bundle,
        samples=samples,
        target=target_from_context(app),
    )
    app.synth()


if __name__ == "__main__":
    main()
