"""Every physical name derived from a tenant id, in one place.

app.py, the tenantctl CLI and the provisioner Lambda all call tenant_names(); nothing else builds
a database, role, secret or stack name from a tenant id.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from .ids import validate_tenant_id

PG_NAME_PREFIX = "tenant_"
IAM_USER_PREFIX = PG_NAME_PREFIX
IAM_USER_SUFFIX = "_iam"
POOL_LOGIN_SUFFIX = "_pool"
SECRET_NAME_PREFIX = "tenantkit/"  # noqa: S105 (a name prefix)
STACK_NAME_PREFIX = "tenantkit-"
BRIDGE_HOST = f"{STACK_NAME_PREFIX}bridge"
"""The bridge tier's shared cluster (its stack, cluster identifier and host tag)."""
SILO_MONITORING = f"{STACK_NAME_PREFIX}silo"
"""The silo tier's own stack: the dashboard of every silo tenant (no tenant's stack can have
this name: a silo tenant's is `tenantkit-silo-<id>`, and an id is never empty)."""
HOST_TAG = "tenantkit-host"
"""Resource tag naming the host a secret belongs to; the host's functions may use only those."""


@dataclass(frozen=True)
class TenantNames:
    """The physical names of one tenant's objects in PostgreSQL and AWS."""

    tenant_id: str
    database: str
    """The tenant's database (bridge and silo tiers)."""
    owner_role: str
    """NOLOGIN role that owns the tenant's database and its public schema."""
    objects_role: str
    """NOLOGIN role that owns the application's objects in the tenant's database (tables,
    sequences, functions, types): both logins start their sessions there as it, so what one
    creates the other can use; migrations run as it, never as the admin or a login."""
    login_role: str
    """Password login role of the tenant's application."""
    iam_user: str
    """Database user for IAM authentication (granted rds_iam, so it has no password login).

    Unlike the other names it keeps the id's hyphens (`tenant_acme-corp_iam`), so an IAM policy
    can name it from a session tag: `dbuser:<resource id>/tenant_${aws:PrincipalTag/tenant}_iam`.
    """
    pool_login: str
    """The tenant's own login to the pool database in strict mode (`tenant_acme-corp_pool`),
    a member of the pool's runtime group. Like iam_user it keeps the id's hyphens: an IAM
    policy names it from a session tag, and the pool's isolation policy reads the tenant back
    from session_user (PG_NAME_PREFIX + id + POOL_LOGIN_SUFFIX)."""
    secret_name: str
    """Secrets Manager name of the login role's credentials."""
    silo_stack_name: str
    """CloudFormation stack of the tenant when it is in the silo tier (also its host's name)."""
    bridge_stack_name: str
    """CloudFormation stack of the tenant when it is in the bridge tier."""

    @property
    def roles(self) -> tuple[str, str, str, str]:
        """All roles of the tenant, login roles first (the order to revoke and drop them)."""
        return (self.login_role, self.iam_user, self.objects_role, self.owner_role)


def login_secret_name(tenant: str) -> str:
    """`tenantkit/<tenant>/app`; `tenant` may be an IAM policy variable (not validated here:
    tenant_names validates real ids)."""
    return f"{SECRET_NAME_PREFIX}{tenant}/app"


def secret_owner(secret_id: str) -> str | None:
    """Whose secret `secret_id` (a name or an ARN) is: the tenant or host segment of
    `tenantkit/<owner>/...`, or None for a secret tenantkit did not name."""
    name = secret_id.split(":secret:", 1)[-1]
    if not name.startswith(SECRET_NAME_PREFIX):
        return None
    owner = name.removeprefix(SECRET_NAME_PREFIX).split("/", 1)[0]
    return owner or None


def tenant_names(tenant_id: str, *, allow_probes: bool = False) -> TenantNames:
    """Derive every physical name of `tenant_id`, validating it first (`allow_probes`: the
    verify probe tenants too, whose ids are otherwise reserved).

    With MAX_TENANT_ID_LENGTH = 32 the longest PostgreSQL name is 45 bytes, inside the 63-byte
    identifier limit (tests check the longest id).
    """
    validate_tenant_id(tenant_id, allow_probes=allow_probes)
    base = PG_NAME_PREFIX + tenant_id.replace("-", "_")
    names = TenantNames(
        tenant_id=tenant_id,
        database=base,
        owner_role=f"{base}_owner",
        objects_role=f"{base}_objects",
        login_role=f"{base}_app",
        iam_user=f"{PG_NAME_PREFIX}{tenant_id}{IAM_USER_SUFFIX}",
        pool_login=f"{PG_NAME_PREFIX}{tenant_id}{POOL_LOGIN_SUFFIX}",
        secret_name=login_secret_name(tenant_id),
        silo_stack_name=f"{STACK_NAME_PREFIX}silo-{tenant_id}",
        bridge_stack_name=f"{BRIDGE_HOST}-{tenant_id}",
    )
    return names


