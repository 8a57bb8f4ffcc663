"""The gates CI relies on: cdk-nag (AwsSolutions, HIPAA Security, NIST 800-53 rev. 5, PCI DSS
3.2.1) and cfn-lint, plus acknowledgement hygiene."""

import json
import subprocess
from collections import Counter
from pathlib import Path

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_logs as logs
import pytest
from constructs import IConstruct

from app import build_app
from tenant_constructs.acknowledgements import RULE_PACKS
from tenantkit.catalog import load_catalog, parse_catalog
from tenantkit.compliance import (
    PACK_NAMES,
    PackFindings,
    acknowledged_rule,
    nag_findings,
    pack_of,
    render,
)

from .conftest import CFN_LINT, Synth, cdk_context

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_app_synthesizes_with_no_nag_findings_and_no_warnings(synth: Synth) -> None:
    # The fixture's synth raises on any unacknowledged finding; the report agrees, and TLS is
    # verified by default, so there is no warning left either.
    report = json.loads((Path(synth.assembly.directory) / "validation-report.json").read_text())
    findings = {
        (plugin["pluginName"], violation["ruleName"], violation["severity"])
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
    }
    assert findings == set()


@pytest.fixture(scope="module")
def gate_failure() -> str:
    """What synth raises when the app's gate (build_app) meets an open security group and an
    unencrypted log group."""
    app = cdk.App(context=cdk_context())
    build_app(app, parse_catalog({"tenants": []}))
    stack = cdk.Stack(app, "Violating")
    vpc = ec2.Vpc(stack, "Vpc", nat_gateways=0, max_azs=1)
    group = ec2.SecurityGroup(stack, "Open", vpc=vpc)
    group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(5432))
    logs.LogGroup(stack, "Plain")
    with pytest.raises(RuntimeError, match="ValidationFailed") as raised:
        app.synth()
    return str(raised.value)


@pytest.mark.parametrize(
    "rule",
    [
        "AwsSolutions-EC23",
        "HIPAA.Security-CloudWatchLogGroupEncrypted",
        "NIST.800.53.R5-CloudWatchLogGroupEncrypted",
        "PCI.DSS.321-CloudWatchLogGroupEncrypted",
    ],
)
def test_each_pack_of_the_nag_gate_fails_synth_on_a_violation(gate_failure: str, rule: str) -> None:
    assert rule in gate_failure


def _acknowledgements(synth: Synth) -> list[tuple[IConstruct, str, str]]:
    key = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    return [
        (construct, acknowledged_rule(rule), reason)
        for construct in synth.app.node.find_all()
        for entry in construct.node.metadata
        if entry.type == key
        for rule, reason in entry.data.items()
        if pack_of(acknowledged_rule(rule)) is not None  # not CDK's own validation notes
    ]


def test_acknowledgements_are_narrow_and_explained(synth: Synth) -> None:
    found: Counter[str] = Counter()
    for construct, rule, reason in _acknowledgements(synth):
        pack = pack_of(rule)
        assert pack is not None
        found[pack] += 1
        where = construct.node.path
        assert not isinstance(construct, cdk.Stack | cdk.App), (rule, where)
        # narrow: one resource, or a role with its default policy, a function with its
        # permission
        resources = [c for c in construct.node.find_all() if isinstance(c, cdk.CfnResource)]
        assert 1 <= len(resources) <= 2, (rule, where, [r.node.path for r in resources])
        if pack == "AwsSolutions":
            if "IAM4" in rule or "IAM5" in rule:  # rules with one finding per permission
                assert "[" in rule, f"{rule} acknowledges a whole rule, not one finding"
        else:
            name = rule.removeprefix(f"{pack}-")
            assert pack in RULE_PACKS[name], f"{rule}: {pack} has no rule {name}"
        assert len(reason) > 40, (rule, reason)
        assert "TODO" not in reason, (rule, reason)
    assert set(found) == set(PACK_NAMES), found


@pytest.mark.slow
def test_cfn_lint_finds_no_errors_in_any_template(synth: Synth) -> None:
    templates = sorted(Path(synth.assembly.directory).glob("*.template.json"))
    assert len(templates) == 7  # with the silo tier's dashboard stack
    result = subprocess.run(
        [*CFN_LINT, *map(str, templates)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_cfn_lint_gate_catches_a_broken_template(synth: Synth, tmp_path: Path) -> None:
    broken = tmp_path / "broken.template.json"
    broken.write_text(
        '{"Resources": {"Db": {"Type": "AWS::RDS::DBCluster", "Properties": {"Engine": 7}}}}'
    )
    good = Path(synth.assembly.directory) / "tenantkit-bridge.template.json"
    result = subprocess.run(
        [*CFN_LINT, str(good), str(broken)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert f"{broken}:1:" in result.stdout


@pytest.mark.slow
def test_the_findings_report_counts_nothing_left_on_the_sample_catalog() -> None:
    # `python -m tenantkit.compliance` on tenants.yaml: every pack runs, nothing is left, and
    # each pack's acknowledgements are counted
    findings = nag_findings(load_catalog(REPO_ROOT / "tenants.yaml"))
    assert list(findings) == list(PACK_NAMES)
    assert {name: pack.total for name, pack in findings.items()} == dict.fromkeys(PACK_NAMES, 0)
    assert all(pack.acknowledgements > 0 for pack in findings.values())


def test_the_findings_report_lists_each_rule_and_resource() -> None:
    findings = {name: PackFindings() for name in PACK_NAMES}
    findings["PCI.DSS.321"].findings["PCI.DSS.321-LambdaInsideVPC"] = 2
    findings["PCI.DSS.321"].resources["PCI.DSS.321-LambdaInsideVPC"] = ["s/a", "s/b"]
    text = render(findings, resources=True)
    assert "PCI.DSS.321             2                0" in text
    assert "     2  PCI.DSS.321-LambdaInsideVPC" in text
    assert "      s/b" in text
