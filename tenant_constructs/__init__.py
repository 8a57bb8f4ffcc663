"""tenantkit's L3 constructs (the design card's `constructs/`; a root package by that name
would shadow the `constructs` library that aws-cdk-lib imports)."""

from .backup import BackupCopy, DatabaseBackup
from .compute import SharedCompute, TenantAccessRole, TenantCompute
from .database_host import DatabaseHost
from .databases import ClusterCapacity, DatabaseOperations, HostDatabase, MeteringProps
from .host_reference import HostReference
from .metering import SiloTierDashboard, TenantMetering
from .network import DatabaseNetwork
from .pool import PoolDatabase, PoolTenants
from .pool_proxy import PoolProxy
from .samples import SampleFunctions, auth_environment
from .secret_rotator import SecretRotator
from .sql_provisioner import SqlProvisioner
from .tenant_database import TenantDatabase

__all__ = [
    "BackupCopy",
    "ClusterCapacity",
    "DatabaseBackup",
    "DatabaseHost",
    "DatabaseNetwork",
    "DatabaseOperations",
    "HostDatabase",
    "HostReference",
    "MeteringProps",
    "PoolDatabase",
    "PoolProxy",
    "PoolTenants",
    "SampleFunctions",
    "SecretRotator",
    "SharedCompute",
    "SiloTierDashboard",
    "SqlProvisioner",
    "TenantAccessRole",
    "TenantCompute",
    "TenantDatabase",
    "TenantMetering",
    "auth_environment",
]
