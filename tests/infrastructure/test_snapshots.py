"""Snapshots guard against unintended template drift (asset hashes normalized)."""

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from .conftest import BRIDGE, BRIDGE_CONTOSO, POOL_STACK, SILO, SILO_RDS, Synth, normalized


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stack", [BRIDGE, BRIDGE_CONTOSO, POOL_STACK, SILO, SILO_RDS])
def test_template_matches_snapshot(
    synth: Synth, stack: str, snapshot_json: SnapshotAssertion
) -> None:
    assert normalized(synth.raw(stack)) == snapshot_json
