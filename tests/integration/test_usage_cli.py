"""`tenantctl usage --provision aws` against hosts modelled by an embedded server: each host's
admin secret in moto (RDS format), verify-full against the server's CA; the silo host's
secret points at a port nobody listens on, so it must be reported, never skipped."""

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import yaml
from moto import mock_aws
from typer.testing import CliRunner, Result

from lambda_src.core.environment import SSL_ROOT_CERT
from lambda_src.tenancy import BRIDGE_HOST, POOL, HostNames, tenant_names
from tenantkit.catalog import parse_catalog
from tenantkit.cli import EXIT_FAILED, EXIT_INVALID, app
from tenantkit.embedded_pg import EmbeddedPostgres, RunningServer
from tenantkit.local import LocalSecrets, provision_pool, provision_tenant_databases
from tenantkit.usage import parse_since

runner = CliRunner()
CATALOG = """\
tenants:
  - {id: use-bridge, tier: bridge}
  - {id: use-pool-a, tier: pool}
  - {id: use-pool-b, tier: pool}
  - {id: use-silo, tier: silo}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(pg_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The bridge and pool clusters on one server, provisioned, with their admin secrets (and
    the silo host's, pointing nowhere) in moto."""
    pg = EmbeddedPostgres(pg_root / "usage-cluster", durable=False)
    server = pg.start()
    with mock_aws():
        catalog = parse_catalog(yaml.safe_load(CATALOG), "usage.yaml")
        store = LocalSecrets(tmp_path_factory.mktemp("usage") / "secrets.json")
        results = provision_tenant_databases(
            list(catalog.in_tier("bridge")), lambda _t: server, store
        )
        results += provision_pool(list(catalog.in_tier("pool")), server, store)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        secrets = boto3.client("secretsmanager")
        for host, port in (
            (BRIDGE_HOST, server.port),
            (POOL.stack_name, server.port),
            (tenant_names("use-silo").silo_stack_name, free_port()),
        ):
            value = {
                "engine": "postgres",
                "host": server.host,
                "port": port,
                "username": server.admin_settings().user,
                "password": server.credentials.admin_password,
            }
            secrets.create_secret(
                Name=HostNames(host).admin_secret_name, SecretString=json.dumps(value)
            )
        yield server
    pg.destroy()


def usage(tmp_path: Path, server: RunningServer, *args: str) -> Result:
    (tmp_path / "usage.yaml").write_text(CATALOG)
    return runner.invoke(
        app,
        [
            "usage",
            *args,
            "--provision",
            "aws",
            "--catalog",
            str(tmp_path / "usage.yaml"),
            "--connect-timeout",
            "2",
        ],
        env={SSL_ROOT_CERT: str(server.ca_cert), "COLUMNS": "200"},
    )


def test_an_unreachable_host_is_reported_after_what_was_read(
    cluster: RunningServer, tmp_path: Path
) -> None:
    result = usage(tmp_path, cluster, "--json")

    assert result.exit_code == EXIT_FAILED, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["ok"] is False
    read = {t["tenant"]: t for h in document["hosts"] for t in h["tenants"]}
    assert set(read) == {"use-bridge", "use-pool-a", "use-pool-b"}
    assert read["use-bridge"]["storage_bytes"] > 0
    assert read["use-pool-a"]["connections"] is None  # settable: not attributable
    [down] = document["unreachable"]
    assert down["host"] == tenant_names("use-silo").silo_stack_name
    assert "could not connect" in down["reason"]
    assert cluster.credentials.admin_password not in result.stdout


def test_the_table_is_printed_per_tier_before_the_unreachable_host_is_named(
    cluster: RunningServer, tmp_path: Path
) -> None:
    result = usage(tmp_path, cluster, "--plot", str(tmp_path / "storage.png"))

    assert result.exit_code == EXIT_FAILED
    assert "bridge usage" in result.stdout
    assert "pool usage" in result.stdout
    assert "use-pool-b" in result.stdout
    assert "could not be sampled" in result.output
    assert (tmp_path / "storage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_tenant_only_shows_that_tenant(cluster: RunningServer, tmp_path: Path) -> None:
    result = usage(tmp_path, cluster, "use-pool-b", "--json")

    document = json.loads(result.stdout)
    assert [t["tenant"] for h in document["hosts"] for t in h["tenants"]] == ["use-pool-b"]


def test_a_since_that_is_neither_a_time_nor_an_age_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["usage", "--since", "last tuesday", "--json"])

    assert result.exit_code == EXIT_INVALID
    assert "--since" in json.loads(result.stdout)["error"]


def test_since_takes_ages_and_iso_times() -> None:
    now = parse_since("2026-12-01T12:00:00+00:00")
    assert parse_since("90m", now).isoformat() == "2026-12-01T10:30:00+00:00"
    assert parse_since("2026-12-01T09:00").isoformat() == "2026-12-01T09:00:00+00:00"


def test_the_metering_function_samples_records_and_publishes_embedded_metrics(
    cluster: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lambda_src.core import environment as names
    from lambda_src.metering.handler import on_schedule

    for name, value in {
        names.ADMIN_SECRET_ARN: HostNames(POOL.stack_name).admin_secret_name,
        names.METERING_HOST: POOL.stack_name,
        names.METERING_TIER: "pool",
        names.METERING_REGISTRY_DATABASE: POOL.database,
        names.METERING_TOP_TENANTS: "1",
        SSL_ROOT_CERT: str(cluster.ca_cert),
    }.items():
        monkeypatch.setenv(name, value)

    # GIVEN one pool tenant with rows (the other has none, so nothing to rank it by)
    with psycopg.connect(
        **cluster.superuser_settings(POOL.database).connect_kwargs(), autocommit=True
    ) as conn:
        conn.execute(
            "INSERT INTO tenantkit_sample.projects (tenant_id, project_id, name) "
            "SELECT 'use-pool-b', n, 'p' || n FROM generate_series(1, 300) n"
        )

    result = on_schedule({"source": "aws.events"}, None)

    assert result == {"tenants": 2, "metric_sets": 2}  # the host's, and the top tenant's
    documents = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    directives = [d["_aws"]["CloudWatchMetrics"][0] for d in documents]
    assert all(d["Namespace"] == "tenantkit" for d in directives)
    assert [sorted(d["Dimensions"][0]) for d in directives] == [
        ["host", "tier"],
        ["host", "tenant", "tier"],
    ]
    assert documents[0]["host"] == POOL.stack_name
    assert documents[0]["Tenants"] == [2.0]
    assert documents[1]["tenant"] == "use-pool-b"
    assert documents[1]["Rows"] == [300.0]
