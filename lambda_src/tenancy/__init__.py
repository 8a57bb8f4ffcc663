"""Tenant identity: the tiers, the tenant-id rules and every physical name derived from an id."""

from .ids import (
    MAX_TENANT_ID_LENGTH,
    MIN_TENANT_ID_LENGTH,
    PROBE_TENANT_IDS,
    RESERVED_TENANT_ID_PREFIXES,
    TENANT_ID_PATTERN,
    InvalidTenantIdError,
    validate_tenant_id,
)
from .names import (
    BRIDGE_HOST,
    HOST_TAG,
    IAM_USER_PREFIX,
    IAM_USER_SUFFIX,
    POOL,
    HostNames,
    PoolNames,
    TenantNames,
    in_tenant_schema,
    login_secret_name,
    qualified_table,
    secret_owner,
    tenant_names,
)
from .tiers import TIERS, TIERS_ON_SHARED_CLUSTERS, TIERS_WITH_TENANT_DATABASES, Tier

__all__ = [
    "BRIDGE_HOST",
    "HOST_TAG",
    "IAM_USER_PREFIX",
    "IAM_USER_SUFFIX",
    "MAX_TENANT_ID_LENGTH",
    "MIN_TENANT_ID_LENGTH",
    "POOL",
    "PROBE_TENANT_IDS",
    "RESERVED_TENANT_ID_PREFIXES",
    "TENANT_ID_PATTERN",
    "TIERS",
    "TIERS_ON_SHARED_CLUSTERS",
    "TIERS_WITH_TENANT_DATABASES",
    "HostNames",
    "InvalidTenantIdError",
    "PoolNames",
    "TenantNames",
    "Tier",
    "in_tenant_schema",
    "login_secret_name",
    "qualified_table",
    "secret_owner",
    "tenant_names",
    "validate_tenant_id",
]
