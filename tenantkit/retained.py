"""What a deleted stack leaves behind, and how the next deploy of that stack takes it back.

tenantkit names some resources itself and keeps them when their stack is deleted (DeletionPolicy
Retain): the tenants' and hosts' secrets, the log groups, the backup vault, the host key and its
alias. A stack created again from the same template would collide with each of them ("already
exists"). Before `tenantctl deploy` creates a stack, it looks for them (by the names the template
gives them) and imports the ones it finds into the new stack (a CloudFormation IMPORT change set,
through `cdk import`); the deploy that follows creates the rest. The tenant comes back with the
same secret, so with the password its retained login still has; a host comes back with the same
key, so its snapshots and recovery points stay readable.

Clusters and instances have DeletionPolicy Snapshot: the deleted one leaves a final snapshot and
its identifier is free again, so nothing collides (see `snapshot_restored`).
"""

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

IMPORTABLE_NAMES = {
    "AWS::SecretsManager::Secret": ("Name", "Id"),
    "AWS::Logs::LogGroup": ("LogGroupName", "LogGroupName"),
    "AWS::Backup::BackupVault": ("BackupVaultName", "BackupVaultName"),
    "AWS::KMS::Alias": ("AliasName", "AliasName"),
}
"""Retained types with a fixed name: the property that names the resource, and the key of the
identifier CloudFormation's import takes (a secret is imported by its ARN)."""

KEY_TYPE = "AWS::KMS::Key"
"""A key has no name: it is found through the retained alias that targets it."""

SNAPSHOT_RESTORED = {
    "AWS::RDS::DBCluster": "DBClusterIdentifier",
    "AWS::RDS::DBInstance": "DBInstanceIdentifier",
}
"""Deleted with a final snapshot (DeletionPolicy Snapshot): the identifier is free again."""

RESTORED_FROM = {
    "AWS::RDS::DBCluster": "SnapshotIdentifier",
    "AWS::RDS::DBInstance": "DBSnapshotIdentifier",
}
"""The property that creates a cluster or instance from a snapshot (catalog restore_snapshot)."""

KEPT_POLICIES = ("Retain", "RetainExceptOnCreate")

LEFT_BEHIND = {"AWS::S3::Bucket": "BucketName"}
"""Retained types whose name CloudFormation generates (the property that would fix it is
unset): a stack created again makes a new one and never collides; the old one stays, with what
it holds (a host's export and access-log buckets: the exports stay importable from it)."""


@dataclass(frozen=True)
class Retained:
    """A resource of the template that outlives its stack under a name the template fixes."""

    logical_id: str
    type: str
    name: str
    """The fixed name; for a key, the alias name that finds it."""

    @property
    def identifier_key(self) -> str:
        return "KeyId" if self.type == KEY_TYPE else IMPORTABLE_NAMES[self.type][1]


@dataclass(frozen=True)
class Found:
    """A retained resource that exists in the account."""

    identifier: str
    """The value CloudFormation's import needs (a secret's ARN, a key's id, else the name)."""
    scheduled_for_deletion: bool = False


class Account(Protocol):
    """Where retained resources are looked up: AWS (AwsAccount) or a model of it in tests."""

    def find(self, resource: Retained) -> Found | None: ...

    def final_snapshots(self, kind: str, identifier: str) -> list[str]:
        """The manual snapshots (a deleted stack's final snapshot among them) of the cluster
        or instance `identifier` of type `kind`, oldest first."""
        ...


class RetainedResourceError(Exception):
    """A retained resource that cannot be taken back as it is; the message says what to do."""


def references(value: Any) -> Iterator[str]:
    """The logical ids (and pseudo parameters) a template value refers to (Ref, Fn::GetAtt)."""
    if isinstance(value, dict):
        if isinstance(value.get("Ref"), str):
            yield value["Ref"]
        target = value.get("Fn::GetAtt")
        if target is not None:
            yield target[0] if isinstance(target, list) else str(target).split(".")[0]
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def _kept(resource: Mapping[str, Any]) -> bool:
    return resource.get("DeletionPolicy") in KEPT_POLICIES


