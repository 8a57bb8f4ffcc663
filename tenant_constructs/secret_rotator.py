"""The host's rotation function: single-user rotation of every login secret tagged for it."""

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_iam as iam
import aws_cdk.aws_kms as kms
import aws_cdk.aws_lambda as lambda_
import aws_cdk.aws_secretsmanager as secretsmanager
from constructs import Construct

from lambda_src.tenancy import HostNames

from .acknowledgements import acknowledge_inline_policy
from .database_function import DatabaseFunction, host_secrets_arn, host_tag_condition
from .databases import HostDatabase
from .host_key import HostLogs, read_secrets_with_key
from .host_reference import ROTATION_PERIOD

HANDLER = "lambda_src.rotation.handler.on_event"


class SecretRotator(Construct):
    """One rotation function per host (fixed name HostNames.rotation_function), used by every
    secret of the host through its RotationSchedule, so a tenant adds no function, role or
    security group of its own."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        names: HostNames,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        database: HostDatabase,
        secrets_endpoint: ec2.IConnectable,
        admin_secret: secretsmanager.ISecret,
        tls_environment: dict[str, str],
        key: kms.IKey,
        host_logs: HostLogs,
        architecture: lambda_.Architecture = lambda_.Architecture.ARM_64,
    ) -> None:
        super().__init__(scope, id_)
        rotator = DatabaseFunction(
            self,
            "Rotation",
            handler=HANDLER,
            description="tenantkit secret rotation (single user)",
            function_name=names.rotation_function,
            vpc=vpc,
            subnets=subnets,
            database=database,
            secrets_endpoint=secrets_endpoint,
            environment=tls_environment,
            timeout=cdk.Duration.minutes(2),
            host_logs=host_logs,
            log_purpose="rotation",
            invoked_by="Secrets Manager (which records a failed step and retries the rotation)",
            architecture=architecture,
        )
        self.function = rotator.function
        rotate = iam.Policy(
            self,
            "RotateHostSecrets",
            statements=[
                iam.PolicyStatement(
                    actions=[
                        "secretsmanager:DescribeSecret",
                        "secretsmanager:GetSecretValue",
                        "secretsmanager:PutSecretValue",
                        "secretsmanager:UpdateSecretVersionStage",
                    ],
                    resources=[host_secrets_arn(self)],
                    conditions=host_tag_condition(names.host),
                ),
                # Reading a secret decrypts it, writing its new version generates a data key.
                read_secrets_with_key(self, key.key_arn, write=True),
            ],
        )
        rotator.role.attach_inline_policy(rotate)
        acknowledge_inline_policy(rotate)
        cdk.Validations.of(rotate).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:"
                "<AWS::Region>:<AWS::AccountId>:secret:tenantkit/*]",
                reason="Tenant secrets are created later by tenant stacks; the statement is "
                f"limited to secrets tagged {names.host} by an ABAC resource-tag condition",
            ),
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(actions=["secretsmanager:GetRandomPassword"], resources=["*"])
        )
        default_policy = rotator.role.node.find_child("DefaultPolicy")
        cdk.Validations.of(default_policy).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="secretsmanager:GetRandomPassword acts on no resource and supports no "
                "resource-level permission",
            )
        )
        # The one invoke permission Secrets Manager gets, for this account's secrets only.
        self.function.add_permission(
            "SecretsManagerInvoke",
            principal=iam.ServicePrincipal("secretsmanager.amazonaws.com"),
            source_account=cdk.Stack.of(self).account,
        )
        invoke_permission = self.function.node.find_child("SecretsManagerInvoke")
        # The admin secret rotates like every login. Its schedule names the function through a
        # reference that cannot add permissions: add_rotation_schedule on the function itself
        # would grant Secrets Manager a second invoke permission with no SourceAccount, which
        # makes the scoped one above pointless. The admin secret is tagged for the host, so
        # RotateHostSecrets covers it.
        target = lambda_.Function.from_function_attributes(
            self,
            "RotationTarget",
            function_arn=self.function.function_arn,
            same_environment=False,
            skip_permissions=True,
        )
        schedule = admin_secret.add_rotation_schedule(
            "AdminRotation", rotation_lambda=target, automatically_after=ROTATION_PERIOD
        )
        # The schedule rotates at once when created: the function must be invocable and
        # allowed to rotate first.
        schedule.node.add_dependency(invoke_permission, rotate, default_policy)
