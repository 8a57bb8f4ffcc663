"""`tenantctl deploy` against an account (moto) that holds what a deleted stack retained: it finds
each kind of retained resource by the name the template fixes, restores a secret scheduled for
deletion, runs `cdk import` with the resource mapping before `cdk deploy`, and refuses what it
cannot take back. The CDK CLI itself is recorded, not run (it would reach AWS)."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from tenantkit.cli import EXIT_INVALID, app, deploy_commands
from tenantkit.retained import KEY_TYPE, AwsAccount, Found, Retained

CATALOG = """\
tenants:
  - id: first
    tier: bridge
"""
SECRET = "tenantkit/first/app"
STACK = "tenantkit-bridge-first"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.Session(region_name="us-east-1")


@pytest.fixture
def cdk_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every CDK CLI command tenantctl runs, with the resource mapping an import reads."""
    runs: list[dict[str, Any]] = []

    def run(argv: list[str], as_json: bool) -> int:
        run_record: dict[str, Any] = {"argv": list(argv)}
        if "--resource-mapping" in argv:
            mapping = Path(argv[argv.index("--resource-mapping") + 1])
            run_record["mapping"] = json.loads(mapping.read_text())
        runs.append(run_record)
        return 0

    monkeypatch.setattr(deploy_commands, "run_cdk", run)
    return runs


def deploy(tmp_path: Path) -> tuple[int, dict[str, Any]]:
    catalog = tmp_path / "tenants.yaml"
    catalog.write_text(CATALOG)
    result = CliRunner().invoke(app, ["deploy", "first", "--catalog", str(catalog), "--json"])
    return result.exit_code, json.loads(result.stdout.splitlines()[-1])


def test_a_tenant_onboarded_again_imports_its_retained_secret_before_the_deploy(
    tmp_path: Path, aws: boto3.Session, cdk_runs: list[dict[str, Any]]
) -> None:
    arn = aws.client("secretsmanager").create_secret(Name=SECRET, SecretString="{}")["ARN"]

    code, result = deploy(tmp_path)

    assert code == 0, result
    assert [run["argv"][:3] for run in cdk_runs] == [
        ["cdk", "import", STACK],
        ["cdk", "deploy", STACK],
    ]
    assert cdk_runs[0]["mapping"] == {"TenantLoginSecret5EB69E0B": {"Id": arn}}
    assert "tenant=first" in cdk_runs[0]["argv"]
    assert result["taken_back"][0]["stack"] == STACK
    assert result["taken_back"][0]["imported"][0]["identifier"] == arn


def test_a_secret_scheduled_for_deletion_is_restored_then_imported(
    tmp_path: Path, aws: boto3.Session, cdk_runs: list[dict[str, Any]]
) -> None:
    secrets = aws.client("secretsmanager")
    arn = secrets.create_secret(Name=SECRET, SecretString="{}")["ARN"]
    secrets.delete_secret(SecretId=arn, RecoveryWindowInDays=7)

    code, result = deploy(tmp_path)

    assert code == 0, result
    assert "DeletedDate" not in secrets.describe_secret(SecretId=arn)
    assert result["taken_back"][0]["imported"][0]["restored"] is True
    assert cdk_runs[0]["mapping"] == {"TenantLoginSecret5EB69E0B": {"Id": arn}}


def test_a_first_deploy_and_a_deploy_of_an_existing_stack_import_nothing(
    tmp_path: Path, aws: boto3.Session, cdk_runs: list[dict[str, Any]]
) -> None:
    code, result = deploy(tmp_path)
    assert code == 0
    assert result["taken_back"] == []
    # the stack exists (and holds the secret): nothing to take back either
    aws.client("secretsmanager").create_secret(Name=SECRET, SecretString="{}")
    aws.client("cloudformation").create_stack(
        StackName=STACK,
        TemplateBody=json.dumps(
            {"Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {}}}}
        ),
    )
    code, result = deploy(tmp_path)
    assert code == 0
    assert result["taken_back"] == []
    assert [run["argv"][1] for run in cdk_runs] == ["deploy", "deploy"]


def test_each_retained_kind_is_found_by_its_fixed_name(aws: boto3.Session) -> None:
    account = AwsAccount(aws)
    kms = aws.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/host", TargetKeyId=key)
    aws.client("logs").create_log_group(logGroupName="/tenantkit/host/provisioner")
    aws.client("logs").create_log_group(logGroupName="/tenantkit/host/provisioner-framework")
    aws.client("backup").create_backup_vault(BackupVaultName="host")

    def find(kind: str, name: str) -> Found | None:
        return account.find(Retained("Logical", kind, name))

    assert find(KEY_TYPE, "alias/host") == Found(key)
    assert find("AWS::KMS::Alias", "alias/host") == Found("alias/host")
    assert find("AWS::Logs::LogGroup", "/tenantkit/host/provisioner") == Found(
        "/tenantkit/host/provisioner"
    )
    assert find("AWS::Logs::LogGroup", "/tenantkit/host/prov") is None  # a prefix is no match
    assert find("AWS::Backup::BackupVault", "host") == Found("host")
    for kind, name in [
        (KEY_TYPE, "alias/other"),
        ("AWS::Backup::BackupVault", "other"),
        ("AWS::SecretsManager::Secret", "tenantkit/other/app"),
    ]:
        assert find(kind, name) is None
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert find(KEY_TYPE, "alias/host") == Found(key, scheduled_for_deletion=True)


def test_a_retained_key_scheduled_for_deletion_refuses_the_deploy_naming_it(
    tmp_path: Path, aws: boto3.Session, cdk_runs: list[dict[str, Any]]
) -> None:
    kms = aws.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/tenantkit-bridge", TargetKeyId=key)
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    catalog = tmp_path / "tenants.yaml"
    catalog.write_text(CATALOG)

    result = CliRunner().invoke(app, ["deploy", "bridge", "--catalog", str(catalog), "--json"])

    assert result.exit_code == EXIT_INVALID
    error = json.loads(result.stdout.splitlines()[-1])["error"]
    assert f"retained key {key}" in error
    assert "cancel-key-deletion" in error
    assert cdk_runs == []


def test_a_silo_whose_cluster_left_a_final_snapshot_is_refused_unless_fresh_database(
    tmp_path: Path, aws: boto3.Session, cdk_runs: list[dict[str, Any]]
) -> None:
    silo = "tenantkit-silo-solo"
    rds = aws.client("rds")
    rds.create_db_cluster(
        DBClusterIdentifier=silo,
        Engine="aurora-postgresql",
        MasterUsername="tenantkit_admin",
        MasterUserPassword="not-a-real-password",
    )
    rds.create_db_cluster_snapshot(
        DBClusterIdentifier=silo, DBClusterSnapshotIdentifier=f"{silo}-final"
    )
    rds.delete_db_cluster(DBClusterIdentifier=silo, SkipFinalSnapshot=True)
    catalog = tmp_path / "tenants.yaml"
    catalog.write_text("tenants:\n  - id: solo\n    tier: silo\n")
    command = ["deploy", "solo", "--catalog", str(catalog), "--json"]

    refused = CliRunner().invoke(app, command)

    assert refused.exit_code == EXIT_INVALID
    error = json.loads(refused.stdout.splitlines()[-1])["error"]
    assert f"snapshot {silo}-final" in error
    assert "--fresh-database" in error
    assert cdk_runs == []
    started = CliRunner().invoke(app, [*command, "--fresh-database"])
    assert started.exit_code == 0, started.stdout
    assert [run["argv"][1] for run in cdk_runs] == ["deploy"]
