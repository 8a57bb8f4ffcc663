"""Each host's export bucket and mobility function in the templates: the bucket encrypted with
the host key, versioned, private, TLS only, retained, logged; the function inside the VPC,
reaching S3 through a gateway endpoint that admits that bucket only; its role allowed the
admin secret, its host's exports and the host key through S3 for those objects, nothing more."""

from typing import Any

import pytest
from aws_cdk.assertions import Capture, Match

from lambda_src.core import environment as env_names
from lambda_src.tenancy import HostNames

from .conftest import BRIDGE, POOL_STACK, SILO, SILO_RDS, Synth

HOSTS = {BRIDGE: ("bridge", None), POOL_STACK: ("pool", None), SILO: ("silo", "northwind")}
HOSTS[SILO_RDS] = ("silo", "woodgrove")


def resources(synth: Synth, stack: str, type_: str) -> dict[str, Any]:
    return {k: v for k, v in synth.raw(stack)["Resources"].items() if v["Type"] == type_}


def the_one(found: dict[str, Any], what: str) -> tuple[str, dict[str, Any]]:
    assert len(found) == 1, (what, list(found))
    return next(iter(found.items()))


def export_bucket(synth: Synth, stack: str) -> tuple[str, dict[str, Any]]:
    buckets = resources(synth, stack, "AWS::S3::Bucket")
    return the_one(
        {k: v for k, v in buckets.items() if "LoggingConfiguration" in v["Properties"]}, "bucket"
    )


def host_key(synth: Synth, stack: str) -> str:
    key, _ = the_one(resources(synth, stack, "AWS::KMS::Key"), "key")
    return key


def mobility_function(synth: Synth, stack: str) -> tuple[str, dict[str, Any]]:
    name = HostNames(stack).mobility_function
    return the_one(
        {
            k: v
            for k, v in resources(synth, stack, "AWS::Lambda::Function").items()
            if v["Properties"].get("FunctionName") == name
        },
        name,
    )


def role_statements(synth: Synth, stack: str, role: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in resources(synth, stack, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


@pytest.mark.parametrize("stack", list(HOSTS))
def test_the_export_bucket_is_encrypted_with_the_host_key_private_versioned_and_retained(
    synth: Synth, stack: str
) -> None:
    key = host_key(synth, stack)
    access_logs = Capture()
    synth.template(stack).has_resource(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {
                                "ServerSideEncryptionByDefault": {
                                    "SSEAlgorithm": "aws:kms",
                                    "KMSMasterKeyID": {"Fn::GetAtt": [key, "Arn"]},
                                }
                            }
                        ]
                    },
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    # No expiry of tenant data: the one rule drops interrupted uploads' parts.
                    "LifecycleConfiguration": {
                        "Rules": [
                            {
                                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                                "Status": "Enabled",
                            }
                        ]
                    },
                    "LoggingConfiguration": {
                        "DestinationBucketName": {"Ref": access_logs},
                        "LogFilePrefix": "exports/",
                    },
                }
            ),
        },
    )
    # Server access logs go to the stack's other bucket, retained too, SSE-S3 (all S3 takes).
    logs_bucket = resources(synth, stack, "AWS::S3::Bucket")[access_logs.as_string()]
    assert logs_bucket["DeletionPolicy"] == "Retain"
    assert logs_bucket["Properties"]["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
    }
    assert "LoggingConfiguration" not in logs_bucket["Properties"]


