"""Tenant mobility in AWS: the hosts' mobility function (lambda_src/mobility_function) run for
real against the embedded servers, with S3 and KMS in moto; and `tenantctl export|import
--provision aws` and `offboard --provision aws --destroy-data`, whose one Lambda Invoke is run
in this process by the same handler (moto's Lambda cannot run our code: the function's
configuration is registered in moto, the invoke boundary is the handler itself).
"""

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from lambda_src.core.connection import RDS_CA_BUNDLE_PATH, RetryPolicy
from lambda_src.core.environment import (
    ADMIN_SECRET_ARN,
    EXPORT_BUCKET,
    EXPORT_KEY_ARN,
    HOST_TENANT,
    HOST_TIER,
    SSL_ROOT_CERT,
)
from lambda_src.core.errors import InvalidRequestError, TenantkitError
from lambda_src.mobility import ImportFailedError, ImportRefusedError
from lambda_src.mobility_function import handler as handler_module
from lambda_src.mobility_function.handler import handle, on_event
from lambda_src.mobility_function.request import MobilityConfig
from lambda_src.tenancy import BRIDGE_HOST, POOL, HostNames
from tenantkit.cli import EXIT_ENVIRONMENT, EXIT_INVALID, app
from tenantkit.embedded_pg import ADMIN_USER
from tenantkit.mobility_aws import MobilityFunctions

from .migrate_cli import cli_args, make_workdir, one_document, server_of, stop_servers, tenantctl
from .mobility_data import V1, digests, rows_of, seed
from .test_mobility import move_by_hand

CATALOG = """\
schema:
  directory: migrations
tenants:
  - id: mover
    tier: bridge
  - id: pooled-one
    tier: pool
  - id: pooled-two
    tier: pool
  - id: traveller
    tier: pool
"""
TIERS = {"bridge": BRIDGE_HOST, "pool": POOL.stack_name}
runner = CliRunner()


@pytest.fixture(scope="module")
def workdir(pg_root: Path) -> Iterator[Path]:
    """The catalog provisioned locally, with rows in every tenant. Each test that moves a tenant
    moves its own (mover, traveller): a module's tests may run apart (pytest-xdist)."""
    root = make_workdir(pg_root, CATALOG, {"V1__vaults.sql": V1})
    try:
        code, run = tenantctl(root, "run")
        assert code == 0, run
        for tenant_id, tier, count in (
            ("mover", "bridge", 5),
            ("pooled-one", "pool", 4),
            ("pooled-two", "pool", 3),
            ("traveller", "pool", 2),
        ):
            seed(root, tenant_id, tier, count)
        yield root
    finally:
        stop_servers(root)


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    """moto: one KMS key and one export bucket per host."""
    with mock_aws():
        kms = boto3.client("kms")
        s3 = boto3.client("s3")
        hosts = {}
        for tier, host in TIERS.items():
            key = kms.create_key(Description=host)["KeyMetadata"]["Arn"]
            bucket = f"{host}-exports"
            s3.create_bucket(Bucket=bucket)
            hosts[tier] = {"key": key, "bucket": bucket}
        yield {"s3": s3, "hosts": hosts}


def config_of(aws: dict[str, Any], tier: str) -> MobilityConfig:
    host = aws["hosts"][tier]
    return MobilityConfig(
        tier=tier,  # type: ignore[arg-type]
        bucket=host["bucket"],
        key_arn=host["key"],
        admin_secret_arn=f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{tier}",
    )


def run(workdir: Path, aws: dict[str, Any], tier: str, **event: Any) -> dict[str, Any]:
    """The handler as the `tier` host's function runs it (for a tenant of that tier)."""
    return run_event(workdir, aws, tier, {"tier": tier, **event})


def run_event(
    workdir: Path, aws: dict[str, Any], host_tier: str, event: dict[str, Any]
) -> dict[str, Any]:
    """The handler of the `host_tier` host's function given `event`, as the local server's
    admin."""
    server = server_of(workdir)
    return handle(
        event,
        config_of(aws, host_tier),
        aws["s3"],
        admin_settings=lambda _config: server.admin_settings(),
        retry=RetryPolicy(attempts=1),
    )


