"""Security properties of the synthesized templates: encryption, retention, network, IAM."""

import json
from typing import Any

from aws_cdk.assertions import Capture, Match, Template

from lambda_src.tenancy import tenant_names
from tenant_constructs.host_reference import HOST_INTERFACE_VERSION

from .conftest import BRIDGE, BRIDGE_CONTOSO, BRIDGE_FABRIKAM, POOL_STACK, SILO, SILO_RDS, Synth


def resources(synth: Synth, stack: str, type_: str) -> dict[str, Any]:
    return {k: v for k, v in synth.raw(stack)["Resources"].items() if v["Type"] == type_}


def test_cluster_is_encrypted_iam_enabled_protected_and_snapshotted_on_delete(
    synth: Synth,
) -> None:
    for stack in (BRIDGE, SILO):
        template = synth.template(stack)
        template.has_resource(
            "AWS::RDS::DBCluster",
            {
                "Properties": Match.object_like(
                    {
                        "Engine": "aurora-postgresql",
                        "StorageEncrypted": True,
                        "KmsKeyId": Match.object_like({"Fn::GetAtt": Match.any_value()}),
                        "EnableIAMDatabaseAuthentication": True,
                        "DeletionProtection": True,
                        "BackupRetentionPeriod": 14,
                        "EnableCloudwatchLogsExports": ["postgresql"],
                        "ServerlessV2ScalingConfiguration": Match.any_value(),
                    }
                ),
                "DeletionPolicy": "Snapshot",
                "UpdateReplacePolicy": "Snapshot",
            },
        )
        template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


HOST_STACKS = (BRIDGE, POOL_STACK, SILO, SILO_RDS)


def only_key(synth: Synth, stack: str) -> str:
    keys = list(resources(synth, stack, "AWS::KMS::Key"))
    assert len(keys) == 1, (stack, keys)
    return keys[0]


