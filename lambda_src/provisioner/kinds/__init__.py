"""Resource kinds the provisioner understands; the `Kind` resource property selects one."""

from .base import AdminSession, Outcome, RemovalPolicy, ResourceKind
from .tenant_database import TenantDatabase, TenantDatabaseSpec, tenant_database_properties

KINDS: dict[str, ResourceKind] = {"TenantDatabase": TenantDatabase()}

__all__ = [
    "KINDS",
    "AdminSession",
    "Outcome",
    "RemovalPolicy",
    "ResourceKind",
    "TenantDatabase",
    "TenantDatabaseSpec",
    "tenant_database_properties",
]
