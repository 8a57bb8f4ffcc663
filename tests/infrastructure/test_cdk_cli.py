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
from tenant_constructs.bundling import MIGRATIONS_ASSET_DIR
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
        "tenantkit-silo.template.json",  # the silo tier's dashboard
    ]


def lambda_bundles(cli_out: Path) -> dict[bool, Path]:
    """The CLI's lambda_src bundles by whether they carry the catalog's migrations: one shared
    by every provisioner of every stack (tenants.yaml has a schema: section), one by every
    other tenantkit function."""
    bundles = [p for p in cli_out.glob("asset.*") if (p / "lambda_src").is_dir()]
    by_migrations = {(p / MIGRATIONS_ASSET_DIR).is_dir(): p for p in bundles}
    assert len(bundles) == len(by_migrations) == 2, bundles
    return by_migrations


def test_lambda_bundle_holds_lambda_src_and_psycopg_for_arm64(cli_out: Path) -> None:
    bundles = lambda_bundles(cli_out)
    migrations = sorted(p.name for p in (bundles[True] / MIGRATIONS_ASSET_DIR).iterdir())
    assert migrations == sorted(p.name for p in (REPO_ROOT / "migrations").iterdir())
    for bundle in bundles.values():
        assert (bundle / "lambda_src" / "provisioner" / "handler.py").is_file()
        assert not list(bundle.rglob("__pycache__"))
        libs = [p.name for p in (bundle / "psycopg_binary").glob("*.so")]
        assert libs
        assert all("aarch64" in name or "cpython-314" in name for name in libs)


def test_every_function_gets_the_rds_ca_bundle_inside_its_asset(cli_out: Path) -> None:
    # GIVEN the lambda_src bundles the CLI built (with and without the migrations)
    bundles = list(lambda_bundles(cli_out).values())
    # THEN each holds the bundle make setup extracted, byte for byte
    for bundle in bundles:
        shipped = bundle / "lambda_src" / RDS_CA_BUNDLE
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
    assert {Path(value) for value in named} == {RDS_CA_BUNDLE}


def test_cli_output_passes_cfn_lint(cli_out: Path) -> None:
    templates = sorted(map(str, cli_out.glob("*.template.json")))
    result = subprocess.run(
        [*CFN_LINT, *templates],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
