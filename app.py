#!/usr/bin/env python3
"""The tenantkit CDK app: tenants.yaml -> one stack per tier (or per silo tenant).

Context (cdk.json or -c): `catalog` (path of the tenant catalog, default tenants.yaml),
`caBundle` (a PEM bundle inside lambda_src/ for TLS verify-full).
"""

from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from lambda_src.tenancy import BRIDGE_HOST, POOL
from stacks import BridgeClusterStack, BridgeTenantStack, PoolStack, SiloTenantStack
from tenantkit.catalog import Catalog, load_catalog
from tenantkit.quotas import quota_use


def build_app(app: cdk.App, catalog: Catalog, *, ca_bundle: str | None = None) -> cdk.App:
    """Add every stack the catalog needs to `app`, with cdk-nag's AwsSolutions checks."""
    bridge = catalog.in_tier("bridge")
    if bridge:
        BridgeClusterStack(app, BRIDGE_HOST, tenants=bridge, ca_bundle=ca_bundle)
        for tenant in bridge:
            BridgeTenantStack(app, tenant.names.bridge_stack_name, tenant=tenant)
    pool = catalog.in_tier("pool")
    if pool:
        PoolStack(app, POOL.stack_name, tenants=pool, settings=catalog.pool, ca_bundle=ca_bundle)
    silos: list[cdk.Stack] = [
        SiloTenantStack(app, tenant.names.silo_stack_name, tenant=tenant, ca_bundle=ca_bundle)
        for tenant in catalog.in_tier("silo")
    ]
    for use in quota_use(catalog):
        if use.exceeded:
            # On every silo stack (each tenant adds to it), else on every stack.
            for stack in silos or [c for c in app.node.children if isinstance(c, cdk.Stack)]:
                cdk.Annotations.of(stack).add_warning_v2(
                    "tenantkit:quota", f"beyond a default AWS quota: {use.describe()}"
                )
    cdk.Tags.of(app).add("app", "tenantkit")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def main() -> None:
    """Entry point of `cdk synth` (cdk.json: app)."""
    app = cdk.App()
    catalog_path = Path(str(app.node.try_get_context("catalog") or "tenants.yaml"))
    ca_bundle = app.node.try_get_context("caBundle")
    build_app(app, load_catalog(catalog_path), ca_bundle=ca_bundle)
    app.synth()


if __name__ == "__main__":
    main()
