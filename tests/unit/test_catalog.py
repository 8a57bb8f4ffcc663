"""The tenant catalog: typed, validated, defaults per tier, errors that say where."""

from pathlib import Path
from typing import Any

import pytest

from tenantkit.catalog import BUILTIN_DEFAULTS, CatalogError, load_catalog, parse_catalog

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_sample_catalog_has_every_tier_the_spine_needs() -> None:
    catalog = load_catalog(REPO_ROOT / "tenants.yaml")
    assert len(catalog.in_tier("pool")) >= 2
    assert len(catalog.in_tier("bridge")) >= 2
    assert len(catalog.in_tier("silo")) >= 1


def test_unset_settings_come_from_the_tier_defaults() -> None:
    catalog = parse_catalog({"tenants": [{"id": "acme", "tier": "silo"}]})
    tenant = catalog.get("acme")
    silo = BUILTIN_DEFAULTS["silo"]
    assert tenant.connection_limit == silo.connection_limit
    assert tenant.statement_timeout_ms == silo.statement_timeout_ms
    assert tenant.removal_policy == "retain"
    assert tenant.iam_auth is True


def test_file_defaults_override_builtin_defaults_field_by_field() -> None:
    catalog = parse_catalog(
        {
            "defaults": {"silo": {"connection_limit": 7}},
            "tenants": [{"id": "acme", "tier": "silo"}],
        }
    )
    tenant = catalog.get("acme")
    assert tenant.connection_limit == 7
    assert tenant.statement_timeout_ms == BUILTIN_DEFAULTS["silo"].statement_timeout_ms


def test_tenant_settings_override_defaults() -> None:
    catalog = parse_catalog(
        {
            "defaults": {"bridge": {"connection_limit": 7}},
            "tenants": [{"id": "acme", "tier": "bridge", "connection_limit": 9}],
        }
    )
    assert catalog.get("acme").connection_limit == 9


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"id": "acme", "tier": "bridge", "connection_limit": 0},
            "tenants.yaml: tenants[0] (id 'acme'): connection_limit: Input should be greater",
        ),
        ({"id": "acme", "tier": "gold"}, "tenants[0] (id 'acme'): tier: Input should be"),
        ({"id": "Bad;DROP", "tier": "pool"}, "tenants[0] (id 'Bad;DROP'): id: tenant id"),
        ({"id": "postgres", "tier": "bridge"}, "tenants[0] (id 'postgres'): id: tenant id"),
        ({"id": "acme", "tier": "bridge", "colour": "red"}, "colour: Extra inputs"),
        ({"tier": "bridge"}, "tenants[0]: id: Field required"),
        (
            {"id": "acme", "tier": "pool", "connection_limit": 3},
            "connection_limit can be set for silo and bridge tenants only",
        ),
        (
            {"id": "acme", "tier": "bridge", "removal_policy": "delete"},
            "removal_policy: Input should be 'retain' or 'destroy'",
        ),
    ],
)
def test_invalid_entries_are_reported_with_file_entry_and_field(
    entry: dict[str, object], expected: str
) -> None:
    with pytest.raises(CatalogError, match=None) as raised:
        parse_catalog({"tenants": [entry]}, "tenants.yaml")
    assert expected in str(raised.value)


def test_duplicate_ids_are_rejected_naming_both_entries() -> None:
    with pytest.raises(CatalogError) as raised:
        parse_catalog(
            {"tenants": [{"id": "acme", "tier": "bridge"}, {"id": "acme", "tier": "silo"}]},
            "tenants.yaml",
        )
    assert "duplicate tenant id(s): 'acme' at tenants[0, 1]" in str(raised.value)


def test_every_problem_is_reported_not_only_the_first() -> None:
    with pytest.raises(CatalogError) as raised:
        parse_catalog(
            {"tenants": [{"id": "x!", "tier": "pool"}, {"id": "ok", "tier": "nope"}]}, "c.yaml"
        )
    assert str(raised.value).count("c.yaml:") == 2