def objects(aws: dict[str, Any], bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    s3 = aws["s3"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.head_object(Bucket=bucket, Key=o["Key"]) for o in listed}


def leftovers() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("tenantkit-mobility-")}


# -- the function ----------------------------------------------------------------------------


def test_an_export_uploads_every_file_encrypted_with_the_host_key_and_a_true_manifest(
    workdir: Path, aws: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a pool tenant's checksums, and nothing of the function's under /tmp
    sums = digests(workdir, "pooled-one", "pool")
    before = leftovers()
    pool = aws["hosts"]["pool"]

    # WHEN the pool host's function exports it
    caplog.set_level("INFO")
    answer = run(workdir, aws, "pool", action="export", tenant="pooled-one")

    # THEN every file is under exports/<tenant>/<timestamp>/, each SSE-KMS with the host key
    prefix = answer["prefix"]
    assert prefix.startswith("exports/pooled-one/")
    assert prefix.endswith("Z/")
    assert answer["uri"] == f"s3://{pool['bucket']}/{prefix}"
    found = objects(aws, pool["bucket"], prefix)
    manifest = json.loads(
        aws["s3"].get_object(Bucket=pool["bucket"], Key=prefix + "manifest.json")["Body"].read()
    )
    assert set(found) == {prefix + "manifest.json"} | {
        prefix + t["file"] for t in manifest["tables"]
    }
    assert answer["objects"] == len(found)
    for head in found.values():
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == pool["key"]
    # AND the manifest and the answer hold the tenant's counts and checksums
    assert manifest["tenant"] == "pooled-one"
    assert manifest["tier"] == "pool"
    assert {t["name"]: (t["rows"], t["sha256"]) for t in manifest["tables"]} == sums
    assert {t["name"]: (t["rows"], t["sha256"]) for t in answer["tables"]} == sums
    assert answer["rows"] == sum(rows for rows, _ in sums.values())
    # AND no copy is left in the sandbox, and no row reached the log
    assert leftovers() == before
    assert "exported pooled-one" in caplog.text
    assert "vault 0" not in caplog.text
    assert "item 0" not in caplog.text


def test_an_export_imported_into_the_tenant_in_another_tier_round_trips(
    workdir: Path, aws: dict[str, Any]
) -> None:
    # GIVEN a bridge tenant exported by the bridge host's function
    rows = rows_of(workdir, "mover", "bridge")
    sums = digests(workdir, "mover", "bridge")
    others = {t: digests(workdir, t, "pool") for t in ("pooled-one", "pooled-two")}
    exported = run(workdir, aws, "bridge", action="export", tenant="mover")
    bridge, pool = aws["hosts"]["bridge"], aws["hosts"]["pool"]

    # WHEN it moves to the pool and the export is brought into the pool host's bucket
    move_by_hand(workdir, "mover", "pool")
    for key in objects(aws, bridge["bucket"], exported["prefix"]):
        aws["s3"].copy_object(
            Bucket=pool["bucket"],
            Key=key,
            CopySource={"Bucket": bridge["bucket"], "Key": key},
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=pool["key"],
        )
    imported = run(workdir, aws, "pool", action="import", tenant="mover", prefix=exported["prefix"])

    # THEN every row and checksum is the bridge's, and the pool's other tenants are untouched
    assert imported["source_tier"] == "bridge"
    assert imported["tier"] == "pool"
    assert imported["rows"] == exported["rows"]
    assert rows_of(workdir, "mover", "pool") == rows
    assert digests(workdir, "mover", "pool") == sums
    assert {t: digests(workdir, t, "pool") for t in others} == others


def test_a_tampered_object_is_refused_naming_it_and_nothing_changes(
    workdir: Path, aws: dict[str, Any]
) -> None:
    # GIVEN an export of a pool tenant, one of whose data objects is then changed in S3
    exported = run(workdir, aws, "pool", action="export", tenant="pooled-two")
    sums = digests(workdir, "pooled-two", "pool")
    pool = aws["hosts"]["pool"]
    name = exported["prefix"] + "002-public.items.copy"
    body = aws["s3"].get_object(Bucket=pool["bucket"], Key=name)["Body"].read()
    aws["s3"].put_object(Bucket=pool["bucket"], Key=name, Body=body.replace(b"item", b"ITEM", 1))

    # WHEN it is imported over the tenant THEN it is refused naming the object, nothing changed
    with pytest.raises(ImportRefusedError, match=f"s3://{pool['bucket']}/{name} does not match"):
        run(
            workdir,
            aws,
            "pool",
            action="import",
            tenant="pooled-two",
            prefix=exported["prefix"],
            replace=True,
        )
    assert digests(workdir, "pooled-two", "pool") == sums


def test_a_failed_import_logs_the_first_line_of_its_error_only(
    workdir: Path,
    aws: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an import that fails as PostgreSQL reports a key conflict, its values on a DETAIL line
    exported = run(workdir, aws, "pool", action="export", tenant="pooled-one")

    def conflict(*_args: Any, **_kwargs: Any) -> Any:
        raise ImportFailedError(
            "importing into pooled-one failed, nothing was changed: duplicate key value\n"
            "DETAIL:  Key (tenant_id, vault_id)=(pooled-one, 4242) already exists."
        )

    monkeypatch.setattr(handler_module, "import_tenant", conflict)
    # WHEN it runs THEN the invoker gets the whole error, the log its first line only
    with pytest.raises(ImportFailedError, match="4242"):
        run(workdir, aws, "pool", action="import", tenant="pooled-one", prefix=exported["prefix"])
    assert "import of pooled-one failed: importing into pooled-one failed" in caplog.text
    assert "4242" not in caplog.text


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"tenant": "x'; DROP DATABASE x; --", "action": "export"}, "tenant: tenant id"),
        ({"tenant": "pooled-one", "action": "purge"}, "action must be one of export, import"),
        ({"tenant": "pooled-one", "action": "export", "tier": "bridge"}, "serves the pool"),
        (
            {"tenant": "pooled-one", "action": "import", "prefix": "exports/pooled-two/x/"},
            "is not an export of pooled-one",
        ),
        (
            {"tenant": "pooled-one", "action": "import", "prefix": "../exports/pooled-one/"},
            "is not an export of pooled-one",
        ),
        (
            {"tenant": "pooled-one", "action": "import", "prefix": None, "replace": "yes"},
            "replace must be true or false",
        ),
    ],
)
def test_a_bad_request_is_refused_before_s3_or_the_database(
    event: dict[str, Any], message: str
) -> None:
    def no_database(_config: MobilityConfig) -> Any:
        raise AssertionError("reached the database")

    config = MobilityConfig(tier="pool", bucket="b", key_arn="k", admin_secret_arn="s")
    with pytest.raises(InvalidRequestError, match=message):
        handle({"tier": "pool", **event}, config, object(), admin_settings=no_database)


