"""A host's database: Aurora PostgreSQL (Serverless v2) or RDS for PostgreSQL, hardened alike.

Both: storage encrypted with a customer-managed key (rotated; a dedicated key per host unless
asked otherwise), IAM database authentication, TLS forced by the parameter group
(rds.force_ssl), deletion protection, 14 days of backups, PostgreSQL logs exported to
CloudWatch for a year, and removal policy SNAPSHOT: deleting the stack never deletes the data
without a final snapshot.
"""

from dataclasses import dataclass
from typing import Literal

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_logs as logs
import aws_cdk.aws_rds as rds
import aws_cdk.aws_secretsmanager as secretsmanager
import jsii
from constructs import Construct

from lambda_src.tenancy import HostNames
from tenantkit.engine import ENGINE_MAJOR, ENGINE_VERSION

from .host_key import HostLogs, host_key

# tenantkit.engine.ENGINE_VERSION: the version the embedded servers of the tests run too.
AURORA_VERSION = rds.AuroraPostgresEngineVersion.of(ENGINE_VERSION, ENGINE_MAJOR)
RDS_VERSION = rds.PostgresEngineVersion.of(ENGINE_VERSION, ENGINE_MAJOR)
ADMIN_USERNAME = "tenantkit_admin"
BACKUP_RETENTION = cdk.Duration.days(14)
Engine = Literal["aurora", "rds"]
CLUSTER_LOG_EXPORTS = ["postgresql"]
INSTANCE_LOG_EXPORTS = ["postgresql", "upgrade"]


@dataclass(frozen=True, kw_only=True)
class ClusterCapacity:
    """Size of a host's database: Serverless v2 ACUs (Aurora) or an instance class (RDS)."""

    engine: Engine = "aurora"
    min_acu: float = 0.5
    max_acu: float = 4
    readers: int = 0
    """Aurora readers; one or more puts a copy in another Availability Zone."""
    instance_class: str = "t4g.medium"
    """RDS: the DB instance class without its `db.` prefix."""
    storage_gb: int = 20
    """RDS: allocated storage (grows automatically up to 5x)."""
    multi_az: bool = False
    """RDS: a standby in another Availability Zone."""
    dedicated_key: bool = True
    """A customer-managed KMS key of the host's own (else the account's aws/rds key)."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_acu <= self.max_acu <= 256:
            raise ValueError(
                f"cluster capacity: need 0 <= min_acu <= max_acu <= 256, got "
                f"min_acu={self.min_acu}, max_acu={self.max_acu}"
            )
        if not 0 <= self.readers <= 15:
            raise ValueError(f"cluster capacity: readers must be 0..15, not {self.readers}")
        if not 20 <= self.storage_gb <= 65536:
            raise ValueError(
                f"cluster capacity: storage_gb must be 20..65536, not {self.storage_gb}"
            )

    @property
    def max_connections(self) -> int:
        """Aurora PostgreSQL's max_connections at max_acu: LEAST(memory / 9531392, 5000), with
        2 GiB of memory per ACU (an estimate: AWS may change the formula)."""
        memory = self.max_acu * 2 * 1024**3
        return min(int(memory // 9_531_392), 5000)


@jsii.implements(secretsmanager.ISecretAttachmentTarget)
class AttachmentTarget:
    """A cluster or instance known by identifier, as a target for a secret attachment."""

    def __init__(self, identifier: str, kind: Literal["cluster", "instance"]) -> None:
        self._identifier = identifier
        self._type = (
            secretsmanager.AttachmentTargetType.RDS_DB_CLUSTER
            if kind == "cluster"
            else secretsmanager.AttachmentTargetType.RDS_DB_INSTANCE
        )

    def as_secret_attachment_target(self) -> secretsmanager.SecretAttachmentTargetProps:
        """jsii: the attachment's TargetId and TargetType."""
        return secretsmanager.SecretAttachmentTargetProps(
            target_id=self._identifier, target_type=self._type
        )


_TLS_PARAMETERS = {"rds.force_ssl": "1", "log_connections": "1"}