def retained_resources(template: Mapping[str, Any]) -> list[Retained]:
    """Every resource of `template` that its stack's deletion leaves behind under a fixed name.

    Raises RetainedResourceError for a kept resource tenantkit has no answer for (a type not in
    the tables above, or a name that is not a literal), so a new one cannot slip in unanswered.
    """
    resources: Mapping[str, Any] = template.get("Resources", {})
    found: list[Retained] = []
    for logical_id, resource in resources.items():
        kind = resource["Type"]
        properties = resource.get("Properties", {})
        if kind in SNAPSHOT_RESTORED and resource.get("DeletionPolicy") == "Snapshot":
            continue
        if not _kept(resource):
            continue
        if kind in LEFT_BEHIND and LEFT_BEHIND[kind] not in properties:
            continue
        if kind == KEY_TYPE:
            aliases = [
                resources[other]["Properties"]["AliasName"]
                for other, candidate in resources.items()
                if candidate["Type"] == "AWS::KMS::Alias"
                and _kept(candidate)
                and logical_id in set(references(candidate["Properties"].get("TargetKeyId")))
            ]
            if not aliases:
                raise RetainedResourceError(
                    f"{logical_id} ({kind}) is retained but no retained alias targets it: a "
                    "stack created again could not find it"
                )
            found.append(Retained(logical_id, kind, aliases[0]))
            continue
        if kind not in IMPORTABLE_NAMES:
            raise RetainedResourceError(
                f"{logical_id} ({kind}) is retained, and tenantkit does not know how a stack "
                "created again takes it back"
            )
        name = properties.get(IMPORTABLE_NAMES[kind][0])
        if not isinstance(name, str):
            raise RetainedResourceError(
                f"{logical_id} ({kind}) is retained under a name that is not fixed in the "
                f"template ({IMPORTABLE_NAMES[kind][0]}: {name!r})"
            )
        found.append(Retained(logical_id, kind, name))
    return found


def snapshot_restored(template: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(logical id, identifier) of the clusters and instances deleted with a final snapshot."""
    return [
        (logical_id, resource["Properties"][SNAPSHOT_RESTORED[resource["Type"]]])
        for logical_id, resource in template.get("Resources", {}).items()
        if resource["Type"] in SNAPSHOT_RESTORED and resource.get("DeletionPolicy") == "Snapshot"
    ]


@dataclass
class ImportPlan:
    """What creating `stack` again takes back from the account before its deploy."""

    stack: str
    imports: list[tuple[Retained, Found]] = field(default_factory=list)

    @property
    def restore_secrets(self) -> list[str]:
        """Secrets scheduled for deletion (their names are reserved): restored first."""
        return [
            found.identifier
            for resource, found in self.imports
            if resource.type == "AWS::SecretsManager::Secret" and found.scheduled_for_deletion
        ]

    def resource_mapping(self) -> dict[str, dict[str, str]]:
        """`cdk import --resource-mapping`'s content: logical id -> identifier."""
        return {
            resource.logical_id: {resource.identifier_key: found.identifier}
            for resource, found in self.imports
        }

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "logical_id": resource.logical_id,
                "type": resource.type,
                "name": resource.name,
                "identifier": found.identifier,
                "restored": found.scheduled_for_deletion,
            }
            for resource, found in self.imports
        ]


