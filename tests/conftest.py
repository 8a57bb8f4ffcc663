"""Shared fixtures: a real PostgreSQL for the session, moto for AWS, one CDK synth per session."""

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# jsii (aws-cdk-lib) runs on the repo's pinned Node 22, not the machine's node.
os.environ["PATH"] = f"{REPO_ROOT / 'node_modules' / '.bin'}{os.pathsep}{os.environ['PATH']}"
# AWS SDK calls in tests go to moto only; these keep any real credentials out of reach.
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_var, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
)

from tenantkit.embedded_pg import EmbeddedPostgres, RunningServer, find_server  # noqa: E402
from tenantkit.engine import ENGINE_VERSION  # noqa: E402


def pytest_report_header() -> str:
    """Which PostgreSQL the session's servers run, beside the version the templates deploy."""
    install = find_server()
    return (
        f"embedded PostgreSQL {install.version} ({install.origin}); "
        f"templates deploy {ENGINE_VERSION}"
    )


@pytest.fixture(autouse=True)
def _no_function_logger_after_a_test() -> Iterator[None]:
    """A test that calls a Lambda entry point configures its JSON logger for the process (as a
    Lambda execution environment keeps it); undo that, so later tests log as tenantctl does."""
    yield
    from lambda_src.core import log

    if log._function_logger is not None:
        package = logging.getLogger(log.PACKAGE)
        package.handlers, package.propagate = [], True
        package.setLevel(logging.NOTSET)
        log._function_logger = None


@pytest.fixture(scope="session")
def pg_root() -> Iterator[Path]:
    """A temp directory the unprivileged server user can traverse (mkdtemp makes it 0700),
    removed with everything in it once the session's servers have stopped: each session's
    data directories take about 1.5 GB, and runs that left them filled this machine's disk."""
    root = Path(tempfile.mkdtemp(prefix="tenantkit-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_pg(pg_root: Path) -> Iterator[EmbeddedPostgres]:
    """One embedded PostgreSQL for the session (TLS, scram-sha-256, fsync off)."""
    pg = EmbeddedPostgres(pg_root / "pg", durable=False)
    pg.start()
    yield pg
    pg.destroy()


@pytest.fixture(scope="session")
def server(embedded_pg: EmbeddedPostgres) -> RunningServer:
    """How to reach the session's server."""
    assert embedded_pg.server is not None
    return embedded_pg.server
