"""How a catalog tenant becomes a TenantDatabase: the one mapping the tier stacks share."""

from constructs import Construct

from tenant_constructs import HostReference, TenantDatabase
from tenantkit.catalog import Tenant


def tenant_database(
    scope: Construct, id_: str, *, host: HostReference, tenant: Tenant
) -> TenantDatabase:
    """A TenantDatabase on `host` with the tenant's catalog settings."""
    return TenantDatabase(
        scope,
        id_,
        host=host,
        tenant_id=tenant.id,
        connection_limit=tenant.connection_limit,
        statement_timeout_ms=tenant.statement_timeout_ms,
        removal_policy=tenant.removal_policy,
        iam_auth=tenant.iam_auth,
        suspended=tenant.suspended,
    )