def test_unreadable_file_and_bad_yaml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants: [\n")
    with pytest.raises(CatalogError, match=r"bad\.yaml: not valid YAML"):
        load_catalog(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(CatalogError, match="must be a mapping"):
        load_catalog(scalar)


def test_lookup_of_an_unknown_tenant_names_the_catalog() -> None:
    catalog = parse_catalog({"tenants": [{"id": "acme", "tier": "pool"}]}, "tenants.yaml")
    with pytest.raises(KeyError, match=r"not in tenants\.yaml"):
        catalog.get("globex")


def test_the_verify_probes_are_on_unless_the_catalog_turns_them_off() -> None:
    tenants = [{"id": "acme", "tier": "pool"}]
    assert parse_catalog({"tenants": tenants}).pool.verify_probes is True
    off = parse_catalog({"tenants": tenants, "pool": {"verify_probes": False}})
    assert off.pool.verify_probes is False
    with pytest.raises(
        CatalogError, match=r"t\.yaml: pool: verify_probes: Input should be a valid boolean"
    ):
        parse_catalog({"tenants": tenants, "pool": {"verify_probes": "sometimes"}}, "t.yaml")


def test_the_pool_has_no_rds_proxy_unless_the_catalog_asks_for_one() -> None:
    tenants = [{"id": "acme", "tier": "pool"}]
    assert parse_catalog({"tenants": tenants}).pool.proxy is None
    assert parse_catalog({"tenants": tenants, "pool": {"proxy": False}}).pool.proxy is None
    # `proxy: true` is the proxy with its defaults: RDS Proxy's idle timeout, a tenth of the
    # cluster's connections left for what connects directly
    on = parse_catalog({"tenants": tenants, "pool": {"proxy": True}}).pool.proxy
    assert on is not None
    assert (on.idle_client_timeout_s, on.max_connections_percent) == (1800, 90)
    tuned = parse_catalog(
        {"tenants": tenants, "pool": {"proxy": {"idle_client_timeout_s": 300}}}
    ).pool.proxy
    assert tuned is not None
    assert (tuned.idle_client_timeout_s, tuned.max_connections_percent) == (300, 90)


@pytest.mark.parametrize(
    ("proxy", "message"),
    [
        ("on", r"pool: proxy: true, false or the proxy's settings .*not 'on'"),
        (3, r"pool: proxy: true, false or the proxy's settings"),
        (
            {"max_connections_percent": 0},
            r"pool: proxy\.max_connections_percent: .* greater than or equal to 1",
        ),
        (
            {"max_connections_percent": 101},
            r"pool: proxy\.max_connections_percent: .* less than or equal to 100",
        ),
        (
            {"idle_client_timeout_s": 0},
            r"pool: proxy\.idle_client_timeout_s: .* greater than or equal to 1",
        ),
        (
            {"idle_client_timeout_s": 28_801},
            r"pool: proxy\.idle_client_timeout_s: .* less than or equal to 28800",
        ),
        ({"require_tls": False}, r"pool: proxy: not a setting: require_tls: TLS is always"),
        ({"iam_auth": False}, r"pool: proxy: not a setting: iam_auth: .* follows pool\.iam_auth"),
        ({"pinning_filters": []}, r"pool: proxy\.pinning_filters: Extra inputs are not permitted"),
    ],
)
def test_bad_proxy_settings_are_refused_naming_the_field(proxy: object, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_catalog({"tenants": [], "pool": {"proxy": proxy}}, "tenants.yaml")


def test_shared_clusters_default_to_a_serverless_writer_and_a_reader_with_backups() -> None:
    clusters = parse_catalog({"tenants": []}).clusters
    for cluster in (clusters.bridge, clusters.pool):
        assert (cluster.min_acu, cluster.max_acu, cluster.instance_class) == (0.5, 16, None)
        assert cluster.readers == 1
        assert cluster.backup_retention_days == 14
        assert cluster.backup_copy is None
        assert (cluster.performance_insights, cluster.monitoring_interval) == (True, 60)
        assert cluster.metering.schedule_minutes == 5
        assert cluster.metering.storage_growth_mb_per_day == 1024


@pytest.mark.parametrize(
    ("clusters", "message"),
    [
        ({"bridge": {"instance_class": "r6g.large", "max_acu": 8}}, "not both"),
        ({"pool": {"instance_class": "q9.huge"}}, r"pool\.instance_class: unknown instance class"),
        ({"bridge": {"readers": 16}}, r"bridge\.readers: Input should be less than or equal"),
        ({"bridge": {"backup_copy": {"vault_arn": "my-vault"}}}, r"backup_copy\.vault_arn"),
        ({"silo": {}}, r"clusters: silo: Extra inputs are not permitted"),
        (
            {"pool": {"metering": {"storage_growth_mb_per_day": 0}}},
            r"pool\.metering\.storage_growth_mb_per_day: Input should be greater than or equal",
        ),
        (
            {"bridge": {"metering": {"connection_percent": 101}}},
            r"bridge\.metering\.connection_percent: Input should be less than or equal to 100",
        ),
        ({"bridge": {"metering": {"alarm": 1}}}, r"bridge\.metering\.alarm: Extra inputs"),
    ],
)
def test_bad_cluster_settings_are_refused_naming_the_field(
    clusters: dict[str, Any], message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_catalog({"tenants": [], "clusters": clusters}, "tenants.yaml")


def test_the_schema_section_names_the_migrations_relative_to_the_catalog(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "tenants.yaml"
    path.parent.mkdir()
    path.write_text("schema:\n  directory: migrations\ntenants: []\n")

    loaded = load_catalog(path)

    assert loaded.schema is not None
    assert loaded.migrations_directory() == tmp_path / "conf" / "migrations"
    assert loaded.schema.tenant_schemas == ("public",)
    assert loaded.schema.shared_tables == ()


def test_a_catalog_without_a_schema_section_says_so_when_migrations_are_asked_for() -> None:
    loaded = parse_catalog({"tenants": []}, "tenants.yaml")

    assert loaded.schema is None
    with pytest.raises(CatalogError, match=r"tenants.yaml: no schema: section"):
        loaded.migrations_directory()


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({}, r"tenants.yaml: schema: directory: Field required"),
        ({"directory": ""}, r"schema: directory: String should have at least 1 character"),
        ({"directory": "m", "tenant_schemas": []}, r"schema: tenant_schemas: Tuple should have"),
        ({"directory": "m", "tenant_schemas": ["a-b"]}, r"schema: tenant_schemas\.0: String"),
        ({"directory": "m", "tenant_schemas": ["pg_catalog"]}, r"tenant_schemas: pg_catalog: res"),
        ({"directory": "m", "tenant_schemas": ["tenantkit"]}, r"tenant_schemas: tenantkit: res"),
        ({"directory": "m", "tenant_schemas": ["app", "app"]}, r"tenant_schemas: listed twice"),
        ({"directory": "m", "shared_tables": ["a.b.c"]}, r"schema: shared_tables\.0: String"),
        ({"directory": "m", "tables": []}, r"schema: tables: Extra inputs are not permitted"),
    ],
)
def test_bad_schema_settings_are_refused_naming_the_field(
    schema: dict[str, Any], message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_catalog({"tenants": [], "schema": schema}, "tenants.yaml")


def test_a_shared_table_cannot_also_be_a_pool_tenant_table() -> None:
    doc = {
        "tenants": [],
        "pool": {"tenant_tables": ["app.items", "app.notes"]},
        "schema": {"directory": "m", "shared_tables": ["app.items"]},
    }
    with pytest.raises(CatalogError, match=r"schema.shared_tables: app.items also in pool"):
        parse_catalog(doc, "tenants.yaml")


def test_listed_pool_tables_in_a_tenant_schema_are_derived_and_the_others_are_not() -> None:
    # GIVEN tables listed in a tenant schema (qualified, and unqualified: public) and outside
    doc = {
        "tenants": [],
        "pool": {"tenant_tables": ["app.items", "notes", "shop.orders"]},
        "schema": {"directory": "m", "tenant_schemas": ["app", "public"]},
    }
    # THEN the first two are derived from the schema (listing them is redundant), not the third
    assert parse_catalog(doc, "tenants.yaml").derived_tenant_tables == ("app.items", "notes")
    # and without a schema: section nothing is derived
    del doc["schema"]
    assert parse_catalog(doc, "tenants.yaml").derived_tenant_tables == ()


def test_pool_tenant_tables_keep_working_beside_a_schema_section() -> None:
    doc = {
        "tenants": [],
        "pool": {"tenant_tables": ["app.items"]},
        "schema": {"directory": "m", "tenant_schemas": ["app"], "shared_tables": ["ref.codes"]},
    }
    loaded = parse_catalog(doc, "tenants.yaml")

    assert loaded.pool.tenant_tables == ("app.items",)
    assert loaded.schema is not None
    assert loaded.schema.tenant_schemas == ("app",)


def test_a_strict_pool_is_selected_in_the_catalog_and_needs_iam_auth() -> None:
    tenants = [{"id": "acme", "tier": "pool"}]
    assert parse_catalog({"tenants": tenants}).pool.mode == "settable"
    assert parse_catalog({"tenants": tenants, "pool": {"mode": "strict"}}).pool.mode == "strict"
    with pytest.raises(CatalogError, match=r"pool: mode strict needs iam_auth: true.*USD 0.40"):
        parse_catalog({"tenants": tenants, "pool": {"mode": "strict", "iam_auth": False}})
    with pytest.raises(CatalogError, match="pool: mode: Input should be 'settable' or 'strict'"):
        parse_catalog({"tenants": tenants, "pool": {"mode": "paranoid"}})
    with pytest.raises(CatalogError, match="mode strict and proxy: the pool's RDS Proxy"):
        parse_catalog({"tenants": tenants, "pool": {"mode": "strict", "proxy": True}})
