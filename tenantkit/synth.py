"""In-process synthesis for tenantctl (`plan`): the app as `cdk synth` builds it, offline,
without Lambda bundling, templates kept in memory."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .catalog import Catalog
from .deployment import EVERY_STACK, DeployTarget

REPO_ROOT = Path(__file__).resolve().parents[1]


def offline_context(**extra: Any) -> dict[str, Any]:
    """cdk.json's context (its feature flags shape the templates), bundling and the version
    report off, plus `extra`."""
    context: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    context.update({"aws:cdk:bundling-stacks": [], "aws:cdk:version-reporting": False})
    context.update(extra)
    return context


NODE_BIN = REPO_ROOT / "node_modules" / ".bin"
"""The repo's pinned CDK CLI and Node 22 (package.json), ahead of whatever the machine has."""


def with_repo_node(path: str) -> str:
    """`path` (a PATH value) with the repo's node_modules/.bin first."""
    return path if str(NODE_BIN) in path.split(os.pathsep) else f"{NODE_BIN}{os.pathsep}{path}"


def synth_templates(catalog: Catalog, target: DeployTarget = EVERY_STACK) -> dict[str, Any]:
    """Stack name -> template of what `target` needs; raises what synth raises (cdk-nag's
    ValidationFailed, a catalog error naming the tenant)."""
    # jsii runs aws-cdk-lib on the repo's own Node 22, as `cdk synth` does.
    os.environ["PATH"] = with_repo_node(os.environ.get("PATH", ""))
    import aws_cdk as cdk

    from app import build_app

    with tempfile.TemporaryDirectory(prefix="tenantkit-plan-") as outdir:
        app = cdk.App(context=offline_context(), outdir=outdir)
        build_app(app, catalog, target=target)
        return {stack.stack_name: stack.template for stack in app.synth().stacks}
