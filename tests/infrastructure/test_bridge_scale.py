"""The bridge layout at scale: 200 tenants, every stack far under the resource limit, and the
cluster stack untouched by tenants coming and going."""

import json

import aws_cdk as cdk
import pytest

from app import build_app
from tenantkit.catalog import parse_catalog

from .conftest import cdk_context

CLOUDFORMATION_RESOURCE_LIMIT = 500


def _synth(count: int) -> dict[str, dict]:  # type: ignore[type-arg]
    catalog = parse_catalog(
        {
            "tenants": [
                {"id": f"b-{n:03d}", "tier": "bridge", "connection_limit": 4} for n in range(count)
            ]
        }
    )
    app = cdk.App(context=cdk_context())
    build_app(app, catalog)
    return {stack.stack_name: stack.template for stack in app.synth().stacks}


@pytest.mark.slow
def test_two_hundred_bridge_tenants_each_get_a_small_stack() -> None:
    templates = _synth(200)
    assert len(templates) == 201
    sizes = {name: len(t["Resources"]) for name, t in templates.items()}
    assert max(sizes.values()) < CLOUDFORMATION_RESOURCE_LIMIT
    assert all(size <= 6 for name, size in sizes.items() if name != "tenantkit-bridge")


def test_adding_a_tenant_changes_no_byte_of_the_cluster_stack() -> None:
    before, after = _synth(2)["tenantkit-bridge"], _synth(3)["tenantkit-bridge"]
    assert json.dumps(before, sort_keys=True) == json.dumps(after, sort_keys=True)