def test_every_secret_of_a_host_is_encrypted_with_the_hosts_own_key(synth: Synth) -> None:
    for stack in HOST_STACKS:
        key = only_key(synth, stack)
        secrets = resources(synth, stack, "AWS::SecretsManager::Secret")
        assert secrets
        for secret in secrets.values():
            assert secret["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}, stack


def test_a_bridge_tenant_secret_uses_the_cluster_key_by_its_fixed_alias(synth: Synth) -> None:
    # The tenant stack imports nothing from the cluster stack: the alias is a fixed name.
    synth.template(BRIDGE).has_resource_properties(
        "AWS::KMS::Alias",
        {
            "AliasName": "alias/tenantkit-bridge",
            "TargetKeyId": {"Fn::GetAtt": [only_key(synth, BRIDGE), "Arn"]},
        },
    )
    for stack in (BRIDGE_CONTOSO, BRIDGE_FABRIKAM):
        (secret,) = resources(synth, stack, "AWS::SecretsManager::Secret").values()
        key_id = secret["Properties"]["KmsKeyId"]["Fn::Join"][1]
        assert key_id[-1] == ":alias/tenantkit-bridge", key_id
        assert key_id[2] == ":kms:"


def test_every_log_group_is_encrypted_named_for_its_host_and_kept_a_year(synth: Synth) -> None:
    for stack in HOST_STACKS:
        key = only_key(synth, stack)
        kind = "instance" if stack == SILO_RDS else "cluster"
        groups = resources(synth, stack, "AWS::Logs::LogGroup")
        assert len(groups) >= 6
        for group in groups.values():
            props = group["Properties"]
            assert props["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
            assert props["RetentionInDays"] == 365
            assert group["DeletionPolicy"] == "Retain"
            assert props["LogGroupName"].startswith(
                (f"/tenantkit/{stack}/", f"/aws/rds/{kind}/{stack}/")
            ), props["LogGroupName"]


def test_cloudwatch_logs_may_use_the_key_for_the_hosts_log_groups_only(synth: Synth) -> None:
    for stack in HOST_STACKS:
        kind = "instance" if stack == SILO_RDS else "cluster"
        policy = resources(synth, stack, "AWS::KMS::Key")[only_key(synth, stack)]
        statements = policy["Properties"]["KeyPolicy"]["Statement"]
        logs = [s for s in statements if "logs." in json.dumps(s.get("Principal", {}))]
        assert len(logs) == 1, stack
        condition = logs[0]["Condition"]
        assert list(condition) == ["ArnLike"]
        arns = condition["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
        assert [arn["Fn::Join"][1][-1] for arn in arns] == [
            f":log-group:/tenantkit/{stack}/*",
            f":log-group:/aws/rds/{kind}/{stack}/*",
        ]


def test_master_password_is_a_dynamic_reference_never_a_literal(synth: Synth) -> None:
    cluster = next(iter(resources(synth, BRIDGE, "AWS::RDS::DBCluster").values()))
    password = json.dumps(cluster["Properties"]["MasterUserPassword"])
    assert "{{resolve:secretsmanager:" in password


def test_tls_is_forced_by_the_cluster_parameter_group(synth: Synth) -> None:
    synth.template(BRIDGE).has_resource_properties(
        "AWS::RDS::DBClusterParameterGroup",
        {"Parameters": Match.object_like({"rds.force_ssl": "1"})},
    )


def test_every_tenantkit_function_verifies_the_database_against_the_shipped_rds_bundle(
    synth: Synth,
) -> None:
    # provisioner, rotator and the sample functions (runtime library) of every stack
    functions = [
        (stack.stack_name, function["Properties"])
        for stack in synth.assembly.stacks
        for function in resources(synth, stack.stack_name, "AWS::Lambda::Function").values()
        if str(function["Properties"].get("Handler", "")).startswith("lambda_src.")
    ]
    handlers = {properties["Handler"] for _, properties in functions}
    assert {
        "lambda_src.provisioner.handler.on_event",
        "lambda_src.rotation.handler.on_event",
        "lambda_src.samples.handler.handler",
    } <= handlers
    for stack_name, properties in functions:
        variables = properties.get("Environment", {}).get("Variables", {})
        assert variables.get("TENANTKIT_SSL_ROOT_CERT") == "certs/rds-ca-bundle.pem", (
            stack_name,
            properties["Handler"],
        )


def test_database_instances_are_private(synth: Synth) -> None:
    for instance in resources(synth, BRIDGE, "AWS::RDS::DBInstance").values():
        assert instance["Properties"].get("PubliclyAccessible") is False


def test_network_has_no_route_to_the_internet_and_logs_flows(synth: Synth) -> None:
    for stack in (BRIDGE, SILO):
        template = synth.template(stack)
        template.resource_count_is("AWS::EC2::InternetGateway", 0)
        template.resource_count_is("AWS::EC2::NatGateway", 0)
        template.has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "ALL"})
        endpoints = resources(synth, stack, "AWS::EC2::VPCEndpoint").values()
        interfaces = [e for e in endpoints if e["Properties"]["VpcEndpointType"] == "Interface"]
        assert all(e["Properties"]["PrivateDnsEnabled"] for e in interfaces)
        assert ".secretsmanager" in json.dumps([e["Properties"]["ServiceName"] for e in interfaces])
        # the one gateway endpoint: S3, for the export bucket (test_mobility_templates)
        (gateway,) = [e for e in endpoints if e["Properties"]["VpcEndpointType"] == "Gateway"]
        assert ".s3" in json.dumps(gateway["Properties"]["ServiceName"])


def test_cluster_admits_only_security_groups_never_address_ranges(synth: Synth) -> None:
    ingress = resources(synth, BRIDGE, "AWS::EC2::SecurityGroupIngress")
    assert ingress
    for rule in ingress.values():
        props = rule["Properties"]
        assert "SourceSecurityGroupId" in props, props
        assert "CidrIp" not in props
        assert "CidrIpv6" not in props
    for group in resources(synth, BRIDGE, "AWS::EC2::SecurityGroup").values():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0", rule


def test_provisioner_egress_is_limited_to_the_database_and_secrets_manager(synth: Synth) -> None:
    groups = resources(synth, BRIDGE, "AWS::EC2::SecurityGroup")
    provisioner_sg = next(
        k for k, v in groups.items() if "SQL provisioner" in v["Properties"]["GroupDescription"]
    )
    # No allow-all egress rule on the group itself...
    egress_inline = groups[provisioner_sg]["Properties"].get("SecurityGroupEgress", [])
    assert all(rule.get("CidrIp") != "0.0.0.0/0" for rule in egress_inline)
    # ...only the two egress rules to other security groups.
    egress = [
        r["Properties"]
        for r in resources(synth, BRIDGE, "AWS::EC2::SecurityGroupEgress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [provisioner_sg, "GroupId"]}
    ]
    assert len(egress) == 2
    assert all("DestinationSecurityGroupId" in rule for rule in egress)


def test_provisioner_lambda_runs_in_the_vpc_on_the_latest_python(synth: Synth) -> None:
    synth.template(BRIDGE).has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "lambda_src.provisioner.handler.on_event",
            "Runtime": "python3.14",
            "Architectures": ["arm64"],
            "VpcConfig": Match.object_like({"SubnetIds": Match.any_value()}),
            "Environment": {
                "Variables": {"TENANTKIT_ADMIN_SECRET_ARN": {"Ref": Match.any_value()}}
            },
        },
    )