def plan_import(stack: str, template: Mapping[str, Any], account: Account) -> ImportPlan:
    """The retained resources of `template` that exist in `account`, to import into `stack`
    (which does not exist). Refuses, naming the resources, what an import cannot take back:
    a key scheduled for deletion, or a resource whose retained dependency is gone (an import
    must hold every resource it refers to)."""
    plan = ImportPlan(stack)
    for resource in retained_resources(template):
        found = account.find(resource)
        if found is None:
            continue
        if found.scheduled_for_deletion and resource.type == KEY_TYPE:
            raise RetainedResourceError(
                f"{stack}: the retained key {found.identifier} ({resource.name}) is scheduled "
                "for deletion; cancel it (aws kms cancel-key-deletion, then enable-key) to "
                "deploy the stack again with its data readable"
            )
        plan.imports.append((resource, found))
    imported = {resource.logical_id for resource, _ in plan.imports}
    resources = template.get("Resources", {})
    for resource, _ in plan.imports:
        missing = sorted(
            ref
            for ref in set(references(resources[resource.logical_id].get("Properties", {})))
            if ref in resources and ref not in imported
        )
        if missing:
            raise RetainedResourceError(
                f"{stack}: {resource.name} ({resource.type}) is still in the account, but "
                f"what it refers to is not ({', '.join(missing)}): delete or rename it, or "
                "bring back what it needs, before deploying the stack again"
            )
    return plan


NOT_FOUND = frozenset({"ResourceNotFoundException", "NotFoundException"})
"""The codes Secrets Manager, CloudWatch Logs, AWS Backup and KMS answer for a missing name."""


class AwsAccount:
    """Retained resources looked up with boto3 (read only)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def find(self, resource: Retained) -> Found | None:
        from botocore.exceptions import ClientError

        lookup = {
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::Logs::LogGroup": self._log_group,
            "AWS::Backup::BackupVault": self._vault,
            "AWS::KMS::Alias": self._alias,
            KEY_TYPE: self._key,
        }[resource.type]
        try:
            return lookup(resource.name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in NOT_FOUND:
                return None
            raise

    def _secret(self, name: str) -> Found:
        described = self.session.client("secretsmanager").describe_secret(SecretId=name)
        return Found(described["ARN"], scheduled_for_deletion="DeletedDate" in described)

    def _log_group(self, name: str) -> Found | None:
        logs = self.session.client("logs")
        groups = logs.describe_log_groups(logGroupNamePrefix=name).get("logGroups", [])
        return Found(name) if any(g["logGroupName"] == name for g in groups) else None

    def _vault(self, name: str) -> Found:
        self.session.client("backup").describe_backup_vault(BackupVaultName=name)
        return Found(name)

    def _alias(self, name: str) -> Found:
        self.session.client("kms").describe_key(KeyId=name)
        return Found(name)

    def final_snapshots(self, kind: str, identifier: str) -> list[str]:
        rds = self.session.client("rds")
        if kind == "AWS::RDS::DBCluster":
            found = rds.describe_db_cluster_snapshots(
                DBClusterIdentifier=identifier, SnapshotType="manual"
            )["DBClusterSnapshots"]
            key = "DBClusterSnapshotIdentifier"
        else:
            found = rds.describe_db_snapshots(
                DBInstanceIdentifier=identifier, SnapshotType="manual"
            )["DBSnapshots"]
            key = "DBSnapshotIdentifier"
        ordered = sorted(found, key=lambda snapshot: snapshot.get("SnapshotCreateTime", 0))
        return [snapshot[key] for snapshot in ordered]

    def _key(self, alias: str) -> Found:
        metadata = self.session.client("kms").describe_key(KeyId=alias)["KeyMetadata"]
        return Found(
            metadata["KeyId"], scheduled_for_deletion=metadata["KeyState"] == "PendingDeletion"
        )


class Cloud(Account, Protocol):
    """The account and the stacks in it, as `take_back` needs them."""

    def stack_exists(self, stack: str) -> bool: ...

    def deployed_template(self, stack: str) -> Mapping[str, Any]:
        """The template the existing `stack` was last deployed with."""
        ...

    def restore_secret(self, arn: str) -> None: ...

    def import_resources(self, stack: str, mapping: dict[str, dict[str, str]]) -> None:
        """Create `stack` from the resources in `mapping` only (`cdk import`)."""
        ...


def _keeps_its_restore(
    stack: str, deployed: Mapping[str, Any], template: Mapping[str, Any]
) -> None:
    """Refuse a template that drops or changes the snapshot a deployed cluster or instance was
    restored from: CloudFormation would replace it with a new, empty one."""
    for logical_id, resource in deployed.get("Resources", {}).items():
        restored_from = RESTORED_FROM.get(resource["Type"])
        was = resource.get("Properties", {}).get(restored_from) if restored_from else None
        if not was:
            continue
        now = template.get("Resources", {}).get(logical_id, {}).get("Properties", {})
        if now.get(restored_from) != was:
            raise RetainedResourceError(
                f"{stack}: its database was restored from snapshot {was}; a template without "
                "it would make CloudFormation replace the database with an empty one. Keep "
                f"restore_snapshot: {was} in the catalog"
            )


def take_back(
    stack: str, template: Mapping[str, Any], cloud: Cloud, *, fresh_database: bool = False
) -> ImportPlan | None:
    """Before `stack` is deployed: if it does not exist and the account still holds resources
    its template fixes the names of, restore the secrets scheduled for deletion and import them
    all into a new `stack`, so the deploy that follows creates only the rest. None when the
    stack exists (nothing to take back); the plan (maybe empty) otherwise.

    A cluster or instance of the template that a deleted stack left as a final snapshot is
    not restored from it: refused (RetainedResourceError, naming the snapshot) unless
    `fresh_database`, so a tenant's data is never silently replaced by an empty database."""
    if cloud.stack_exists(stack):
        _keeps_its_restore(stack, cloud.deployed_template(stack), template)
        return None
    for logical_id, identifier in snapshot_restored(template):
        resource = template["Resources"][logical_id]
        if fresh_database or resource["Properties"].get(RESTORED_FROM[resource["Type"]]):
            continue  # starts empty as asked, or from the snapshot the catalog names
        snapshots = cloud.final_snapshots(resource["Type"], identifier)
        if snapshots:
            raise RetainedResourceError(
                f"{stack}: {identifier} was deleted with its data in snapshot "
                f"{snapshots[-1]}; created again it would start empty. Name the snapshot in "
                f"the catalog (restore_snapshot: {snapshots[-1]}, in the tenant's silo: or "
                "the cluster's clusters: settings) to restore it, or deploy with "
                "--fresh-database to start empty (the snapshot is kept)"
            )
    plan = plan_import(stack, template, cloud)
    if plan.imports:
        for arn in plan.restore_secrets:
            cloud.restore_secret(arn)
        cloud.import_resources(stack, plan.resource_mapping())
    return plan