def test_on_event_reads_its_environment_and_the_admin_secret_and_connects_verify_full(
    workdir: Path, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the pool host's function environment as the construct sets it, and the admin
    # secret as RDS writes it (the local server's admin, its CA as the bundle)
    server = server_of(workdir)
    secret = boto3.client("secretsmanager").create_secret(
        Name="tenantkit/tenantkit-pool/admin",
        SecretString=json.dumps(
            {
                "host": server.host,
                "port": server.port,
                "username": ADMIN_USER,
                "password": server.credentials.admin_password,
            }
        ),
    )["ARN"]
    pool = aws["hosts"]["pool"]
    for name, value in {
        HOST_TIER: "pool",
        EXPORT_BUCKET: pool["bucket"],
        EXPORT_KEY_ARN: pool["key"],
        ADMIN_SECRET_ARN: secret,
        SSL_ROOT_CERT: str(server.ca_cert),
    }.items():
        monkeypatch.setenv(name, value)

    # WHEN Lambda calls the entry point THEN the export is in the bucket
    answer = on_event({"action": "export", "tenant": "pooled-one", "tier": "pool"}, None)
    assert answer["rows"] == sum(
        rows for rows, _ in digests(workdir, "pooled-one", "pool").values()
    )
    assert objects(aws, pool["bucket"], answer["prefix"])

    # AND a CA that did not sign the server is refused: verify-full, no fallback
    monkeypatch.setenv(SSL_ROOT_CERT, str(RDS_CA_BUNDLE_PATH))
    with pytest.raises(TenantkitError, match=r"SSL error|certificate"):
        on_event({"action": "export", "tenant": "pooled-one", "tier": "pool"}, None)


def test_the_configuration_names_what_is_missing_or_wrong() -> None:
    with pytest.raises(TenantkitError, match=f"not set: {HOST_TIER}, {EXPORT_BUCKET}"):
        MobilityConfig.from_env({})
    base = {EXPORT_BUCKET: "b", EXPORT_KEY_ARN: "k", ADMIN_SECRET_ARN: "s"}
    with pytest.raises(TenantkitError, match="must be one of silo, bridge, pool"):
        MobilityConfig.from_env({**base, HOST_TIER: "moon"})
    with pytest.raises(TenantkitError, match=f"{HOST_TENANT} is set for a silo host"):
        MobilityConfig.from_env({**base, HOST_TIER: "silo"})
    silo = MobilityConfig.from_env({**base, HOST_TIER: "silo", HOST_TENANT: "solo"})
    with pytest.raises(InvalidRequestError, match="holds tenant 'solo' only"):
        handle({"action": "export", "tenant": "other", "tier": "silo"}, silo, object())


# -- tenantctl --provision aws -------------------------------------------------------------


@pytest.fixture
def deployed(
    workdir: Path, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], None]]:
    """Register a host's function in moto (its configuration: the environment the construct
    gives it) and run its invocations with the real handler, as Lambda would."""
    iam = boto3.client("iam")
    lambda_ = boto3.client("lambda")
    try:
        role = iam.get_role(RoleName="mobility")["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(RoleName="mobility", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    functions: dict[str, str] = {}

    def deploy(tier: str) -> None:
        config = config_of(aws, tier)
        name = HostNames(TIERS[tier]).mobility_function
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("stub.py", "")
        lambda_.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler="lambda_src.mobility_function.handler.on_event",
            Code={"ZipFile": code.getvalue()},
            Environment={
                "Variables": {
                    HOST_TIER: tier,
                    EXPORT_BUCKET: config.bucket,
                    EXPORT_KEY_ARN: config.key_arn,
                    ADMIN_SECRET_ARN: config.admin_secret_arn,
                }
            },
        )
        functions[name] = tier

    def invoke(self: MobilityFunctions, function: str, payload: bytes) -> tuple[str | None, bytes]:
        try:
            answer = run_event(workdir, aws, functions[function], json.loads(payload))
        except Exception as error:  # as Lambda reports an unhandled exception
            document = {"errorType": type(error).__name__, "errorMessage": str(error)}
            return "Unhandled", json.dumps(document).encode()
        return None, json.dumps(answer).encode()

    monkeypatch.setattr(MobilityFunctions, "invoke_function", invoke)
    yield deploy
    for name in functions:
        lambda_.delete_function(FunctionName=name)


