"""Per-tenant usage of a database host, sampled from PostgreSQL's own statistics: storage, rows,
connections and activity, for billing and for finding the noisy neighbour (README: Metering
and monitoring)."""

from ..provisioner.plans.pool_rls import TENANT_STATISTICS_TARGET
from .record import ensure_usage_table, read_usage, record_usage
from .sampler import (
    ANALYZE_AFTER_FRACTION,
    ANALYZE_AFTER_ROWS,
    PoolTableEstimate,
    TenantUsage,
    sample_pool,
    sample_tenant_databases,
)

__all__ = [
    "ANALYZE_AFTER_FRACTION",
    "ANALYZE_AFTER_ROWS",
    "TENANT_STATISTICS_TARGET",
    "PoolTableEstimate",
    "TenantUsage",
    "ensure_usage_table",
    "read_usage",
    "record_usage",
    "sample_pool",
    "sample_tenant_databases",
]
