"""Compute identities: who may reach tenant data, and through which door.

- TenantCompute (silo): one tenant's own compute, its db user and secret only.
- SharedCompute (bridge, pool): one role for the shared functions of a host. In the bridge tier
  and a strict pool it may do nothing but assume the TenantAccessRole with a tenant tag; in a
  settable pool it logs in as the pool's runtime user (isolation is row-level security),
  directly or through the pool's RDS Proxy.
- TenantAccessRole (bridge, strict pool): ONE role for every tenant (IAM's role quota forbids a
  role per tenant); what it reaches is decided by the session tag `tenant=<id>` the shared role
  sets.
"""

import string
from collections.abc import Sequence

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_iam as iam
import aws_cdk.aws_secretsmanager as secretsmanager
from constructs import Construct

from lambda_src.tenancy import (
    HOST_TAG,
    IAM_USER_PREFIX,
    IAM_USER_SUFFIX,
    MAX_TENANT_ID_LENGTH,
    MIN_TENANT_ID_LENGTH,
    RESERVED_TENANT_ID_PREFIXES,
    TenantNames,
    login_secret_name,
)

from .acknowledgements import acknowledge_inline_policy
from .database_function import host_secrets_arn
from .database_host import DatabaseHost
from .host_key import read_secrets_with_key

# Tag values that could never be a tenant id, refused by the trust policy: IAM conditions have
# no regular expressions, so these patterns forbid what would matter most when the value is
# substituted into an ARN (`${*}`/`${?}` are literal * and ?) and the reserved prefixes.
FORBIDDEN_TENANT_TAGS = [
    "*${*}*",
    "*${?}*",
    "*${$}*",
    "*/*",
    "*:*",
    "*_*",
    "* *",
    *(f"{prefix}*" for prefix in RESERVED_TENANT_ID_PREFIXES),
    # What else of the tenant-id rules IAM patterns can say (they are case-sensitive and have
    # no character classes): no upper case, a letter first, no hyphen at either end or twice,
    # 2 to MAX_TENANT_ID_LENGTH characters.
    *(f"*{letter}*" for letter in string.ascii_uppercase),
    *(f"{digit}*" for digit in string.digits),
    "-*",
    "*-",
    "*--*",
    *("?" * length for length in range(1, MIN_TENANT_ID_LENGTH)),
    "?" * (MAX_TENANT_ID_LENGTH + 1) + "*",
]


def db_user_arn(scope: Construct, resource_id: str, user: str) -> str:
    """`arn:<partition>:rds-db:<region>:<account>:dbuser:<resource id>/<user>`."""
    return str(
        cdk.Stack.of(scope).format_arn(
            service="rds-db",
            resource="dbuser",
            resource_name=f"{resource_id}/{user}",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
    )


def _compute_security_group(
    host: DatabaseHost, scope: Construct, description: str
) -> ec2.SecurityGroup:
    group = ec2.SecurityGroup(
        scope, "SecurityGroup", vpc=host.vpc, allow_all_outbound=False, description=description
    )
    host.database.admit(group, description)
    host.network.secrets_manager_endpoint.connections.allow_default_port_from(group, description)
    return group


class TenantCompute(Construct):
    """A security group in the host's compute subnets that may reach the database port and the
    Secrets Manager endpoint, and a role that may `rds-db:connect` only as the tenant's IAM user
    on this host's database and read only the tenant's secret (decrypting only that secret
    with the host key)."""

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
        self.security_group = _compute_security_group(
            host, self, f"compute of tenant {names.tenant_id}: its database and Secrets Manager"
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.CompositePrincipal(*(iam.ServicePrincipal(p) for p in principals)),
            description=f"compute of tenant {names.tenant_id}",
        )
        acknowledge_inline_policy(self.role)
        self.db_user_arn = db_user_arn(self, host.database.resource_id, names.iam_user)
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["rds-db:connect"], resources=[self.db_user_arn])
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                resources=[secret.secret_arn],
            )
        )
        self.role.add_to_policy(
            read_secrets_with_key(self, host.key.key_arn, secret_arn=secret.secret_arn)
        )


