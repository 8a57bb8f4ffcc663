"""A Lambda function's role and log group, the role allowed to write to that log group only."""

import aws_cdk as cdk
import aws_cdk.aws_iam as iam
import aws_cdk.aws_logs as logs
from constructs import Construct


def role_with_own_log_group(
    scope: Construct, prefix: str, *, description: str
) -> tuple[iam.Role, logs.LogGroup]:
    """Create `<prefix>Logs` (1 year, retained) and `<prefix>Role` that may write only there.

    Replaces AWSLambdaBasicExecutionRole, whose logs permissions cover every log group.
    """
    log_group = logs.LogGroup(
        scope,
        f"{prefix}Logs",
        retention=logs.RetentionDays.ONE_YEAR,
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
    role = iam.Role(
        scope,
        f"{prefix}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],
        )
    )
    return role, log_group