class HostDatabase(Construct):
    """The database of a host: Aurora cluster or RDS instance, per `capacity.engine`."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        capacity: ClusterCapacity,
        names: HostNames,
    ) -> None:
        """`names`: the cluster's or instance's identifier (so its log groups can be created
        up front), the admin secret's name, the host's log group names."""
        super().__init__(scope, id_)
        self.kind: Literal["cluster", "instance"] = (
            "cluster" if capacity.engine == "aurora" else "instance"
        )
        identifier = names.database_identifier
        self.identifier = identifier
        # The host key. "StorageKey" keeps its construct id: an Aurora cluster or RDS instance
        # is replaced when its storage key changes.
        key_id = "StorageKey" if capacity.dedicated_key else "Key"
        self.key = host_key(self, key_id, host=names.host)
        key = self.key if capacity.dedicated_key else None
        self.logs = HostLogs.allowed(
            self.key, names, rds_log_groups=f"/aws/rds/{self.kind}/{identifier}/*"
        )
        credentials = rds.Credentials.from_generated_secret(
            ADMIN_USERNAME, secret_name=names.admin_secret_name, encryption_key=self.key
        )
        resource: rds.DatabaseCluster | rds.DatabaseInstance
        if capacity.engine == "aurora":
            engine = rds.DatabaseClusterEngine.aurora_postgres(version=AURORA_VERSION)
            cluster = rds.DatabaseCluster(
                self,
                "Cluster",
                engine=engine,
                credentials=credentials,
                writer=rds.ClusterInstance.serverless_v2(
                    "Writer", enable_performance_insights=True
                ),
                readers=[
                    rds.ClusterInstance.serverless_v2(
                        f"Reader{n}", scale_with_writer=True, enable_performance_insights=True
                    )
                    for n in range(1, capacity.readers + 1)
                ],
                serverless_v2_min_capacity=capacity.min_acu,
                serverless_v2_max_capacity=capacity.max_acu,
                vpc=vpc,
                vpc_subnets=subnets,
                storage_encrypted=True,
                storage_encryption_key=key,
                iam_authentication=True,
                deletion_protection=True,
                backup=rds.BackupProps(retention=BACKUP_RETENTION),
                cluster_identifier=identifier,
                cloudwatch_logs_exports=CLUSTER_LOG_EXPORTS,
                parameter_group=rds.ParameterGroup(
                    self,
                    "Parameters",
                    engine=engine,
                    parameters=_TLS_PARAMETERS,
                    description="tenantkit: TLS required for every connection",
                ),
                removal_policy=cdk.RemovalPolicy.SNAPSHOT,
                copy_tags_to_snapshot=True,
            )
            cluster.node.add_dependency(*self._rds_log_groups("cluster", CLUSTER_LOG_EXPORTS))
            self.resource_id = cluster.cluster_resource_identifier
            self.endpoint = cluster.cluster_endpoint
            resource = cluster
        else:
            engine_i = rds.DatabaseInstanceEngine.postgres(version=RDS_VERSION)
            instance = rds.DatabaseInstance(
                self,
                "Instance",
                engine=engine_i,
                credentials=credentials,
                instance_type=ec2.InstanceType(capacity.instance_class),
                allocated_storage=capacity.storage_gb,
                max_allocated_storage=capacity.storage_gb * 5,
                storage_type=rds.StorageType.GP3,
                multi_az=capacity.multi_az,
                vpc=vpc,
                vpc_subnets=subnets,
                publicly_accessible=False,
                storage_encrypted=True,
                storage_encryption_key=key,
                iam_authentication=True,
                deletion_protection=True,
                backup_retention=BACKUP_RETENTION,
                instance_identifier=identifier,
                cloudwatch_logs_exports=INSTANCE_LOG_EXPORTS,
                parameter_group=rds.ParameterGroup(
                    self,
                    "Parameters",
                    engine=engine_i,
                    parameters=_TLS_PARAMETERS,
                    description="tenantkit: TLS required for every connection",
                ),
                enable_performance_insights=True,
                auto_minor_version_upgrade=True,
                removal_policy=cdk.RemovalPolicy.SNAPSHOT,
                copy_tags_to_snapshot=True,
            )
            instance.node.add_dependency(*self._rds_log_groups("instance", INSTANCE_LOG_EXPORTS))
            assert instance.instance_resource_id is not None  # known for instances it creates
            self.resource_id = instance.instance_resource_id
            self.endpoint = instance.instance_endpoint
            cdk.Validations.of(instance).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-RDS11",
                    reason="Reachable only from the host's own security groups in subnets with "
                    "no route out; a non-default port would add no protection",
                )
            )
            if not capacity.multi_az:
                cdk.Validations.of(instance).acknowledge(
                    cdk.Acknowledgment(
                        id="AwsSolutions-RDS3",
                        reason="Single-AZ chosen for this tenant in the catalog (multi_az: false);"
                        " backups and a final snapshot protect the data",
                    )
                )
            resource = instance
        self.resource = resource
        self.connections: ec2.Connections = resource.connections
        assert resource.secret is not None  # from_generated_secret always makes one
        self.admin_secret = resource.secret
        self.attachment_target = AttachmentTarget(identifier, self.kind)

    def _rds_log_groups(
        self, kind: Literal["cluster", "instance"], exports: list[str]
    ) -> list[logs.LogGroup]:
        # RDS writes exported logs to /aws/rds/<kind>/<id>/<log>, creating the group if it is
        # missing (unencrypted, kept forever): create each one first, encrypted, for a year.
        return [
            self.logs.group(
                self,
                "PostgresqlLogs" if log == "postgresql" else f"{log.capitalize()}Logs",
                purpose=log,
                name=f"/aws/rds/{kind}/{self.identifier}/{log}",
            )
            for log in exports
        ]
