"""The pool's RDS Proxy (`pool.proxy` in the catalog): TLS, IAM auth following the pool's, the
runtime login's secret, its network, the compute's `rds-db:connect` on the proxy's `prx-` id,
and the sample functions that connect through it; none unless the catalog asks."""

import json
import subprocess
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from app import build_app
from lambda_src.tenancy import POOL
from tenantkit.catalog import parse_catalog

from .conftest import CFN_LINT, FIXTURE_CATALOG, POOL_STACK, Synth, cdk_context


def synth_pool(pool: dict[str, Any], outdir: Path) -> tuple[dict[str, Any], Path]:
    """The pool stack of a one-tenant catalog with `pool` settings and the sample functions,
    through the app's gate (the four nag packs and CDK's template validation raise on any
    finding); its template and the assembly directory."""
    catalog = parse_catalog(
        {
            "tenants": [{"id": "tailspin", "tier": "pool"}],
            "pool": pool,
            "auth": {"issuer": "https://i.example/", "audience": "a", "jwks_file": "jwks.json"},
        },
        str(FIXTURE_CATALOG),
    )
    app = build_app(cdk.App(context=cdk_context(), outdir=str(outdir)), catalog, samples=True)
    assembly = app.synth()
    return assembly.get_stack_by_name(POOL_STACK).template, outdir


@pytest.fixture(scope="module")
def with_iam(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """pool.proxy with the defaults; the pool's IAM login on (the default)."""
    return synth_pool({"proxy": True}, tmp_path_factory.mktemp("proxy"))


@pytest.fixture(scope="module")
def without_iam(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """pool.proxy with settings of its own; the pool without its IAM login."""
    return synth_pool(
        {
            "iam_auth": False,
            "proxy": {"idle_client_timeout_s": 300, "max_connections_percent": 50},
        },
        tmp_path_factory.mktemp("proxy"),
    )


def only(template: dict[str, Any], type_: str, prefix: str = "") -> tuple[str, dict[str, Any]]:
    found = [
        (k, v)
        for k, v in template["Resources"].items()
        if v["Type"] == type_ and k.startswith(prefix)
    ]
    assert len(found) == 1, (type_, prefix, [k for k, _ in found])
    return found[0]


def group_id(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "GroupId"]}


def runtime_secret_attachment(template: dict[str, Any]) -> str:
    """The logical id of the runtime login's secret as attached to the cluster."""
    resources: dict[str, Any] = template["Resources"]
    secret = next(
        k
        for k, v in resources.items()
        if v["Type"] == "AWS::SecretsManager::Secret"
        and v["Properties"].get("Name") == POOL.secret_name
    )
    return next(
        k
        for k, v in resources.items()
        if v["Type"] == "AWS::SecretsManager::SecretTargetAttachment"
        and v["Properties"]["SecretId"] == {"Ref": secret}
    )


def proxy_db_user_arn(template: dict[str, Any], user: str) -> dict[str, Any]:
    proxy, _ = only(template, "AWS::RDS::DBProxy")
    prx_id = {"Fn::Select": [6, {"Fn::Split": [":", {"Fn::GetAtt": [proxy, "DBProxyArn"]}]}]}
    return {
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
                prx_id,
                f"/{user}",
            ],
        ]
    }


def allowed(template: dict[str, Any], policy_prefix: str, action: str) -> list[Any]:
    """Every resource the policy (by logical-id prefix) allows `action` on."""
    _, policy = only(template, "AWS::IAM::Policy", policy_prefix)
    resources: list[Any] = []
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        actions = statement["Action"]
        if action in ([actions] if isinstance(actions, str) else actions):
            found = statement["Resource"]
            resources += found if isinstance(found, list) else [found]
    return resources


def sample_environment(template: dict[str, Any], pattern: str) -> dict[str, Any]:
    _, function = only(template, "AWS::Lambda::Function", f"Samples{pattern.replace('-', '')}")
    variables: dict[str, Any] = function["Properties"]["Environment"]["Variables"]
    return variables


