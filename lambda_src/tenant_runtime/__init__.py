"""Runtime helpers for tenant compute: connections and transactions scoped to one tenant.

Ships beside the provisioner in lambda_src and is importable by the application's own functions.
"""

from .pool import TenantContextError, tenant_transaction

__all__ = ["TenantContextError", "tenant_transaction"]
