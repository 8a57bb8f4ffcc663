"""Synth at scale: a 1,000-tenant mixed catalog, and per-tenant synths that build only the
stacks a tenant needs."""

import aws_cdk as cdk
import pytest

from app import build_app, target_from_context
from tenantkit.bench.synth import mixed_catalog
from tenantkit.catalog import Catalog, CatalogError, parse_catalog
from tenantkit.deployment import EVERY_STACK, DeployTarget
from tenantkit.synth import synth_templates

from .conftest import cdk_context

CLOUDFORMATION_RESOURCE_LIMIT = 500


@pytest.fixture(scope="module")
def thousand() -> Catalog:
    return parse_catalog(mixed_catalog(1000), "mixed-1000.yaml")


_synth = synth_templates


@pytest.mark.slow
def test_every_stack_of_a_thousand_mixed_tenants_is_under_the_resource_limit(
    thousand: Catalog,
) -> None:
    # GIVEN 10 silo, 290 bridge and 700 pool tenants WHEN the whole catalog is synthesized
    templates = _synth(thousand)

    # THEN one stack per silo and bridge tenant, the bridge cluster, the pool and the silo
    # tier's dashboard
    assert len(thousand.in_tier("silo")) == 10
    assert len(thousand.in_tier("pool")) == 700
    assert len(templates) == 10 + 290 + 1 + 1 + 1
    sizes = {name: len(template["Resources"]) for name, template in templates.items()}
    largest = max(sizes, key=lambda name: sizes[name])
    assert sizes[largest] < CLOUDFORMATION_RESOURCE_LIMIT, (largest, sizes[largest])
    # and the 700 pool tenants are 32 batch resources, not 700
    batches = [
        r
        for r in templates["tenantkit-pool"]["Resources"].values()
        if r["Type"] == "Custom::PoolTenants"
    ]
    assert len(batches) == 32
    assert sum(len(b["Properties"]["Tenants"]) for b in batches) == 700


@pytest.mark.parametrize(
    ("tenant", "stacks"),
    [
        ("premium-0003", ["tenantkit-silo-premium-0003"]),
        ("standard-0042", ["tenantkit-bridge-standard-0042"]),
        ("basic-0100", ["tenantkit-pool"]),
    ],
)
def test_a_tenant_target_builds_only_the_stacks_that_tenant_needs(
    thousand: Catalog, tenant: str, stacks: list[str]
) -> None:
    templates = _synth(thousand, DeployTarget(tenant=tenant))

    assert sorted(templates) == stacks


def test_a_pool_tenant_target_keeps_every_pool_tenant_in_the_pool_stack(
    thousand: Catalog,
) -> None:
    # A pool stack built for one tenant must still hold all of them: deploying it with fewer
    # would offboard the others.
    template = _synth(thousand, DeployTarget(tenant="basic-0100"))["tenantkit-pool"]

    registered = [
        entry["Id"]
        for resource in template["Resources"].values()
        if resource["Type"] == "Custom::PoolTenants"
        for entry in resource["Properties"]["Tenants"]
    ]
    assert len(registered) == 700


def test_a_tier_target_builds_the_shared_stack_and_that_tier_only() -> None:
    catalog = parse_catalog(mixed_catalog(20))

    templates = _synth(catalog, DeployTarget(tier="bridge"))

    tenant_stacks = sorted(t.names.bridge_stack_name for t in catalog.in_tier("bridge"))
    assert sorted(templates) == ["tenantkit-bridge", *tenant_stacks]


def test_the_silo_tier_target_adds_the_tiers_dashboard_stack_and_a_silo_tenant_does_not() -> None:
    # The dashboard finds every silo by metric search: a silo tenant's deploy (an onboarding,
    # run in parallel with others) touches its own stack only; the tier's deploy brings it.
    catalog = parse_catalog(mixed_catalog(20))
    silos = [t.names.silo_stack_name for t in catalog.in_tier("silo")]
    assert silos

    assert DeployTarget(tier="silo").stacks(catalog) == ("tenantkit-silo", *silos)
    assert "tenantkit-silo" in EVERY_STACK.stacks(catalog)
    assert DeployTarget(tenant=catalog.in_tier("silo")[0].id).stacks(catalog) == (silos[0],)
    without = parse_catalog({"tenants": [{"id": "acme", "tier": "bridge"}]})
    assert DeployTarget(tier="silo").stacks(without) == ()
    assert "tenantkit-silo" not in EVERY_STACK.stacks(without)


def test_an_unknown_tenant_target_names_the_catalog() -> None:
    catalog = parse_catalog(mixed_catalog(20), "tenants.yaml")

    with pytest.raises(CatalogError, match=r"'nobody' is not in tenants\.yaml"):
        build_app(cdk.App(context=cdk_context()), catalog, target=DeployTarget(tenant="nobody"))


def test_the_app_reads_the_target_from_its_context() -> None:
    assert target_from_context(cdk.App(context={"tenant": "acme"})) == DeployTarget(tenant="acme")
    assert target_from_context(cdk.App(context={"tier": "pool"})) == DeployTarget(tier="pool")
    assert target_from_context(cdk.App()) == EVERY_STACK
    with pytest.raises(CatalogError, match="not both"):
        target_from_context(cdk.App(context={"tenant": "acme", "tier": "pool"}))
