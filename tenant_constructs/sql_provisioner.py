"""The SQL provisioner: a custom-resource provider whose Lambda runs tenant SQL in the VPC."""

from pathlib import Path

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_iam as iam
import aws_cdk.aws_kms as kms
import aws_cdk.aws_lambda as lambda_
import aws_cdk.aws_secretsmanager as secretsmanager
import aws_cdk.custom_resources as cr
from constructs import Construct

from lambda_src.core.environment import ADMIN_SECRET_ARN, MIGRATIONS_DIR
from lambda_src.tenancy import HostNames

from .acknowledgements import BOUNDED_BY_CALLERS, acknowledge, acknowledge_inline_policy
from .bundling import MIGRATIONS_ASSET_DIR
from .database_function import DatabaseFunction, host_secrets_arn, host_tag_condition
from .databases import HostDatabase
from .host_key import HostLogs, read_secrets_with_key
from .lambda_identity import role_with_own_log_group

HANDLER = "lambda_src.provisioner.handler.on_event"


class SqlProvisioner(Construct):
    """A Provider whose onEvent Lambda runs in the database's subnets as the cluster admin.

    Its framework function has a fixed name (HostNames.provisioner_function), so stacks
    deployed apart from this one use it as their service token without exports. The onEvent
    function may read only secrets tagged for this host (the admin's and its tenants'), and
    decrypt them with the host key through Secrets Manager.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        names: HostNames,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        database: HostDatabase,
        admin_secret: secretsmanager.ISecret,
        secrets_endpoint: ec2.IConnectable,
        tls_environment: dict[str, str],
        key: kms.IKey,
        host_logs: HostLogs,
        architecture: lambda_.Architecture = lambda_.Architecture.ARM_64,
        migrations: Path | None = None,
    ) -> None:
        """`migrations`: the application's migrations directory; the function carries it and
        brings every tenant database it creates or updates to the latest version."""
        super().__init__(scope, id_)
        environment = {ADMIN_SECRET_ARN: admin_secret.secret_arn, **tls_environment}
        if migrations is not None:
            environment[MIGRATIONS_DIR] = MIGRATIONS_ASSET_DIR
        self.handler = DatabaseFunction(
            self,
            "OnEvent",
            handler=HANDLER,
            description="tenantkit SQL provisioner",
            function_name=None,
            vpc=vpc,
            subnets=subnets,
            database=database,
            secrets_endpoint=secrets_endpoint,
            environment=environment,
            timeout=cdk.Duration.minutes(5),
            host_logs=host_logs,
            log_purpose="provisioner",
            invoked_by="the custom-resource framework (which reports it to CloudFormation)",
            architecture=architecture,
            migrations=migrations,
        )
        self.function = self.handler.function
        read_secrets = iam.Policy(
            self,
            "ReadHostSecrets",
            statements=[
                iam.PolicyStatement(
                    actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                    resources=[host_secrets_arn(self)],
                    conditions=host_tag_condition(names.host),
                ),
                read_secrets_with_key(self, key.key_arn),
            ],
        )
        self.handler.role.attach_inline_policy(read_secrets)
        acknowledge_inline_policy(read_secrets)
        cdk.Validations.of(read_secrets).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:"
                "<AWS::Region>:<AWS::AccountId>:secret:tenantkit/*]",
                reason="Tenant secrets are created later by tenant stacks; the statement is "
                f"limited to secrets tagged {names.host} by an ABAC resource-tag condition",
            )
        )

        provider_role, provider_logs = role_with_own_log_group(
            self,
            "Provider",
            description="tenantkit SQL provisioner: custom-resource framework",
            host_logs=host_logs,
            purpose="provisioner-framework",
        )
        self.provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=self.function,
            log_group=provider_logs,
            framework_on_event_role=provider_role,
            provider_function_name=names.provisioner_function,
        )
        cdk.Validations.of(provider_role).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{self.handler.logical_id()}.Arn>:*]",
                reason="The Provider framework may invoke the onEvent function and its "
                "versions (ARN:*) of that one function only",
            )
        )
        framework = self.provider.node.find_child("framework-onEvent")
        acknowledge(
            framework,
            "LambdaInsideVPC",
            "The custom-resource framework touches no database: it relays CloudFormation's "
            "events to the onEvent function (in the VPC) and answers CloudFormation's "
            "pre-signed S3 URL, which the isolated subnets cannot reach",
        )
        acknowledge(
            framework,
            "LambdaDLQ",
            "Invoked by CloudFormation, to which the framework answers FAILED on any error, so "
            "the stack's events hold it; a dead-letter queue would only keep events with "
            "pre-signed response URLs",
        )
        acknowledge(framework, "LambdaConcurrency", BOUNDED_BY_CALLERS)
        self.service_token = self.provider.service_token
