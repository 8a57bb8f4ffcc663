"""The access patterns' IAM, pinned exactly (test_iam_simulation.py evaluates the same
documents with an IAM simulator), and the sample functions' wiring."""

import json
from typing import Any

from aws_cdk.assertions import Match

from tenant_constructs.compute import FORBIDDEN_TENANT_TAGS

from .conftest import BRIDGE, POOL_STACK, SILO, Synth


def resource(synth: Synth, stack: str, prefix: str, type_: str) -> dict[str, Any]:
    found = [
        v
        for k, v in synth.raw(stack)["Resources"].items()
        if k.startswith(prefix) and v["Type"] == type_
    ]
    assert len(found) == 1, (prefix, type_, len(found))
    only: dict[str, Any] = found[0]
    return only


def logical_id(synth: Synth, stack: str, prefix: str, type_: str) -> str:
    return str(
        next(
            k
            for k, v in synth.raw(stack)["Resources"].items()
            if k.startswith(prefix) and v["Type"] == type_
        )
    )


def test_tenant_access_role_trusts_only_the_shared_role_with_one_well_formed_tag(
    synth: Synth,
) -> None:
    role = resource(synth, BRIDGE, "TenantAccessRole", "AWS::IAM::Role")
    shared = logical_id(synth, BRIDGE, "SharedComputeRole", "AWS::IAM::Role")
    assert role["Properties"]["AssumeRolePolicyDocument"] == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Principal": {"AWS": {"Fn::GetAtt": [shared, "Arn"]}},
                "Condition": {
                    "ForAllValues:StringEquals": {"aws:TagKeys": ["tenant"]},
                    "StringLike": {"aws:RequestTag/tenant": "?*"},
                    "StringNotLike": {"aws:RequestTag/tenant": FORBIDDEN_TENANT_TAGS},
                },
            }
        ],
    }
    assert role["Properties"]["MaxSessionDuration"] == 3600


def test_tenant_access_role_reaches_only_the_tagged_tenants_user_and_secret(
    synth: Synth,
) -> None:
    policy = resource(synth, BRIDGE, "TenantAccessRoleDefaultPolicy", "AWS::IAM::Policy")
    cluster = logical_id(synth, BRIDGE, "HostDatabaseCluster", "AWS::RDS::DBCluster")
    account_prefix = [
        "arn:",
        {"Ref": "AWS::Partition"},
    ]
    connect, read, decrypt = policy["Properties"]["PolicyDocument"]["Statement"]
    assert connect == {
        "Effect": "Allow",
        "Action": "rds-db:connect",
        "Resource": {
            "Fn::Join": [
                "",
                [
                    *account_prefix,
                    ":rds-db:",
                    {"Ref": "AWS::Region"},
                    ":",
                    {"Ref": "AWS::AccountId"},
                    ":dbuser:",
                    {"Fn::GetAtt": [cluster, "DBClusterResourceId"]},
                    "/tenant_${aws:PrincipalTag/tenant}_iam",
                ],
            ]
        },
    }
    assert read["Action"] == ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    assert read["Condition"] == {
        "StringEquals": {
            "secretsmanager:ResourceTag/tenant": "${aws:PrincipalTag/tenant}",
            "secretsmanager:ResourceTag/tenantkit-host": "tenantkit-bridge",
        }
    }
    assert json.dumps(read["Resource"]).endswith('":secret:tenantkit/*"]]}')
    # The host key, through Secrets Manager, for the secret named for the session tag only.
    key = logical_id(synth, BRIDGE, "HostDatabaseStorageKey", "AWS::KMS::Key")
    assert decrypt["Action"] == "kms:Decrypt"
    assert decrypt["Resource"] == {"Fn::GetAtt": [key, "Arn"]}
    assert decrypt["Condition"]["StringEquals"] == {
        "kms:ViaService": {
            "Fn::Join": ["", ["secretsmanager.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]
        }
    }
    context = decrypt["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"]
    assert context["Fn::Join"][1][-1] == ":secret:tenantkit/${aws:PrincipalTag/tenant}/app-??????"


def test_the_shared_bridge_role_can_only_assume_the_tenant_access_role(synth: Synth) -> None:
    policy = resource(synth, BRIDGE, "SharedComputeRoleDefaultPolicy", "AWS::IAM::Policy")
    access = logical_id(synth, BRIDGE, "TenantAccessRole", "AWS::IAM::Role")
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    data_access = [s for s in statements if not s["Action"][0].startswith("logs:")]
    assert data_access == [
        {
            "Effect": "Allow",
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Resource": {"Fn::GetAtt": [access, "Arn"]},
        }
    ]


def test_the_shared_pool_role_logs_in_only_as_the_pool_runtime(synth: Synth) -> None:
    policy = resource(synth, POOL_STACK, "SharedComputeRoleDefaultPolicy", "AWS::IAM::Policy")
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    connect = next(s for s in statements if s["Action"] == "rds-db:connect")
    assert connect["Resource"]["Fn::Join"][1][-1] == "/tenantkit_pool_iam"
    read = next(s for s in statements if "secretsmanager:GetSecretValue" in s["Action"])
    assert set(read["Resource"]) == {"Ref"}


def test_bridge_vpc_has_sts_for_the_shared_compute(synth: Synth) -> None:
    endpoints = [
        json.dumps(v["Properties"]["ServiceName"])
        for v in synth.raw(BRIDGE)["Resources"].values()
        if v["Type"] == "AWS::EC2::VPCEndpoint"
    ]
    assert any(".sts" in e for e in endpoints)
    assert any(".secretsmanager" in e for e in endpoints)


def test_six_sample_functions_one_per_pattern_in_the_compute_subnets(synth: Synth) -> None:
    patterns = {}
    for stack in (BRIDGE, POOL_STACK, SILO):
        for v in synth.raw(stack)["Resources"].values():
            if v["Type"] == "AWS::Lambda::Function" and v["Properties"].get("Handler") == (
                "lambda_src.samples.handler.handler"
            ):
                env = v["Properties"]["Environment"]["Variables"]
                patterns[env["TENANTKIT_PATTERN"]] = (stack, env)
    assert sorted(patterns) == sorted(
        ["silo-iam", "silo-secret", "bridge-iam", "bridge-secret", "pool-iam", "pool-secret"]
    )
    for _stack, env in patterns.values():
        assert json.loads(env["TENANTKIT_JWKS"])["keys"][0]["kid"] == "fixture-1"
        assert env["TENANTKIT_JWT_ISSUER"] == "https://auth.fixture.example/"
    assert patterns["silo-iam"][1]["TENANTKIT_SILO_TENANT"] == "northwind"
    assert "TENANTKIT_TENANT_ACCESS_ROLE_ARN" in patterns["bridge-secret"][1]
    synth.template(POOL_STACK).has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "lambda_src.samples.handler.handler",
            "VpcConfig": Match.object_like({"SubnetIds": Match.any_value()}),
        },
    )