def _statements(synth: Synth, stack: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in resources(synth, stack, "AWS::IAM::Policy").values():
        statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def test_host_functions_reach_only_secrets_tagged_for_their_host(synth: Synth) -> None:
    for stack in (BRIDGE, SILO, POOL_STACK):
        secret_statements = [
            s
            for s in _statements(synth, stack)
            if any(str(a).startswith("secretsmanager:") for a in _list(s["Action"]))
        ]
        assert secret_statements
        for statement in secret_statements:
            actions = set(_list(statement["Action"]))
            if actions == {"secretsmanager:GetRandomPassword"}:
                continue  # acts on no resource
            assert actions <= {
                "secretsmanager:GetSecretValue",
                "secretsmanager:DescribeSecret",
                "secretsmanager:PutSecretValue",
                "secretsmanager:UpdateSecretVersionStage",
            }
            for resource in _list(statement["Resource"]):
                assert resource != "*"
            if "Condition" in statement:  # ABAC: any tenantkit secret tagged for this host
                tags = statement["Condition"]["StringEquals"]
                assert tags["secretsmanager:ResourceTag/tenantkit-host"] == stack
                assert set(tags) <= {
                    "secretsmanager:ResourceTag/tenantkit-host",
                    "secretsmanager:ResourceTag/tenant",  # the tenant-access role's session tag
                }
                assert ":secret:tenantkit/*" in json.dumps(statement["Resource"])
            else:  # CDK's own grant to the rotator: the admin secret, by reference
                assert all(set(r) == {"Ref"} for r in _list(statement["Resource"]))


def test_no_other_wildcard_permissions(synth: Synth) -> None:
    for stack in (BRIDGE, SILO, POOL_STACK):
        for statement in _statements(synth, stack):
            if "*" in _list(statement["Resource"]):
                actions = _list(statement["Action"])
                assert all(
                    a.startswith("ec2:") or a == "secretsmanager:GetRandomPassword" for a in actions
                ), statement


def test_rotation_uses_the_hosts_own_function_and_secrets_manager_may_invoke_it(
    synth: Synth,
) -> None:
    template = synth.template(BRIDGE)
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": "tenantkit-bridge-rotation",
            "Handler": "lambda_src.rotation.handler.on_event",
            "VpcConfig": Match.any_value(),
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Principal": "secretsmanager.amazonaws.com",
            "Action": "lambda:InvokeFunction",
            "SourceAccount": {"Ref": "AWS::AccountId"},
        },
    )
    template.has_resource_properties(
        "AWS::SecretsManager::RotationSchedule",
        {"RotationRules": {"ScheduleExpression": "rate(30 days)"}},
    )
    assert "Transform" not in synth.raw(BRIDGE)  # no serverless-application rotation stacks


