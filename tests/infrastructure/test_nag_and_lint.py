"""The gates CI relies on: cdk-nag AwsSolutions and cfn-lint, plus acknowledgement hygiene."""

import json
import subprocess
from pathlib import Path

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import pytest
from cdk_nag import AwsSolutionsChecks

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


def test_nag_gate_fails_synth_on_a_violation() -> None:
    app = cdk.App(context=cdk_context())
    stack = cdk.Stack(app, "Violating")
    vpc = ec2.Vpc(stack, "Vpc", nat_gateways=0, max_azs=1)
    group = ec2.SecurityGroup(stack, "Open", vpc=vpc)
    group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(5432))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed") as raised:
        app.synth()
    assert "AwsSolutions-EC23" in str(raised.value)


def test_acknowledgements_are_narrow_and_explained(synth: Synth) -> None:
    key = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    found = 0
    for construct in synth.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type != key:
                continue
            for rule, reason in entry.data.items():
                if "AwsSolutions" not in rule:
                    continue  # CDK's own template-validation notes
                found += 1
                assert not isinstance(construct, cdk.Stack | cdk.App), (rule, construct.node.path)
                if "IAM4" in rule or "IAM5" in rule:  # rules with one finding per permission
                    assert "[" in rule, f"{rule} acknowledges a whole rule, not one finding"
                assert len(reason) > 40, (rule, reason)
                assert "TODO" not in reason, (rule, reason)
    assert found > 0


def test_cfn_lint_finds_no_errors_in_any_template(synth: Synth) -> None:
    templates = sorted(Path(synth.assembly.directory).glob("*.template.json"))
    assert len(templates) == 6
    result = subprocess.run(
        [*CFN_LINT, *map(str, templates)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
