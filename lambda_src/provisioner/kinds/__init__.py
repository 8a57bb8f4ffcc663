"""Resource kinds the provisioner understands; the `Kind` resource property selects one."""

from ..settings import RemovalPolicy, TenantDatabaseSettings
from .base import AdminSession, Outcome, ResourceKind
from .pool import (
    PoolDatabase,
    PoolMigrations,
    PoolTenants,
    pool_batch_of,
    pool_batches,
    pool_database_properties,
    pool_tenants_properties,
)
from .tenant_database import TenantDatabase, TenantDatabaseSpec

KINDS: dict[str, ResourceKind] = {
    "TenantDatabase": TenantDatabase(),
    "PoolDatabase": PoolDatabase(),
    "PoolTenants": PoolTenants(),
}

__all__ = [
    "KINDS",
    "AdminSession",
    "Outcome",
    "PoolDatabase",
    "PoolMigrations",
    "PoolTenants",
    "RemovalPolicy",
    "ResourceKind",
    "TenantDatabase",
    "TenantDatabaseSettings",
    "TenantDatabaseSpec",
    "pool_batch_of",
    "pool_batches",
    "pool_database_properties",
    "pool_tenants_properties",
]