def test_secrets_manager_may_invoke_each_rotator_once_and_only_for_this_account(
    synth: Synth,
) -> None:
    # A second permission without SourceAccount (what add_rotation_schedule adds on its own)
    # would let Secrets Manager invoke the rotator on behalf of any account.
    for stack in (BRIDGE, POOL_STACK, SILO, SILO_RDS):
        rotator = next(
            logical_id
            for logical_id, function in resources(synth, stack, "AWS::Lambda::Function").items()
            if function["Properties"].get("FunctionName") == f"{stack}-rotation"
        )
        permissions = [
            permission["Properties"]
            for permission in resources(synth, stack, "AWS::Lambda::Permission").values()
            if permission["Properties"]["Principal"] == "secretsmanager.amazonaws.com"
        ]
        assert permissions == [
            {
                "Action": "lambda:InvokeFunction",
                "FunctionName": {"Fn::GetAtt": [rotator, "Arn"]},
                "Principal": "secretsmanager.amazonaws.com",
                "SourceAccount": {"Ref": "AWS::AccountId"},
            }
        ], stack


def test_tenant_database_resource_carries_settings_and_a_secret_reference_only(
    synth: Synth,
) -> None:
    secret_ref = Capture()
    synth.template(BRIDGE_CONTOSO).has_resource(
        "Custom::TenantDatabase",
        {
            "Properties": {
                "ServiceToken": {
                    "Fn::Join": ["", Match.array_with([":function:tenantkit-bridge-provisioner"])]
                },
                "Kind": "TenantDatabase",
                "TenantId": "contoso",
                "ConnectionLimit": "40",
                "StatementTimeoutMs": "10000",
                "RemovalPolicy": "retain",
                "IamAuth": "true",
                "PasswordSecretArn": {"Ref": secret_ref},
            },
        },
    )
    attachments = resources(synth, BRIDGE_CONTOSO, "AWS::SecretsManager::SecretTargetAttachment")
    assert secret_ref.as_string() in attachments
    assert [a["Properties"]["TargetId"] for a in attachments.values()] == ["tenantkit-bridge"]


def test_bridge_tenant_stacks_import_nothing_from_the_cluster_stack(synth: Synth) -> None:
    for stack in (BRIDGE_CONTOSO, BRIDGE_FABRIKAM):
        text = json.dumps(synth.raw(stack))
        assert "Fn::ImportValue" not in text
        assert len(synth.raw(stack)["Resources"]) <= 6
    assert "Outputs" not in synth.raw(BRIDGE) or not any(
        "Export" in o for o in synth.raw(BRIDGE)["Outputs"].values()
    )


def test_only_bridge_tenant_stacks_depend_on_a_stack_and_only_on_the_cluster(
    synth: Synth,
) -> None:
    # `cdk deploy --all --concurrency N` (and plain `cdk deploy tenantkit-bridge-<id>`) deploys
    # the cluster before its tenants; no other stack waits for another.
    stacks = {artifact.stack_name: artifact for artifact in synth.assembly.stacks}
    for name, artifact in stacks.items():
        depends_on = {d.id for d in artifact.dependencies} & stacks.keys()
        expected = {BRIDGE} if name in (BRIDGE_CONTOSO, BRIDGE_FABRIKAM) else set()
        assert depends_on == expected, (name, depends_on)


