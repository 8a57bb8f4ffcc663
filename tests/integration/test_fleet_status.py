"""`tenantctl list` and `status --provision aws` against a fleet modelled by embedded servers:
each host's admin secret in moto's Secrets Manager (tenantkit/<host>/admin, RDS format) points
at a real PostgreSQL whose registry the provisioner's handler wrote; the hosts are verified
(verify-full) against a CA bundle, as the RDS bundle in AWS. The code path is the AWS one:
boto3's default session, the secret, one TLS connection per host."""

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import yaml
from botocore.stub import Stubber
from moto import mock_aws
from typer.testing import CliRunner, Result

from lambda_src.core.environment import SSL_ROOT_CERT
from lambda_src.provisioner.postgres import read_registry
from lambda_src.tenancy import BRIDGE_HOST, POOL, HostNames, tenant_names
from tenantkit.catalog import Catalog, parse_catalog
from tenantkit.cli import EXIT_FAILED, EXIT_INVALID, app
from tenantkit.embedded_pg import EmbeddedPostgres, RunningServer
from tenantkit.fleet import Host, read_host
from tenantkit.local import (
    LocalSecrets,
    offboard_tenant_database,
    provision_pool,
    provision_tenant_databases,
)

runner = CliRunner()

SILO = "fleet-silo"
BRIDGE_TENANTS = """\
  - {id: fleet-bridge-on, tier: bridge}
  - {id: fleet-bridge-off, tier: bridge, suspended: true}
  - {id: fleet-new, tier: bridge}
"""
POOL_TENANTS = """\
  - {id: fleet-pool-on, tier: pool}
  - {id: fleet-pool-off, tier: pool, suspended: true}
"""
CATALOG = f"tenants:\n{BRIDGE_TENANTS}{POOL_TENANTS}  - {{id: {SILO}, tier: silo}}\n"
"""The catalog as deployed, less `fleet-gone` (offboarded, data retained, then removed) and
with `fleet-new` (in the catalog, never deployed)."""

EXPECTED = {
    "fleet-bridge-on": ("bridge", "active", True),
    "fleet-bridge-off": ("bridge", "suspended", True),
    "fleet-new": ("bridge", "requested", True),
    "fleet-pool-on": ("pool", "active", True),
    "fleet-pool-off": ("pool", "suspended", True),
    SILO: ("silo", "active", True),
    "fleet-gone": ("bridge", "offboarded", False),
}


def catalog_of(text: str) -> Catalog:
    return parse_catalog(yaml.safe_load(text), "fleet.yaml")


@pytest.fixture(scope="module")
def cluster(pg_root: Path) -> Iterator[RunningServer]:
    """The module's own server, standing for the bridge cluster and the pool cluster: their
    registries (admin database, pool database) hold only this module's tenants."""
    pg = EmbeddedPostgres(pg_root / "fleet-cluster", durable=False)
    server = pg.start()
    yield server
    pg.destroy()


@pytest.fixture(scope="module")
def secrets() -> Iterator[Any]:
    """moto's Secrets Manager for the module (boto3's default session reaches it)."""
    with mock_aws():
        yield boto3.client("secretsmanager")


def put_admin_secret(secrets: Any, host: str, server: RunningServer, **overrides: Any) -> None:
    """The host's admin secret as RDS attaches it to a cluster (dbname absent: `postgres`)."""
    value = {
        "engine": "postgres",
        "host": server.host,
        "port": server.port,
        "username": server.admin_settings().user,
        "password": server.credentials.admin_password,
        **overrides,
    }
    secrets.create_secret(Name=HostNames(host).admin_secret_name, SecretString=json.dumps(value))


