"""tenantctl's local mode: the catalog's tenants provisioned on the embedded PostgreSQL by the
provisioner's own handler, with the same events CloudFormation would send."""

import json
import secrets
import time
from dataclasses import dataclass, field

import boto3
import psycopg

from lambda_src.provisioner.config import HandlerConfig, RetryPolicy
from lambda_src.provisioner.errors import ProvisioningError
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import tenant_database_properties

from .catalog import Tenant
from .embedded_pg import RunningServer

# The Provider framework's function ARN in a real event; unused locally.
LOCAL_SERVICE_TOKEN = "arn:aws:lambda:us-east-1:000000000000:function:tenantkit-local"  # noqa: S105


@dataclass(frozen=True)
class ProvisionResult:
    """Outcome of provisioning one tenant locally."""

    tenant: Tenant
    ok: bool
    changes: int
    seconds: float
    error: str | None = None


@dataclass
class IsolationReport:
    """Who could connect where: each login to its own database, and to every other one."""

    own_ok: list[str] = field(default_factory=list)
    own_failed: list[str] = field(default_factory=list)
    cross_refused: int = 0
    cross_allowed: list[str] = field(default_factory=list)
    """Cross-tenant attempts that were not refused for lack of CONNECT privilege."""

    @property
    def ok(self) -> bool:
        """True when every tenant reached its own database and was refused by all others."""
        return not self.own_failed and not self.cross_allowed


def ensure_local_secret(tenant: Tenant, server: RunningServer) -> str:
    """Create (or reuse) the tenant's login secret in the local Secrets Manager; return its ARN.

    Like the generated secret in AWS, it holds a random password the handler reads itself.
    """
    client = boto3.client("secretsmanager")
    names = tenant.names
    try:
        return str(client.describe_secret(SecretId=names.secret_name)["ARN"])
    except client.exceptions.ResourceNotFoundException:
        pass
    secret = {
        "engine": "postgres",
        "host": server.host,
        "port": server.port,
        "username": names.login_role,
        "password": secrets.token_urlsafe(24),
        "dbname": names.database,
    }
    created = client.create_secret(
        Name=names.secret_name,
        SecretString=json.dumps(secret),
        Tags=[{"Key": "tenant", "Value": tenant.id}],
    )
    return str(created["ARN"])


def create_event(tenant: Tenant, secret_arn: str) -> dict[str, object]:
    """The Create event CloudFormation's Provider framework would send for this tenant."""
    properties: dict[str, object] = {"ServiceToken": LOCAL_SERVICE_TOKEN}
    properties.update(
        tenant_database_properties(
            tenant_id=tenant.id,
            connection_limit=tenant.connection_limit,
            statement_timeout_ms=tenant.statement_timeout_ms,
            removal_policy=tenant.removal_policy,
            iam_auth=tenant.iam_auth,
            password_secret_arn=secret_arn,
        )
    )
    return {
        "RequestType": "Create",
        "ServiceToken": LOCAL_SERVICE_TOKEN,
        "ResponseURL": "http://127.0.0.1/unused",
        "StackId": "arn:aws:cloudformation:us-east-1:000000000000:stack/tenantkit-local/0",
        "RequestId": secrets.token_hex(8),
        "LogicalResourceId": f"Tenant{tenant.id.replace('-', '')}",
        "ResourceType": "Custom::TenantDatabase",
        "ResourceProperties": properties,
    }


def provision_tenant_databases(
    tenants: list[Tenant], server: RunningServer, *, retry: RetryPolicy = RetryPolicy(attempts=3)
) -> list[ProvisionResult]:
    """Create-or-converge each tenant's database through the provisioner's handler."""
    config = HandlerConfig(admin_settings=server.admin_settings(), retry=retry)
    results = []
    for tenant in tenants:
        started = time.perf_counter()
        try:
            arn = ensure_local_secret(tenant, server)
            response = handle(create_event(tenant, arn), config)
            changes = int(response["Data"]["Changes"])
            results.append(ProvisionResult(tenant, True, changes, time.perf_counter() - started))
        except ProvisioningError as error:
            results.append(
                ProvisionResult(tenant, False, 0, time.perf_counter() - started, str(error))
            )
    return results


def login_password(tenant: Tenant) -> str:
    """The tenant's current password, read from its secret as a client would."""
    client = boto3.client("secretsmanager")
    value = json.loads(client.get_secret_value(SecretId=tenant.names.secret_name)["SecretString"])
    return str(value["password"])


def check_isolation(tenants: list[Tenant], server: RunningServer) -> IsolationReport:
    """Each tenant's login must reach its own database and be refused by every other one."""
    report = IsolationReport()
    for tenant in tenants:
        password = login_password(tenant)
        for target in tenants:
            settings = server.settings(tenant.names.login_role, password, target.names.database)
            reason = ""
            try:
                with psycopg.connect(**settings.connect_kwargs()) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError as error:
                reason = str(error)
            label = f"{tenant.id} -> {target.id}"
            if target is tenant:
                (report.own_failed if reason else report.own_ok).append(label)
            elif "permission denied for database" in reason:
                report.cross_refused += 1
            else:
                # Reached it, or failed for another reason: either way not proven isolated.
                report.cross_allowed.append(f"{label}: {reason or 'connected'}")
    return report
