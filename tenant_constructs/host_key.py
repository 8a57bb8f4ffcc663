"""A host's customer-managed KMS key: what it encrypts and who may use it for what.

One key per host (a silo tenant's own key, or the bridge's or the pool's) encrypts the host's
secrets, its log groups and its backups (and its storage unless the catalog asks for aws/rds).
Secrets Manager and CloudWatch Logs use it on the caller's behalf, so every grant here is
narrowed to that service (kms:ViaService) or to this host's log groups (encryption context).
"""

from dataclasses import dataclass

import aws_cdk as cdk
import aws_cdk.aws_iam as iam
import aws_cdk.aws_kms as kms
import aws_cdk.aws_logs as logs
from constructs import Construct

from lambda_src.tenancy import HostNames

LOG_RETENTION = logs.RetentionDays.ONE_YEAR


def host_key(scope: Construct, id_: str, *, host: str) -> kms.Key:
    """A rotated key, retained with the stack: it still decrypts retained secrets, logs,
    snapshots and backups after the stack is gone."""
    return kms.Key(
        scope,
        id_,
        description=f"tenantkit {host}: storage, secrets, logs and backups",
        enable_key_rotation=True,
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )


def _log_group_arn(scope: Construct, name_pattern: str) -> str:
    return str(
        cdk.Stack.of(scope).format_arn(
            service="logs",
            resource="log-group",
            resource_name=name_pattern,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
    )


@dataclass(frozen=True)
class HostLogs:
    """Creates the host's log groups: fixed names under HostNames.log_group_prefix (or RDS's
    own names), encrypted with the host key, kept a year and retained with the stack."""

    names: HostNames
    key: kms.IKey

    @classmethod
    def allowed(cls, key: kms.Key, names: HostNames, *, rds_log_groups: str) -> "HostLogs":
        """Let CloudWatch Logs use `key` for the host's log groups only: those under its
        prefix and `rds_log_groups` (`/aws/rds/cluster/<id>/*`), by the log group ARN that
        CloudWatch Logs puts in the encryption context. Names, not references: a log group
        refers to the key, so the key policy cannot refer back to the log group."""
        stack = cdk.Stack.of(key)
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchLogsOfThisHostOnly",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": [
                            _log_group_arn(key, f"{names.log_group_prefix}*"),
                            _log_group_arn(key, rds_log_groups),
                        ]
                    }
                },
            )
        )
        return cls(names, key)

    def group(
        self, scope: Construct, id_: str, *, purpose: str, name: str | None = None
    ) -> logs.LogGroup:
        """The log group `<prefix><purpose>` (or `name`, one of RDS's own)."""
        return logs.LogGroup(
            scope,
            id_,
            log_group_name=name or self.names.log_group(purpose),
            encryption_key=self.key,
            retention=LOG_RETENTION,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )


def secrets_manager_via(scope: Construct) -> dict[str, str]:
    """kms:ViaService for Secrets Manager in the stack's region."""
    return {"kms:ViaService": f"secretsmanager.{cdk.Stack.of(scope).region}.amazonaws.com"}


def read_secrets_with_key(
    scope: Construct, key_arn: str, *, secret_arn: str | None = None, write: bool = False
) -> iam.PolicyStatement:
    """Use of the host key that reading (and with `write`, putting) a secret needs, through
    Secrets Manager only; `secret_arn` (a pattern is allowed) narrows it to the secrets
    whose ARN Secrets Manager puts in the encryption context."""
    conditions: dict[str, dict[str, str]] = {"StringEquals": secrets_manager_via(scope)}
    if secret_arn is not None:
        conditions["StringLike"] = {"kms:EncryptionContext:SecretARN": secret_arn}
    return iam.PolicyStatement(
        actions=["kms:Decrypt", *(["kms:GenerateDataKey"] if write else [])],
        resources=[key_arn],
        conditions=conditions,
    )