@pytest.fixture(scope="module")
def fleet(
    cluster: RunningServer,
    server: RunningServer,
    secrets: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, RunningServer]:
    """The fleet deployed: bridge and pool tenants on `cluster`, the silo tenant on the
    session's server (its registry answers for its own tenant only), through the handler;
    `fleet-gone` offboarded with its data kept; one admin secret per host in moto."""
    deployed = catalog_of(
        CATALOG.replace("  - {id: fleet-new, tier: bridge}\n", "")
        + "  - {id: fleet-gone, tier: bridge}\n"
    )
    store = LocalSecrets(tmp_path_factory.mktemp("fleet") / "secrets.json")
    databases = [t for t in deployed.tenants if t.tier != "pool"]
    results = provision_tenant_databases(
        databases, lambda t: server if t.tier == "silo" else cluster, store
    )
    results += provision_pool(list(deployed.in_tier("pool")), cluster, store)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    offboard_tenant_database(deployed.get("fleet-gone"), cluster, store, destroy=False)
    put_admin_secret(secrets, BRIDGE_HOST, cluster)
    put_admin_secret(secrets, POOL.stack_name, cluster)
    put_admin_secret(secrets, tenant_names(SILO).silo_stack_name, server)
    return {"cluster": cluster, "silo": server}


