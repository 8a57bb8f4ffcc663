"""The metering function's metrics: bounded per host however many tenants it has."""

from datetime import UTC, datetime

from lambda_src.metering.metrics import AlarmThresholds, metric_sets, selected_tenants
from lambda_src.metering.sampler import TenantUsage

AT = datetime(2026, 12, 1, tzinfo=UTC)


def usage(n: int, **fields: object) -> TenantUsage:
    values: dict[str, object] = {
        "storage_bytes": 1000 + n,
        "connections": n % 7,
        "connection_limit": 100,
        "transactions": n % 13,
        "storage_growth_bytes_per_day": float(n % 17),
        "longest_statement_s": 0.0,
        **fields,
    }
    return TenantUsage(f"t{n:05d}", "bridge", AT, table_rows={"public.t": n}, **values)  # type: ignore[arg-type]


def test_a_host_of_1500_tenants_publishes_at_most_five_times_top_tenant_sets() -> None:
    usages = [usage(n) for n in range(1500)]
    sets = metric_sets(usages, host="tenantkit-bridge", tier="bridge", top=20)
    assert sets[0].dimensions == {"host": "tenantkit-bridge", "tier": "bridge"}
    assert sets[0].values["Tenants"] == (1500.0, "Count")
    tenant_sets = sets[1:]
    assert 20 <= len(tenant_sets) <= 100
    assert all(set(s.dimensions) == {"host", "tier", "tenant"} for s in tenant_sets)


def test_a_noisy_neighbour_is_published_and_raises_the_hosts_worst_value() -> None:
    usages = [usage(n) for n in range(500)]
    usages.append(usage(9999, storage_bytes=1, connections=95, longest_statement_s=900.0))
    sets = metric_sets(usages, host="h", tier="bridge", top=3)
    published = {s.dimensions.get("tenant") for s in sets}
    assert "t09999" in published
    assert sets[0].values["MaxConnectionUsePercent"] == (95.0, "Percent")
    assert sets[0].values["MaxLongestStatementSeconds"] == (900.0, "Seconds")


def test_a_settable_pool_publishes_no_connection_figures_it_cannot_attribute() -> None:
    usages = [usage(n, connections=None, connection_limit=None) for n in range(10)]
    sets = metric_sets(usages, host="tenantkit-pool", tier="pool", top=3)
    assert "Connections" not in sets[0].values
    assert all("Connections" not in s.values for s in sets[1:])


def test_tenants_over_the_growth_threshold_are_counted() -> None:
    fast = usage(1, storage_growth_bytes_per_day=5.0 * 1024**3)
    sets = metric_sets([fast, usage(2)], host="h", tier="silo")
    assert sets[0].values["TenantsOverStorageGrowth"] == (1.0, "Count")
    assert [u.tenant_id for u in selected_tenants([fast], AlarmThresholds(), top=1)] == ["t00001"]
