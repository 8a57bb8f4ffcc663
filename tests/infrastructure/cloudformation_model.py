"""A model of one AWS account's CloudFormation, for the rules a second deploy meets.

What it models (from CloudFormation's and the services' documented behaviour):
- A resource whose template fixes its physical name (a secret's Name, a log group's name, a
  vault's, an alias's, a cluster's identifier, a function's name, ...) can be created only if no
  resource of that type and name exists in the account, owned by a stack or not: else the stack's
  creation fails with "already exists" and rolls back (the model checks before it creates).
- Deleting a stack applies each resource's DeletionPolicy: Retain leaves it in the account,
  owned by no stack; Snapshot deletes a cluster or instance and leaves a final snapshot; Delete
  deletes it, and a deleted secret keeps its name reserved for its recovery window (RestoreSecret
  brings it back).
- An IMPORT change set creates a stack from existing resources only: every resource of its
  template must be mapped to one, have a DeletionPolicy, match the mapped resource's name, and
  refer only to resources of the same template; the resource must exist, not be scheduled for
  deletion and belong to no stack. `cdk import` sends the template's mapped resources only.
- An update creates the template's resources the stack lacks (by the same name rule) and keeps
  the ones it holds (same physical resource, same identifier).
- A cluster or instance with a snapshot property is created from that snapshot (its data);
  one without starts empty; changing or dropping the property later requires replacing it,
  which CloudFormation refuses for a custom-named resource.

What it does not model: property drift, rollbacks midway, eventual consistency, service quotas,
custom resources' own work (the provisioner is tested against PostgreSQL).
"""

import itertools
from dataclasses import dataclass
from typing import Any

from tenantkit.retained import (
    IMPORTABLE_NAMES,
    KEY_TYPE,
    RESTORED_FROM,
    SNAPSHOT_RESTORED,
    Found,
    Retained,
    references,
)

FIXED_NAME = {
    **{kind: name for kind, (name, _) in IMPORTABLE_NAMES.items()},
    **SNAPSHOT_RESTORED,
    "AWS::Lambda::Function": "FunctionName",
    "AWS::SSM::Parameter": "Name",
    "AWS::IAM::Role": "RoleName",
}
"""The property that fixes a resource's physical name, by type (else CloudFormation makes one)."""


class CloudFormationError(Exception):
    """What CloudFormation would answer (the stack's operation failed)."""


@dataclass
class Physical:
    type: str
    name: str
    identifier: str
    owner: str | None
    scheduled_for_deletion: bool = False
    target: str | None = None  # an alias's key
    data: str | None = None  # a cluster's or instance's data: where it came from
    restored_from: str | None = None


def _references(value: Any) -> set[str]:
    return set(references(value))


