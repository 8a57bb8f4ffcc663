"""Create, delete (retain), create again: every synthesized stack through a model of
CloudFormation's rules for fixed names and retained resources (cloudformation_model.py), and
through the code `tenantctl deploy` runs before it creates a stack (tenantkit.retained)."""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tenantkit.catalog import CatalogError, parse_catalog
from tenantkit.deployment import DeployTarget
from tenantkit.retained import (
    RetainedResourceError,
    plan_import,
    retained_resources,
    snapshot_restored,
    take_back,
)
from tenantkit.synth import synth_templates

from .cloudformation_model import CloudFormationError, ModelCloud
from .conftest import BRIDGE, BRIDGE_CONTOSO, CFN_LINT, POOL_STACK, SILO, SILO_RDS, Synth

EVERY_STACK = [BRIDGE, BRIDGE_CONTOSO, POOL_STACK, SILO, SILO_RDS]


def redeploy(cloud: ModelCloud, stack: str, template: dict[str, Any], **options: bool) -> None:
    """What `tenantctl deploy` does with one stack: take back what is retained, then deploy."""
    cloud.synthesized(stack, template)
    take_back(stack, template, cloud, **options)
    cloud.deploy(stack, template)


def identifiers(cloud: ModelCloud, stack: str) -> dict[str, str]:
    return {logical_id: r.identifier for logical_id, r in cloud.stacks[stack].items()}


@pytest.mark.parametrize("stack", EVERY_STACK)
def test_a_stack_created_again_after_a_retaining_delete_collides_without_an_import(
    synth: Synth, stack: str
) -> None:
    # the model's rule, on tenantkit's own templates: what a plain second `cdk deploy` meets
    cloud, template = ModelCloud(), synth.raw(stack)
    cloud.create_stack(stack, template)
    cloud.delete_stack(stack)
    with pytest.raises(CloudFormationError, match="already exists"):
        cloud.create_stack(stack, template)
    assert stack not in cloud.stacks  # rolled back


@pytest.mark.parametrize("stack", EVERY_STACK)
def test_a_stack_created_again_takes_back_every_retained_resource(synth: Synth, stack: str) -> None:
    cloud, template = ModelCloud(), synth.raw(stack)
    redeploy(cloud, stack, template)
    first = identifiers(cloud, stack)
    cloud.delete_stack(stack)
    kept = {r.logical_id for r in retained_resources(template)}
    assert kept, "every tenantkit stack keeps something (at least a secret)"

    # (a host's cluster left a final snapshot: starting empty is asked for explicitly)
    redeploy(cloud, stack, template, fresh_database=True)

    again = identifiers(cloud, stack)
    assert set(again) == set(template["Resources"])
    # the same physical secret (so the same password), key, logs and vault as before
    assert {i: again[i] for i in kept} == {i: first[i] for i in kept}
    # nothing retained is left over, owned by no stack, but the host's export and access-log
    # buckets (generated names: the new stack made new ones; the old keep the exports)
    left = [r for r in cloud.resources if r.owner is None and not r.scheduled_for_deletion]
    buckets = {k for k, v in template["Resources"].items() if v["Type"] == "AWS::S3::Bucket"}
    assert sorted(r.type for r in left) == ["AWS::S3::Bucket"] * len(buckets)
    assert not {r.identifier for r in left} & set(again.values())


def test_a_bridge_tenant_onboarded_again_gets_its_secret_back_and_nothing_else_is_touched(
    synth: Synth,
) -> None:
    cloud = ModelCloud()
    for stack in (BRIDGE, BRIDGE_CONTOSO):
        redeploy(cloud, stack, synth.raw(stack))
    secret = identifiers(cloud, BRIDGE_CONTOSO)["TenantLoginSecret5EB69E0B"]
    cluster_before = identifiers(cloud, BRIDGE)
    cloud.delete_stack(BRIDGE_CONTOSO)  # offboard, data retained

    plan = plan_import(BRIDGE_CONTOSO, synth.raw(BRIDGE_CONTOSO), cloud)
    assert plan.resource_mapping() == {"TenantLoginSecret5EB69E0B": {"Id": secret}}
    redeploy(cloud, BRIDGE_CONTOSO, synth.raw(BRIDGE_CONTOSO))

    assert identifiers(cloud, BRIDGE_CONTOSO)["TenantLoginSecret5EB69E0B"] == secret
    assert identifiers(cloud, BRIDGE) == cluster_before


