"""Tenant mobility: one tenant's data exported from any tier, imported into any tier, and
counted and checksummed table by table so a copy can be proven whole.

Runs wherever it can reach the tenant's database as the admin (tenantctl locally; a function
inside the VPC in AWS): it imports nothing from aws_cdk or tenantkit.
"""

from .export import ExportError, Manifest, default_export_dir, export_tenant
from .load import (
    ImportFailedError,
    ImportRefusedError,
    ImportResult,
    import_tenant,
    read_manifest,
    verify_export,
)
from .stream import CopyFailedError, StreamedCopy, streamed_copy
from .tables import SchemaVersion, TableDigest, TenantScope, schema_version, tenant_digests

__all__ = [
    "CopyFailedError",
    "ExportError",
    "ImportFailedError",
    "ImportRefusedError",
    "ImportResult",
    "Manifest",
    "SchemaVersion",
    "StreamedCopy",
    "TableDigest",
    "TenantScope",
    "default_export_dir",
    "export_tenant",
    "import_tenant",
    "read_manifest",
    "schema_version",
    "streamed_copy",
    "tenant_digests",
    "verify_export",
]
