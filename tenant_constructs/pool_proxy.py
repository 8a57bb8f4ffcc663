"""The pool tier's RDS Proxy (`pool.proxy` in the catalog): the shared compute's connections
to the pool's cluster, multiplexed.

Its client side: TLS required, and IAM authentication required when the pool has its IAM login
(a client then mints a token for the proxy's endpoint, as the runtime login the proxy holds
the secret of, allowed by `rds-db:connect` on `dbuser:<prx- resource id>/<user>`); otherwise
the runtime login's password, checked by SCRAM. Its database side: that login's secret, read
with a role of its own, and TLS to a cluster that refuses anything else (rds.force_ssl).
"""

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_iam as iam
import aws_cdk.aws_rds as rds
import aws_cdk.aws_secretsmanager as secretsmanager
from constructs import Construct

from lambda_src.core import environment as env_names

from .acknowledgements import acknowledge_inline_policy
from .database_host import DatabaseHost
from .host_key import read_secrets_with_key

PROXY_PORT = 5432
"""An RDS Proxy for PostgreSQL listens on PostgreSQL's port."""


class PoolProxy(Construct):
    """An RDS Proxy in front of `host`'s Aurora cluster, in the host's data subnets, with a
    security group of its own: reachable only from `clients`, reaching only the cluster.

    `login_secret`: the runtime login's secret (attached to the cluster), the one the proxy
    logs in with. `iam_auth`: clients must authenticate with IAM (else with that password).
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        host: DatabaseHost,
        login_secret: secretsmanager.ISecret,
        clients: ec2.ISecurityGroup,
        iam_auth: bool,
        idle_client_timeout_s: int = 1_800,
        max_connections_percent: int = 90,
    ) -> None:
        super().__init__(scope, id_)
        cluster = host.database.resource
        if not isinstance(cluster, rds.DatabaseCluster):
            raise ValueError("PoolProxy: the pool's host must be an Aurora cluster")
        self.iam_auth = iam_auth
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=host.vpc,
            allow_all_outbound=False,
            description="RDS Proxy of the pool: from the shared compute to the cluster",
        )
        host.database.admit(self.security_group, "the pool's RDS Proxy")
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("rds.amazonaws.com"),
            description=f"RDS Proxy of {host.reference.names.host}: reads the runtime login",
        )
        acknowledge_inline_policy(role)
        # Imported by ARN: DatabaseProxy grants reading it, and would grant kms:Decrypt on the
        # whole host key for a secret that knows its key; only through Secrets Manager, for
        # this secret, here.
        secret = secretsmanager.Secret.from_secret_complete_arn(
            self, "LoginSecret", login_secret.secret_arn
        )
        role.add_to_policy(
            read_secrets_with_key(self, host.key.key_arn, secret_arn=login_secret.secret_arn)
        )
        self.proxy = rds.DatabaseProxy(
            self,
            "Proxy",
            proxy_target=rds.ProxyTarget.from_cluster(cluster),
            secrets=[secret],
            role=role,
            vpc=host.vpc,
            vpc_subnets=host.network.subnets,
            security_groups=[self.security_group],
            db_proxy_name=host.reference.names.proxy_name,
            require_tls=True,
            iam_auth=iam_auth,
            client_password_auth_type=rds.ClientPasswordAuthType.POSTGRES_SCRAM_SHA_256,
            idle_client_timeout=cdk.Duration.seconds(idle_client_timeout_s),
            max_connections_percent=max_connections_percent,
            debug_logging=False,
        )
        self.proxy.connections.allow_from(
            clients, ec2.Port.tcp(PROXY_PORT), "the pool's shared compute"
        )
        # The app's tags reach the proxy's target group too, which the CloudFormation schema
        # CDK validates templates against (aws-cdk-lib 2.275) gives no Tags: the proxy
        # itself carries them.
        target_group = self.proxy.node.find_child("ProxyTargetGroup")
        assert isinstance(target_group, rds.CfnDBProxyTargetGroup)
        target_group.add_property_deletion_override("Tags")
        self.host = host
        self.endpoint = self.proxy.endpoint
        # The proxy's `prx-...` id (its ARN's last part), which IAM database authentication
        # through it names in the dbuser ARN, where a direct login names the cluster's.
        self.resource_id = str(
            cdk.Stack.of(self)
            .split_arn(self.proxy.db_proxy_arn, cdk.ArnFormat.COLON_RESOURCE_NAME)
            .resource_name
        )
        cdk.CfnOutput(
            self,
            "Endpoint",
            value=self.endpoint,
            description="The pool's RDS Proxy: TENANTKIT_DB_HOST of compute that connects "
            "through it (with TENANTKIT_DB_PROXY=true)",
        )

    @property
    def patterns(self) -> tuple[str, ...]:
        """The pool access patterns that can connect through it: with IAM authentication
        required the proxy refuses a password, so pool-secret connects to the cluster."""
        return ("pool-iam",) if self.iam_auth else ("pool-secret",)

    def client_environment(self) -> dict[str, str]:
        """What a pool pattern's compute connects through the proxy with (plus the CA bundle:
        the proxy's certificate chains to an Amazon Trust Services root of the bundle)."""
        return {
            env_names.DB_HOST: self.endpoint,
            env_names.DB_PORT: str(PROXY_PORT),
            env_names.DB_PROXY: "true",
            **self.host.tls_environment,
        }
