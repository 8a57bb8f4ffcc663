"""The application's migrations in AWS: they travel in the provisioner's code asset (copied
beside lambda_src/, part of the asset's hash: a changed migration is a new asset, so a deploy
brings the function the new files), a host with tenant databases rolls them out with a Step
Functions state machine that calls its provisioner per tenant, and the pool's PoolDatabase
names them (latest version, fingerprint) so a deploy that adds one migrates the pool."""

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import aws_cdk.aws_lambda as lambda_
import pytest
from aws_cdk.assertions import Template

from lambda_src.core.environment import MIGRATIONS_DIR
from lambda_src.migrations.files import MigrationError, fingerprint, load_migrations
from lambda_src.provisioner.migrate import MIGRATE_REQUEST, PoolSchema
from lambda_src.tenancy import BRIDGE_HOST, POOL, HostNames
from stacks import BridgeClusterStack, PoolStack
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
    # both ends carry the same document, which tenantctl reads per tenant (aws_rollout)
    document = "{'failed': $failed, 'results': $results}"
    assert states["Done"]["Output"] == "{% " + document + " %}"
    assert states["BudgetExceeded"]["Cause"] == "{% $string(" + document + ") %}"
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
    assert machines("tenantkit-pool") == []  # one database: its deploy migrates it
    (pool_database,) = [
        r
        for r in templates["tenantkit-pool"]["Resources"].values()
        if r["Type"] == "Custom::PoolDatabase"
    ]
    assert pool_database["Properties"]["Migrations"]["Latest"] == "1"


def pool_template(migrations_dir: Path | None, schema: PoolSchema = PoolSchema()) -> Template:
    app = cdk.App(context=cdk_context())
    catalog = parse_catalog({"tenants": [{"id": "tailspin", "tier": "pool"}]})
    stack = PoolStack(
        app,
        POOL.stack_name,
        tenants=catalog.in_tier("pool"),
        migrations=migrations_dir,
        pool_schema=schema,
    )
    return Template.from_stack(stack)


def provisioner_variables(template: Template) -> dict[str, str]:
    (function,) = [
        r
        for r in template.find_resources("AWS::Lambda::Function").values()
        if r["Properties"]["Handler"] == "lambda_src.provisioner.handler.on_event"
    ]
    return dict(function["Properties"]["Environment"]["Variables"])


def test_the_pool_names_its_migrations_so_a_deploy_that_adds_one_updates_it(
    tmp_path: Path,
) -> None:
    directory = migrations(tmp_path)
    schema = PoolSchema(("public", "app"), ("countries",))

    template = pool_template(directory, schema)

    # the pool's provisioner carries the files; the pool has no rollout state machine
    assert provisioner_variables(template)[MIGRATIONS_DIR] == MIGRATIONS_ASSET_DIR
    template.resource_count_is("AWS::StepFunctions::StateMachine", 0)
    files = load_migrations(directory)
    template.has_resource_properties(
        "Custom::PoolDatabase",
        {
            "Migrations": {
                "Latest": "1",
                "Fingerprint": fingerprint((m.version, m.checksum) for m in files),
                "TenantSchemas": ["public", "app"],
                "SharedTables": ["countries"],
            }
        },
    )
    # WHEN a migration is added THEN the property CloudFormation compares changes
    (directory / "V0002__notes.sql").write_text("ALTER TABLE items ADD COLUMN note text;\n")
    properties = pool_template(directory, schema).find_resources("Custom::PoolDatabase")
    (added,) = [r["Properties"]["Migrations"] for r in properties.values()]
    assert added["Latest"] == "2"
    assert added["Fingerprint"] != fingerprint((m.version, m.checksum) for m in files)


def test_a_pool_without_migrations_keeps_its_template() -> None:
    template = pool_template(None)
    (pool_database,) = template.find_resources("Custom::PoolDatabase").values()
    assert "Migrations" not in pool_database["Properties"]
    assert MIGRATIONS_DIR not in provisioner_variables(template)


def test_a_bad_migration_file_fails_the_pools_synth_naming_it(tmp_path: Path) -> None:
    directory = migrations(tmp_path)
    (directory / "V0002__notes.txt").write_text("not sql")
    with pytest.raises(MigrationError, match=r"V0002__notes.txt: not a .sql file"):
        pool_template(directory)