@pytest.fixture(scope="module")
def bundle(
    cluster: RunningServer, server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A CA bundle with both servers' CAs, as the RDS bundle holds every Region's."""
    path = tmp_path_factory.mktemp("ca") / "bundle.pem"
    path.write_text(cluster.ca_cert.read_text() + server.ca_cert.read_text())
    return path


def tenantctl(
    tmp_path: Path, catalog: str, *args: str, bundle: Path, json_output: bool = True
) -> Result:
    """tenantctl <args> --provision aws on `catalog`, verifying the hosts against `bundle`."""
    (tmp_path / "fleet.yaml").write_text(catalog)
    return runner.invoke(
        app,
        [
            *args,
            "--provision",
            "aws",
            "--catalog",
            str(tmp_path / "fleet.yaml"),
            "--connect-timeout",
            "2",
            *(["--json"] if json_output else []),
        ],
        env={SSL_ROOT_CERT: str(bundle), "COLUMNS": "200"},
    )


def states(document: dict[str, Any]) -> dict[str, tuple[str, str, bool]]:
    return {t["id"]: (t["tier"], t["status"], t["in_catalog"]) for t in document["tenants"]}


def registry_states(server: RunningServer, dbname: str = "postgres") -> dict[str, str]:
    """What a registry says, read directly as the admin."""
    settings = server.admin_settings(dbname)
    with psycopg.connect(**settings.connect_kwargs()) as conn:
        return {e.tenant_id: e.status for e in read_registry(conn)}


def test_list_reads_every_hosts_registry_through_its_admin_secret(
    fleet: dict[str, RunningServer], bundle: Path, tmp_path: Path
) -> None:
    result = tenantctl(tmp_path, CATALOG, "list", bundle=bundle)

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert document["unreachable"] == []
    assert states(document) == EXPECTED
    # the same states as each registry holds, and where they were read
    recorded = {
        **registry_states(fleet["cluster"]),
        **registry_states(fleet["cluster"], POOL.database),
    }
    recorded[SILO] = registry_states(fleet["silo"])[SILO]
    for tenant in document["tenants"]:
        if tenant["status"] != "requested":
            assert recorded[tenant["id"]] == tenant["status"]
    servers = {t["id"]: t["server"] for t in document["tenants"]}
    assert servers["fleet-bridge-on"] == BRIDGE_HOST
    assert servers["fleet-pool-on"] == POOL.stack_name
    assert servers[SILO] == tenant_names(SILO).silo_stack_name


def test_list_without_json_prints_the_table(
    fleet: dict[str, RunningServer], bundle: Path, tmp_path: Path
) -> None:
    result = tenantctl(tmp_path, CATALOG, "list", bundle=bundle, json_output=False)

    assert result.exit_code == 0, result.output
    assert "registries of 3 host(s) in AWS" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "fleet-bridge-off" in line)
    assert "suspended" in row
    gone = next(line for line in result.stdout.splitlines() if "fleet-gone" in line)
    assert "offboarded" in gone
    assert "│ no " in gone


def test_status_reads_the_tenants_history_from_its_host(
    fleet: dict[str, RunningServer], bundle: Path, tmp_path: Path
) -> None:
    result = tenantctl(tmp_path, CATALOG, "status", "fleet-pool-off", bundle=bundle)

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["ok"], document["status"], document["tier"]) == (True, "suspended", "pool")
    assert document["server"] == POOL.stack_name
    assert [h["status"] for h in document["history"]][-1] == "suspended"
    assert document["unreachable"] == []


def test_status_of_a_tenant_offboarded_and_removed_from_the_catalog(
    fleet: dict[str, RunningServer], bundle: Path, tmp_path: Path
) -> None:
    result = tenantctl(tmp_path, CATALOG, "status", "fleet-gone", bundle=bundle, json_output=False)

    assert result.exit_code == 0, result.output
    assert "fleet-gone (bridge): offboarded since" in result.stdout
    assert "(not in the catalog)" in result.stdout
    assert result.stdout.rstrip().endswith("offboarded")


def test_status_of_a_tenant_no_registry_and_no_catalog_knows_is_exit_2(
    fleet: dict[str, RunningServer], bundle: Path, tmp_path: Path
) -> None:
    result = tenantctl(tmp_path, CATALOG, "status", "nobody", bundle=bundle)

    assert result.exit_code == EXIT_INVALID, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert "the registries in AWS" in document["error"]


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_unreachable_hosts_are_named_with_their_reason_and_the_rest_is_still_read(
    fleet: dict[str, RunningServer],
    secrets: Any,
    bundle: Path,
    tmp_path: Path,
    closed_port: int,
    silent_port: int,
) -> None:
    # GIVEN three more silo tenants: a host whose secret points at a closed port, one that
    # never answers, and one whose admin secret does not exist
    cluster = fleet["cluster"]
    put_admin_secret(secrets, "tenantkit-silo-fleet-closed", cluster, port=closed_port)
    put_admin_secret(secrets, "tenantkit-silo-fleet-silent", cluster, port=silent_port)
    catalog = CATALOG + "".join(
        f"  - {{id: {t}, tier: silo}}\n" for t in ("fleet-closed", "fleet-silent", "fleet-nosecret")
    )

    result = tenantctl(tmp_path, catalog, "list", bundle=bundle)

    # THEN exit 1, one JSON document with every tenant that could be read ...
    assert result.exit_code == EXIT_FAILED, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert "3 of 6 host(s) could not be read" in document["error"]
    listed = states(document)
    assert {k: v for k, v in listed.items() if k in EXPECTED} == EXPECTED
    # ... the tenants of the hosts that could not be read unknown, not requested ...
    for tenant in ("fleet-closed", "fleet-silent", "fleet-nosecret"):
        assert listed[tenant] == ("silo", "unknown", True)
    # ... and each host named with its reason
    reasons = {u["host"]: u["reason"] for u in document["unreachable"]}
    assert set(reasons) == {
        f"tenantkit-silo-{t}" for t in ("fleet-closed", "fleet-silent", "fleet-nosecret")
    }
    assert "Connection refused" in reasons["tenantkit-silo-fleet-closed"]
    assert "timeout" in reasons["tenantkit-silo-fleet-silent"]
    assert reasons["tenantkit-silo-fleet-nosecret"] == (
        "could not read secret tenantkit/tenantkit-silo-fleet-nosecret/admin: "
        "ResourceNotFoundException"
    )
    closed = next(u for u in document["unreachable"] if u["host"] == "tenantkit-silo-fleet-closed")
    assert closed["endpoint"] == f"127.0.0.1:{closed_port}"
    assert cluster.credentials.admin_password not in result.stdout


def test_unreachable_hosts_without_json_print_the_table_then_the_reasons(
    fleet: dict[str, RunningServer], secrets: Any, bundle: Path, tmp_path: Path
) -> None:
    catalog = CATALOG + "  - {id: fleet-nosecret, tier: silo}\n"

    result = tenantctl(tmp_path, catalog, "list", bundle=bundle, json_output=False)

    assert result.exit_code == EXIT_FAILED
    row = next(line for line in result.stdout.splitlines() if "fleet-nosecret" in line)
    assert "unknown" in row
    assert "unreachable: 1 of 4 host(s) could not be read" in result.stderr
    assert "tenantkit-silo-fleet-nosecret: could not read secret" in result.stderr


def test_a_host_whose_certificate_the_bundle_does_not_trust_is_refused(
    fleet: dict[str, RunningServer], tmp_path: Path
) -> None:
    # GIVEN a bundle with the cluster's CA only: the silo host's certificate is signed by another
    only_cluster = tmp_path / "cluster-ca.pem"
    only_cluster.write_text(fleet["cluster"].ca_cert.read_text())

    result = tenantctl(tmp_path, CATALOG, "list", bundle=only_cluster)

    assert result.exit_code == EXIT_FAILED, result.output
    document = json.loads(result.stdout)
    [silo] = document["unreachable"]
    assert silo["host"] == tenant_names(SILO).silo_stack_name
    assert "certificate verify failed" in silo["reason"]
    assert states(document)[SILO] == ("silo", "unknown", True)
    assert states(document)["fleet-bridge-on"] == ("bridge", "active", True)


def test_a_wrong_password_is_reported_without_the_password(
    fleet: dict[str, RunningServer], secrets: Any, bundle: Path, tmp_path: Path
) -> None:
    wrong = "not-the-admin-password-4711"
    put_admin_secret(secrets, "tenantkit-silo-fleet-wrong", fleet["cluster"], password=wrong)
    catalog = CATALOG + "  - {id: fleet-wrong, tier: silo}\n"

    result = tenantctl(tmp_path, catalog, "status", "fleet-wrong", bundle=bundle)

    assert result.exit_code == EXIT_FAILED, result.output
    document = json.loads(result.stdout)
    assert document["status"] == "unknown"
    [wrong_host] = document["unreachable"]
    assert "password authentication failed" in wrong_host["reason"]
    assert wrong not in result.stdout
    assert fleet["cluster"].credentials.admin_password not in result.stdout


def test_status_of_a_tenant_on_a_reachable_host_says_which_other_host_was_not(
    fleet: dict[str, RunningServer], bundle: Path, tmp_path: Path
) -> None:
    catalog = CATALOG + "  - {id: fleet-nosecret, tier: silo}\n"

    result = tenantctl(tmp_path, catalog, "status", "fleet-bridge-on", bundle=bundle)

    # its own state is read, but its history elsewhere cannot be known: exit 1
    assert result.exit_code == EXIT_FAILED, result.output
    document = json.loads(result.stdout)
    assert document["status"] == "active"
    assert [u["host"] for u in document["unreachable"]] == ["tenantkit-silo-fleet-nosecret"]


def test_region_names_where_the_admin_secrets_are_read(
    fleet: dict[str, RunningServer], bundle: Path, tmp_path: Path
) -> None:
    # GIVEN the fleet's secrets in us-east-1 WHEN asked for eu-west-1 THEN none is found there
    result = tenantctl(tmp_path, CATALOG, "list", "--region", "eu-west-1", bundle=bundle)

    assert result.exit_code == EXIT_FAILED, result.output
    document = json.loads(result.stdout)
    assert len(document["unreachable"]) == 3
    assert all(u["reason"].endswith("ResourceNotFoundException") for u in document["unreachable"])
    assert {t["status"] for t in document["tenants"]} == {"unknown"}


def test_no_region_is_an_environment_error(tmp_path: Path, bundle: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(CATALOG)
    result = runner.invoke(
        app,
        ["list", "--provision", "aws", "--catalog", str(tmp_path / "fleet.yaml"), "--json"],
        env={SSL_ROOT_CERT: str(bundle), "AWS_DEFAULT_REGION": None, "AWS_REGION": None},
    )

    assert result.exit_code == 3, result.output
    assert "no AWS Region" in json.loads(result.stdout)["error"]


def stubbed_secrets(code: str) -> Any:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error("get_secret_value", service_error_code=code)
    stubber.activate()
    return client


def test_an_admin_secret_the_caller_may_not_read_is_the_hosts_reason(bundle: Path) -> None:
    host = Host(BRIDGE_HOST, "bridge")

    reading = read_host(host, stubbed_secrets("AccessDeniedException"), ssl_root_cert=bundle)

    assert reading.reason == (
        "could not read secret tenantkit/tenantkit-bridge/admin: AccessDeniedException"
    )


def test_a_shared_host_the_catalog_does_not_need_and_nobody_deployed_is_left_out(
    bundle: Path,
) -> None:
    host = Host(POOL.stack_name, "pool", POOL.database, needed=False)

    reading = read_host(host, stubbed_secrets("ResourceNotFoundException"), ssl_root_cert=bundle)

    assert reading.absent
    assert reading.reason is None
