"""The hosts' databases as production needs them: readers in another zone, backups into a
retained vault, enhanced monitoring, an admin secret that outlives the stack; and the catalog's
`clusters:` section sizing the shared clusters."""

from typing import Any

import aws_cdk as cdk
from aws_cdk.assertions import Match

from app import build_app
from tenantkit.catalog import parse_catalog

from .conftest import BRIDGE, POOL_STACK, SILO, SILO_RDS, Synth, cdk_context

HOST_STACKS = (BRIDGE, POOL_STACK, SILO, SILO_RDS)
SHARED = (BRIDGE, POOL_STACK)


def resources(template: dict[str, Any], type_: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def only(template: dict[str, Any], type_: str) -> tuple[str, dict[str, Any]]:
    (found,) = resources(template, type_).items()
    return found


def az_index(instance: dict[str, Any]) -> int:
    zone = instance["Properties"]["AvailabilityZone"]
    assert zone["Fn::Select"][1] == {"Fn::GetAZs": ""}
    return int(zone["Fn::Select"][0])


def synth_catalog(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    app = cdk.App(context=cdk_context())
    build_app(app, parse_catalog(doc))
    return {stack.stack_name: stack.template for stack in app.synth().stacks}


def test_each_shared_cluster_has_a_reader_in_the_other_zone_by_default(synth: Synth) -> None:
    for stack in SHARED:
        template = synth.raw(stack)
        instances = resources(template, "AWS::RDS::DBInstance").values()
        by_tier = {i["Properties"]["PromotionTier"]: i for i in instances}
        assert sorted(by_tier) == [0, 1], stack  # a writer and one failover reader
        assert az_index(by_tier[0]) == 0
        assert az_index(by_tier[1]) == 1  # the zone the writer is not in
        _, cluster = only(template, "AWS::RDS::DBCluster")
        assert cluster["Properties"]["ServerlessV2ScalingConfiguration"] == {
            "MinCapacity": 0.5,
            "MaxCapacity": 16,
        }


def test_the_catalog_sizes_a_shared_cluster_with_provisioned_instances_and_readers() -> None:
    # GIVEN clusters.bridge with an instance class and two readers
    templates = synth_catalog(
        {
            "tenants": [{"id": "contoso", "tier": "bridge"}],
            "clusters": {"bridge": {"instance_class": "r6g.large", "readers": 2}},
        }
    )
    # THEN three db.r6g.large instances across both zones, the readers promotion tier 1
    instances = resources(templates[BRIDGE], "AWS::RDS::DBInstance").values()
    assert sorted(
        (i["Properties"]["PromotionTier"], az_index(i), i["Properties"]["DBInstanceClass"])
        for i in instances
    ) == [(0, 0, "db.r6g.large"), (1, 0, "db.r6g.large"), (1, 1, "db.r6g.large")]
    _, cluster = only(templates[BRIDGE], "AWS::RDS::DBCluster")
    assert "ServerlessV2ScalingConfiguration" not in cluster["Properties"]


def test_the_catalog_sets_each_clusters_capacity_and_operations_apart() -> None:
    templates = synth_catalog(
        {
            "tenants": [{"id": "contoso", "tier": "bridge"}, {"id": "tailspin", "tier": "pool"}],
            "clusters": {
                "bridge": {"min_acu": 2, "max_acu": 32, "readers": 0},
                "pool": {"backup_retention_days": 35, "performance_insights": False},
            },
        }
    )
    _, bridge = only(templates[BRIDGE], "AWS::RDS::DBCluster")
    assert bridge["Properties"]["ServerlessV2ScalingConfiguration"] == {
        "MinCapacity": 2,
        "MaxCapacity": 32,
    }
    assert len(resources(templates[BRIDGE], "AWS::RDS::DBInstance")) == 1
    _, pool = only(templates[POOL_STACK], "AWS::RDS::DBCluster")
    assert pool["Properties"]["BackupRetentionPeriod"] == 35
    _, plan = only(templates[POOL_STACK], "AWS::Backup::BackupPlan")
    assert plan["Properties"]["BackupPlan"]["BackupPlanRule"][0]["Lifecycle"] == {
        "DeleteAfterDays": 35
    }
    for instance in resources(templates[POOL_STACK], "AWS::RDS::DBInstance").values():
        assert instance["Properties"]["EnablePerformanceInsights"] is False


def test_every_cluster_and_instance_is_in_a_daily_backup_plan_with_a_retained_vault(
    synth: Synth,
) -> None:
    for stack in HOST_STACKS:
        template = synth.raw(stack)
        keys = list(resources(template, "AWS::KMS::Key"))
        assert len(keys) == 1
        vault_id, vault = only(template, "AWS::Backup::BackupVault")
        assert vault["DeletionPolicy"] == "Retain"
        assert vault["UpdateReplacePolicy"] == "Retain"
        assert vault["Properties"]["BackupVaultName"] == stack
        assert vault["Properties"]["EncryptionKeyArn"] == {"Fn::GetAtt": [keys[0], "Arn"]}
        _, plan = only(template, "AWS::Backup::BackupPlan")
        (rule,) = plan["Properties"]["BackupPlan"]["BackupPlanRule"]
        assert rule["ScheduleExpression"] == "cron(0 3 * * ? *)"
        assert rule["Lifecycle"] == {"DeleteAfterDays": 14}
        assert rule["TargetBackupVault"] == {"Fn::GetAtt": [vault_id, "BackupVaultName"]}
        assert rule["CopyActions"] == []
        # the selection names the database itself: the Aurora cluster or the RDS instance
        database_type = "AWS::RDS::DBInstance" if stack == SILO_RDS else "AWS::RDS::DBCluster"
        database_id, _ = only(template, database_type)
        _, selection = only(template, "AWS::Backup::BackupSelection")
        (arn,) = selection["Properties"]["BackupSelection"]["Resources"]
        parts = arn["Fn::Join"][1]
        assert parts[-2] == (":db:" if stack == SILO_RDS else ":cluster:")
        assert parts[-1] == {"Ref": database_id}


def test_a_backup_copy_in_the_catalog_copies_each_recovery_point_to_that_vault() -> None:
    vault = "arn:aws:backup:eu-west-1:444455556666:backup-vault:tenantkit-dr"
    templates = synth_catalog(
        {
            "tenants": [
                {"id": "tailspin", "tier": "pool"},
                {"id": "acme", "tier": "silo", "silo": {"backup_copy": {"vault_arn": vault}}},
            ],
            "clusters": {
                "pool": {"backup_copy": {"vault_arn": vault, "retention_days": 90}},
            },
        }
    )
    for stack, days in (("tenantkit-pool", 90), ("tenantkit-silo-acme", 14)):
        _, plan = only(templates[stack], "AWS::Backup::BackupPlan")
        (rule,) = plan["Properties"]["BackupPlan"]["BackupPlanRule"]
        assert rule["CopyActions"] == [
            {"DestinationBackupVaultArn": vault, "Lifecycle": {"DeleteAfterDays": days}}
        ]


def test_every_database_instance_has_enhanced_monitoring_and_performance_insights(
    synth: Synth,
) -> None:
    for stack in HOST_STACKS:
        template = synth.raw(stack)
        instances = resources(template, "AWS::RDS::DBInstance")
        assert instances
        roles = resources(template, "AWS::IAM::Role")
        for instance in instances.values():
            props = instance["Properties"]
            assert props["MonitoringInterval"] == 60
            role = props["MonitoringRoleArn"]["Fn::GetAtt"][0]
            assert roles[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0][
                "Principal"
            ] == {"Service": "monitoring.rds.amazonaws.com"}
            assert props["EnablePerformanceInsights"] is True


def test_monitoring_interval_zero_turns_enhanced_monitoring_off_and_synth_still_passes() -> None:
    templates = synth_catalog(
        {
            "tenants": [{"id": "tailspin", "tier": "pool"}],
            "clusters": {"pool": {"monitoring_interval": 0}},
        }
    )
    for instance in resources(templates[POOL_STACK], "AWS::RDS::DBInstance").values():
        assert "MonitoringInterval" not in instance["Properties"]
    assert not [
        r
        for r in resources(templates[POOL_STACK], "AWS::IAM::Role").values()
        if "monitoring.rds" in str(r["Properties"]["AssumeRolePolicyDocument"])
    ]


def test_the_admin_secret_outlives_the_stack_like_the_snapshot(synth: Synth) -> None:
    for stack in HOST_STACKS:
        template = synth.template(stack)
        template.has_resource(
            "AWS::SecretsManager::Secret",
            {
                "Properties": Match.object_like({"Name": f"tenantkit/{stack}/admin"}),
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
            },
        )
