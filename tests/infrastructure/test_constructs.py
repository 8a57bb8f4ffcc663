"""Construct-level behaviour: bad props fail at synth with a message naming the prop."""

from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Annotations, Match, Template

from stacks import BridgeClusterStack, BridgeTenantStack, SiloTenantStack
from tenant_constructs import ClusterCapacity, database_function
from tenantkit.catalog import ClusterSettings, parse_catalog

from .conftest import cdk_context

CATALOG = parse_catalog(
    {"tenants": [{"id": "contoso", "tier": "bridge"}, {"id": "northwind", "tier": "silo"}]}
)


def bridge(**props: object) -> BridgeClusterStack:
    app = cdk.App(context=cdk_context())
    return BridgeClusterStack(app, "Bridge", tenants=CATALOG.in_tier("bridge"), **props)  # type: ignore[arg-type]


def test_a_ca_bundle_inside_lambda_src_switches_the_provisioner_to_verify_full() -> None:
    # Any file inside lambda_src proves the wiring; a real deployment ships the RDS bundle.
    stack = bridge(ca_bundle="requirements.txt")
    for handler in ("provisioner", "rotation"):
        Template.from_stack(stack).has_resource_properties(
            "AWS::Lambda::Function",
            {
                "Handler": f"lambda_src.{handler}.handler.on_event",
                "Environment": {
                    "Variables": Match.object_like({"TENANTKIT_SSL_ROOT_CERT": "requirements.txt"})
                },
            },
        )
    Annotations.from_stack(stack).has_no_warning("*", Match.string_like_regexp("No CA bundle"))


def test_without_a_ca_bundle_the_functions_verify_against_the_shipped_rds_bundle() -> None:
    stack = bridge()
    for handler in ("provisioner", "rotation"):
        Template.from_stack(stack).has_resource_properties(
            "AWS::Lambda::Function",
            {
                "Handler": f"lambda_src.{handler}.handler.on_event",
                "Environment": {
                    "Variables": Match.object_like(
                        {"TENANTKIT_SSL_ROOT_CERT": "certs/rds-ca-bundle.pem"}
                    )
                },
            },
        )
    Annotations.from_stack(stack).has_no_warning("*", Match.any_value())


def test_synth_fails_naming_make_setup_when_the_shipped_bundle_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        database_function, "RDS_CA_BUNDLE_PATH", tmp_path / "certs" / "rds-ca-bundle.pem"
    )
    with pytest.raises(ValueError, match=r"RDS CA bundle .* is missing: run `make setup`"):
        bridge()


@pytest.mark.parametrize("path", ["../app.py", "/etc/hostname", "certs/missing.pem"])
def test_a_ca_bundle_outside_lambda_src_or_missing_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match=r"ca_bundle .* must name a file inside"):
        bridge(ca_bundle=path)


def test_invalid_cluster_capacity_is_refused_naming_the_values() -> None:
    with pytest.raises(ValueError, match="min_acu=8, max_acu=4"):
        ClusterCapacity(min_acu=8, max_acu=4)


def test_stacks_refuse_tenants_of_another_tier() -> None:
    app = cdk.App(context=cdk_context())
    with pytest.raises(ValueError, match="is in tier 'silo'"):
        BridgeTenantStack(app, "Bridge", tenant=CATALOG.get("northwind"))
    with pytest.raises(ValueError, match="is in tier 'bridge'"):
        SiloTenantStack(app, "Silo", tenant=CATALOG.get("contoso"))


def test_connection_limits_above_the_cluster_budget_warn_at_synth() -> None:
    catalog = parse_catalog(
        {"tenants": [{"id": f"b{n}", "tier": "bridge", "connection_limit": 400} for n in range(3)]}
    )
    app = cdk.App(context=cdk_context())
    stack = BridgeClusterStack(
        app, "Bridge", tenants=catalog.tenants, cluster=ClusterSettings(max_acu=4)
    )
    Annotations.from_stack(stack).has_warning(
        "/Bridge",
        Match.string_like_regexp("add up to 1200, above the 881 connections .* at max_acu=4 "),
    )


def test_the_connection_budget_follows_the_configured_capacity() -> None:
    # GIVEN three tenants of 400 connections (1,200) WHEN the cluster has 16 ACUs (3,584
    # connections) THEN no warning; with db.t4g.medium instances (405) one tenant is too many
    catalog = parse_catalog(
        {"tenants": [{"id": f"b{n}", "tier": "bridge", "connection_limit": 400} for n in range(3)]}
    )
    roomy = BridgeClusterStack(
        cdk.App(context=cdk_context()),
        "Bridge",
        tenants=catalog.tenants,
        cluster=ClusterSettings(max_acu=16),
    )
    Annotations.from_stack(roomy).has_no_warning(
        "*", Match.string_like_regexp("connection limits add up")
    )
    with pytest.raises(
        ValueError,
        match=r"b0 \(400\), b1 \(400\), b2 \(400\): connection_limit above the 385 "
        r"connections the cluster offers at instance class db\.t4g\.medium .*"
        r"clusters\.bridge\.max_acu or instance_class",
    ):
        BridgeClusterStack(
            cdk.App(context=cdk_context()),
            "Bridge",
            tenants=catalog.tenants,
            cluster=ClusterSettings(instance_class="t4g.medium"),
        )


def test_a_tenant_limit_the_cluster_can_never_give_stops_synth_naming_it() -> None:
    catalog = parse_catalog(
        {"tenants": [{"id": "greedy", "tier": "bridge", "connection_limit": 5000}]}
    )
    app = cdk.App(context=cdk_context())
    with pytest.raises(ValueError, match=r"bridge tenants greedy \(5000\): connection_limit above"):
        BridgeClusterStack(app, "Bridge", tenants=catalog.tenants, cluster=ClusterSettings())


def test_max_connections_follows_auroras_formula() -> None:
    assert ClusterCapacity(max_acu=4).max_connections == 901
    assert ClusterCapacity(max_acu=128).max_connections == 5000
    # an instance class: 90 % of its memory (db.t4g.medium's documented 405)
    assert ClusterCapacity(instance_class="t4g.medium").max_connections == 405
    assert ClusterCapacity(instance_class="r6g.large").max_connections == 1622
    assert ClusterCapacity(instance_class="r6g.16xlarge").max_connections == 5000
