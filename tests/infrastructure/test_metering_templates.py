"""Each host's metering: the scheduled function in the VPC, its schedule, the noisy-neighbour
alarms, the encrypted alarm topic, the dashboard of each shared tier's host and the silo tier's
one dashboard of every silo."""

import json
import re
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Capture, Match

from app import build_app
from lambda_src.core import environment as names
from lambda_src.tenancy import POOL, SILO_MONITORING, HostNames
from tenant_constructs import MeteringProps
from tenantkit.catalog import parse_catalog
from tenantkit.deployment import DeployTarget

from .conftest import BRIDGE, FIXTURE_CATALOG, POOL_STACK, SILO, SILO_RDS, Synth, cdk_context


def resources(synth: Synth, stack: str, type_: str) -> dict[str, Any]:
    return {k: v for k, v in synth.raw(stack)["Resources"].items() if v["Type"] == type_}


@pytest.mark.parametrize(
    ("stack", "tier"), [(BRIDGE, "bridge"), (POOL_STACK, "pool"), (SILO, "silo")]
)
def test_every_host_has_a_metering_function_in_its_vpc_with_its_tier(
    synth: Synth, stack: str, tier: str
) -> None:
    template = synth.template(stack)
    environment = Capture()
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": HostNames(stack).metering_function,
            "Handler": "lambda_src.metering.handler.on_schedule",
            "VpcConfig": Match.object_like({"SubnetIds": Match.any_value()}),
            "Environment": {"Variables": environment},
        },
    )
    variables = environment.as_object()
    assert variables[names.METERING_HOST] == stack
    assert variables[names.METERING_TIER] == tier
    assert variables[names.METERING_TOP_TENANTS] == "20"
    assert variables.get(names.METERING_REGISTRY_DATABASE) == (
        POOL.database if tier == "pool" else None
    )
    assert names.ADMIN_SECRET_ARN in variables


def test_an_eventbridge_schedule_runs_the_metering_function(synth: Synth) -> None:
    template = synth.template(BRIDGE)
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(5 minutes)",
            "State": "ENABLED",
            "Targets": [Match.object_like({"RetryPolicy": {"MaximumRetryAttempts": 1}})],
        },
    )


def test_the_metering_function_may_read_only_its_hosts_tagged_secrets(synth: Synth) -> None:
    policies = resources(synth, BRIDGE, "AWS::IAM::Policy")
    [metering] = [p for k, p in policies.items() if "Metering" in k and "ReadAdmin" in k]
    statements = metering["Properties"]["PolicyDocument"]["Statement"]
    secret = next(s for s in statements if s["Action"] == "secretsmanager:GetSecretValue")
    assert secret["Condition"] == {
        "StringEquals": {"secretsmanager:ResourceTag/tenantkit-host": BRIDGE}
    }
    decrypt = next(s for s in statements if s["Action"] == "kms:Decrypt")
    assert "kms:ViaService" in decrypt["Condition"]["StringEquals"]


@pytest.mark.parametrize("stack", [BRIDGE, POOL_STACK, SILO])
def test_noisy_neighbour_alarms_notify_a_kms_encrypted_topic_that_requires_tls(
    synth: Synth, stack: str
) -> None:
    template = synth.template(stack)
    topics = resources(synth, stack, "AWS::SNS::Topic")
    [(topic_id, topic)] = topics.items()
    assert "KmsMasterKeyId" in topic["Properties"]
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )
    alarms = resources(synth, stack, "AWS::CloudWatch::Alarm")
    watched = {a["Properties"].get("MetricName") for a in alarms.values()}
    assert {
        "MaxConnectionUsePercent",
        "TenantsOverStorageGrowth",
        "MaxLongestStatementSeconds",
        "Errors",
    } <= watched
    for alarm in alarms.values():
        properties = alarm["Properties"]
        if properties.get("Namespace") == "tenantkit":
            assert {"Name": "host", "Value": stack} in properties["Dimensions"]
        assert properties["AlarmActions"] == [{"Ref": topic_id}]


def test_the_host_key_lets_cloudwatch_publish_alarms_to_the_topic(synth: Synth) -> None:
    template = synth.template(POOL_STACK)
    template.has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Sid": "CloudWatchAlarmsToTheHostTopic",
                                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_each_shared_host_and_the_silo_tier_have_a_dashboard_and_a_silo_host_none(
    synth: Synth,
) -> None:
    for stack in (BRIDGE, POOL_STACK, SILO_MONITORING):
        [dashboard] = resources(synth, stack, "AWS::CloudWatch::Dashboard").values()
        assert dashboard["Properties"]["DashboardName"] == f"{stack}-tenants"
    for silo in (SILO, SILO_RDS):
        assert resources(synth, silo, "AWS::CloudWatch::Dashboard") == {}
    # the silo tier's stack is its dashboard and nothing else
    kinds = {r["Type"] for r in synth.raw(SILO_MONITORING)["Resources"].values()}
    assert kinds == {"AWS::CloudWatch::Dashboard"}


def dashboard_body(template: dict[str, Any]) -> str:
    """The dashboard's JSON body, its Fn::Join parts (the region) as `<token>`."""
    [dashboard] = [
        r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else "<token>" for p in parts)


def test_the_silo_dashboard_searches_every_silo_by_its_tier_dimension(synth: Synth) -> None:
    widgets = json.loads(dashboard_body(synth.raw(SILO_MONITORING)))["widgets"]
    expressions = [
        m[0]["expression"] for w in widgets for m in w.get("properties", {}).get("metrics", [])
    ]
    searched = {
        (schema, metric)
        for e in expressions
        for schema, metric in re.findall(
            r"SEARCH\('\{tenantkit,([a-z,]+)\} MetricName=\"(\w+)\" tier=\"silo\"'", e
        )
    }
    # every expression is a search on the silo tier, and nothing else selects the series
    assert len(searched) == len(expressions)
    assert all('tier="silo"\'' in e and "host=" not in e for e in expressions)
    tenant_series = {m for schema, m in searched if schema == "host,tenant,tier"}
    host_series = {m for schema, m in searched if schema == "host,tier"}
    assert tenant_series == {
        "StorageBytes",
        "Connections",
        "StorageGrowthBytesPerDay",
        "Transactions",
    }
    assert {
        "MaxConnectionUsePercent",
        "MaxLongestStatementSeconds",
        "MaxStorageGrowthBytesPerDay",
        "TenantsOverStorageGrowth",
        "Tenants",
    } <= host_series
    top_ten = [e for e in expressions if e.startswith("SORT(")]
    assert top_ten
    assert all(e.endswith(", MAX, DESC, 10)") for e in top_ten)


def test_the_silo_dashboard_names_no_tenant_so_a_new_silo_changes_nothing(synth: Synth) -> None:
    # GIVEN the fixture's silo dashboard (northwind, woodgrove) and one for a single other silo
    body = dashboard_body(synth.raw(SILO_MONITORING))
    for silo in ("northwind", "woodgrove"):
        assert silo not in body
    other = parse_catalog({"tenants": [{"id": "solo", "tier": "silo"}]}, str(FIXTURE_CATALOG))
    app = build_app(cdk.App(context=cdk_context()), other, target=DeployTarget(tier="silo"))
    # THEN both templates are the same: no silo tenant's deploy needs the dashboard changed
    alone = app.synth().get_stack_by_name(SILO_MONITORING).template
    assert alone == synth.raw(SILO_MONITORING)
    assert "Alarms" in body
    assert "tenantkit-silo-" in body


def test_metering_thresholds_out_of_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match=r"connection_percent must be 10\.\.100, not 120"):
        MeteringProps(connection_percent=120)
