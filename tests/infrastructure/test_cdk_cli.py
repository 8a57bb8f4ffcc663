"""`cdk synth` through the pinned CLI, without AWS credentials, with real bundling.

Where the test may create a network namespace (as root, as in CI) the synth runs with no network
at all, which proves it needs none.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lambda_src.core.connection import RDS_CA_BUNDLE, RDS_CA_BUNDLE_PATH
from tenantkit.ca_bundle import MIN_CERTIFICATES

from .conftest import CFN_LINT

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def _can_cut_the_network() -> bool:
    """True when this process may run a command in a new, empty network namespace (root)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "--", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def cli_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cdk-cli-out")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k != "CDK_DEFAULT_ACCOUNT"
    }
    env["PATH"] = f"{REPO_ROOT / 'node_modules' / '.bin'}{os.pathsep}{env['PATH']}"
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # no credential lookups against instance metadata
    command = ["cdk", "synth", "--quiet", "--output", str(out)]
    if _can_cut_the_network():
        command = ["unshare", "--net", "--", *command]
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_cli_synthesizes_every_stack_of_the_sample_catalog(cli_out: Path) -> None:
    stacks = sorted(p.name for p in cli_out.glob("*.template.json"))
    assert stacks == [
        "tenantkit-bridge-globex.template.json",
        "tenantkit-bridge-initech.template.json",
        "tenantkit-bridge.template.json",
        "tenantkit-pool.template.json",
        "tenantkit-silo-acme.template.json",
    ]


def test_lambda_bundle_holds_lambda_src_and_psycopg_for_arm64(cli_out: Path) -> None:
    bundles = [p for p in cli_out.glob("asset.*") if (p / "lambda_src").is_dir()]
    assert len(bundles) == 1  # one bundle, shared by every function of every stack
    bundle = bundles[0]
    assert (bundle / "lambda_src" / "provisioner" / "handler.py").is_file()
    assert not list(bundle.rglob("__pycache__"))
    libs = [p.name for p in (bundle / "psycopg_binary").glob("*.so")]
    assert libs
    assert all("aarch64" in name or "cpython-314" in name for name in libs)


def test_every_function_gets_the_rds_ca_bundle_inside_its_asset(cli_out: Path) -> None:
    # GIVEN the one lambda_src bundle the CLI built
    (bundle,) = [p for p in cli_out.glob("asset.*") if (p / "lambda_src").is_dir()]
    shipped = bundle / "lambda_src" / RDS_CA_BUNDLE
    # THEN it holds the bundle make setup extracted, byte for byte
    assert shipped.read_bytes() == RDS_CA_BUNDLE_PATH.read_bytes()
    assert shipped.read_text().count("-----BEGIN CERTIFICATE-----") >= MIN_CERTIFICATES
    # and every tenantkit function names it, relative to lambda_src (as the handler resolves it)
    named = []
    for template in cli_out.glob("*.template.json"):
        for resource in json.loads(template.read_text())["Resources"].values():
            properties = resource.get("Properties", {})
            if resource["Type"] == "AWS::Lambda::Function" and str(
                properties.get("Handler", "")
            ).startswith("lambda_src."):
                named.append(properties["Environment"]["Variables"]["TENANTKIT_SSL_ROOT_CERT"])
    assert len(named) >= 6  # provisioner and rotator of the bridge, pool and silo hosts
    assert {bundle / "lambda_src" / value for value in named} == {shipped}


def test_cli_output_passes_cfn_lint(cli_out: Path) -> None:
    templates = sorted(map(str, cli_out.glob("*.template.json")))
    result = subprocess.run(
        [*CFN_LINT, *templates],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
