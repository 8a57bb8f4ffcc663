"""Silo stacks: each tenant's own network, database and compute identity, scoped to itself."""

import json
from typing import Any

import aws_cdk as cdk
from aws_cdk.assertions import Annotations, Match

from app import build_app
from lambda_src.tenancy import tenant_names
from tenantkit.catalog import parse_catalog

from .conftest import SILO, SILO_RDS, Synth, cdk_context

SILOS = {SILO: "northwind", SILO_RDS: "woodgrove"}


def resources(synth: Synth, stack: str, type_: str) -> dict[str, Any]:
    return {k: v for k, v in synth.raw(stack)["Resources"].items() if v["Type"] == type_}


def test_rds_silo_instance_is_hardened_like_the_clusters(synth: Synth) -> None:
    synth.template(SILO_RDS).has_resource(
        "AWS::RDS::DBInstance",
        {
            "Properties": Match.object_like(
                {
                    "Engine": "postgres",
                    "DBInstanceClass": "db.m7g.large",
                    "AllocatedStorage": "100",
                    "MultiAZ": True,
                    "StorageEncrypted": True,
                    "KmsKeyId": Match.object_like({"Fn::GetAtt": Match.any_value()}),
                    "EnableIAMDatabaseAuthentication": True,
                    "DeletionProtection": True,
                    "PubliclyAccessible": False,
                    "BackupRetentionPeriod": 14,
                    "EnableCloudwatchLogsExports": ["postgresql", "upgrade"],
                    "DBInstanceIdentifier": "tenantkit-silo-woodgrove",
                }
            ),
            "DeletionPolicy": "Snapshot",
            "UpdateReplacePolicy": "Snapshot",
        },
    )
    synth.template(SILO_RDS).has_resource_properties(
        "AWS::RDS::DBParameterGroup", {"Parameters": Match.object_like({"rds.force_ssl": "1"})}
    )
    attachment = next(
        iter(resources(synth, SILO_RDS, "AWS::SecretsManager::SecretTargetAttachment").values())
    )
    assert attachment["Properties"]["TargetType"] in ("AWS::RDS::DBInstance",)


def test_each_silo_has_its_own_vpc_with_database_and_compute_subnets(synth: Synth) -> None:
    for stack in SILOS:
        assert len(resources(synth, stack, "AWS::EC2::VPC")) == 1
        subnets = resources(synth, stack, "AWS::EC2::Subnet").values()
        names = {
            tag["Value"]
            for subnet in subnets
            for tag in subnet["Properties"]["Tags"]
            if tag["Key"] == "aws-cdk:subnet-name"
        }
        assert names == {"data", "compute"}
        assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets)
        assert len(resources(synth, stack, "AWS::EC2::FlowLog")) == 1
        assert not resources(synth, stack, "AWS::EC2::NatGateway")


def test_no_security_group_admits_another_tenants_sources(synth: Synth) -> None:
    for stack in SILOS:
        local_groups = set(resources(synth, stack, "AWS::EC2::SecurityGroup"))
        for rule in resources(synth, stack, "AWS::EC2::SecurityGroupIngress").values():
            source = rule["Properties"]["SourceSecurityGroupId"]
            assert source["Fn::GetAtt"][0] in local_groups, (stack, source)
            assert "CidrIp" not in rule["Properties"]
        text = json.dumps(synth.raw(stack))
        assert "Fn::ImportValue" not in text
        other = next(s for s in SILOS if s != stack)
        assert other not in text  # nothing names the other tenant's stack


def secret_key(synth: Synth, stack: str) -> str:
    """The logical id of the key the stack's secrets are encrypted with (its only key)."""
    keys = list(resources(synth, stack, "AWS::KMS::Key"))
    assert len(keys) == 1, keys
    return keys[0]


def _compute_statements(synth: Synth, stack: str) -> list[dict[str, Any]]:
    policies = resources(synth, stack, "AWS::IAM::Policy")
    compute = [p for k, p in policies.items() if k.startswith("ComputeRole")]
    assert len(compute) == 1
    statements = compute[0]["Properties"]["PolicyDocument"]["Statement"]
    # the sample functions' own log groups aside
    return [s for s in statements if not str(s["Action"][0]).startswith("logs:")]


