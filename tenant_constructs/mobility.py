"""A host's tenant mobility in AWS: the export bucket and the function inside the VPC that
exports the host's tenants into it and imports them from it (lambda_src/mobility_function).

The bucket holds tenant data: encrypted with the host key (SSE-KMS; a put naming another key is
denied), versioned, public access blocked, TLS only, retained with the stack, its server access
logs in a bucket beside it. The VPC has no NAT: the function reaches S3 through a gateway
endpoint whose policy admits the export bucket only, so the function's HTTPS egress reaches
nothing else off the VPC.
"""

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_iam as iam
import aws_cdk.aws_kms as kms
import aws_cdk.aws_s3 as s3
import aws_cdk.aws_secretsmanager as secretsmanager
from constructs import Construct

from lambda_src.core import environment as env_names
from lambda_src.mobility_function.request import EXPORTS_PREFIX, tenant_prefix
from lambda_src.tenancy import HostNames, Tier

from .acknowledgements import acknowledge, acknowledge_inline_policy
from .database_function import DatabaseFunction
from .databases import HostDatabase
from .host_key import HostLogs, read_secrets_with_key
from .network import DatabaseNetwork

HANDLER = "lambda_src.mobility_function.handler.on_event"
ACCESS_LOG_DAYS = 365
"""Server access logs are kept a year, as the host's log groups are."""
MULTIPART_ABORT_DAYS = 7
"""An upload interrupted mid-file leaves parts that are billed and never listed: dropped after
a week (an export never takes that long)."""
EPHEMERAL_STORAGE_MIB = 10_240
"""The function's ephemeral storage holds one export while it is written or read: Lambda's
maximum, 10 GiB."""
MOBILITY_CONCURRENCY = (
    "Invoked on demand by an operator's tenantctl export/import, one tenant at a time; a reserved "
    "limit would take from the account's unreserved concurrency (new accounts may have 10)"
)


def _no_replication(bucket: s3.Bucket, what: str) -> None:
    acknowledge(
        bucket,
        "S3BucketReplicationEnabled",
        f"{what}: a replica in another Region is a copy of tenant data outside the host's "
        "Region and key, which is the operator's decision, not a default",
    )