# -- none by default -------------------------------------------------------------------------


def test_by_default_the_pool_has_no_proxy_and_compute_connects_to_the_cluster(
    synth: Synth,
) -> None:
    template = synth.raw(POOL_STACK)
    types = {v["Type"] for v in template["Resources"].values()}
    assert not types & {"AWS::RDS::DBProxy", "AWS::RDS::DBProxyTargetGroup"}
    cluster, _ = only(template, "AWS::RDS::DBCluster")
    for pattern in ("pool-iam", "pool-secret"):
        environment = sample_environment(template, pattern)
        assert environment["TENANTKIT_DB_HOST"] == {"Fn::GetAtt": [cluster, "Endpoint.Address"]}
        assert "TENANTKIT_DB_PROXY" not in environment
    assert allowed(template, "SharedComputeRoleDefaultPolicy", "rds-db:connect") == [
        {
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
                    f"/{POOL.iam_user}",
                ],
            ]
        }
    ]


# -- the proxy ---------------------------------------------------------------------------------


def test_the_proxy_requires_tls_and_iam_auth_and_logs_in_with_the_runtime_secret(
    with_iam: tuple[dict[str, Any], Path],
) -> None:
    template, _ = with_iam
    role, _ = only(template, "AWS::IAM::Role", "ProxyRole")
    group, _ = only(template, "AWS::EC2::SecurityGroup", "ProxySecurityGroup")
    Template.from_json(template).has_resource_properties(
        "AWS::RDS::DBProxy",
        {
            "DBProxyName": "tenantkit-pool",
            "EngineFamily": "POSTGRESQL",
            "RequireTLS": True,
            "DebugLogging": False,
            "IdleClientTimeout": 1800,
            "RoleArn": {"Fn::GetAtt": [role, "Arn"]},
            "VpcSecurityGroupIds": [group_id(group)],
            "Auth": [
                {
                    "AuthScheme": "SECRETS",
                    "IAMAuth": "REQUIRED",
                    "ClientPasswordAuthType": "POSTGRES_SCRAM_SHA_256",
                    "SecretArn": {"Ref": runtime_secret_attachment(template)},
                }
            ],
        },
    )


def test_without_the_pools_iam_login_the_proxy_takes_the_runtime_password_by_scram(
    without_iam: tuple[dict[str, Any], Path],
) -> None:
    template, _ = without_iam
    Template.from_json(template).has_resource_properties(
        "AWS::RDS::DBProxy",
        {
            "RequireTLS": True,
            "IdleClientTimeout": 300,
            "Auth": [
                {
                    "AuthScheme": "SECRETS",
                    "IAMAuth": "DISABLED",
                    "ClientPasswordAuthType": "POSTGRES_SCRAM_SHA_256",
                    "SecretArn": {"Ref": runtime_secret_attachment(template)},
                }
            ],
        },
    )


@pytest.mark.parametrize(("settings", "percent"), [("with_iam", 90), ("without_iam", 50)])
def test_the_proxy_targets_the_pool_cluster_within_its_share_of_connections(
    settings: str, percent: int, request: pytest.FixtureRequest
) -> None:
    template, _ = request.getfixturevalue(settings)
    proxy, _ = only(template, "AWS::RDS::DBProxy")
    cluster, _ = only(template, "AWS::RDS::DBCluster")
    _, target_group = only(template, "AWS::RDS::DBProxyTargetGroup")
    assert target_group["Properties"] == {
        "DBProxyName": {"Ref": proxy},
        "TargetGroupName": "default",
        "DBClusterIdentifiers": [{"Ref": cluster}],
        "ConnectionPoolConfigurationInfo": {"MaxConnectionsPercent": percent},
    }
    # registered once the cluster's instances exist
    assert cluster in target_group["DependsOn"]


