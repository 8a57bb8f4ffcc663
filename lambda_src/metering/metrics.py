"""Which CloudWatch metrics one sample of a host publishes, with bounded cardinality.

Every sample publishes the host's own series (dimensions `host` and `tier`): totals, and the
worst tenant of each noisy-neighbour signal, which the host's alarms watch. Per-tenant series
(dimensions `host`, `tier` and `tenant`) are published only for the tenants that matter at that
sample: the TOP_TENANTS largest by storage, by connections, by storage growth and by
transactions, and every tenant over an alarm threshold (at most TOP_TENANTS more, worst
first). A host of 1,000+ tenants thus publishes at most 5 x TOP_TENANTS tenant series sets per
sample, not one per tenant: CloudWatch bills each dimension combination as a custom metric.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .sampler import TenantUsage

NAMESPACE = "tenantkit"
TOP_TENANTS = 20
"""Tenants published per signal and per sample (the catalog's metering.top_tenants)."""


@dataclass(frozen=True)
class AlarmThresholds:
    """When a tenant is a noisy neighbour (the catalog's metering: settings of the host)."""

    connection_percent: float = 80.0
    """Sessions as a percentage of the tenant's connection limit."""
    storage_growth_bytes_per_day: float = 1024**3
    long_statement_seconds: float = 300.0


@dataclass(frozen=True)
class MetricSet:
    """Metrics sharing one set of dimensions: one embedded-metric-format document."""

    dimensions: dict[str, str]
    values: dict[str, tuple[float, str]]
    """Metric name -> (value, CloudWatch unit)."""


def connection_percent(usage: TenantUsage) -> float | None:
    """Sessions as a percentage of the connection limit (None: no limit or not attributable)."""
    if usage.connections is None or not usage.connection_limit:
        return None
    return round(100.0 * usage.connections / usage.connection_limit, 1)


def over_threshold(usage: TenantUsage, thresholds: AlarmThresholds) -> float:
    """How far the tenant is over its worst threshold (> 1: over one; 0: none measurable)."""
    ratios = [
        (connection_percent(usage) or 0.0) / thresholds.connection_percent,
        (usage.storage_growth_bytes_per_day or 0.0) / thresholds.storage_growth_bytes_per_day,
        (usage.longest_statement_s or 0.0) / thresholds.long_statement_seconds,
    ]
    return max(ratios)


def _top(
    usages: Sequence[TenantUsage], key: Callable[[TenantUsage], float | None], n: int
) -> list[TenantUsage]:
    ranked = [(key(u), u) for u in usages]
    measured = [(value, u) for value, u in ranked if value is not None and value > 0]
    return [u for _value, u in sorted(measured, key=lambda pair: -pair[0])[:n]]


def selected_tenants(
    usages: Sequence[TenantUsage], thresholds: AlarmThresholds, top: int = TOP_TENANTS
) -> list[TenantUsage]:
    """The tenants whose own series this sample publishes (at most 5 x `top`)."""
    chosen: dict[str, TenantUsage] = {}
    for key in (
        lambda u: float(u.storage_bytes),
        lambda u: None if u.connections is None else float(u.connections),
        lambda u: u.storage_growth_bytes_per_day,
        lambda u: None if u.transactions is None else float(u.transactions),
        lambda u: ratio if (ratio := over_threshold(u, thresholds)) > 1 else None,
    ):
        for usage in _top(usages, key, top):
            chosen.setdefault(usage.tenant_id, usage)
    return sorted(chosen.values(), key=lambda u: u.tenant_id)


def _tenant_values(usage: TenantUsage) -> dict[str, tuple[float, str]]:
    values: dict[str, tuple[float, str]] = {
        "StorageBytes": (float(usage.storage_bytes), "Bytes"),
        "Rows": (float(usage.rows), "Count"),
    }
    optional = {
        "Connections": (usage.connections, "Count"),
        "ConnectionUsePercent": (connection_percent(usage), "Percent"),
        "LongestStatementSeconds": (usage.longest_statement_s, "Seconds"),
        "StorageGrowthBytesPerDay": (usage.storage_growth_bytes_per_day, "Bytes"),
        "Transactions": (usage.transactions, "Count"),
        "RowsWritten": (usage.rows_written, "Count"),
    }
    values.update({k: (float(v), unit) for k, (v, unit) in optional.items() if v is not None})
    return values


def metric_sets(
    usages: Sequence[TenantUsage],
    *,
    host: str,
    tier: str,
    thresholds: AlarmThresholds = AlarmThresholds(),
    top: int = TOP_TENANTS,
) -> list[MetricSet]:
    """The host's set, then one per selected tenant."""

    def worst(values: list[float | None]) -> float:
        return max((v for v in values if v is not None), default=0.0)

    host_values: dict[str, tuple[float, str]] = {
        "Tenants": (float(len(usages)), "Count"),
        "StorageBytes": (float(sum(u.storage_bytes for u in usages)), "Bytes"),
        "MaxConnectionUsePercent": (worst([connection_percent(u) for u in usages]), "Percent"),
        "MaxLongestStatementSeconds": (worst([u.longest_statement_s for u in usages]), "Seconds"),
        "MaxStorageGrowthBytesPerDay": (
            worst([u.storage_growth_bytes_per_day for u in usages]),
            "Bytes",
        ),
        "TenantsOverStorageGrowth": (
            float(
                sum(
                    1
                    for u in usages
                    if (u.storage_growth_bytes_per_day or 0)
                    > thresholds.storage_growth_bytes_per_day
                )
            ),
            "Count",
        ),
    }
    attributable = [u.connections for u in usages if u.connections is not None]
    if attributable:
        host_values["Connections"] = (float(sum(attributable)), "Count")
    sets = [MetricSet({"host": host, "tier": tier}, host_values)]
    for usage in selected_tenants(usages, thresholds, top):
        sets.append(
            MetricSet(
                {"host": host, "tier": tier, "tenant": usage.tenant_id}, _tenant_values(usage)
            )
        )
    return sets