class SharedCompute(Construct):
    """The role and security group of a host's shared (pooled) compute."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        host: DatabaseHost,
        principals: Sequence[str] = ("lambda.amazonaws.com",),
    ) -> None:
        super().__init__(scope, id_)
        self.host = host
        self.security_group = _compute_security_group(
            host, self, "shared compute: the database and Secrets Manager"
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.CompositePrincipal(*(iam.ServicePrincipal(p) for p in principals)),
            description=f"shared compute of {host.reference.names.host}",
        )
        acknowledge_inline_policy(self.role)

    def allow_pool_login(self, *, iam_user: str, secret: secretsmanager.ISecret) -> None:
        """Pool tier: log in as the pool's IAM user, or read (and decrypt) the pool's runtime
        secret."""
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["rds-db:connect"],
                resources=[db_user_arn(self, self.host.database.resource_id, iam_user)],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                resources=[secret.secret_arn],
            )
        )
        self.role.add_to_policy(
            read_secrets_with_key(self, self.host.key.key_arn, secret_arn=secret.secret_arn)
        )

    def allow_pool_proxy_login(self, *, proxy_resource_id: str, user: str) -> None:
        """Pool tier through its RDS Proxy with IAM auth: connect to the proxy as `user`, the
        login whose secret the proxy holds; the dbuser ARN names the proxy (`prx-...`)."""
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["rds-db:connect"],
                resources=[db_user_arn(self, proxy_resource_id, user)],
            )
        )


class TenantAccessRole(Construct):
    """The tenant-access role of a shared cluster, assumable only by `shared.role` with exactly
    one session tag, `tenant`, whose value cannot be one that matches no tenant by construction.

    Its policy reaches the tenant's own resources through `${aws:PrincipalTag/tenant}`: the db
    user `tenant_<tag><db_user_suffix>` on this cluster (bridge: `_iam`, the tenant's IAM user;
    a strict pool: `_pool`, the tenant's pool login) and, with `secrets`, secrets whose `tenant`
    resource tag equals the session tag (and whose host tag is this host), and the host key to
    decrypt, through Secrets Manager, only the secret named for the session tag. A session
    without the tag reaches nothing.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        shared: SharedCompute,
        db_user_suffix: str = IAM_USER_SUFFIX,
        secrets: bool = True,
    ) -> None:
        """`secrets`: false for a strict pool, whose tenants log in with IAM tokens and have no
        secrets (and whose host holds the shared runtime secret, tagged tenant=pool)."""
        super().__init__(scope, id_)
        host = shared.host
        principal = iam.SessionTagsPrincipal(iam.ArnPrincipal(shared.role.role_arn))
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=principal.with_conditions(
                {
                    "ForAllValues:StringEquals": {"aws:TagKeys": ["tenant"]},
                    "StringLike": {"aws:RequestTag/tenant": "?*"},
                    "StringNotLike": {"aws:RequestTag/tenant": FORBIDDEN_TENANT_TAGS},
                }
            ),
            max_session_duration=cdk.Duration.hours(1),
            description=f"tenant access on {host.reference.names.host} (session tag tenant)",
        )
        acknowledge_inline_policy(self.role)
        tag = "${aws:PrincipalTag/tenant}"
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["rds-db:connect"],
                resources=[
                    db_user_arn(
                        self,
                        host.database.resource_id,
                        f"{IAM_USER_PREFIX}{tag}{db_user_suffix}",
                    )
                ],
            )
        )
        if secrets:
            self._read_tenant_secrets(host, tag)
        shared.role.add_to_policy(
            iam.PolicyStatement(
                actions=["sts:AssumeRole", "sts:TagSession"], resources=[self.role.role_arn]
            )
        )

    def _read_tenant_secrets(self, host: DatabaseHost, tag: str) -> None:
        read = iam.PolicyStatement(
            actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            resources=[host_secrets_arn(self)],
            conditions={
                "StringEquals": {
                    "secretsmanager:ResourceTag/tenant": tag,
                    f"secretsmanager:ResourceTag/{HOST_TAG}": host.reference.names.host,
                }
            },
        )
        self.role.add_to_policy(read)
        self.role.add_to_policy(
            read_secrets_with_key(
                self,
                host.key.key_arn,
                # Secrets Manager ARNs end in -<6 random characters>.
                secret_arn=cdk.Stack.of(self).format_arn(
                    service="secretsmanager",
                    resource="secret",
                    resource_name=f"{login_secret_name(tag)}-??????",
                    arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                ),
            )
        )
        cdk.Validations.of(self.role).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:"
                "<AWS::Region>:<AWS::AccountId>:secret:tenantkit/*]",
                reason="Tenant secrets are created by tenant stacks; a session reads only the "
                "secret whose tenant tag equals its own session tag (ABAC)",
            )
        )