def test_the_proxy_is_in_the_data_subnets_reachable_only_from_the_shared_compute(
    with_iam: tuple[dict[str, Any], Path],
) -> None:
    template, _ = with_iam
    resources = template["Resources"]
    _, proxy = only(template, "AWS::RDS::DBProxy")
    data_subnets = sorted(
        k
        for k, v in resources.items()
        if v["Type"] == "AWS::EC2::Subnet"
        and {"Key": "aws-cdk:subnet-name", "Value": "data"} in v["Properties"]["Tags"]
    )
    assert len(data_subnets) == 2  # RDS Proxy needs two Availability Zones
    assert sorted(s["Ref"] for s in proxy["Properties"]["VpcSubnetIds"]) == data_subnets
    group, _ = only(template, "AWS::EC2::SecurityGroup", "ProxySecurityGroup")
    compute, _ = only(template, "AWS::EC2::SecurityGroup", "SharedComputeSecurityGroup")
    cluster_group, _ = only(template, "AWS::EC2::SecurityGroup", "HostDatabaseClusterSecurity")
    cluster, _ = only(template, "AWS::RDS::DBCluster")
    cluster_port = {"Fn::GetAtt": [cluster, "Endpoint.Port"]}

    def rules(type_: str, peer: str) -> list[tuple[str, Any, Any, Any]]:
        """(group, peer group, from port, to port) of every rule with the proxy on a side."""
        found = []
        for rule in (v["Properties"] for v in resources.values() if v["Type"] == type_):
            if group_id(group) in (rule["GroupId"], rule.get(peer)):
                found.append(
                    (
                        json.dumps(rule["GroupId"]),
                        rule.get(peer),
                        *(rule[p] for p in ("FromPort", "ToPort")),
                    )
                )
        return sorted(found, key=json.dumps)

    # in: the shared compute only, on the proxy's port; the cluster admits the proxy
    assert rules("AWS::EC2::SecurityGroupIngress", "SourceSecurityGroupId") == sorted(
        [
            (json.dumps(group_id(group)), group_id(compute), 5432, 5432),
            (json.dumps(group_id(cluster_group)), group_id(group), cluster_port, cluster_port),
        ],
        key=json.dumps,
    )
    # out: the cluster only (and the compute's own rule towards the proxy)
    assert rules("AWS::EC2::SecurityGroupEgress", "DestinationSecurityGroupId") == sorted(
        [
            (json.dumps(group_id(compute)), group_id(group), 5432, 5432),
            (json.dumps(group_id(group)), group_id(cluster_group), cluster_port, cluster_port),
        ],
        key=json.dumps,
    )
    # no inline rule (no address range either way)
    properties = resources[group]["Properties"]
    assert "SecurityGroupIngress" not in properties
    assert "SecurityGroupEgress" not in properties


def test_the_proxys_role_reads_only_the_runtime_secret_and_decrypts_only_through_it(
    with_iam: tuple[dict[str, Any], Path],
) -> None:
    template, _ = with_iam
    _, role = only(template, "AWS::IAM::Role", "ProxyRole")
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "rds.amazonaws.com"},
        }
    ]
    _, policy = only(template, "AWS::IAM::Policy", "ProxyRoleDefaultPolicy")
    key, _ = only(template, "AWS::KMS::Key")
    secret = {"Ref": runtime_secret_attachment(template)}
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(statements, key=json.dumps) == sorted(
        [
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
                "Resource": secret,
            },
            {
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": {"Fn::GetAtt": [key, "Arn"]},
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": {
                            "Fn::Join": [
                                "",
                                ["secretsmanager.", {"Ref": "AWS::Region"}, ".amazonaws.com"],
                            ]
                        }
                    },
                    "StringLike": {"kms:EncryptionContext:SecretARN": secret},
                },
            },
        ],
        key=json.dumps,
    )


# -- compute through it ----------------------------------------------------------------------


