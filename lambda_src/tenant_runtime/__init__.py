"""Runtime helpers for tenant compute: connections and transactions scoped to one tenant.

Ships in lambda_src beside the provisioner and is importable by the application's own functions:
`TokenVerifier` turns a bearer JWT into a verified tenant id, `TenantDataAccess` turns a tenant id
into a connection by access pattern, `tenant_transaction` scopes a pool-tier transaction
(`async_tenant_transaction` on asyncio). SQLAlchemy sessions: `tenant_runtime.orm` (imported on
its own: SQLAlchemy is the application's dependency, not tenantkit's).
"""

from .access import AccessConfig, Pattern, SecretLogins, TenantDataAccess, access_from_env
from .context import TenantContextError
from .credentials import TenantSessions, tenant_session_policy
from .identity import TokenVerifier, UnverifiedTenantError, bearer_token
from .pool import tenant_transaction
from .pool_async import (
    async_tenant_connection,
    async_tenant_pool,
    async_tenant_transaction,
    reset_pooled_connection_async,
)

__all__ = [
    "AccessConfig",
    "Pattern",
    "SecretLogins",
    "TenantContextError",
    "TenantDataAccess",
    "TenantSessions",
    "TokenVerifier",
    "UnverifiedTenantError",
    "access_from_env",
    "async_tenant_connection",
    "async_tenant_pool",
    "async_tenant_transaction",
    "bearer_token",
    "reset_pooled_connection_async",
    "tenant_session_policy",
    "tenant_transaction",
]