def test_tenantctl_exports_through_the_hosts_function_and_imports_from_another_bucket(
    workdir: Path, aws: dict[str, Any], deployed: Callable[[str], None]
) -> None:
    # GIVEN both hosts' functions deployed
    deployed("pool")
    deployed("bridge")
    sums = digests(workdir, "traveller", "pool")

    # WHEN a pool tenant is exported through tenantctl
    code, exported = tenantctl(workdir, "export", "traveller", "--provision", "aws")

    # THEN the pool host's function wrote it to its bucket, and tenantctl reports where
    pool, bridge = aws["hosts"]["pool"], aws["hosts"]["bridge"]
    assert code == 0, exported
    assert exported["function"] == "tenantkit-pool-mobility"
    assert exported["uri"].startswith(f"s3://{pool['bucket']}/exports/traveller/")
    assert {t["name"]: (t["rows"], t["sha256"]) for t in exported["tables"]} == sums

    # WHEN the tenant moves back to the bridge and that export is imported there
    move_by_hand(workdir, "traveller", "bridge")
    code, imported = tenantctl(
        workdir, "import", "traveller", exported["uri"], "--provision", "aws"
    )

    # THEN it was copied into the bridge host's bucket (its key) and imported, verified
    assert code == 0, imported
    assert imported["copied"] == exported["objects"]
    assert imported["uri"] == f"s3://{bridge['bucket']}/{exported['prefix']}"
    for head in objects(aws, bridge["bucket"], exported["prefix"]).values():
        assert head["SSEKMSKeyId"] == bridge["key"]
    assert digests(workdir, "traveller", "bridge") == sums

    # WHEN it is imported again THEN the tenant's rows make the function refuse it (exit 2)
    code, again = tenantctl(workdir, "import", "traveller", imported["uri"], "--provision", "aws")
    assert code == EXIT_INVALID, again
    assert "already has rows" in again["error"]