def test_with_iam_auth_the_shared_compute_may_connect_to_the_proxy_as_the_runtime_login(
    with_iam: tuple[dict[str, Any], Path],
) -> None:
    # IAM auth through RDS Proxy names the proxy's resource id (prx-...) in the dbuser ARN,
    # and a user of the proxy's secrets: the runtime login, not the rds_iam user
    template, _ = with_iam
    connect = allowed(template, "SharedComputeRoleDefaultPolicy", "rds-db:connect")
    assert proxy_db_user_arn(template, POOL.login_role) in connect
    assert proxy_db_user_arn(template, POOL.iam_user) not in connect
    assert len(connect) == 2  # and the cluster's IAM user, for a direct connection


def test_without_iam_auth_no_role_may_connect_to_the_proxy_with_iam(
    without_iam: tuple[dict[str, Any], Path],
) -> None:
    template, _ = without_iam
    policies = [v for v in template["Resources"].values() if v["Type"] == "AWS::IAM::Policy"]
    # no policy names the proxy (its prx- id is taken from its ARN)
    assert "DBProxyArn" not in json.dumps(policies)


@pytest.mark.parametrize(
    ("settings", "through", "direct"),
    [("with_iam", "pool-iam", "pool-secret"), ("without_iam", "pool-secret", "pool-iam")],
)
def test_the_pattern_the_proxy_admits_connects_through_it_and_the_other_to_the_cluster(
    settings: str, through: str, direct: str, request: pytest.FixtureRequest
) -> None:
    # IAM auth required refuses a password, and disabled refuses a token
    template, _ = request.getfixturevalue(settings)
    proxy, _ = only(template, "AWS::RDS::DBProxy")
    cluster, _ = only(template, "AWS::RDS::DBCluster")
    proxied = sample_environment(template, through)
    assert proxied["TENANTKIT_DB_HOST"] == {"Fn::GetAtt": [proxy, "Endpoint"]}
    assert proxied["TENANTKIT_DB_PORT"] == "5432"
    assert proxied["TENANTKIT_DB_PROXY"] == "true"
    # verify-full against the shipped bundle, which holds the proxy's Amazon Trust Services roots
    assert proxied["TENANTKIT_SSL_ROOT_CERT"] == "certs/rds-ca-bundle.pem"
    other = sample_environment(template, direct)
    assert other["TENANTKIT_DB_HOST"] == {"Fn::GetAtt": [cluster, "Endpoint.Address"]}
    assert "TENANTKIT_DB_PROXY" not in other


def test_the_proxys_endpoint_is_a_stack_output(with_iam: tuple[dict[str, Any], Path]) -> None:
    template, _ = with_iam
    proxy, _ = only(template, "AWS::RDS::DBProxy")
    outputs = [o for k, o in template["Outputs"].items() if k.startswith("ProxyEndpoint")]
    assert [o["Value"] for o in outputs] == [{"Fn::GetAtt": [proxy, "Endpoint"]}]
    assert "Export" not in outputs[0]  # no CloudFormation export to pin the stack


# -- the gates -------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", ["with_iam", "without_iam"])
def test_the_nag_packs_and_cdks_validation_find_nothing(
    settings: str, request: pytest.FixtureRequest
) -> None:
    # the fixture's synth raised on any finding; the report agrees
    _, outdir = request.getfixturevalue(settings)
    report = json.loads((outdir / "validation-report.json").read_text())
    assert [v for plugin in report["pluginReports"] for v in plugin["violations"]] == []


@pytest.mark.slow
@pytest.mark.parametrize("settings", ["with_iam", "without_iam"])
def test_cfn_lint_finds_no_errors_in_the_pool_template_with_a_proxy(
    settings: str, request: pytest.FixtureRequest
) -> None:
    _, outdir = request.getfixturevalue(settings)
    template = outdir / f"{POOL_STACK}.template.json"
    result = subprocess.run(
        [*CFN_LINT, str(template)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr
