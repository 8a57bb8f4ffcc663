"""A hardened Aurora PostgreSQL cluster: the shared cluster of a tier or a silo tenant's own."""

from dataclasses import dataclass

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_kms as kms
import aws_cdk.aws_logs as logs
import aws_cdk.aws_rds as rds
from constructs import Construct

ENGINE_VERSION = rds.AuroraPostgresEngineVersion.VER_16_9
ADMIN_USERNAME = "tenantkit_admin"


@dataclass(frozen=True, kw_only=True)
class ClusterCapacity:
    """Serverless v2 capacity of the writer (and readers) in Aurora capacity units."""

    min_acu: float = 0.5
    max_acu: float = 4
    readers: int = 0

    @property
    def max_connections(self) -> int:
        """Aurora PostgreSQL's max_connections at max_acu: LEAST(memory / 9531392, 5000), with
        2 GiB of memory per ACU (an estimate: AWS may change the formula)."""
        memory = self.max_acu * 2 * 1024**3
        return min(int(memory // 9_531_392), 5000)

    def __post_init__(self) -> None:
        if not 0 <= self.min_acu <= self.max_acu <= 256:
            raise ValueError(
                f"cluster capacity: need 0 <= min_acu <= max_acu <= 256, got "
                f"min_acu={self.min_acu}, max_acu={self.max_acu}"
            )
        if not 0 <= self.readers <= 15:
            raise ValueError(f"cluster capacity: readers must be 0..15, not {self.readers}")


class AuroraPostgres(Construct):
    """Aurora PostgreSQL, Serverless v2, hardened the same way for every tier.

    Storage encrypted with a customer-managed key (rotated yearly), IAM database
    authentication on, TLS forced by the cluster parameter group (rds.force_ssl), deletion
    protection, 14 days of backups, PostgreSQL logs exported to CloudWatch, and a removal
    policy of SNAPSHOT: deleting the stack never deletes the data without a final snapshot.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        capacity: ClusterCapacity = ClusterCapacity(),
        cluster_identifier: str,
        admin_secret_name: str,
        backup_retention: cdk.Duration = cdk.Duration.days(14),
    ) -> None:
        """`cluster_identifier` names the cluster (so its log group can be created up front);
        `admin_secret_name` names the admin's secret."""
        super().__init__(scope, id_)
        engine = rds.DatabaseClusterEngine.aurora_postgres(version=ENGINE_VERSION)
        self.key = kms.Key(
            self,
            "StorageKey",
            description=f"Storage encryption of {self.node.path}",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        parameters = rds.ParameterGroup(
            self,
            "Parameters",
            engine=engine,
            description="tenantkit: TLS required for every connection",
            parameters={"rds.force_ssl": "1", "log_connections": "1"},
        )
        self.cluster = rds.DatabaseCluster(
            self,
            "Cluster",
            engine=engine,
            credentials=rds.Credentials.from_generated_secret(
                ADMIN_USERNAME, secret_name=admin_secret_name
            ),
            writer=rds.ClusterInstance.serverless_v2("Writer", enable_performance_insights=True),
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
            storage_encryption_key=self.key,
            iam_authentication=True,
            deletion_protection=True,
            backup=rds.BackupProps(retention=backup_retention),
            cluster_identifier=cluster_identifier,
            cloudwatch_logs_exports=["postgresql"],
            parameter_group=parameters,
            removal_policy=cdk.RemovalPolicy.SNAPSHOT,
            copy_tags_to_snapshot=True,
        )
        # RDS writes exported logs to this group; creating it here sets retention without the
        # LogRetention custom-resource Lambda.
        log_group = logs.LogGroup(
            self,
            "PostgresqlLogs",
            log_group_name=f"/aws/rds/cluster/{cluster_identifier}/postgresql",
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.cluster.node.add_dependency(log_group)
        assert self.cluster.secret is not None  # from_generated_secret always makes one
        self.admin_secret = self.cluster.secret
