"""Runtime helpers for tenant compute: connections and transactions scoped to one tenant.

Ships in lambda_src beside the provisioner and is importable by the application's own functions:
`TokenVerifier` turns a bearer JWT into a verified tenant id, `TenantDataAccess` turns a tenant id
into a connection by access pattern, `tenant_transaction` scopes a pool-tier transaction.
"""

from .access import AccessConfig, Pattern, SecretLogins, TenantDataAccess, access_from_env
from .credentials import TenantSessions, tenant_session_policy
from .identity import TokenVerifier, UnverifiedTenantError, bearer_token
from .pool import TenantContextError, tenant_transaction

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
    "bearer_token",
    "tenant_session_policy",
    "tenant_transaction",
]