class ModelCloud:
    """The account: its physical resources, stacks and snapshots; a `tenantkit.retained.Cloud`."""

    def __init__(self) -> None:
        self.resources: list[Physical] = []
        self.stacks: dict[str, dict[str, Physical]] = {}
        self.snapshots: list[tuple[str, str]] = []  # (identifier of what it was taken of, stack)
        self.snapshot_data: dict[str, str | None] = {}  # snapshot name -> the data it holds
        self._ids = itertools.count(1)
        self._policies: dict[str, dict[str, str]] = {}  # stack -> logical id -> DeletionPolicy
        self._synthesized: dict[str, dict[str, Any]] = {}  # what `cdk import` reads
        self._deployed: dict[str, dict[str, Any]] = {}  # each stack's last template

    # -- what tenantkit.retained.Cloud asks -------------------------------------------------
    def stack_exists(self, stack: str) -> bool:
        return stack in self.stacks

    def deployed_template(self, stack: str) -> dict[str, Any]:
        return self._deployed[stack]

    def find(self, resource: Retained) -> Found | None:
        if resource.type == KEY_TYPE:
            alias = self._named("AWS::KMS::Alias", resource.name)
            if alias is None or alias.target is None:
                return None
            key = next(r for r in self.resources if r.identifier == alias.target)
            return Found(key.identifier, key.scheduled_for_deletion)
        found = self._named(resource.type, resource.name)
        return None if found is None else Found(found.identifier, found.scheduled_for_deletion)

    def final_snapshots(self, kind: str, identifier: str) -> list[str]:
        return [
            f"{stack}-snapshot-{n}"
            for n, (of, stack) in enumerate(self.snapshots)
            if of == identifier
        ]

    def restore_secret(self, arn: str) -> None:
        secret = next(r for r in self.resources if r.identifier == arn)
        secret.scheduled_for_deletion = False

    def import_resources(self, stack: str, mapping: dict[str, dict[str, str]]) -> None:
        """`cdk import`: the mapped resources of the stack's template, as an IMPORT change set."""
        template = self._synthesized[stack]
        imported = {
            "Resources": {
                logical_id: resource
                for logical_id, resource in template["Resources"].items()
                if logical_id in mapping
            }
        }
        self.create_stack_by_import(stack, imported, mapping)

    # -- CloudFormation ----------------------------------------------------------------------
    def create_stack(self, stack: str, template: dict[str, Any]) -> None:
        if stack in self.stacks:
            raise CloudFormationError(f"Stack [{stack}] already exists")
        self.stacks[stack] = {}
        try:
            self._create_missing(stack, template)
        except CloudFormationError:
            self.delete_stack(stack, rollback=True)
            raise

    def update_stack(self, stack: str, template: dict[str, Any]) -> None:
        if stack not in self.stacks:
            raise CloudFormationError(f"Stack [{stack}] does not exist")
        for logical_id, physical in self.stacks[stack].items():
            restore = RESTORED_FROM.get(physical.type)
            resource = template["Resources"].get(logical_id)
            if (
                restore
                and resource
                and resource["Properties"].get(restore) != (physical.restored_from)
            ):
                # a new snapshot property (or none) replaces the database; with a fixed name
                # CloudFormation cannot even do that
                raise CloudFormationError(
                    f"{logical_id}: CloudFormation cannot update a stack when a custom-named "
                    "resource requires replacing"
                )
        self._create_missing(stack, template)

    def deploy(self, stack: str, template: dict[str, Any]) -> None:
        """What `cdk deploy` does: create the stack, or update it if it exists."""
        if stack in self.stacks:
            self.update_stack(stack, template)
        else:
            self.create_stack(stack, template)
        self._deployed[stack] = template

    def delete_stack(self, stack: str, *, rollback: bool = False) -> None:
        for logical_id, physical in self.stacks.pop(stack).items():
            policy = self._policies[stack].get(logical_id, "Delete")
            if rollback:
                policy = "Delete"  # a rollback deletes what the failed creation made
            if policy in ("Retain", "RetainExceptOnCreate"):
                physical.owner = None
            elif policy == "Snapshot":
                self.snapshot_data[f"{stack}-snapshot-{len(self.snapshots)}"] = physical.data
                self.snapshots.append((physical.identifier, stack))
                self.resources.remove(physical)
            elif physical.type == "AWS::SecretsManager::Secret":
                physical.owner = None
                physical.scheduled_for_deletion = True
            else:
                self.resources.remove(physical)

    def create_stack_by_import(
        self, stack: str, template: dict[str, Any], mapping: dict[str, dict[str, str]]
    ) -> None:
        if stack in self.stacks:
            raise CloudFormationError(f"Stack [{stack}] already exists")
        resources = template["Resources"]
        taken: dict[str, Physical] = {}
        for logical_id, resource in resources.items():
            if logical_id not in mapping:
                raise CloudFormationError(
                    f"{logical_id}: an import cannot create resources; map it or leave it out"
                )
            if "DeletionPolicy" not in resource:
                raise CloudFormationError(f"{logical_id}: imported resources need a DeletionPolicy")
            dangling = {
                ref
                for ref in _references(resource.get("Properties", {}))
                if ref not in resources
                and ref not in template.get("Parameters", {})
                and not ref.startswith("AWS::")
            }
            if dangling:
                raise CloudFormationError(
                    f"{logical_id}: refers to {sorted(dangling)}, not in the imported template"
                )
            (identifier,) = mapping[logical_id].values()
            physical = next(
                (
                    r
                    for r in self.resources
                    if r.type == resource["Type"] and identifier in (r.identifier, r.name)
                ),
                None,
            )
            if physical is None:
                raise CloudFormationError(f"{logical_id}: {identifier} does not exist")
            if physical.owner is not None:
                raise CloudFormationError(
                    f"{logical_id}: {identifier} already belongs to stack {physical.owner}"
                )
            if physical.scheduled_for_deletion:
                raise CloudFormationError(f"{logical_id}: {identifier} is scheduled for deletion")
            name_property = FIXED_NAME.get(resource["Type"])
            if name_property and resource["Properties"].get(name_property) != physical.name:
                raise CloudFormationError(
                    f"{logical_id}: the template names it "
                    f"{resource['Properties'].get(name_property)!r}, not {physical.name!r}"
                )
            taken[logical_id] = physical
        self.stacks[stack] = {}
        self._policies[stack] = {}
        for logical_id, physical in taken.items():
            physical.owner = stack
            self.stacks[stack][logical_id] = physical
            self._policies[stack][logical_id] = resources[logical_id]["DeletionPolicy"]

    # -- helpers -----------------------------------------------------------------------------
    def synthesized(self, stack: str, template: dict[str, Any]) -> None:
        """The template `cdk import` of `stack` reads (what the app synthesizes for it)."""
        self._synthesized[stack] = template

    def _named(self, kind: str, name: str) -> Physical | None:
        return next((r for r in self.resources if r.type == kind and r.name == name), None)

    def _create_missing(self, stack: str, template: dict[str, Any]) -> None:
        held = self.stacks[stack]
        policies = self._policies.setdefault(stack, {})
        created: list[tuple[str, dict[str, Any]]] = [
            (logical_id, resource)
            for logical_id, resource in template["Resources"].items()
            if logical_id not in held
        ]
        for logical_id, resource in created:
            restore = RESTORED_FROM.get(resource["Type"])
            snapshot = resource["Properties"].get(restore) if restore else None
            if snapshot and snapshot not in self.snapshot_data:
                raise CloudFormationError(f"{logical_id}: snapshot {snapshot} not found")
            name_property = FIXED_NAME.get(resource["Type"])
            name = resource.get("Properties", {}).get(name_property) if name_property else None
            if isinstance(name, str) and self._named(resource["Type"], name) is not None:
                raise CloudFormationError(
                    f"{logical_id}: {name} already exists (Resource handler returned message: "
                    f"'{resource['Type']} {name} already exists')"
                )
        for logical_id, resource in created:
            name_property = FIXED_NAME.get(resource["Type"])
            name = resource.get("Properties", {}).get(name_property) if name_property else None
            generated = f"{stack}-{logical_id}-{next(self._ids)}"
            name = name if isinstance(name, str) else generated
            identifier = (
                f"arn:aws:secretsmanager:us-east-1:111111111111:secret:{name}-{next(self._ids):06d}"
                if resource["Type"] == "AWS::SecretsManager::Secret"
                else generated
                if resource["Type"] == KEY_TYPE
                else name
            )
            physical = Physical(resource["Type"], name, identifier, owner=stack)
            restore = RESTORED_FROM.get(resource["Type"])
            if restore:
                snapshot = resource["Properties"].get(restore)
                physical.restored_from = snapshot
                physical.data = self.snapshot_data[snapshot] if snapshot else f"new {generated}"
            self.resources.append(physical)
            held[logical_id] = physical
            policies[logical_id] = resource.get("DeletionPolicy", "Delete")
        for logical_id, resource in created:
            if resource["Type"] == "AWS::KMS::Alias":
                (target,) = _references(resource["Properties"]["TargetKeyId"])
                held[logical_id].target = held[target].identifier
