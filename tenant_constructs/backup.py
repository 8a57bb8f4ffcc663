"""AWS Backup for a host's database: a retained vault, a daily plan, an optional copy."""

from dataclasses import dataclass

import aws_cdk as cdk
import aws_cdk.aws_backup as backup
import aws_cdk.aws_events as events
import aws_cdk.aws_kms as kms
import aws_cdk.aws_rds as rds
from constructs import Construct

DAILY_AT = events.Schedule.cron(hour="3", minute="0")
"""03:00 UTC, every day."""


@dataclass(frozen=True, kw_only=True)
class BackupCopy:
    """Every recovery point also copied to another vault (another Region or account)."""

    vault_arn: str
    """The destination vault; its access policy must let this account copy into it."""
    retention_days: int | None = None
    """How long the copies are kept (default: as long as the originals)."""


class DatabaseBackup(Construct):
    """A vault encrypted with the host key and retained with the stack (deleting a stack never
    deletes a recovery point), and a plan that backs the database up every day, keeps each
    recovery point `retention_days` and copies it to `copy`'s vault if given."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        vault_name: str,
        key: kms.IKey,
        database: rds.DatabaseCluster | rds.DatabaseInstance,
        retention_days: int,
        copy: BackupCopy | None = None,
    ) -> None:
        super().__init__(scope, id_)
        self.vault = backup.BackupVault(
            self,
            "Vault",
            backup_vault_name=vault_name,
            encryption_key=key,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        copy_actions = []
        if copy is not None:
            copy_actions.append(
                backup.BackupPlanCopyActionProps(
                    destination_backup_vault=backup.BackupVault.from_backup_vault_arn(
                        self, "CopyVault", copy.vault_arn
                    ),
                    delete_after=cdk.Duration.days(copy.retention_days or retention_days),
                )
            )
        self.plan = backup.BackupPlan(
            self,
            "Plan",
            backup_plan_name=vault_name,
            backup_vault=self.vault,
            backup_plan_rules=[
                backup.BackupPlanRule(
                    rule_name="Daily",
                    schedule_expression=DAILY_AT,
                    delete_after=cdk.Duration.days(retention_days),
                    copy_actions=copy_actions,
                )
            ],
        )
        resource = (
            backup.BackupResource.from_rds_database_cluster(database)
            if isinstance(database, rds.DatabaseCluster)
            else backup.BackupResource.from_rds_database_instance(database)
        )
        self.selection = self.plan.add_selection("Database", resources=[resource])
        cdk.Validations.of(self.selection.node.find_child("Role")).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                "service-role/AWSBackupServiceRolePolicyForBackup]",
                reason="The role AWS Backup assumes to back up this selection: the AWS-managed "
                "policy AWS documents for it, which AWS keeps current with the services",
            )
        )
