#!/usr/bin/env python3
"""The tenantkit CDK app: tenants.yaml -> one stack per tier (or per silo tenant).

Context (cdk.json or -c): `catalog` (path of the tenant catalog, default tenants.yaml),
`caBundle` (a PEM bundle inside lambda_src/ for TLS verify-full), `samples` (true: deploy the
six sample tenant functions; needs the catalog's auth: section).
"""

import json
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from lambda_src.tenancy import BRIDGE_HOST, POOL
from stacks import BridgeClusterStack, BridgeTenantStack, PoolStack, SiloTenantStack
from tenant_constructs import auth_environment
from tenantkit.catalog import Catalog, CatalogError, load_catalog
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
    app: cdk.App, catalog: Catalog, *, ca_bundle: str | None = None, samples: bool = False
) -> cdk.App:
    """Add every stack the catalog needs to `app`, with cdk-nag's AwsSolutions checks;
    `samples` adds the six sample tenant functions (one per access pattern)."""
    env = sample_environment(catalog) if samples else None
    bridge = catalog.in_tier("bridge")
    if bridge:
        BridgeClusterStack(app, BRIDGE_HOST, tenants=bridge, ca_bundle=ca_bundle, samples=env)
        for tenant in bridge:
            BridgeTenantStack(app, tenant.names.bridge_stack_name, tenant=tenant)
    pool = catalog.in_tier("pool")
    if pool:
        PoolStack(
            app,
            POOL.stack_name,
            tenants=pool,
            settings=catalog.pool,
            ca_bundle=ca_bundle,
            samples=env,
        )
    silos: list[cdk.Stack] = [
        SiloTenantStack(
            app, tenant.names.silo_stack_name, tenant=tenant, ca_bundle=ca_bundle, samples=env
        )
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
    samples = str(app.node.try_get_context("samples") or "false").lower() == "true"
    build_app(app, load_catalog(catalog_path), ca_bundle=ca_bundle, samples=samples)
    app.synth()


if __name__ == "__main__":
    main()
