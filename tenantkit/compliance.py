"""cdk-nag's rule packs for the synth gate, and a report of what they find.

`python -m tenantkit.compliance [--catalog tenants.yaml] [--samples]` builds the app as
`cdk synth` does (offline, bundling off), runs each pack over the whole construct tree and
prints the unacknowledged findings per pack and rule, plus how many acknowledgements each pack
has; exit 1 if any finding is left.
"""

import argparse
import os
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .catalog import Catalog, load_catalog
from .synth import offline_context, with_repo_node

if TYPE_CHECKING:
    import aws_cdk as cdk
    from cdk_nag import NagPack

PACK_NAMES = ("AwsSolutions", "HIPAA.Security", "NIST.800.53.R5", "PCI.DSS.321")
"""The packs' rule-id prefixes, in the order the gate registers them."""


def compliance_packs() -> "list[NagPack]":
    """AwsSolutions, HIPAA Security, NIST 800-53 rev. 5 and PCI DSS 3.2.1: the synth gate."""
    from cdk_nag import (
        AwsSolutionsChecks,
        HIPAASecurityChecks,
        NIST80053R5Checks,
        PCIDSS321Checks,
    )

    return [AwsSolutionsChecks(), HIPAASecurityChecks(), NIST80053R5Checks(), PCIDSS321Checks()]


def acknowledged_rule(key: str) -> str:
    """The rule id of an acknowledgement's metadata key (CDK writes `Annotation::<id>`)."""
    return re.sub(r"^annotation::", "", key, flags=re.IGNORECASE)


def pack_of(rule_id: str) -> str | None:
    """The pack a rule id (e.g. `HIPAA.Security-RDSInBackupPlan[...]`) belongs to."""
    return next((p for p in PACK_NAMES if rule_id.startswith(f"{p}-")), None)


@dataclass
class PackFindings:
    """One pack's unacknowledged findings (rule -> resources) and its acknowledgement count."""

    findings: Counter[str] = field(default_factory=Counter)
    acknowledgements: int = 0
    resources: dict[str, list[str]] = field(default_factory=dict)
    """Rule id -> construct paths of the resources it flags."""

    @property
    def total(self) -> int:
        """Unacknowledged findings (one per rule and resource)."""
        return sum(self.findings.values())


def acknowledgements(app: "cdk.App") -> Counter[str]:
    """Acknowledgements per pack: (construct, rule id) pairs in the construct tree."""
    import aws_cdk as cdk

    counts: Counter[str] = Counter()
    key = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    for construct in app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == key:
                for rule in entry.data:
                    pack = pack_of(acknowledged_rule(rule))
                    if pack is not None:
                        counts[pack] += 1
    return counts


def nag_findings(catalog: Catalog, *, samples: bool = False) -> dict[str, PackFindings]:
    """Build the app from `catalog` and run every pack over it, whatever the gate registers."""
    os.environ["PATH"] = with_repo_node(os.environ.get("PATH", ""))
    import aws_cdk as cdk

    from app import build_app

    with tempfile.TemporaryDirectory(prefix="tenantkit-nag-") as outdir:
        app = cdk.App(context=offline_context(), outdir=outdir)
        build_app(app, catalog, samples=samples)
        try:
            app.synth()  # aspects run first, so the tree is the one the gate sees
        except RuntimeError as error:
            if "ValidationFailed" not in str(error):
                raise
        result = {name: PackFindings() for name in PACK_NAMES}
        for pack in compliance_packs():
            for violation in pack.validate_scope(app).violations:
                name = pack_of(violation.rule_name)
                assert name is not None, violation.rule_name
                paths = [str(r.construct_path) for r in violation.violating_resources]
                result[name].findings[violation.rule_name] += len(paths)
                result[name].resources.setdefault(violation.rule_name, []).extend(paths)
        for name, count in acknowledgements(app).items():
            result[name].acknowledgements = count
        return result


def _rule(rule_id: str) -> str:
    return rule_id.split("[", 1)[0]


def render(findings: dict[str, PackFindings], *, resources: bool = False) -> str:
    """Totals per pack, then the findings per rule (per-finding ids folded into their rule);
    `resources`: every rule id with the construct paths it flags."""
    lines = [f"{'pack':<16} {'findings':>8} {'acknowledgements':>16}"]
    lines += [f"{n:<16} {p.total:>8} {p.acknowledgements:>16}" for n, p in findings.items()]
    for pack in findings.values():
        by_rule: Counter[str] = Counter()
        for rule_id, count in pack.findings.items():
            by_rule[_rule(rule_id)] += count
        for rule, count in sorted(by_rule.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"  {count:>4}  {rule}")
        if resources:
            for rule_id, paths in sorted(pack.resources.items()):
                lines.append(f"  {rule_id}")
                lines += [f"      {path}" for path in paths]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the report; 1 if any pack has an unacknowledged finding."""
    parser = argparse.ArgumentParser(prog="python -m tenantkit.compliance")
    parser.add_argument("--catalog", type=Path, default=Path("tenants.yaml"))
    parser.add_argument("--samples", action="store_true", help="with the sample functions")
    parser.add_argument("--resources", action="store_true", help="list the flagged resources")
    args = parser.parse_args(argv)
    findings = nag_findings(load_catalog(args.catalog), samples=args.samples)
    print(f"{args.catalog}{' (samples)' if args.samples else ''}")
    print(render(findings, resources=args.resources))
    return 1 if any(p.total for p in findings.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