class TenantMobility(Construct):
    """The host's export bucket (`self.bucket`) and its mobility function (`self.function`,
    named HostNames.mobility_function), which may read the admin secret, read and write
    `exports/` of that bucket (a silo host: `exports/<its tenant>/`) and use the host key
    through S3 for those objects only."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        names: HostNames,
        tier: Tier,
        tenant: str | None,
        network: DatabaseNetwork,
        database: HostDatabase,
        admin_secret: secretsmanager.ISecret,
        tls_environment: dict[str, str],
        key: kms.IKey,
        host_logs: HostLogs,
    ) -> None:
        """`tier`: the host's tier; `tenant`: a silo host's one tenant (None otherwise)."""
        super().__init__(scope, id_)
        if (tier == "silo") != (tenant is not None):
            raise ValueError(
                f"TenantMobility of {names.host}: a silo host, and only one, names its tenant"
            )
        stack = cdk.Stack.of(self)
        # Server access logs: S3 delivers them only to a bucket encrypted with S3-managed keys.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=cdk.Duration.days(ACCESS_LOG_DAYS),
                    noncurrent_version_expiration=cdk.Duration.days(30),
                )
            ],
        )
        logs_reason = "The bucket that receives the export bucket's server access logs"
        cdk.Validations.of(self.access_logs).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-S1",
                reason=f"{logs_reason}: logging its own access would log into itself",
            )
        )
        acknowledge(
            self.access_logs,
            "S3BucketLoggingEnabled",
            f"{logs_reason}: logging its own access would log into itself",
        )
        acknowledge(
            self.access_logs,
            "S3DefaultEncryptionKMS",
            f"{logs_reason}: S3 delivers server access logs only to a bucket encrypted with "
            "S3-managed keys (SSE-S3), not SSE-KMS",
        )
        _no_replication(self.access_logs, logs_reason)

        self.bucket = s3.Bucket(
            self,
            "Exports",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            # Without bucket keys every object's data key is asked of KMS with the object's
            # ARN as encryption context: the function's grant is narrowed to exports/ by it.
            bucket_key_enabled=False,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="exports/",
            # Tenant data: kept when the stack goes (its name is generated, so a stack created
            # again makes a new bucket and never collides with this one).
            removal_policy=cdk.RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(MULTIPART_ABORT_DAYS)
                )
            ],
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OnlyTheHostKey",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[self.bucket.arn_for_objects("*")],
                conditions={
                    "StringNotEqualsIfExists": {
                        "s3:x-amz-server-side-encryption-aws-kms-key-id": key.key_arn
                    }
                },
            )
        )
        _no_replication(self.bucket, "The host's export bucket")

        # The isolated subnets reach S3 only through this endpoint, and it only this bucket.
        self.s3_endpoint = network.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[network.subnets]
        )
        self.s3_endpoint.add_to_policy(
            iam.PolicyStatement(
                principals=[iam.AnyPrincipal()],
                actions=[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListBucket",
                ],
                resources=[self.bucket.bucket_arn, self.bucket.arn_for_objects("*")],
            )
        )

        environment = {
            env_names.ADMIN_SECRET_ARN: admin_secret.secret_arn,
            env_names.EXPORT_BUCKET: self.bucket.bucket_name,
            env_names.EXPORT_KEY_ARN: key.key_arn,
            env_names.HOST_TIER: tier,
            **({env_names.HOST_TENANT: tenant} if tenant is not None else {}),
            **tls_environment,
        }
        self.handler = DatabaseFunction(
            self,
            "Function",
            handler=HANDLER,
            description=f"tenantkit {names.host}: tenant export and import",
            function_name=names.mobility_function,
            vpc=network.vpc,
            subnets=network.subnets,
            database=database,
            secrets_endpoint=network.secrets_manager_endpoint,
            environment=environment,
            timeout=cdk.Duration.minutes(15),
            host_logs=host_logs,
            log_purpose="mobility",
            invoked_by="tenantctl export/import (RequestResponse), which reports every error",
            memory_size=1024,
            ephemeral_storage_mib=EPHEMERAL_STORAGE_MIB,
            concurrency_reason=MOBILITY_CONCURRENCY,
        )
        self.function = self.handler.function
        # HTTPS to S3: the subnets' only route off the VPC for it is the gateway endpoint
        # above (S3's addresses are a managed prefix list, which CloudFormation cannot look up
        # by name without a call at synth).
        self.handler.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "S3 through the gateway endpoint"
        )

        objects = tenant_prefix(tenant) if tenant is not None else EXPORTS_PREFIX
        access = iam.Policy(
            self,
            "ExportAccess",
            statements=[
                iam.PolicyStatement(
                    actions=["secretsmanager:GetSecretValue"],
                    resources=[admin_secret.secret_arn],
                ),
                read_secrets_with_key(self, key.key_arn, secret_arn=admin_secret.secret_arn),
                iam.PolicyStatement(
                    # AbortMultipartUpload: a large file's failed upload removes its parts.
                    actions=["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"],
                    resources=[self.bucket.arn_for_objects(f"{objects}*")],
                ),
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[self.bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": f"{objects}*"}},
                ),
                iam.PolicyStatement(
                    actions=["kms:GenerateDataKey", "kms:Decrypt"],
                    resources=[key.key_arn],
                    conditions={
                        "StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"},
                        "StringLike": {
                            "kms:EncryptionContext:aws:s3:arn": self.bucket.arn_for_objects(
                                f"{objects}*"
                            )
                        },
                    },
                ),
            ],
        )
        self.handler.role.attach_inline_policy(access)
        self.function.node.add_dependency(access)
        acknowledge_inline_policy(access)
        cdk.Validations.of(access).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::<{self._bucket_logical_id()}.Arn>/{objects}*]",
                reason="Exports are written under fresh timestamped keys: the statement is "
                f"limited to {objects} of this host's export bucket",
            )
        )
        cdk.CfnOutput(
            self,
            "ExportBucketName",
            value=self.bucket.bucket_name,
            description=f"{names.host}: the export bucket of {names.mobility_function}",
        )

    def _bucket_logical_id(self) -> str:
        cfn = self.bucket.node.default_child
        assert isinstance(cfn, cdk.CfnElement)
        return str(cdk.Stack.of(self).resolve(cfn.logical_id))
