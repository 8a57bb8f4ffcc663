"""The pool stack: its resources, and a thousand pool tenants inside CloudFormation's limits."""

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from app import build_app
from lambda_src.provisioner.kinds import pool_batch_of
from tenantkit.catalog import parse_catalog
from tenantkit.deployed_state import template_tenants
from tenantkit.deployment import TENANTS_METADATA

from .conftest import FIXTURE_CATALOG, POOL_STACK, Synth, cdk_context

FIXTURES = FIXTURE_CATALOG.parent

CLOUDFORMATION_RESOURCE_LIMIT = 500


def test_pool_database_protects_the_catalogs_tables_and_views(synth: Synth) -> None:
    synth.template(POOL_STACK).has_resource_properties(
        "Custom::PoolDatabase",
        {
            "Kind": "PoolDatabase",
            "RuntimeSecretArn": {"Ref": Match.any_value()},
            "TenantTables": ["shop.orders", "shop.order_lines"],
            "TenantViews": ["shop.big_orders"],
            "RemovalPolicy": "retain",
        },
    )


def pool_stack_of(pool_settings: dict[str, Any], *, samples: bool = False) -> cdk.Stack:
    catalog = parse_catalog(
        {
            "tenants": [{"id": "tailspin", "tier": "pool"}],
            "pool": pool_settings,
            "auth": {"issuer": "https://i.example/", "audience": "a", "jwks_file": "jwks.json"},
        },
        str(FIXTURES / "catalog.yaml"),
    )
    app = build_app(cdk.App(context=cdk_context()), catalog, samples=samples)
    return next(c for c in app.node.children if isinstance(c, cdk.Stack))


def test_the_verify_probes_property_follows_the_catalog(synth: Synth) -> None:
    # the fixture catalog says nothing: probes on, so `tenantctl verify --dsn` works in AWS
    synth.template(POOL_STACK).has_resource_properties(
        "Custom::PoolDatabase", {"VerifyProbes": "true"}
    )
    off = Template.from_stack(pool_stack_of({"verify_probes": False}))
    off.has_resource_properties("Custom::PoolDatabase", {"VerifyProbes": "false"})


def test_the_pool_sample_functions_are_refused_without_the_verify_probes() -> None:
    # they read tenantkit_sample.projects, which verify_probes: false removes
    with pytest.raises(ValueError, match=r"sample functions .* verify_probes: false"):
        pool_stack_of({"verify_probes": False}, samples=True)


def test_pool_tenants_are_batched_and_wait_for_the_pool(synth: Synth) -> None:
    resources = synth.raw(POOL_STACK)["Resources"]
    pool_id = next(k for k, v in resources.items() if v["Type"] == "Custom::PoolDatabase")
    batches = {k: v for k, v in resources.items() if v["Type"] == "Custom::PoolTenants"}
    registered = {
        entry["Id"]: (v["Properties"]["BatchId"], entry["RemovalPolicy"])
        for v in batches.values()
        for entry in v["Properties"]["Tenants"]
    }
    assert registered == {
        "tailspin": (pool_batch_of("tailspin"), "retain"),
        "litware": (pool_batch_of("litware"), "destroy"),
    }
    for batch in batches.values():
        assert pool_id in batch["DependsOn"]


def test_pool_runtime_password_is_generated_never_in_the_template(synth: Synth) -> None:
    resources = synth.raw(POOL_STACK)["Resources"]
    secrets = [v for v in resources.values() if v["Type"] == "AWS::SecretsManager::Secret"]
    runtime = next(s for s in secrets if s["Properties"].get("Name") == "tenantkit/pool/app")
    assert "SecretString" not in runtime["Properties"]
    assert runtime["DeletionPolicy"] == "Retain"
    assert json.loads(runtime["Properties"]["GenerateSecretString"]["SecretStringTemplate"]) == {
        "username": "tenantkit_pool_app",
        "dbname": "tenantkit_pool",
    }


def _stack_sizes(assembly: Any) -> dict[str, int]:
    return {stack.stack_name: len(stack.template["Resources"]) for stack in assembly.stacks}


def test_a_thousand_pool_tenants_stay_far_below_the_resource_limit() -> None:
    catalog = parse_catalog(
        {"tenants": [{"id": f"pool-{n:04d}", "tier": "pool"} for n in range(1000)]}
    )
    app = cdk.App(context=cdk_context())
    build_app(app, catalog)
    assembly = app.synth()
    sizes = _stack_sizes(assembly)
    assert list(sizes) == ["tenantkit-pool"]
    assert sizes["tenantkit-pool"] < CLOUDFORMATION_RESOURCE_LIMIT
    # ... and the template body stays inside CloudFormation's 1 MB limit.
    template = assembly.get_stack_by_name("tenantkit-pool").template
    assert len(json.dumps(template)) < 1_000_000


def test_the_pool_stack_lists_the_tenants_it_holds_for_the_deploy_check(synth: Synth) -> None:
    # tenantctl deploy reads the deployed pool stack's list to refuse a catalog that drops one.
    template = synth.raw(POOL_STACK)
    assert template["Metadata"][TENANTS_METADATA] == ["litware", "tailspin"]
    assert template_tenants(template) == {"litware", "tailspin"}


def test_a_pool_stack_deployed_without_the_list_is_read_from_its_tenant_batches(
    synth: Synth,
) -> None:
    template = {k: v for k, v in synth.raw(POOL_STACK).items() if k != "Metadata"}
    assert template_tenants(template) == {"litware", "tailspin"}
    assert template_tenants(synth.raw("tenantkit-bridge-contoso")) == {"contoso"}
    assert template_tenants(synth.raw("tenantkit-bridge")) == frozenset()
