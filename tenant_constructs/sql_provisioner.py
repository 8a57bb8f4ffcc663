"""The SQL provisioner: a custom-resource provider whose Lambda runs tenant SQL in the VPC."""

from pathlib import Path

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_iam as iam
import aws_cdk.aws_lambda as lambda_
import aws_cdk.aws_secretsmanager as secretsmanager
import aws_cdk.custom_resources as cr
from constructs import Construct

from lambda_src.provisioner.config import ENV_ADMIN_SECRET_ARN, ENV_SSL_ROOT_CERT

from .bundling import LAMBDA_RUNTIME, LAMBDA_SRC, lambda_src_code
from .lambda_identity import role_with_own_log_group

HANDLER = "lambda_src.provisioner.handler.on_event"


class SqlProvisioner(Construct):
    """A Provider whose onEvent Lambda runs in the database's subnets as the cluster admin.

    The function's security group may reach only the database port and the Secrets Manager
    endpoint; its role may read only the admin secret (plus each tenant secret a
    TenantDatabase grants) and write only its own log group.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        database: ec2.IConnectable,
        admin_secret: secretsmanager.ISecret,
        secrets_endpoint: ec2.IConnectable,
        ca_bundle: str | None = None,
        architecture: lambda_.Architecture = lambda_.Architecture.ARM_64,
    ) -> None:
        """`ca_bundle`: path of a PEM CA bundle inside lambda_src (e.g. the RDS global bundle
        saved as lambda_src/certs/rds-global-bundle.pem) for TLS verify-full; without it the
        provisioner uses sslmode=require (encrypted, server not verified) and synth warns."""
        super().__init__(scope, id_)
        environment = {ENV_ADMIN_SECRET_ARN: admin_secret.secret_arn}
        if ca_bundle is not None:
            bundle_path = (LAMBDA_SRC / ca_bundle).resolve()
            if LAMBDA_SRC not in bundle_path.parents or not bundle_path.is_file():
                raise ValueError(
                    f"SqlProvisioner ca_bundle {ca_bundle!r}: must name a file inside {LAMBDA_SRC}"
                )
            environment[ENV_SSL_ROOT_CERT] = str(Path(ca_bundle))
        else:
            cdk.Annotations.of(self).add_warning_v2(
                "tenantkit:tls-unverified",
                "No CA bundle: the provisioner connects with sslmode=require (encrypted, but "
                "the server certificate is not verified). Put the RDS CA bundle under "
                "lambda_src/ and pass ca_bundle for verify-full.",
            )

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description="tenantkit SQL provisioner: egress to the database and Secrets Manager",
        )
        role, log_group = role_with_own_log_group(self, "", description="tenantkit SQL provisioner")
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
        role.attach_inline_policy(eni_policy)
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
            description="tenantkit SQL provisioner (custom resource onEvent)",
            runtime=LAMBDA_RUNTIME,
            architecture=architecture,
            handler=HANDLER,
            code=lambda_src_code(architecture),
            role=role,
            log_group=log_group,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            timeout=cdk.Duration.minutes(5),
            memory_size=256,
            environment=environment,
        )
        self.function.node.add_dependency(eni_policy)
        database.connections.allow_default_port_from(
            self.security_group, "tenantkit SQL provisioner"
        )
        secrets_endpoint.connections.allow_default_port_from(
            self.security_group, "tenantkit SQL provisioner"
        )
        admin_secret.grant_read(self.function)

        provider_role, provider_logs = role_with_own_log_group(
            self, "Provider", description="tenantkit SQL provisioner: custom-resource framework"
        )
        self.provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=self.function,
            log_group=provider_logs,
            framework_on_event_role=provider_role,
        )
        cdk.Validations.of(provider_role).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{self._logical_id(self.function)}.Arn>:*]",
                reason="The Provider framework may invoke the onEvent function and its "
                "versions (ARN:*) of that one function only",
            )
        )
        self.service_token = self.provider.service_token

    @staticmethod
    def _logical_id(function: lambda_.Function) -> str:
        cfn = function.node.default_child
        assert isinstance(cfn, cdk.CfnElement)
        return cdk.Stack.of(function).resolve(cfn.logical_id)  # type: ignore[no-any-return]

    def grant_read_secret(self, secret: secretsmanager.ISecret) -> None:
        """Let the provisioner read a tenant's secret (to set the login's password)."""
        secret.grant_read(self.function)
