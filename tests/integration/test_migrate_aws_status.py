"""`tenantctl migrate status|plan --provision aws` on a deployed fleet modelled as in
test_fleet_status: each host's admin secret in moto's Secrets Manager points at a real
PostgreSQL (verify-full against its CA), whose tenant databases and pool database the
provisioner's own code migrated; each host's last rollout is read from moto's Step Functions
(a stand-in machine that ends as the real one does, see test_migrate_aws)."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws
from typer.testing import CliRunner

from lambda_src.core.connection import RetryPolicy
from lambda_src.core.environment import SSL_ROOT_CERT
from lambda_src.migrations.files import load_migrations
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.migrate import PoolSchema, migrate_pool
from lambda_src.tenancy import BRIDGE_HOST, POOL, HostNames
from tenantkit.catalog import parse_catalog
from tenantkit.cli import EXIT_FAILED, EXIT_INVALID, app
from tenantkit.embedded_pg import EmbeddedPostgres, RunningServer
from tenantkit.local import LocalSecrets, handler_config, provision_pool, provision_tenant_databases

runner = CliRunner()
REGION = "us-east-1"
CATALOG = """\
schema:
  directory: migrations
tenants:
  - {id: ma-one, tier: bridge}
  - {id: ma-two, tier: bridge}
  - {id: ma-solo, tier: silo}
  - {id: ma-pool, tier: pool}
