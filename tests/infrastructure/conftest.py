"""One in-process synth of the app per session (bundling skipped), shared by template tests."""

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from app import build_app
from tenantkit.catalog import load_catalog, parse_catalog
from tenantkit.synth import offline_context

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_CATALOG = REPO_ROOT / "tests" / "fixtures" / "catalog.yaml"
BRIDGE = "tenantkit-bridge"
BRIDGE_CONTOSO = "tenantkit-bridge-contoso"
BRIDGE_FABRIKAM = "tenantkit-bridge-fabrikam"
SILO = "tenantkit-silo-northwind"
SILO_RDS = "tenantkit-silo-woodgrove"
POOL_STACK = "tenantkit-pool"


cdk_context = offline_context
"""cdk.json's context (feature flags change templates), bundling off, no version report."""


@dataclass
class Synth:
    """A synthesized app and its cloud assembly."""

    app: cdk.App
    assembly: Any

    def template(self, stack_name: str) -> Template:
        return Template.from_json(self.assembly.get_stack_by_name(stack_name).template)

    def raw(self, stack_name: str) -> dict[str, Any]:
        return self.assembly.get_stack_by_name(stack_name).template  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The app built from the fixture catalog; synth raises if cdk-nag finds anything."""
    outdir = str(tmp_path_factory.mktemp("cdk-out"))
    app = cdk.App(context=cdk_context(), outdir=outdir)
    build_app(app, load_catalog(FIXTURE_CATALOG), samples=True)
    return Synth(app=app, assembly=app.synth())


STRICT_POOL_CATALOG = {
    "pool": {"mode": "strict"},
    "tenants": [{"id": "tailspin", "tier": "pool"}, {"id": "litware", "tier": "pool"}],
    "auth": {
        "issuer": "https://auth.fixture.example/",
        "audience": "tenantkit-fixture",
        "jwks_file": "jwks.json",
    },
}
"""The fixture catalog's pool tenants in a strict pool (`pool: {mode: strict}`)."""


@pytest.fixture(scope="session")
def strict_pool(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The pool stack of STRICT_POOL_CATALOG with its sample functions; synth raises if
    cdk-nag finds anything."""
    outdir = str(tmp_path_factory.mktemp("cdk-out-strict"))
    app = cdk.App(context=cdk_context(), outdir=outdir)
    build_app(app, parse_catalog(STRICT_POOL_CATALOG, str(FIXTURE_CATALOG)), samples=True)
    return Synth(app=app, assembly=app.synth())


# cfn-lint as the gate runs it (Makefile CFN_LINT): errors fail; W3005 is CDK writing DependsOn
# next to the GetAtt that already implies it. "--" ends the options: --ignore-checks takes
# several values and would otherwise swallow the template paths (cfn-lint then reads stdin).
CFN_LINT = [
    str(Path(sys.executable).parent / "cfn-lint"),
    "--non-zero-exit-code=error",
    "--ignore-checks=W3005",
    "--",
]

_HASH = re.compile(r"[0-9a-f]{64}")


def normalized(template: dict[str, Any]) -> dict[str, Any]:
    """A template with asset hashes replaced, for snapshots stable across code changes."""
    return json.loads(_HASH.sub("<asset-hash>", json.dumps(template)))  # type: ignore[no-any-return]
