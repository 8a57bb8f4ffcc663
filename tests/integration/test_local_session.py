"""tenantkit.local.local_session: what one local operation works with, and what it leaves."""

import os
import tempfile
from pathlib import Path

import psycopg
import pytest

from tenantkit.catalog import load_catalog
from tenantkit.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError, RunningServer
from tenantkit.local import local_session


@pytest.fixture(scope="module")
def state_dir(pg_root: Path) -> Path:
    """A state directory of the module's own that the server user can traverse (its server
    initialized once for the module)."""
    root = Path(tempfile.mkdtemp(prefix="session-", dir=pg_root))
    root.chmod(0o711)
    return root / "state"


@pytest.fixture(scope="module")
def catalog(state_dir: Path) -> Path:
    path = state_dir.parent / "tenants.yaml"
    path.write_text("tenants:\n  - id: first\n    tier: bridge\n")
    return path


def reachable(server: RunningServer) -> bool:
    """Whether the server accepts its admin's login."""
    try:
        with psycopg.connect(**server.admin_settings().connect_kwargs()):
            return True
    except psycopg.OperationalError:
        return False


def test_a_session_serves_its_servers_and_secrets_and_stops_the_servers_after(
    state_dir: Path, catalog: Path
) -> None:
    with local_session(state_dir, load_catalog(catalog)) as session:
        shared = session.shared
        assert reachable(shared)
        assert session.servers.server_for_pool() == shared
        assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert session.store.path == state_dir / "secrets.json"

    assert not reachable(shared)
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_keep_running_leaves_the_servers_up(state_dir: Path, catalog: Path) -> None:
    try:
        with local_session(state_dir, load_catalog(catalog), keep_running=True) as session:
            shared = session.shared

        assert reachable(shared)
    finally:
        EmbeddedPostgres(state_dir / "pg").stop()


def test_a_server_that_cannot_start_raises_and_leaves_nothing_running(
    catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANTKIT_PG_BINDIR", str(tmp_path))
    fresh = tmp_path / "state"

    with (
        pytest.raises(EmbeddedPostgresError, match="TENANTKIT_PG_BINDIR"),
        local_session(fresh, load_catalog(catalog)),
    ):
        pytest.fail("the session must not start")

    assert not (fresh / "pg").exists()