"""
V1 = """\
CREATE TABLE items (
    tenant_id text NOT NULL DEFAULT current_user,
    id bigint NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
"""
V2 = "ALTER TABLE items ADD COLUMN note text;\n"
FAILURE = "tenant ma-two: migration V2__notes.sql failed, the database stays at version 1: boom"


def write_migrations(root: Path, *files: tuple[str, str]) -> Path:
    directory = root / "migrations"
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files:
        (directory / name).write_text(text)
    return directory


@pytest.fixture(scope="module")
def host(pg_root: Path) -> Iterator[RunningServer]:
    """One server standing for the bridge cluster, the silo's host and the pool cluster."""
    pg = EmbeddedPostgres(pg_root / "migrate-aws-status", durable=False)
    server = pg.start()
    yield server
    pg.destroy()


@pytest.fixture(scope="module")
def deployed(host: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The fleet as deployed: every database at V1 (the pool through migrate_pool, as its
    PoolDatabase does), ma-one at V2 too, one admin secret per host, and the bridge's last
    rollout failed for ma-two."""
    root = tmp_path_factory.mktemp("deployed")
    monkey = pytest.MonkeyPatch()
    for name, value in {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkey.setenv(name, value)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        catalog = parse_catalog(yaml.safe_load(CATALOG), str(root / "tenants.yaml"))
        v1 = write_migrations(root / "v1", ("V1__items.sql", V1))
        store = LocalSecrets(root / "secrets.json")
        databases = [t for t in catalog.tenants if t.tier != "pool"]
        results = provision_tenant_databases(databases, lambda _t: host, store, migrations_dir=v1)
        results += provision_pool(list(catalog.in_tier("pool")), host, store)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        pool = migrate_pool(host.admin_settings(), load_migrations(v1), PoolSchema(), RetryPolicy())
        assert pool.current == 1
        v2 = write_migrations(root / "v2", ("V1__items.sql", V1), ("V2__notes.sql", V2))
        handle({"tenantkit": "migrate", "tenant": "ma-one"}, handler_config(host, v2))
        secrets = boto3.client("secretsmanager")
        for name in (BRIDGE_HOST, POOL.stack_name, "tenantkit-silo-ma-solo"):
            secret = {
                "engine": "postgres",
                "host": host.host,
                "port": host.port,
                "username": host.admin_settings().user,
                "password": host.credentials.admin_password,
            }
            secrets.create_secret(
                Name=HostNames(name).admin_secret_name, SecretString=json.dumps(secret)
            )
        sfn = boto3.client("stepfunctions")
        cause = {"failed": 1, "results": [_failed("ma-two", FAILURE)]}
        machine = sfn.create_state_machine(
            name=f"{BRIDGE_HOST}-migrate",
            roleArn="arn:aws:iam::123456789012:role/tenantkit-migrate",
            definition=json.dumps(
                {
                    "StartAt": "BudgetExceeded",
                    "States": {
                        "BudgetExceeded": {
                            "Type": "Fail",
                            "Error": "FailureBudgetExceeded",
                            "Cause": json.dumps(cause),
                        }
                    },
                }
            ),
        )
        waves = {"waves": [{"tenants": ["ma-two"], "parallelism": 1}], "failureBudget": 0}
        started = sfn.start_execution(
            stateMachineArn=machine["stateMachineArn"], name="last", input=json.dumps(waves)
        )
        for _ in range(100):
            if sfn.describe_execution(executionArn=started["executionArn"])["status"] != "RUNNING":
                break
            time.sleep(0.05)
        yield started["executionArn"]
    monkey.undo()


def _failed(tenant: str, message: str) -> dict[str, Any]:
    cause = {"errorMessage": message, "errorType": "TenantkitError"}
    return {"tenant": tenant, "ok": False, "error": "TenantkitError", "cause": json.dumps(cause)}


def tenantctl(
    root: Path, host: RunningServer, *args: str, catalog: str = CATALOG
) -> tuple[int, dict[str, Any]]:
    (root / "tenants.yaml").write_text(catalog)
    result = runner.invoke(
        app,
        [
            "migrate",
            *args,
            "--provision",
            "aws",
            "--catalog",
            str(root / "tenants.yaml"),
            "--connect-timeout",
            "2",
            "--json",
        ],
        env={SSL_ROOT_CERT: str(host.ca_cert)},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.output
    return result.exit_code, json.loads(lines[0])


def by_target(document: dict[str, Any], field: str) -> dict[str, Any]:
    return {t["target"]: t[field] for t in document["targets"]}


def test_status_reads_each_deployed_database_and_the_cause_from_the_last_rollout(
    deployed: str, host: RunningServer, tmp_path: Path
) -> None:
    write_migrations(tmp_path, ("V1__items.sql", V1), ("V2__notes.sql", V2))

    code, document = tenantctl(tmp_path, host, "status")

    assert code == 0, document
    assert by_target(document, "current") == {
        "ma-one": 2,
        "ma-two": 1,
        "ma-solo": 1,
        "(pool)": 1,
    }
    assert by_target(document, "pending") == {
        "ma-one": [],
        "ma-two": [2],
        "ma-solo": [2],
        "(pool)": [2],
    }
    assert by_target(document, "last_error") == {
        "ma-one": None,
        "ma-two": FAILURE,
        "ma-solo": None,
        "(pool)": None,
    }
    assert document["at_latest"] == 1
    rollouts = {r["host"]: r for r in document["rollouts"]}
    assert rollouts[BRIDGE_HOST]["execution"] == deployed
    assert rollouts[BRIDGE_HOST]["status"] == "FAILED"
    assert rollouts[BRIDGE_HOST]["error"] == "FailureBudgetExceeded"
    assert (
        "tenantkit-silo-ma-solo-migrate is not deployed"
        in (rollouts["tenantkit-silo-ma-solo"]["error"])
    )


def test_plan_reads_the_same_and_refuses_drift_naming_the_tenants(
    deployed: str, host: RunningServer, tmp_path: Path
) -> None:
    write_migrations(tmp_path, ("V1__items.sql", V1), ("V2__notes.sql", V2))
    code, document = tenantctl(tmp_path, host, "plan")
    assert code == 0, document
    assert by_target(document, "pending")["ma-two"] == [2]
    assert document["lint"] == []

    (tmp_path / "migrations" / "V1__items.sql").write_text(V1 + "-- edited\n")
    code, document = tenantctl(tmp_path, host, "plan")

    assert code == EXIT_INVALID
    assert "drift in ma-one, ma-two, ma-solo, (pool)" in document["error"]


def test_a_host_whose_admin_secret_cannot_be_read_is_reported_and_the_exit_is_1(
    deployed: str, host: RunningServer, tmp_path: Path
) -> None:
    write_migrations(tmp_path, ("V1__items.sql", V1))
    catalog = CATALOG + "  - {id: ma-later, tier: silo}\n"

    code, document = tenantctl(tmp_path, host, "status", catalog=catalog)

    assert code == EXIT_FAILED
    error = by_target(document, "error")["ma-later"]
    assert error.startswith("its host's admin secret could not be read")
    assert by_target(document, "current")["ma-one"] == 2  # the others are read all the same


def test_without_json_status_prints_the_versions_and_each_hosts_last_rollout(
    deployed: str, host: RunningServer, tmp_path: Path
) -> None:
    write_migrations(tmp_path, ("V1__items.sql", V1), ("V2__notes.sql", V2))
    (tmp_path / "tenants.yaml").write_text(CATALOG)

    result = runner.invoke(
        app,
        ["migrate", "status", "--provision", "aws", "--catalog", str(tmp_path / "tenants.yaml")],
        env={SSL_ROOT_CERT: str(host.ca_cert), "COLUMNS": "200"},
    )

    assert result.exit_code == 0, result.output
    assert "1 of 4 target(s) at the latest version" in result.stdout
    assert f"{BRIDGE_HOST}-migrate: last execution FAILED" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "ma-two" in line)
    assert "failed" in row
