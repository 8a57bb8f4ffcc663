"""The sample tenant functions: one per access pattern, deployed by the tier stacks on request."""

from collections.abc import Mapping

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_iam as iam
import aws_cdk.aws_lambda as lambda_
from constructs import Construct

from lambda_src.core import environment as env_names

from .acknowledgements import acknowledge, acknowledge_inline_policy, acknowledge_synchronous
from .bundling import LAMBDA_RUNTIME, lambda_src_code
from .host_key import HostLogs

HANDLER = "lambda_src.samples.handler.handler"


def auth_environment(jwks_json: str, issuer: str, audience: str, claim: str) -> dict[str, str]:
    """How a sample function verifies its callers' tokens."""
    return {
        env_names.JWKS: jwks_json,
        env_names.JWT_ISSUER: issuer,
        env_names.JWT_AUDIENCE: audience,
        env_names.TENANT_CLAIM: claim,
    }


class SampleFunctions(Construct):
    """Sample functions sharing one compute role and security group (the role the access
    pattern prescribes), each with its own log group (the host's `sample-<pattern>`)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        patterns: Mapping[str, Mapping[str, str]],
        role: iam.Role,
        security_group: ec2.ISecurityGroup,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        environment: Mapping[str, str],
        host_logs: HostLogs,
        architecture: lambda_.Architecture = lambda_.Architecture.ARM_64,
    ) -> None:
        """`patterns`: access pattern -> the environment that pattern needs."""
        super().__init__(scope, id_)
        network = iam.Policy(
            self,
            "NetworkInterfaces",
            statements=[
                iam.PolicyStatement(
                    actions=[
                        "ec2:CreateNetworkInterface",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSubnets",
                        "ec2:DeleteNetworkInterface",
                        "ec2:AssignPrivateIpAddresses",
                        "ec2:UnassignPrivateIpAddresses",
                    ],
                    resources=["*"],
                )
            ],
        )
        role.attach_inline_policy(network)
        acknowledge_inline_policy(network)
        cdk.Validations.of(network).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="EC2 network-interface actions a VPC Lambda needs have no resource-level "
                "permissions (AWS Service Authorization Reference)",
            )
        )
        self.functions: dict[str, lambda_.Function] = {}
        for pattern, pattern_environment in patterns.items():
            log_group = host_logs.group(self, f"{pattern}-logs", purpose=f"sample-{pattern}")
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[log_group.log_group_arn],
                )
            )
            function = lambda_.Function(
                self,
                pattern,
                description=f"tenantkit sample: reads its tenant's rows ({pattern})",
                runtime=LAMBDA_RUNTIME,
                architecture=architecture,
                handler=HANDLER,
                code=lambda_src_code(architecture),
                role=role,
                log_group=log_group,
                vpc=vpc,
                vpc_subnets=subnets,
                security_groups=[security_group],
                timeout=cdk.Duration.seconds(30),
                memory_size=256,
                environment={env_names.PATTERN: pattern, **environment, **pattern_environment},
            )
            function.node.add_dependency(network)
            acknowledge_synchronous(function, "the application that calls it")
            acknowledge(
                function,
                "LambdaConcurrency",
                "A sample of the application's own function, whose concurrency is the "
                "application's to set; each tenant's database caps its connections anyway",
            )
            self.functions[pattern] = function