def test_a_host_rebuilt_finds_its_retained_key_through_its_retained_alias(synth: Synth) -> None:
    template = synth.raw(SILO)
    keys = [r for r in retained_resources(template) if r.type == "AWS::KMS::Key"]
    assert [k.name for k in keys] == [f"alias/{SILO}"]
    cloud = ModelCloud()
    redeploy(cloud, SILO, template)
    key = identifiers(cloud, SILO)[keys[0].logical_id]
    cloud.delete_stack(SILO)
    # the cluster left its final snapshot; its identifier is free again
    assert cloud.snapshots == [(SILO, SILO)]
    assert snapshot_restored(template) == [("HostDatabaseCluster7817681B", SILO)]
    # created again, the cluster would start empty beside the snapshot holding the data
    with pytest.raises(RetainedResourceError, match=rf"{SILO}-snapshot-0.*--fresh-database"):
        take_back(SILO, template, cloud)
    assert SILO not in cloud.stacks
    redeploy(cloud, SILO, template, fresh_database=True)
    assert identifiers(cloud, SILO)[keys[0].logical_id] == key


def test_a_secret_deleted_with_its_stack_is_restored_and_taken_back(synth: Synth) -> None:
    # removal_policy destroy: the secret goes with its stack, but its name stays reserved
    template = synth.raw(BRIDGE_CONTOSO)
    destroyed = {
        **template,
        "Resources": {
            logical_id: {**resource, "DeletionPolicy": "Delete"}
            if resource["Type"] == "AWS::SecretsManager::Secret"
            else resource
            for logical_id, resource in template["Resources"].items()
        },
    }
    cloud = ModelCloud()
    cloud.create_stack(BRIDGE_CONTOSO, destroyed)
    cloud.delete_stack(BRIDGE_CONTOSO)
    with pytest.raises(CloudFormationError, match="already exists"):
        cloud.create_stack(BRIDGE_CONTOSO, template)
    cloud.synthesized(BRIDGE_CONTOSO, template)
    plan = take_back(BRIDGE_CONTOSO, template, cloud)
    assert plan is not None
    assert len(plan.restore_secrets) == 1
    cloud.deploy(BRIDGE_CONTOSO, template)
    assert not any(r.scheduled_for_deletion for r in cloud.resources)


def test_a_retained_resource_whose_key_is_gone_is_refused_naming_both(synth: Synth) -> None:
    template = synth.raw(SILO)
    cloud = ModelCloud()
    cloud.create_stack(SILO, template)
    cloud.delete_stack(SILO)
    for alias in [r for r in cloud.resources if r.type == "AWS::KMS::Alias"]:
        cloud.resources.remove(alias)  # someone deleted the alias: the key cannot be found
    refused = r"flow-logs .* refers to is not \(HostDatabaseStorageKey"
    with pytest.raises(RetainedResourceError, match=refused):
        take_back(SILO, template, cloud, fresh_database=True)
    assert SILO not in cloud.stacks


def test_an_existing_stack_takes_nothing_back(synth: Synth) -> None:
    cloud = ModelCloud()
    redeploy(cloud, BRIDGE_CONTOSO, synth.raw(BRIDGE_CONTOSO))
    assert take_back(BRIDGE_CONTOSO, synth.raw(BRIDGE_CONTOSO), cloud) is None


