"""Lambda code assets for lambda_src, bundled locally (no Docker) with pinned wheels.

`make setup` downloads the Lambda's wheels (lambda_src/requirements.txt) for the function's
platform into .tenantkit/wheels/<arch>/; bundling installs from there with --no-index, so synth
needs no network. The asset hash is computed from the sources, the requirements and the
platform, so CDK skips re-bundling when nothing changed and tests that disable bundling
(context aws:cdk:bundling-stacks = []) still get a stable hash.
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import aws_cdk.aws_lambda as lambda_
import jsii

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDA_SRC = REPO_ROOT / "lambda_src"
LAMBDA_REQUIREMENTS = LAMBDA_SRC / "requirements.txt"
WHEELHOUSE = REPO_ROOT / ".tenantkit" / "wheels"

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_PYTHON_VERSION = "3.14"
_EXCLUDED = ("__pycache__", ".pyc", ".pytest_cache", ".mypy_cache")


def wheel_platforms(architecture: lambda_.Architecture) -> list[str]:
    """pip --platform tags for a Lambda architecture (Amazon Linux 2023: glibc 2.34)."""
    machine = "aarch64" if architecture.name == lambda_.Architecture.ARM_64.name else "x86_64"
    return [f"manylinux2014_{machine}", f"manylinux_2_28_{machine}"]


def wheelhouse_for(architecture: lambda_.Architecture) -> Path:
    """Where `make setup` keeps the Lambda's wheels for one architecture."""
    return WHEELHOUSE / str(architecture.name)


def _source_files() -> list[Path]:
    return sorted(
        path
        for path in LAMBDA_SRC.rglob("*")
        if path.is_file() and not any(part in str(path) for part in _EXCLUDED)
    )


MIGRATIONS_ASSET_DIR = "migrations"
"""Where an asset holds the application's migrations (beside lambda_src/), if it has any."""


def _migration_files(migrations: Path) -> list[Path]:
    """The files of a migrations directory that go into the asset (dotfiles stay out; what
    the files must be is the migration loader's to say, at synth and in the function)."""
    if not migrations.is_dir():
        raise ValueError(f"migrations directory {migrations} does not exist")
    return sorted(p for p in migrations.iterdir() if p.is_file() and not p.name.startswith("."))


def lambda_src_hash(architecture: lambda_.Architecture, migrations: Path | None = None) -> str:
    """Hash of what goes into the bundle: source files, requirements, runtime and platform,
    and the migrations if the asset carries them."""
    digest = hashlib.sha256()
    digest.update(f"{LAMBDA_PYTHON_VERSION}|{architecture.name}".encode())
    for path in _source_files():
        digest.update(str(path.relative_to(LAMBDA_SRC)).encode())
        digest.update(path.read_bytes())
    if migrations is not None:
        for path in _migration_files(migrations):
            digest.update(f"{MIGRATIONS_ASSET_DIR}/{path.name}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


@jsii.implements(cdk.ILocalBundling)
class _LocalPipBundling:
    """Copies lambda_src and pip-installs its requirements from the local wheelhouse."""

    def __init__(self, architecture: lambda_.Architecture, migrations: Path | None) -> None:
        self._architecture = architecture
        self._migrations = migrations

    def try_bundle(self, output_dir: str, *_options: Any, **_kwargs: Any) -> bool:
        """Bundle into `output_dir` (jsii passes the BundlingOptions, unused here)."""
        wheelhouse = wheelhouse_for(self._architecture)
        if not wheelhouse.is_dir():
            raise RuntimeError(
                f"no Lambda wheels in {wheelhouse}: run `make setup` (it downloads "
                f"{LAMBDA_REQUIREMENTS.name} for {self._architecture.name})"
            )
        out = Path(output_dir)
        for path in _source_files():
            target = out / "lambda_src" / path.relative_to(LAMBDA_SRC)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        if self._migrations is not None:
            (out / MIGRATIONS_ASSET_DIR).mkdir()
            for path in _migration_files(self._migrations):
                shutil.copy2(path, out / MIGRATIONS_ASSET_DIR / path.name)
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--isolated",
            "--no-compile",
            f"--find-links={wheelhouse}",
            f"--target={out}",
            "--only-binary=:all:",
            f"--python-version={LAMBDA_PYTHON_VERSION}",
            "--implementation=cp",
            *(f"--platform={tag}" for tag in wheel_platforms(self._architecture)),
            "-r",
            str(LAMBDA_REQUIREMENTS),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"bundling lambda_src failed: {result.stderr.strip()[-2000:]}")
        return True


def lambda_src_code(
    architecture: lambda_.Architecture, migrations: Path | None = None
) -> lambda_.Code:
    """The lambda_src package plus its pinned dependencies, for `architecture`; with
    `migrations`, that directory's files under MIGRATIONS_ASSET_DIR too."""
    return lambda_.Code.from_asset(
        str(LAMBDA_SRC),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        asset_hash=lambda_src_hash(architecture, migrations),
        bundling=cdk.BundlingOptions(
            # Never pulled: local bundling always succeeds or raises.
            image=cdk.DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
            local=_LocalPipBundling(architecture, migrations),
        ),
    )