@pytest.mark.parametrize("stack", list(HOSTS))
def test_the_export_bucket_policy_denies_plain_http_and_objects_under_another_key(
    synth: Synth, stack: str
) -> None:
    bucket_id, _ = export_bucket(synth, stack)
    (policy,) = [
        p
        for p in resources(synth, stack, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    ]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    denies = {
        s.get("Sid", s["Action"] if isinstance(s["Action"], str) else "tls"): s
        for s in statements
        if s["Effect"] == "Deny"
    }
    tls = [
        s for s in statements if s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert tls
    assert tls[0]["Effect"] == "Deny"
    assert tls[0]["Action"] == "s3:*"
    key = denies["OnlyTheHostKey"]
    assert key["Action"] == "s3:PutObject"
    assert key["Condition"] == {
        "StringNotEqualsIfExists": {
            "s3:x-amz-server-side-encryption-aws-kms-key-id": {
                "Fn::GetAtt": [host_key(synth, stack), "Arn"]
            }
        }
    }


@pytest.mark.parametrize("stack", list(HOSTS))
def test_the_mobility_function_runs_in_the_vpc_with_its_hosts_tier_bucket_and_key(
    synth: Synth, stack: str
) -> None:
    tier, tenant = HOSTS[stack]
    bucket_id, _ = export_bucket(synth, stack)
    _, function = mobility_function(synth, stack)
    properties = function["Properties"]
    assert properties["Handler"] == "lambda_src.mobility_function.handler.on_event"
    assert properties["Timeout"] == 900
    assert properties["EphemeralStorage"] == {"Size": 10240}
    assert properties["VpcConfig"]["SubnetIds"]
    variables = properties["Environment"]["Variables"]
    assert variables[env_names.HOST_TIER] == tier
    assert variables.get(env_names.HOST_TENANT) == tenant
    assert variables[env_names.EXPORT_BUCKET] == {"Ref": bucket_id}
    assert variables[env_names.EXPORT_KEY_ARN] == {"Fn::GetAtt": [host_key(synth, stack), "Arn"]}
    assert env_names.SSL_ROOT_CERT in variables
    assert "Ref" in variables[env_names.ADMIN_SECRET_ARN]


@pytest.mark.parametrize("stack", list(HOSTS))
def test_the_mobility_role_reaches_its_hosts_exports_and_admin_secret_only(
    synth: Synth, stack: str
) -> None:
    _, tenant = HOSTS[stack]
    bucket_id, _ = export_bucket(synth, stack)
    key = {"Fn::GetAtt": [host_key(synth, stack), "Arn"]}
    _, function = mobility_function(synth, stack)
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = role_statements(synth, stack, role)
    by_action = {
        tuple(sorted([s["Action"]] if isinstance(s["Action"], str) else s["Action"])): s
        for s in statements
    }
    prefix = f"exports/{tenant}/*" if tenant else "exports/*"
    objects = {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, f"/{prefix}"]]}
    assert by_action[("s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject")]["Resource"] == (
        objects
    )
    listing = by_action[("s3:ListBucket",)]
    assert listing["Resource"] == {"Fn::GetAtt": [bucket_id, "Arn"]}
    assert listing["Condition"] == {"StringLike": {"s3:prefix": prefix}}
    through_s3 = by_action[("kms:Decrypt", "kms:GenerateDataKey")]
    assert through_s3["Resource"] == key
    assert through_s3["Condition"]["StringEquals"] == {
        "kms:ViaService": {"Fn::Join": ["", ["s3.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}
    }
    assert through_s3["Condition"]["StringLike"] == {"kms:EncryptionContext:aws:s3:arn": objects}
    secret = by_action[("secretsmanager:GetSecretValue",)]
    assert "Ref" in secret["Resource"]  # the admin secret itself, no pattern
    # Nothing else of S3 or KMS, and no wildcard action.
    actions = {
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert not any(a.endswith("*") for a in actions), actions
    assert {a for a in actions if a.startswith(("s3:", "kms:"))} == {
        "s3:AbortMultipartUpload",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
        "kms:GenerateDataKey",
        "kms:Decrypt",
    }


@pytest.mark.parametrize("stack", list(HOSTS))
def test_the_vpc_reaches_s3_through_a_gateway_endpoint_admitting_the_export_bucket_only(
    synth: Synth, stack: str
) -> None:
    bucket_id, _ = export_bucket(synth, stack)
    (endpoint,) = [
        e
        for e in resources(synth, stack, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Gateway"
    ]
    properties = endpoint["Properties"]
    assert properties["RouteTableIds"]
    (statement,) = properties["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == [
        "s3:AbortMultipartUpload",
        "s3:GetObject",
        "s3:ListBucket",
        "s3:PutObject",
    ]
    assert statement["Resource"] == [
        {"Fn::GetAtt": [bucket_id, "Arn"]},
        {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
    ]
    # No NAT: the gateway endpoint is the only way to S3.
    assert not resources(synth, stack, "AWS::EC2::NatGateway")