def test_every_kept_resource_of_every_stack_has_an_answer(synth: Synth) -> None:
    # retained_resources raises for a kept type it cannot take back; snapshots are restorable
    for stack in synth.assembly.stacks:
        retained_resources(stack.template)
    unknown = {"Resources": {"Table": {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain"}}}
    with pytest.raises(RetainedResourceError, match=r"Table .*AWS::DynamoDB::Table"):
        retained_resources(unknown)
    # a retained bucket whose name CloudFormation generates never collides: it is left behind
    # (the hosts' export buckets); one with a fixed name would, and has no answer
    generated = {"Resources": {"Bucket": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain"}}}
    assert retained_resources(generated) == []
    named = {
        "Resources": {
            "Bucket": {
                "Type": "AWS::S3::Bucket",
                "DeletionPolicy": "Retain",
                "Properties": {"BucketName": "tenantkit-exports"},
            }
        }
    }
    with pytest.raises(RetainedResourceError, match=r"Bucket .*AWS::S3::Bucket"):
        retained_resources(named)


def silo_template(restore_snapshot: str | None, engine: str = "aurora") -> dict[str, Any]:
    """The silo stack of a one-tenant catalog, restoring from `restore_snapshot` if given."""
    silo = {
        "engine": engine,
        **({"restore_snapshot": restore_snapshot} if restore_snapshot else {}),
    }
    catalog = parse_catalog({"tenants": [{"id": "solo", "tier": "silo", "silo": silo}]})
    template: dict[str, Any] = synth_templates(catalog, DeployTarget(tenant="solo"))[
        "tenantkit-silo-solo"
    ]
    return template


@pytest.mark.slow
def test_a_silo_onboarded_again_restores_its_data_from_the_final_snapshot() -> None:
    stack, cloud = "tenantkit-silo-solo", ModelCloud()
    fresh = silo_template(None)
    redeploy(cloud, stack, fresh)
    (cluster,) = [r for r in cloud.stacks[stack].values() if r.type == "AWS::RDS::DBCluster"]
    data = cluster.data
    cloud.delete_stack(stack)  # offboarded: the final snapshot holds the data
    (snapshot,) = cloud.final_snapshots("AWS::RDS::DBCluster", stack)

    # the catalog names the snapshot (as the refusal says to): the cluster comes back with it
    restoring = silo_template(snapshot)
    resource = restoring["Resources"]["HostDatabaseCluster7817681B"]["Properties"]
    assert resource["SnapshotIdentifier"] == snapshot
    assert "MasterUsername" not in resource
    redeploy(cloud, stack, restoring)
    (cluster,) = [r for r in cloud.stacks[stack].values() if r.type == "AWS::RDS::DBCluster"]
    assert cluster.data == data

    # and keeps it: a later template without it would replace the database, and is refused
    with pytest.raises(RetainedResourceError, match=rf"restored from snapshot {snapshot}"):
        redeploy(cloud, stack, fresh)
    redeploy(cloud, stack, restoring)  # the same catalog deploys as often as it likes


@pytest.mark.slow
def test_restoring_templates_pass_the_gate_and_restore_what_cdk_restores(tmp_path: Path) -> None:
    # synth_templates applies the cdk-nag packs; cfn-lint as the gate runs it
    paths = []
    for engine, snapshot in (("aurora", "tenantkit-silo-solo-final"), ("rds", "solo-final")):
        template = silo_template(snapshot, engine)
        ((logical_id, _),) = snapshot_restored(template)
        resource = template["Resources"][logical_id]
        properties = resource["Properties"]
        assert snapshot in (
            properties.get("SnapshotIdentifier"),
            properties.get("DBSnapshotIdentifier"),
        )
        # the credentials (and an instance's encryption) are the snapshot's
        assert not {"MasterUsername", "MasterUserPassword"} & set(properties), logical_id
        if engine == "rds":
            assert not {"StorageEncrypted", "KmsKeyId"} & set(properties)
        paths.append(tmp_path / f"{engine}.template.json")
        paths[-1].write_text(json.dumps(template))
    linted = subprocess.run([*CFN_LINT, *map(str, paths)], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_a_snapshot_that_is_no_rds_identifier_is_refused_naming_the_field() -> None:
    entry = {"id": "solo", "tier": "silo", "silo": {"restore_snapshot": "1-bad--name"}}
    with pytest.raises(CatalogError, match=r"tenants\[0\].*silo.restore_snapshot"):
        parse_catalog({"tenants": [entry]})
    arn = "arn:aws:rds:eu-west-1:111111111111:cluster-snapshot:tenantkit-silo-solo-final"
    parse_catalog({"tenants": [{**entry, "silo": {"restore_snapshot": arn}}]})
    parse_catalog({"tenants": [], "clusters": {"bridge": {"restore_snapshot": "bridge-final"}}})
