"""The application's migrations in AWS: they travel in the provisioner's code asset (copied
beside lambda_src/, part of the asset's hash: a changed migration is a new asset, so a deploy
brings the function the new files), and a host with migrations rolls them out with a Step
Functions state machine that calls its provisioner per tenant."""

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import aws_cdk.aws_lambda as lambda_
import pytest
from aws_cdk.assertions import Template

from lambda_src.core.environment import MIGRATIONS_DIR
from lambda_src.provisioner.migrate import MIGRATE_REQUEST
from lambda_src.tenancy import BRIDGE_HOST, HostNames
from stacks import BridgeClusterStack
from tenant_constructs.bundling import MIGRATIONS_ASSET_DIR, _LocalPipBundling, lambda_src_hash
from tenantkit.catalog import load_catalog, parse_catalog
from tenantkit.synth import synth_templates

from .conftest import cdk_context

ARM = lambda_.Architecture.ARM_64


def migrations(root: Path) -> Path:
    directory = root / "migrations"
    directory.mkdir()
    (directory / "V0001__items.sql").write_text("CREATE TABLE items (id bigint);\n")
    (directory / ".gitkeep").write_text("")
    return directory


def test_the_asset_hash_follows_the_migrations(tmp_path: Path) -> None:
    directory = migrations(tmp_path)
    without, first = lambda_src_hash(ARM), lambda_src_hash(ARM, directory)
    assert first != without
    assert lambda_src_hash(ARM, directory) == first  # stable
    (directory / "V0001__items.sql").write_text("CREATE TABLE items (id bigint, v text);\n")
    assert lambda_src_hash(ARM, directory) != first
    (directory / ".gitkeep").write_text("ignored")  # dotfiles stay out
    changed = lambda_src_hash(ARM, directory)
    (directory / ".gitkeep").write_text("still ignored")
    assert lambda_src_hash(ARM, directory) == changed


def test_a_missing_migrations_directory_fails_synth_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"migrations directory .*nowhere does not exist"):
        lambda_src_hash(ARM, tmp_path / "nowhere")


@pytest.mark.slow
def test_bundling_copies_the_migrations_beside_lambda_src(tmp_path: Path) -> None:
    directory = migrations(tmp_path)
    out = tmp_path / "asset"
    out.mkdir()
    assert _LocalPipBundling(ARM, directory).try_bundle(str(out))
    bundled = out / MIGRATIONS_ASSET_DIR
    assert sorted(p.name for p in bundled.iterdir()) == ["V0001__items.sql"]
    assert (bundled / "V0001__items.sql").read_text() == "CREATE TABLE items (id bigint);\n"
    assert (out / "lambda_src" / "provisioner" / "handler.py").is_file()


def bridge_template(migrations_dir: Path | None) -> dict[str, Any]:
    app = cdk.App(context=cdk_context())
    catalog = parse_catalog({"tenants": [{"id": "contoso", "tier": "bridge"}]})
    stack = BridgeClusterStack(
        app, BRIDGE_HOST, tenants=catalog.in_tier("bridge"), migrations=migrations_dir
    )
    return dict(Template.from_stack(stack).to_json())


def test_with_migrations_a_host_rolls_them_out_with_a_state_machine_inside_its_limits(
    tmp_path: Path,
) -> None:
    template = bridge_template(migrations(tmp_path))
    resources = template["Resources"]
    ((provisioner_id, provisioner),) = [
        (i, r)
        for i, r in resources.items()
        if r["Type"] == "AWS::Lambda::Function"
        and r["Properties"]["Handler"] == "lambda_src.provisioner.handler.on_event"
    ]
    variables = provisioner["Properties"]["Environment"]["Variables"]
    assert variables[MIGRATIONS_DIR] == MIGRATIONS_ASSET_DIR
    (machine,) = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    properties = machine["Properties"]
    assert properties["StateMachineName"] == HostNames(BRIDGE_HOST).migration_state_machine
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert properties["LoggingConfiguration"]["Level"] == "ALL"
    assert properties["LoggingConfiguration"]["IncludeExecutionData"] is False
    # the definition: JSONata, waves one after another, each tenant a call to the provisioner
    parts = properties["DefinitionString"]["Fn::Join"][1]
    definition = json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts))
    assert definition["QueryLanguage"] == "JSONata"
    states = definition["States"]
    assert set(states) == {"Start", "NextWave", "Wave", "WithinBudget", "BudgetExceeded", "Done"}
    migrate = states["Wave"]["ItemProcessor"]["States"]["Migrate"]
    assert migrate["Arguments"]["Payload"]["tenantkit"] == MIGRATE_REQUEST
    assert states["BudgetExceeded"]["Type"] == "Fail"
    # its role may invoke the provisioner (not its versions) and nothing else of Lambda
    role = properties["RoleArn"]["Fn::GetAtt"][0]
    statements = [
        statement
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"]["Roles"]
        for statement in r["Properties"]["PolicyDocument"]["Statement"]
    ]
    invokes = [s["Resource"] for s in statements if "lambda:InvokeFunction" in str(s["Action"])]
    assert invokes == [{"Fn::GetAtt": [provisioner_id, "Arn"]}]


def test_without_migrations_a_host_has_no_rollout_and_the_provisioner_no_directory() -> None:
    template = bridge_template(None)
    assert not [r for r in template["Resources"].values() if "StepFunctions" in r["Type"]]
    assert MIGRATIONS_DIR not in json.dumps(template)


@pytest.mark.slow
def test_a_catalog_with_a_schema_gives_the_bridge_cluster_and_each_silo_a_rollout(
    tmp_path: Path,
) -> None:
    migrations(tmp_path)
    catalog_file = tmp_path / "tenants.yaml"
    catalog_file.write_text(
        "schema:\n  directory: migrations\n"
        "tenants:\n  - {id: contoso, tier: bridge}\n  - {id: solo, tier: silo}\n"
        "  - {id: shared, tier: pool}\n"
    )
    # synth_templates applies the four nag packs: they pass with the rollouts too
    templates = synth_templates(load_catalog(catalog_file))

    def machines(stack: str) -> list[str]:
        return [
            r["Properties"]["StateMachineName"]
            for r in templates[stack]["Resources"].values()
            if r["Type"] == "AWS::StepFunctions::StateMachine"
        ]

    assert machines(BRIDGE_HOST) == [f"{BRIDGE_HOST}-migrate"]
    assert machines("tenantkit-silo-solo") == ["tenantkit-silo-solo-migrate"]
    assert machines("tenantkit-pool") == []  # the pool database is migrated once, by tenantctl
