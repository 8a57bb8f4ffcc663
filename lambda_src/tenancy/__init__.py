"""Tenant identity: the tenant-id rules and every physical name derived from a tenant id."""

from .ids import MAX_TENANT_ID_LENGTH, InvalidTenantIdError, validate_tenant_id
from .names import TenantNames, tenant_names

__all__ = [
    "MAX_TENANT_ID_LENGTH",
    "InvalidTenantIdError",
    "TenantNames",
    "tenant_names",
    "validate_tenant_id",
]
