"""What the `tenantctl migrate` tests share: a work directory of their own (a catalog, its
migrations directory and a state directory), tenantctl run on it, and the test's own look into
the embedded servers it provisioned."""

import json
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from typer.testing import CliRunner

from tenantkit.cli import app
from tenantkit.embedded_pg import EmbeddedPostgres, RunningServer

runner = CliRunner()


def make_workdir(pg_root: Path, catalog: str, migrations: dict[str, str]) -> Path:
    """A directory the server user can traverse with `tenants.yaml` and `migrations/`."""
    root = Path(tempfile.mkdtemp(prefix="migrate-", dir=pg_root))
    root.chmod(0o711)
    (root / "tenants.yaml").write_text(catalog)
    (root / "migrations").mkdir()
    for name, text in migrations.items():
        (root / "migrations" / name).write_text(text)
    return root


def stop_servers(workdir: Path) -> None:
    """Stop every embedded server the work directory's state holds (their data stays)."""
    for data in (workdir / "state").glob("**/pg"):
        EmbeddedPostgres(data).stop()


def cli_args(workdir: Path, *args: str) -> list[str]:
    """A tenantctl command line with --json on the workdir's catalog and state."""
    return [
        *args,
        "--catalog",
        str(workdir / "tenants.yaml"),
        "--state-dir",
        str(workdir / "state"),
        "--json",
    ]


def one_document(stdout: str) -> dict[str, Any]:
    """The JSON document of a --json command (exactly one)."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout  # --json is one document
    document: dict[str, Any] = json.loads(lines[0])
    return document


def tenantctl(workdir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run a tenantctl command in this process; its exit code and JSON document."""
    result = runner.invoke(app, cli_args(workdir, *args))
    return result.exit_code, one_document(result.stdout)


def by_target(document: dict[str, Any], field: str) -> dict[str, Any]:
    """One field of every target of a migrate document, by target."""
    return {t["target"]: t[field] for t in document["targets"]}


def server_of(workdir: Path, silo: str | None = None) -> RunningServer:
    """The shared server (bridge and pool), or a silo tenant's own; started if it is not."""
    data = workdir / "state" / (f"silo-{silo}/pg" if silo else "pg")
    return EmbeddedPostgres(data).start()


def as_superuser(server: RunningServer, database: str) -> psycopg.Connection:
    """An autocommit superuser connection, for looking at what a migration did."""
    settings = server.superuser_settings(database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


def applied_versions(server: RunningServer, database: str) -> list[int]:
    """The versions a database's tracking table records, in order (each once, or twice)."""
    with as_superuser(server, database) as conn:
        rows = conn.execute(
            "SELECT version FROM tenantkit_schema.applied_migrations ORDER BY version"
        )
        return [int(row[0]) for row in rows]