def test_compute_role_may_connect_only_as_its_own_iam_user_to_its_own_database(
    synth: Synth,
) -> None:
    for stack, tenant in SILOS.items():
        statements = _compute_statements(synth, stack)
        connect = next(s for s in statements if s["Action"] == "rds-db:connect")
        arn = json.dumps(connect["Resource"])
        assert f"/{tenant_names(tenant).iam_user}" in arn
        database = next(
            k
            for k, v in synth.raw(stack)["Resources"].items()
            if v["Type"] in ("AWS::RDS::DBCluster", "AWS::RDS::DBInstance")
        )
        attribute = "DBClusterResourceId" if "Cluster" in database else "DbiResourceId"
        assert {"Fn::GetAtt": [database, attribute]} in connect["Resource"]["Fn::Join"][1]
        read = next(s for s in statements if "secretsmanager:GetSecretValue" in s["Action"])
        # its own login secret (through the attachment to its database), by reference
        template = synth.raw(stack)["Resources"]
        target = template[read["Resource"]["Ref"]]
        if target["Type"] == "AWS::SecretsManager::SecretTargetAttachment":
            target = template[target["Properties"]["SecretId"]["Ref"]]
        assert target["Type"] == "AWS::SecretsManager::Secret"
        assert target["Properties"]["Name"] == tenant_names(tenant).secret_name
        # and the tenant's own key, through Secrets Manager, for that secret only
        decrypt = next(s for s in statements if s["Action"] == "kms:Decrypt")
        assert decrypt["Resource"] == {"Fn::GetAtt": [secret_key(synth, stack), "Arn"]}
        assert decrypt["Condition"]["StringLike"] == {
            "kms:EncryptionContext:SecretARN": read["Resource"]
        }
        assert set(decrypt["Condition"]["StringEquals"]) == {"kms:ViaService"}
        assert len(statements) == 3


def test_compute_security_group_reaches_only_the_database_and_secrets_manager(
    synth: Synth,
) -> None:
    for stack in SILOS:
        groups = resources(synth, stack, "AWS::EC2::SecurityGroup")
        compute = next(
            k
            for k, v in groups.items()
            if "compute of tenant" in v["Properties"]["GroupDescription"]
        )
        egress = [
            r["Properties"]
            for r in resources(synth, stack, "AWS::EC2::SecurityGroupEgress").values()
            if r["Properties"]["GroupId"] == {"Fn::GetAtt": [compute, "GroupId"]}
        ]
        assert len(egress) == 2
        assert all("DestinationSecurityGroupId" in e for e in egress)


def test_silo_stacks_state_what_they_consume_of_the_default_quotas(synth: Synth) -> None:
    annotations = Annotations.from_stack(synth.app.node.find_child(SILO))
    annotations.has_info("/" + SILO, Match.string_like_regexp("1 VPC \\(default quota 5"))


def test_more_silos_than_the_vpc_quota_warn_at_synth() -> None:
    catalog = parse_catalog({"tenants": [{"id": f"s{n}", "tier": "silo"} for n in range(6)]})
    app = cdk.App(context=cdk_context())
    build_app(app, catalog)
    stack = app.node.find_child("tenantkit-silo-s0")
    Annotations.from_stack(stack).has_warning(
        "/tenantkit-silo-s0", Match.string_like_regexp("VPCs per Region: 6 of 5")
    )


def test_a_silo_without_a_dedicated_key_keeps_storage_on_the_account_key() -> None:
    catalog = parse_catalog(
        {"tenants": [{"id": "plain", "tier": "silo", "silo": {"dedicated_kms_key": False}}]}
    )
    app = cdk.App(context=cdk_context())
    build_app(app, catalog)
    template = app.synth().get_stack_by_name("tenantkit-silo-plain").template
    cluster = next(v for v in template["Resources"].values() if v["Type"] == "AWS::RDS::DBCluster")
    assert cluster["Properties"]["StorageEncrypted"] is True
    assert "KmsKeyId" not in cluster["Properties"]  # aws/rds
    # ... while its secrets and logs still use a key of the tenant's own
    keys = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::KMS::Key"]
    assert len(keys) == 1
    for type_ in ("AWS::SecretsManager::Secret", "AWS::Logs::LogGroup"):
        for resource in (v for v in template["Resources"].values() if v["Type"] == type_):
            assert resource["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [keys[0], "Arn"]}
