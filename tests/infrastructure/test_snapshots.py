"""Snapshots guard against unintended template drift (asset hashes normalized)."""

import aws_cdk as cdk
import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from app import build_app
from lambda_src.tenancy import SILO_MONITORING
from tenantkit.catalog import load_catalog, parse_catalog
from tenantkit.deployment import DeployTarget

from .conftest import (
    BRIDGE,
    BRIDGE_CONTOSO,
    FIXTURE_CATALOG,
    POOL_STACK,
    SILO,
    SILO_RDS,
    Synth,
    cdk_context,
    normalized,
)


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize(
    "stack", [BRIDGE, BRIDGE_CONTOSO, POOL_STACK, SILO, SILO_RDS, SILO_MONITORING]
)
def test_template_matches_snapshot(
    synth: Synth, stack: str, snapshot_json: SnapshotAssertion
) -> None:
    assert normalized(synth.raw(stack)) == snapshot_json


def test_the_pool_stack_with_the_applications_migrations_matches_snapshot(
    snapshot_json: SnapshotAssertion,
) -> None:
    # the fixture catalog's pool with a schema: section (tests/fixtures/migrations)
    fixture = load_catalog(FIXTURE_CATALOG)
    catalog = parse_catalog(
        {
            "schema": {"directory": "migrations", "shared_tables": ["countries"]},
            "tenants": [{"id": t.id, "tier": "pool"} for t in fixture.in_tier("pool")],
        },
        str(FIXTURE_CATALOG),
    )
    app = build_app(cdk.App(context=cdk_context()), catalog, target=DeployTarget(tier="pool"))
    assert normalized(app.synth().get_stack_by_name(POOL_STACK).template) == snapshot_json
