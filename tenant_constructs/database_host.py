"""A place tenant databases live: network, Aurora cluster, provisioner and secret rotator."""

from pathlib import Path

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_kms as kms
from constructs import Construct

from lambda_src.core import environment as env_names
from lambda_src.tenancy import HOST_TAG, HostNames, Tier

from .database_function import tls_environment
from .databases import ClusterCapacity, DatabaseOperations, HostDatabase
from .fleet_migration import FleetMigration
from .host_reference import HostReference, publish_interface
from .metering import TenantMetering
from .mobility import TenantMobility
from .network import DatabaseNetwork
from .secret_rotator import SecretRotator
from .sql_provisioner import SqlProvisioner


class DatabaseHost(Construct):
    """The shared cluster of the bridge or pool tier, or a silo tenant's own cluster.

    Its names derive from `host` (HostNames): the database identifier, the provisioner's
    service token, the rotator and the key's alias, so tenant stacks reach it by name
    (`self.reference`). The admin secret is rotated by the host's own rotator like every login
    secret. One KMS key (`self.key`) encrypts the host's secrets, log groups, backups and the
    tenant exports of its mobility function (`self.mobility`).
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        host: str,
        tier: Tier,
        tenant: str | None = None,
        capacity: ClusterCapacity = ClusterCapacity(),
        operations: DatabaseOperations = DatabaseOperations(),
        cidr: str = "10.0.0.0/16",
        ca_bundle: str | None = None,
        referenced_by_name: bool = False,
        migrations: Path | None = None,
        rollout: bool = True,
        registry_database: str | None = None,
    ) -> None:
        """`ca_bundle`: a PEM bundle inside lambda_src (relative to it) that the functions verify
        the database against instead of the shipped RDS CA bundle (lambda_src/certs/
        rds-ca-bundle.pem); TLS is verify-full either way. `referenced_by_name`: stacks
        deployed apart reach this host by its names (the bridge cluster's tenants); the host
        then publishes the interface version they check (HostReference.require_deployed).
        `tier`: the host's tier, and `tenant` a silo host's one tenant: the mobility function
        (TenantMobility) exports and imports those tenants only.
        `migrations`: the application's migrations directory; the provisioner carries it and
        brings every tenant database it creates to the latest version, and (with `rollout`)
        a FleetMigration state machine rolls new ones out to every tenant database in waves.
        The pool host has no tenant databases: its PoolDatabase resource migrates the pool
        database on each deploy instead (rollout=False). `tier` and `registry_database`
        (where the host's registry is; None: the admin database) are what its metering
        function samples and names its metrics after."""
        super().__init__(scope, id_)
        names = HostNames(host)
        self.network = DatabaseNetwork(self, "Network", cidr=cidr)
        self.database = HostDatabase(
            self,
            "Database",
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            capacity=capacity,
            operations=operations,
            names=names,
        )
        self.key = self.database.key
        self.logs = self.database.logs
        self.network.add_flow_logs(self.logs)
        alias = kms.Alias(self, "KeyAlias", alias_name=names.key_alias, target_key=self.key)
        # Kept with the key: a stack created again finds the retained key through it and
        # imports both (tenantkit.retained), so old snapshots and recovery points stay readable.
        alias.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        self.reference = HostReference(names, self.database.kind, key=self.key)
        cdk.Tags.of(self.database.admin_secret).add(HOST_TAG, names.host)
        tls = tls_environment(ca_bundle)
        self.tls_environment = tls
        self.rotator = SecretRotator(
            self,
            "Rotator",
            names=names,
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            database=self.database,
            secrets_endpoint=self.network.secrets_manager_endpoint,
            admin_secret=self.database.admin_secret,
            tls_environment=tls,
            key=self.key,
            host_logs=self.logs,
        )
        self.provisioner = SqlProvisioner(
            self,
            "Provisioner",
            names=names,
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            database=self.database,
            admin_secret=self.database.admin_secret,
            secrets_endpoint=self.network.secrets_manager_endpoint,
            tls_environment=tls,
            key=self.key,
            host_logs=self.logs,
            migrations=migrations,
        )
        self.metering = TenantMetering(
            self,
            "Metering",
            names=names,
            tier=tier,
            registry_database=registry_database,
            vpc=self.network.vpc,
            subnets=self.network.subnets,
            database=self.database,
            secrets_endpoint=self.network.secrets_manager_endpoint,
            admin_secret=self.database.admin_secret,
            tls_environment=tls,
            key=self.key,
            host_logs=self.logs,
            props=operations.metering,
        )
        self.mobility = TenantMobility(
            self,
            "Mobility",
            names=names,
            tier=tier,
            tenant=tenant,
            network=self.network,
            database=self.database,
            admin_secret=self.database.admin_secret,
            tls_environment=tls,
            key=self.key,
            host_logs=self.logs,
        )
        self.fleet_migration = (
            None
            if migrations is None or not rollout
            else FleetMigration(
                self,
                "FleetMigration",
                names=names,
                provisioner=self.provisioner.function,
                host_logs=self.logs,
            )
        )
        if referenced_by_name:
            publish_interface(
                self,
                "Interface",
                names=names,
                after=[self.database, alias, self.rotator, self.provisioner],
            )

    def endpoint_environment(self) -> dict[str, str]:
        """Where compute connects with IAM auth (TENANTKIT_DB_HOST/PORT), plus the CA bundle."""
        endpoint = self.database.endpoint
        return {
            env_names.DB_HOST: endpoint.hostname,
            env_names.DB_PORT: cdk.Token.as_string(endpoint.port),
            **self.tls_environment,
        }

    @property
    def vpc(self) -> ec2.IVpc:
        """The host's VPC."""
        return self.network.vpc
