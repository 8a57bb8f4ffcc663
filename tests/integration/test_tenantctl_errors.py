"""tenantctl's errors: with --json every command answers an invalid catalog, or an embedded
PostgreSQL that cannot start, with one JSON document on stdout and the documented exit code;
without it, with a red line on stderr and nothing on stdout."""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from lambda_src.tenancy import POOL, tenant_names
from tenantkit.cli import EXIT_ENVIRONMENT, EXIT_INVALID, app

runner = CliRunner()

CATALOG = """\
tenants:
  - id: first
    tier: bridge
  - id: shared-one
    tier: pool
"""
INVALID_CATALOG = "tenants:\n  - id: first\n    tier: bridge\n    connection_limit: -4\n"

# Every command that takes --json, with what it needs besides --catalog and --json.
JSON_COMMANDS = {
    "validate": ["validate"],
    "run": ["run", "--state-dir", "{state}"],
    "verify": ["verify", "--state-dir", "{state}"],
    "onboard": ["onboard", "newco", "--tier", "bridge", "--state-dir", "{state}"],
    "onboard --provision none": ["onboard", "newco", "--tier", "pool", "--provision", "none"],
    "suspend": ["suspend", "first", "--state-dir", "{state}"],
    "resume": ["resume", "first", "--state-dir", "{state}"],
    "offboard": ["offboard", "first", "--state-dir", "{state}"],
    "offboard --provision aws": ["offboard", "first", "--provision", "aws", "--dry-run"],
    "deploy": ["deploy", "first", "--dry-run"],
    "list": ["list", "--state-dir", "{state}"],
    "status": ["status", "first", "--state-dir", "{state}"],
    "list --provision aws": ["list", "--provision", "aws"],
    "status --provision aws": ["status", "first", "--provision", "aws"],
    "plan": ["plan"],
}
# The commands that start the embedded servers (locally provisioned state assumed).
SERVER_COMMANDS = ["run", "verify", "onboard", "suspend", "resume", "offboard", "list", "status"]


def tenantctl(tmp_path: Path, command: str, catalog: str, **env: str) -> Result:
    """Run one of JSON_COMMANDS with --json on a catalog of the test's own."""
    (tmp_path / "tenants.yaml").write_text(catalog)
    args = [arg.format(state=tmp_path / "state") for arg in JSON_COMMANDS[command]]
    return runner.invoke(
        app, [*args, "--catalog", str(tmp_path / "tenants.yaml"), "--json"], env=env
    )


def only_json_document(result: Result) -> dict[str, Any]:
    """stdout parsed as exactly one JSON document (json.loads refuses anything more)."""
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_an_invalid_catalog_is_one_json_document_and_exit_2(tmp_path: Path, command: str) -> None:
    result = tenantctl(tmp_path, command, INVALID_CATALOG)

    assert result.exit_code == EXIT_INVALID, result.output
    document = only_json_document(result)
    assert document["ok"] is False
    assert "tenants[0] (id 'first'): connection_limit" in document["error"]
    assert (tmp_path / "tenants.yaml").read_text() == INVALID_CATALOG


@pytest.fixture
def provisioned_state(tmp_path: Path) -> Path:
    """A state directory as `tenantctl run` leaves it (a server directory, every secret)."""
    state = tmp_path / "state"
    (state / "pg").mkdir(parents=True)
    secrets = {
        name: {"username": "login", "password": "unused"}
        for name in (tenant_names("first").secret_name, POOL.secret_name)
    }
    (state / "secrets.json").write_text(json.dumps(secrets))
    return state


@pytest.mark.parametrize("command", SERVER_COMMANDS)
def test_an_embedded_postgresql_that_cannot_start_is_one_json_document_and_exit_3(
    tmp_path: Path, provisioned_state: Path, command: str
) -> None:
    # GIVEN server binaries that are not there
    empty = tmp_path / "no-binaries"
    empty.mkdir()

    result = tenantctl(tmp_path, command, CATALOG, TENANTKIT_PG_BINDIR=str(empty))

    assert result.exit_code == EXIT_ENVIRONMENT, result.output
    document = only_json_document(result)
    assert document["ok"] is False
    assert f"TENANTKIT_PG_BINDIR={empty}: no " in document["error"]
    assert (tmp_path / "tenants.yaml").read_text() == CATALOG


def test_an_invalid_tenant_id_is_one_json_document_and_exit_2() -> None:
    result = runner.invoke(app, ["names", "x'; DROP TABLE t; --", "--json"])

    assert result.exit_code == EXIT_INVALID
    document = only_json_document(result)
    assert document["ok"] is False
    assert document["error"].startswith("invalid tenant id: ")


def test_without_json_an_error_is_a_red_line_on_stderr_and_nothing_on_stdout(
    tmp_path: Path,
) -> None:
    (tmp_path / "tenants.yaml").write_text(INVALID_CATALOG)

    result = runner.invoke(app, ["validate", "--catalog", str(tmp_path / "tenants.yaml")])

    assert result.exit_code == EXIT_INVALID
    assert result.stdout == ""
    assert result.stderr.startswith("invalid catalog: ")
    assert "tenants[0] (id 'first'): connection_limit" in result.stderr