def test_a_bridge_tenant_stack_stops_before_creating_anything_without_its_cluster(
    synth: Synth,
) -> None:
    # A tenant stack deployed alone (`-c tenant=<id>`, --exclusively) finds its cluster by
    # name: CloudFormation resolves this parameter from SSM before it changes anything (a
    # missing one fails naming it) and the rule says what to deploy first.
    parameter = "/tenantkit/tenantkit-bridge/interface-version"
    template = synth.raw(BRIDGE_CONTOSO)
    [(name, version)] = [
        (k, p) for k, p in template["Parameters"].items() if p.get("Default") == parameter
    ]
    assert version["Type"] == "AWS::SSM::Parameter::Value<String>"
    [rule] = [r for r in template["Rules"].values() if json.dumps({"Ref": name}) in json.dumps(r)]
    [assertion] = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Contains": [[HOST_INTERFACE_VERSION], {"Ref": name}]}
    assert "deploy tenantkit-bridge first" in assertion["AssertDescription"]
    assert "npx cdk deploy tenantkit-bridge" in assertion["AssertDescription"]
    # the cluster writes it once what the tenants reach by name is there
    written = resources(synth, BRIDGE, "AWS::SSM::Parameter")
    [resource] = [r for r in written.values() if r["Properties"]["Name"] == parameter]
    assert resource["Properties"]["Value"] == HOST_INTERFACE_VERSION
    cluster = synth.template(BRIDGE)
    for kind in ("AWS::RDS::DBCluster", "AWS::KMS::Alias", "AWS::Lambda::Function"):
        assert set(cluster.find_resources(kind)) & set(resource["DependsOn"]), kind


def test_tenant_secrets_are_generated_tagged_and_retained_unless_destroy(synth: Synth) -> None:
    def secret_of(stack: str) -> dict[str, Any]:
        return next(iter(resources(synth, stack, "AWS::SecretsManager::Secret").values()))

    contoso, fabrikam = secret_of(BRIDGE_CONTOSO), secret_of(BRIDGE_FABRIKAM)
    assert contoso["DeletionPolicy"] == "Retain"
    assert fabrikam["DeletionPolicy"] == "Delete"
    for secret, tenant in ((contoso, "contoso"), (fabrikam, "fabrikam")):
        props = secret["Properties"]
        assert props["Name"] == tenant_names(tenant).secret_name
        assert "SecretString" not in props
        assert props["GenerateSecretString"]["GenerateStringKey"] == "password"
        template = json.loads(props["GenerateSecretString"]["SecretStringTemplate"])
        assert template["username"] == tenant_names(tenant).login_role
        assert {"Key": "tenant", "Value": tenant} in props["Tags"]
        assert {"Key": "tenantkit-host", "Value": "tenantkit-bridge"} in props["Tags"]


def test_every_secret_rotates(synth: Synth) -> None:
    for stack in (BRIDGE, BRIDGE_CONTOSO, BRIDGE_FABRIKAM, SILO, POOL_STACK):
        secrets = resources(synth, stack, "AWS::SecretsManager::Secret")
        schedules = resources(synth, stack, "AWS::SecretsManager::RotationSchedule")
        assert len(schedules) == len(secrets) >= 1, stack
        for schedule in schedules.values():
            assert schedule["Properties"]["RotationRules"] == {
                "ScheduleExpression": "rate(30 days)"
            }


def test_destroy_and_iam_settings_reach_the_custom_resource(synth: Synth) -> None:
    synth.template(BRIDGE_FABRIKAM).has_resource_properties(
        "Custom::TenantDatabase",
        {"TenantId": "fabrikam", "RemovalPolicy": "destroy", "IamAuth": "false"},
    )


def test_silo_tenant_has_its_own_stack_vpc_cluster_and_tenant_tag(synth: Synth) -> None:
    template: Template = synth.template(SILO)
    template.resource_count_is("AWS::EC2::VPC", 1)
    template.resource_count_is("AWS::RDS::DBCluster", 1)
    template.has_resource_properties(
        "Custom::TenantDatabase", {"TenantId": "northwind", "ConnectionLimit": "100"}
    )
    template.has_resource_properties(
        "AWS::RDS::DBCluster",
        {"Tags": Match.array_with([{"Key": "tenant", "Value": "northwind"}])},
    )


def test_pool_tenants_get_no_database_resources(synth: Synth) -> None:
    for stack in (BRIDGE_CONTOSO, BRIDGE_FABRIKAM, SILO, POOL_STACK):
        for resource in resources(synth, stack, "Custom::TenantDatabase").values():
            assert resource["Properties"]["TenantId"] != "tailspin"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
