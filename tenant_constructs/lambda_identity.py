"""A Lambda function's role and log group, the role allowed to write to that log group only."""

import aws_cdk.aws_iam as iam
import aws_cdk.aws_logs as logs
from constructs import Construct

from .acknowledgements import acknowledge_inline_policy
from .host_key import HostLogs


def role_with_own_log_group(
    scope: Construct, prefix: str, *, description: str, host_logs: HostLogs, purpose: str
) -> tuple[iam.Role, logs.LogGroup]:
    """Create `<prefix>Logs` (the host's log group `purpose`: encrypted, 1 year, retained)
    and `<prefix>Role` that may write only there.

    Replaces AWSLambdaBasicExecutionRole, whose logs permissions cover every log group.
    """
    log_group = host_logs.group(scope, f"{prefix}Logs", purpose=purpose)
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
    acknowledge_inline_policy(role)
    return role, log_group
