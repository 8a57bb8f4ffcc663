"""A silo tenant's compute identity: what its own functions or tasks may reach, and no more."""

from collections.abc import Sequence

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_iam as iam
import aws_cdk.aws_secretsmanager as secretsmanager
from constructs import Construct

from lambda_src.tenancy import TenantNames

from .database_host import DatabaseHost


class TenantCompute(Construct):
    """A security group in the host's compute subnets that may reach the database port and the
    Secrets Manager endpoint, and a role that may `rds-db:connect` only as the tenant's IAM user
    on this host's database and read only the tenant's secret."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        host: DatabaseHost,
        names: TenantNames,
        secret: secretsmanager.ISecret,
        principals: Sequence[str] = ("lambda.amazonaws.com",),
    ) -> None:
        super().__init__(scope, id_)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=host.vpc,
            allow_all_outbound=False,
            description=f"compute of tenant {names.tenant_id}: its database and Secrets Manager",
        )
        host.database.connections.allow_default_port_from(
            self.security_group, f"compute of tenant {names.tenant_id}"
        )
        host.network.secrets_manager_endpoint.connections.allow_default_port_from(
            self.security_group, f"compute of tenant {names.tenant_id}"
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.CompositePrincipal(*(iam.ServicePrincipal(p) for p in principals)),
            description=f"compute of tenant {names.tenant_id}",
        )
        self.db_user_arn = cdk.Stack.of(self).format_arn(
            service="rds-db",
            resource="dbuser",
            resource_name=f"{host.database.resource_id}/{names.iam_user}",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["rds-db:connect"], resources=[self.db_user_arn])
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                resources=[secret.secret_arn],
            )
        )