@dataclass(frozen=True)
class PoolNames:
    """The physical names of the pool tier's shared objects (one pool per cluster)."""

    database: str = "tenantkit_pool"
    owner_role: str = "tenantkit_pool_owner"
    """NOLOGIN owner of the pool's schemas, tables and functions."""
    runtime_role: str = "tenantkit_pool_runtime"
    """NOLOGIN group the tenant policies and DML grants name; the logins below are members."""
    login_role: str = "tenantkit_pool_app"
    """Password login of the shared application (not the owner, NOBYPASSRLS)."""
    iam_user: str = "tenantkit_pool_iam"
    """IAM-auth login of the shared application (granted rds_iam)."""
    maintainer_role: str = "tenantkit_pool_maintainer"
    """NOLOGIN role whose policy sees every row: only the provisioner, to purge a tenant."""
    registry_schema: str = "tenantkit"
    sample_schema: str = "tenantkit_sample"
    secret_name: str = f"{SECRET_NAME_PREFIX}pool/app"
    stack_name: str = f"{STACK_NAME_PREFIX}pool"
    tenant_setting: str = "app.tenant_id"
    """The transaction-local setting that names the current tenant."""

    @property
    def roles(self) -> tuple[str, ...]:
        """All pool roles, login roles first (the order to revoke and drop them)."""
        return (
            self.login_role,
            self.iam_user,
            self.runtime_role,
            self.maintainer_role,
            self.owner_role,
        )


POOL = PoolNames()


@dataclass(frozen=True)
class HostNames:
    """Physical names of one database host (a cluster with its provisioner and rotator).

    Fixed names let stacks deployed apart (a bridge tenant's and the bridge cluster's) refer
    to each other without CloudFormation exports.
    """

    host: str
    """Stack name, cluster identifier and value of the HOST_TAG tag."""

    @property
    def database_identifier(self) -> str:
        """The Aurora cluster's or RDS instance's identifier."""
        return self.host

    @property
    def provisioner_function(self) -> str:
        """The custom-resource framework function (the service token's function)."""
        return f"{self.host}-provisioner"

    @property
    def rotation_function(self) -> str:
        """The function that rotates every login secret of the host."""
        return f"{self.host}-rotation"

    @property
    def metering_function(self) -> str:
        """The function that samples the host's per-tenant usage on a schedule."""
        return f"{self.host}-metering"

    @property
    def mobility_function(self) -> str:
        """The function that exports the host's tenants into its export bucket and imports
        them from it (tenantctl export|import --provision aws invokes it by this name)."""
        return f"{self.host}-mobility"

    @property
    def migration_state_machine(self) -> str:
        """The state machine that brings the host's tenant databases to the latest migration,
        in waves (tenantctl migrate apply --provision aws starts it by this name)."""
        return f"{self.host}-migrate"

    @property
    def proxy_name(self) -> str:
        """The host's RDS Proxy, if it has one (the pool's, `pool.proxy` in the catalog): the
        name its CloudWatch metrics are reported under (dimension ProxyName)."""
        return self.host

    @property
    def admin_secret_name(self) -> str:
        """The cluster admin's secret."""
        return f"{SECRET_NAME_PREFIX}{self.host}/admin"

    @property
    def key_alias(self) -> str:
        """Alias of the host's KMS key, by which stacks deployed apart (a bridge tenant's)
        encrypt their secrets with it."""
        return f"alias/{self.host}"

    @property
    def interface_parameter(self) -> str:
        """SSM parameter the host's stack writes once its provisioner, rotator and key alias
        exist; a stack that reaches the host by name reads it before it creates anything."""
        return f"/tenantkit/{self.host}/interface-version"

    @property
    def log_group_prefix(self) -> str:
        """Every log group of the host's own functions and network starts with this."""
        return f"/tenantkit/{self.host}/"

    def log_group(self, purpose: str) -> str:
        """The log group of one of the host's functions (or its flow logs)."""
        return f"{self.log_group_prefix}{purpose}"

    @property
    def backup_vault(self) -> str:
        """The host's AWS Backup vault (at most 50 characters: a stack name is at most 47)."""
        return self.host


def qualified_table(name: str) -> tuple[str, str]:
    """(schema, table) of a catalog's `[schema.]name`; an unqualified name is in public (the
    schema PostgreSQL resolves it to for the provisioner's sessions)."""
    schema, _, table = name.rpartition(".")
    return (schema or "public", table)


def in_tenant_schema(name: str, tenant_schemas: Sequence[str]) -> bool:
    """Whether the table `[schema.]name` is in one of the application's tenant schemas."""
    return qualified_table(name)[0] in tenant_schemas