def test_tenantctl_says_which_host_to_deploy_when_its_function_is_not_deployed(
    workdir: Path, aws: dict[str, Any]
) -> None:
    code, document = tenantctl(workdir, "export", "pooled-one", "--provision", "aws")
    assert code == EXIT_ENVIRONMENT
    assert (
        "host tenantkit-pool: function tenantkit-pool-mobility is not deployed"
        in (document["error"])
    )
    assert "tenantctl deploy pool" in document["error"]


def test_tenantctl_needs_a_region_and_credentials(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    code, document = tenantctl(workdir, "export", "pooled-one", "--provision", "aws")
    assert code == EXIT_ENVIRONMENT
    assert "no AWS Region" in document["error"]

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, document = tenantctl(
        workdir, "export", "pooled-one", "--provision", "aws", "--region", "us-east-1"
    )
    assert code == EXIT_ENVIRONMENT
    assert "no AWS credentials" in document["error"]


def test_tenantctl_refuses_an_s3_prefix_that_is_not_an_export_of_the_tenant(
    workdir: Path,
) -> None:
    code, document = tenantctl(
        workdir, "import", "pooled-one", "s3://b/exports/pooled-two/x/", "--provision", "aws"
    )
    assert code == EXIT_INVALID
    assert "is not an export of pooled-one" in document["error"]


def test_offboarding_with_destroy_data_in_aws_exports_first_and_stops_if_it_cannot(
    workdir: Path, aws: dict[str, Any]
) -> None:
    # GIVEN a pool tenant whose host's function is not deployed
    catalog = (workdir / "tenants.yaml").read_text()

    # WHEN it is offboarded with its data destroyed, as a dry run THEN the export comes first
    code, planned = tenantctl(
        workdir, "offboard", "pooled-one", "--provision", "aws", "--destroy-data", "--dry-run"
    )
    assert code == 0, planned
    assert planned["steps"][0]["step"] == (
        "export pooled-one through tenantkit-pool-mobility into its bucket"
    )

    # WHEN it runs THEN the export cannot be taken, so nothing else happens (exit 3)
    result = runner.invoke(
        app,
        cli_args(workdir, "offboard", "pooled-one", "--provision", "aws", "--destroy-data"),
    )
    document = one_document(result.stdout)
    assert result.exit_code == EXIT_ENVIRONMENT, document
    assert "tenantkit-pool-mobility is not deployed" in document["error"]
    assert (workdir / "tenants.yaml").read_text() == catalog
