"""A host's database: Aurora PostgreSQL (Serverless v2 or provisioned) or RDS for PostgreSQL,
hardened alike.

Both: storage encrypted with a customer-managed key (rotated; the host key unless asked
otherwise), IAM database authentication, TLS forced by the parameter group (rds.force_ssl),
deletion protection, automated backups and a daily AWS Backup plan into a retained vault,
enhanced monitoring and Performance Insights, PostgreSQL logs exported to CloudWatch for a
year, and removal policy SNAPSHOT: deleting the stack never deletes the data without a final
snapshot, and keeps the admin secret that administers a restored snapshot.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_logs as logs
import aws_cdk.aws_rds as rds
import aws_cdk.aws_secretsmanager as secretsmanager
import jsii
from constructs import Construct, IConstruct

from lambda_src.tenancy import HostNames
from tenantkit.capacity import instance_max_connections, serverless_max_connections
from tenantkit.engine import ENGINE_MAJOR, ENGINE_VERSION

from .acknowledgements import acknowledge
from .backup import BackupCopy, DatabaseBackup
from .host_key import HostLogs, host_key

# tenantkit.engine.ENGINE_VERSION: the version the embedded servers of the tests run too.
AURORA_VERSION = rds.AuroraPostgresEngineVersion.of(ENGINE_VERSION, ENGINE_MAJOR)
RDS_VERSION = rds.PostgresEngineVersion.of(ENGINE_VERSION, ENGINE_MAJOR)
RDS_INSTANCE_CLASS = "t4g.medium"
ADMIN_USERNAME = "tenantkit_admin"
Engine = Literal["aurora", "rds"]
CLUSTER_LOG_EXPORTS = ["postgresql"]
INSTANCE_LOG_EXPORTS = ["postgresql", "upgrade"]
MONITORING_INTERVALS = (0, 1, 5, 10, 15, 30, 60)


@dataclass(frozen=True, kw_only=True)
class ClusterCapacity:
    """Size of a host's database: Aurora Serverless v2 ACUs or a provisioned instance class,
    with readers; or an RDS instance class."""

    engine: Engine = "aurora"
    min_acu: float = 0.5
    max_acu: float = 16
    instance_class: str | None = None
    """The DB instance class without `db.`: Aurora, provisioned instances instead of
    Serverless v2; RDS, the instance (default RDS_INSTANCE_CLASS)."""
    readers: int = 1
    """Aurora readers, the first in the other Availability Zone (promotion tier 1: the one
    that takes over when the writer fails)."""
    storage_gb: int = 20
    """RDS: allocated storage (grows automatically up to 5x)."""
    multi_az: bool = False
    """RDS: a standby in another Availability Zone."""
    dedicated_key: bool = True
    """Storage encrypted with the host key (else the account's aws/rds key)."""

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
    def serverless(self) -> bool:
        """Aurora Serverless v2 (no instance class)."""
        return self.engine == "aurora" and self.instance_class is None

    @property
    def max_connections(self) -> int:
        """PostgreSQL's default max_connections at this size (tenantkit.capacity: an estimate
        from max_acu or from the instance class's memory; ValueError for an unknown class)."""
        if self.serverless:
            return serverless_max_connections(self.max_acu)
        return instance_max_connections(self.instance_class or RDS_INSTANCE_CLASS)

    def describe(self) -> str:
        """`max_acu=16` or `instance class db.r6g.large`, for messages."""
        if self.serverless:
            return f"max_acu={self.max_acu:g}"
        return f"instance class db.{self.instance_class or RDS_INSTANCE_CLASS}"


@dataclass(frozen=True, kw_only=True)
class MeteringProps:
    """How often a host is metered and when a tenant is a noisy neighbour (the catalog's
    `metering:` of the host)."""

    schedule_minutes: int = 5
    top_tenants: int = 20
    """Tenants published per signal and sample (lambda_src.metering.metrics)."""
    connection_percent: int = 80
    storage_growth_mb_per_day: int = 1024
    long_statement_seconds: int = 300

    def __post_init__(self) -> None:
        bounds = {
            "schedule_minutes": (1, 60),
            "top_tenants": (1, 100),
            "connection_percent": (10, 100),
            "storage_growth_mb_per_day": (1, 10_000_000),
            "long_statement_seconds": (10, 86_400),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"metering: {name} must be {low}..{high}, not {value}")


@dataclass(frozen=True, kw_only=True)
class DatabaseOperations:
    """Backups and monitoring of a host's database."""

    backup_retention_days: int = 14
    """Automated backups (point in time) and the AWS Backup plan's daily recovery points."""
    backup_copy: BackupCopy | None = None
    performance_insights: bool = True
    monitoring_interval: int = 60
    """Seconds between enhanced-monitoring samples; 0 turns it off."""
    metering: MeteringProps = MeteringProps()
    """The host's metering schedule and noisy-neighbour thresholds."""
    restore_snapshot: str | None = None
    """Create the cluster or instance from this snapshot (identifier or ARN), with the
    retained admin secret's credentials; keep it for every later deploy (CloudFormation
    replaces a restored database whose template drops it with an empty one)."""

    def __post_init__(self) -> None:
        if not 1 <= self.backup_retention_days <= 35:
            raise ValueError(
                f"database operations: backup_retention_days must be 1..35, not "
                f"{self.backup_retention_days}"
            )
        if self.monitoring_interval not in MONITORING_INTERVALS:
            raise ValueError(
                f"database operations: monitoring_interval must be one of "
                f"{MONITORING_INTERVALS}, not {self.monitoring_interval}"
            )


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
        operations: DatabaseOperations,
        names: HostNames,
    ) -> None:
        """`names`: the cluster's or instance's identifier (so its log groups can be created
        up front), the admin secret's name, the host's log group names and backup vault."""
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
        self.logs = HostLogs.allowed(
            self.key, names, rds_log_groups=f"/aws/rds/{self.kind}/{identifier}/*"
        )
        self._capacity = capacity
        self._operations = operations
        self._credentials = rds.Credentials.from_generated_secret(
            ADMIN_USERNAME, secret_name=names.admin_secret_name, encryption_key=self.key
        )
        self._storage_key = self.key if capacity.dedicated_key else None
        resource = (
            self._cluster(vpc, subnets)
            if capacity.engine == "aurora"
            else self._instance(vpc, subnets)
        )
        self.resource = resource
        self.connections: ec2.Connections = resource.connections
        assert resource.secret is not None  # from_generated_secret always makes one
        self.admin_secret = resource.secret
        # Like the data (final snapshot), the admin's credentials outlive the stack: a
        # restored snapshot has this admin and password. Its name is fixed, so a new stack of
        # the same name cannot be created while it exists.
        generated = resource.node.find_child("Secret")  # the secret itself, not its attachment
        assert isinstance(generated, secretsmanager.Secret)
        generated.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        self.attachment_target = AttachmentTarget(identifier, self.kind)
        self.backup = DatabaseBackup(
            self,
            "Backup",
            vault_name=names.backup_vault,
            key=self.key,
            database=resource,
            retention_days=operations.backup_retention_days,
            copy=operations.backup_copy,
        )

    def _restore(self, database: Construct, snapshot_property: str, *inherited: str) -> None:
        """Restore from `operations.restore_snapshot`: the same construct (same logical id,
        secret and attachment), its data from the snapshot. The master user and password come
        from the snapshot, as do the `inherited` properties (an instance's encryption): they
        are the retained admin secret's, which a stack created again imports unchanged
        (tenantkit.retained). CloudFormation refuses MasterUsername with a snapshot and does
        not apply a cluster's MasterUserPassword on restore."""
        snapshot = self._operations.restore_snapshot
        if snapshot is None:
            return
        resource = database.node.default_child
        assert isinstance(resource, cdk.CfnResource)
        resource.add_property_override(snapshot_property, snapshot)
        for name in ("MasterUsername", "MasterUserPassword", *inherited):
            resource.add_property_deletion_override(name)

    def _monitoring(self) -> cdk.Duration | None:
        interval = self._operations.monitoring_interval
        return cdk.Duration.seconds(interval) if interval else None

    def _parameters(self, engine: rds.IEngine) -> rds.ParameterGroup:
        return rds.ParameterGroup(
            self,
            "Parameters",
            engine=engine,
            parameters=_TLS_PARAMETERS,
            description="tenantkit: TLS required for every connection",
        )

    def _cluster_instance(
        self, id_: str, availability_zone: str, *, reader: bool
    ) -> rds.IClusterInstance:
        capacity, insights = self._capacity, self._operations.performance_insights
        if capacity.instance_class is None:
            return rds.ClusterInstance.serverless_v2(
                id_,
                # A reader that scales with the writer (promotion tier 1) can take its load.
                scale_with_writer=True if reader else None,
                availability_zone=availability_zone,
                enable_performance_insights=insights,
            )
        return rds.ClusterInstance.provisioned(
            id_,
            instance_type=ec2.InstanceType(capacity.instance_class),
            promotion_tier=1 if reader else 0,
            availability_zone=availability_zone,
            enable_performance_insights=insights,
        )

    def _cluster(self, vpc: ec2.IVpc, subnets: ec2.SubnetSelection) -> rds.DatabaseCluster:
        capacity = self._capacity
        engine = rds.DatabaseClusterEngine.aurora_postgres(version=AURORA_VERSION)
        # The writer in the first zone, readers from the second on, so the first reader (the
        # failover target) is in another zone than the writer.
        zones = vpc.availability_zones
        cluster = rds.DatabaseCluster(
            self,
            "Cluster",
            engine=engine,
            credentials=self._credentials,
            writer=self._cluster_instance("Writer", zones[0], reader=False),
            readers=[
                self._cluster_instance(f"Reader{n}", zones[n % len(zones)], reader=True)
                for n in range(1, capacity.readers + 1)
            ],
            serverless_v2_min_capacity=capacity.min_acu if capacity.serverless else None,
            serverless_v2_max_capacity=capacity.max_acu if capacity.serverless else None,
            vpc=vpc,
            vpc_subnets=subnets,
            storage_encrypted=True,
            storage_encryption_key=self._storage_key,
            iam_authentication=True,
            deletion_protection=True,
            backup=rds.BackupProps(
                retention=cdk.Duration.days(self._operations.backup_retention_days)
            ),
            monitoring_interval=self._monitoring(),
            cluster_identifier=self.identifier,
            cloudwatch_logs_exports=CLUSTER_LOG_EXPORTS,
            parameter_group=self._parameters(engine),
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
            copy_tags_to_snapshot=True,
        )
        cluster.node.add_dependency(*self._rds_log_groups("cluster", CLUSTER_LOG_EXPORTS))
        self._restore(cluster, "SnapshotIdentifier")
        self.resource_id = cluster.cluster_resource_identifier
        self.endpoint = cluster.cluster_endpoint
        instances = ["Writer", *(f"Reader{n}" for n in range(1, capacity.readers + 1))]
        for name in instances:
            acknowledge(
                cluster.node.find_child(name),
                "RDSInBackupPlan",
                "An Aurora instance has no backup of its own: AWS Backup protects Aurora by "
                "cluster, and the cluster is in the host's backup plan",
            )
        self._acknowledge_monitoring(cluster, [cluster.node.find_child(n) for n in instances])
        return cluster

    def _instance(self, vpc: ec2.IVpc, subnets: ec2.SubnetSelection) -> rds.DatabaseInstance:
        capacity = self._capacity
        engine = rds.DatabaseInstanceEngine.postgres(version=RDS_VERSION)
        instance = rds.DatabaseInstance(
            self,
            "Instance",
            engine=engine,
            credentials=self._credentials,
            instance_type=ec2.InstanceType(capacity.instance_class or RDS_INSTANCE_CLASS),
            allocated_storage=capacity.storage_gb,
            max_allocated_storage=capacity.storage_gb * 5,
            storage_type=rds.StorageType.GP3,
            multi_az=capacity.multi_az,
            vpc=vpc,
            vpc_subnets=subnets,
            publicly_accessible=False,
            storage_encrypted=True,
            storage_encryption_key=self._storage_key,
            iam_authentication=True,
            deletion_protection=True,
            backup_retention=cdk.Duration.days(self._operations.backup_retention_days),
            monitoring_interval=self._monitoring(),
            instance_identifier=self.identifier,
            cloudwatch_logs_exports=INSTANCE_LOG_EXPORTS,
            parameter_group=self._parameters(engine),
            enable_performance_insights=self._operations.performance_insights,
            auto_minor_version_upgrade=True,
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
            copy_tags_to_snapshot=True,
        )
        instance.node.add_dependency(*self._rds_log_groups("instance", INSTANCE_LOG_EXPORTS))
        self._restore(instance, "DBSnapshotIdentifier", "StorageEncrypted", "KmsKeyId")
        assert instance.instance_resource_id is not None  # known for instances it creates
        self.resource_id = instance.instance_resource_id
        self.endpoint = instance.instance_endpoint
        # On the CfnDBInstance itself: the instance construct also holds its secret,
        # subnet group, security group and monitoring role.
        database = instance.node.default_child
        assert database is not None
        cdk.Validations.of(database).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-RDS11",
                reason="Reachable only from the host's own security groups in subnets with "
                "no route out; a non-default port would add no protection",
            )
        )
        if not capacity.multi_az:
            reason = (
                "Single-AZ chosen for this tenant in the catalog (multi_az: false); backups "
                "and a final snapshot protect the data"
            )
            cdk.Validations.of(database).acknowledge(
                cdk.Acknowledgment(id="AwsSolutions-RDS3", reason=reason)
            )
            acknowledge(database, "RDSMultiAZSupport", reason)
        self._acknowledge_monitoring(instance, [database])
        return instance

    def _acknowledge_monitoring(
        self, database: IConstruct, instances: Sequence[IConstruct]
    ) -> None:
        role = database.node.try_find_child("MonitoringRole")
        if role is not None:
            cdk.Validations.of(role).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AmazonRDSEnhancedMonitoringRole]",
                    reason="The role RDS assumes to publish enhanced-monitoring metrics: the "
                    "AWS-managed policy AWS documents for it, limited to the RDSOSMetrics logs",
                )
            )
        if self._operations.monitoring_interval == 0:
            for instance in instances:
                acknowledge(
                    instance,
                    "RDSEnhancedMonitoringEnabled",
                    "Enhanced monitoring turned off in the catalog (monitoring_interval: 0); "
                    "CloudWatch keeps the standard RDS metrics",
                )

    def admit(self, peer: ec2.ISecurityGroup, description: str) -> None:
        """Let `peer` reach the database port (a rule naming a security group, never an
        address range)."""
        group = self.connections.security_groups[0]
        before = {child.node.id for child in group.node.children}
        self.connections.allow_default_port_from(peer, description)
        for rule in (c for c in group.node.children if c.node.id not in before):
            for check in ("EC2RestrictedCommonPorts", "EC2RestrictedSSH"):
                acknowledge(
                    rule,
                    check,
                    "The rule admits one security group, no address range; its port is the "
                    "database's Endpoint.Port attribute, which the check cannot read",
                )

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