class AwsCloud(AwsAccount):
    """The Cloud of a real account: boto3 for lookups, `run_import` (the CLI's `cdk import` of
    one stack with a resource-mapping) for the import itself."""

    def __init__(
        self, session: Any, run_import: Callable[[str, dict[str, dict[str, str]]], None]
    ) -> None:
        super().__init__(session)
        self.run_import = run_import

    def stack_exists(self, stack: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            stacks = self.session.client("cloudformation").describe_stacks(StackName=stack)
        except ClientError as error:
            if "does not exist" in error.response.get("Error", {}).get("Message", ""):
                return False
            raise
        # REVIEW_IN_PROGRESS: a change set was made and never executed; the stack holds nothing
        return any(s["StackStatus"] not in GONE for s in stacks.get("Stacks", []))

    def deployed_template(self, stack: str) -> Mapping[str, Any]:
        body = self.session.client("cloudformation").get_template(StackName=stack)
        template = body["TemplateBody"]
        return json.loads(template) if isinstance(template, str) else template  # type: ignore[no-any-return]

    def restore_secret(self, arn: str) -> None:
        self.session.client("secretsmanager").restore_secret(SecretId=arn)

    def import_resources(self, stack: str, mapping: dict[str, dict[str, str]]) -> None:
        self.run_import(stack, mapping)


GONE = frozenset({"DELETE_COMPLETE", "REVIEW_IN_PROGRESS"})