# -- a strict pool: the tenant-access role reaches each tenant's own pool login ----------------


def test_a_strict_pools_tenant_access_role_may_connect_only_as_the_tagged_tenants_pool_login(
    strict_pool: Synth,
) -> None:
    policy = resource(strict_pool, POOL_STACK, "TenantAccessRoleDefaultPolicy", "AWS::IAM::Policy")
    cluster = logical_id(strict_pool, POOL_STACK, "HostDatabaseCluster", "AWS::RDS::DBCluster")
    # one statement: no secret (the tenants log in with IAM tokens; the host's one secret
    # with a tenant tag is the shared runtime login's, tagged tenant=pool)
    assert policy["Properties"]["PolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "rds-db:connect",
            "Resource": {
                "Fn::Join": [
                    "",
                    [
                        "arn:",
                        {"Ref": "AWS::Partition"},
                        ":rds-db:",
                        {"Ref": "AWS::Region"},
                        ":",
                        {"Ref": "AWS::AccountId"},
                        ":dbuser:",
                        {"Fn::GetAtt": [cluster, "DBClusterResourceId"]},
                        "/tenant_${aws:PrincipalTag/tenant}_pool",
                    ],
                ]
            },
        }
    ]


def test_a_strict_pools_tenant_access_role_trusts_only_the_shared_role_with_one_tag(
    strict_pool: Synth,
) -> None:
    role = resource(strict_pool, POOL_STACK, "TenantAccessRole", "AWS::IAM::Role")
    shared = logical_id(strict_pool, POOL_STACK, "SharedComputeRole", "AWS::IAM::Role")
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"AWS": {"Fn::GetAtt": [shared, "Arn"]}}
    assert statement["Condition"] == {
        "ForAllValues:StringEquals": {"aws:TagKeys": ["tenant"]},
        "StringLike": {"aws:RequestTag/tenant": "?*"},
        "StringNotLike": {"aws:RequestTag/tenant": FORBIDDEN_TENANT_TAGS},
    }


def test_a_strict_pools_shared_role_reaches_no_database_user_and_no_secret(
    strict_pool: Synth,
) -> None:
    policy = resource(strict_pool, POOL_STACK, "SharedComputeRoleDefaultPolicy", "AWS::IAM::Policy")
    access = logical_id(strict_pool, POOL_STACK, "TenantAccessRole", "AWS::IAM::Role")
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    data_access = [s for s in statements if not s["Action"][0].startswith("logs:")]
    assert data_access == [
        {
            "Effect": "Allow",
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Resource": {"Fn::GetAtt": [access, "Arn"]},
        }
    ]


def test_a_strict_pool_tells_the_provisioner_its_mode_and_has_sts_and_one_iam_sample(
    strict_pool: Synth,
) -> None:
    template = strict_pool.template(POOL_STACK)
    template.has_resource_properties("Custom::PoolDatabase", {"Mode": "strict"})
    batches = template.find_resources("Custom::PoolTenants")
    assert batches
    for batch in batches.values():
        assert batch["Properties"]["Mode"] == "strict"
        # IAM auth: no password secret per tenant
        assert all("PasswordSecretArn" not in e for e in batch["Properties"]["Tenants"])
    assert "ProbePasswordSecretArns" not in json.dumps(template.to_json())
    endpoints = [
        json.dumps(v["Properties"]["ServiceName"])
        for v in template.find_resources("AWS::EC2::VPCEndpoint").values()
    ]
    assert any(".sts" in e for e in endpoints)
    samples = [
        v["Properties"]["Environment"]["Variables"]
        for v in template.find_resources("AWS::Lambda::Function").values()
        if v["Properties"].get("Handler") == "lambda_src.samples.handler.handler"
    ]
    assert [env["TENANTKIT_PATTERN"] for env in samples] == ["pool-iam"]
    (env,) = samples
    assert env["TENANTKIT_POOL_MODE"] == "strict"
    access = logical_id(strict_pool, POOL_STACK, "TenantAccessRole", "AWS::IAM::Role")
    assert env["TENANTKIT_TENANT_ACCESS_ROLE_ARN"] == {"Fn::GetAtt": [access, "Arn"]}


def test_a_settable_pool_sends_no_mode_so_existing_pools_see_no_change(synth: Synth) -> None:
    template = synth.template(POOL_STACK)
    for kind in ("Custom::PoolDatabase", "Custom::PoolTenants"):
        for found in template.find_resources(kind).values():
            assert "Mode" not in found["Properties"]
