"""A place tenant databases live: network, Aurora cluster, provisioner, admin-secret rotation."""

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
from constructs import Construct

from .aurora import AuroraPostgres, ClusterCapacity
from .network import DatabaseNetwork
from .sql_provisioner import SqlProvisioner

ROTATION_PERIOD = cdk.Duration.days(30)


class DatabaseHost(Construct):
    """The shared cluster of the bridge tier, or a silo tenant's own cluster.

    TenantDatabase resources are created on it through its provisioner.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        cluster_identifier: str,
        capacity: ClusterCapacity = ClusterCapacity(),
        cidr: str = "10.0.0.0/16",
        ca_bundle: str | None = None,
    ) -> None:
        super().__init__(scope, id_)
        self.network = DatabaseNetwork(self, "Network", cidr=cidr)
        self.database = AuroraPostgres(
            self,
            "Database",
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            capacity=capacity,
            cluster_identifier=cluster_identifier,
        )
        self.cluster = self.database.cluster
        # Single-user rotation: the admin secret's own user changes its password.
        self.cluster.add_rotation_single_user(
            automatically_after=ROTATION_PERIOD,
            vpc_subnets=self.network.subnets,
            endpoint=self.network.secrets_manager_endpoint,
        )
        self.provisioner = SqlProvisioner(
            self,
            "Provisioner",
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            database=self.cluster,
            admin_secret=self.database.admin_secret,
            secrets_endpoint=self.network.secrets_manager_endpoint,
            ca_bundle=ca_bundle,
        )

    @property
    def vpc(self) -> ec2.IVpc:
        """The host's VPC."""
        return self.network.vpc
