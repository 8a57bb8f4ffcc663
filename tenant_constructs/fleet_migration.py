"""A host's fleet rollout of the application's migrations: a Step Functions state machine
that walks the host's tenant databases in waves and, for each, invokes the host's provisioner
(inside the VPC) with the same per-tenant request local mode sends it.

Input: `{"waves": [{"tenants": ["a", "b"], "parallelism": 2}, ...], "failureBudget": 0}`
(tenantctl builds it from the catalog and its options). Waves run one after another; inside a
wave up to `parallelism` tenants at once, and every tenant of a started wave runs. After each
wave the failures so far are counted: more than `failureBudget` and the execution fails
(FailureBudgetExceeded), so no later wave starts. Either way the execution ends with the
same document, `{"failed": n, "results": [...]}` (its output, or the failure's Cause): one
result per tenant that ran, `{"tenant", "ok": true, "result": <the migrate response>}` or
`{"tenant", "ok": false, "error", "cause"}`; tenantctl reads it (tenantkit.migrate.aws_rollout).
A tenant that failed stays at its previous version (the engine's transactions) and the next
execution takes it up again: a migration is never applied twice to one database.
"""

from typing import Any

import aws_cdk as cdk
import aws_cdk.aws_iam as iam
import aws_cdk.aws_lambda as lambda_
import aws_cdk.aws_stepfunctions as sfn
from constructs import Construct

from lambda_src.provisioner.migrate import MIGRATE_REQUEST
from lambda_src.tenancy import HostNames

from .acknowledgements import acknowledge_inline_policy
from .host_key import HostLogs

_LAMBDA_TRANSIENT = [
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]


def rollout_definition(function_arn: str) -> dict[str, Any]:
    """The state machine's Amazon States Language (JSONata), for the provisioner `function_arn`."""
    migrate = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Arguments": {
            "FunctionName": function_arn,
            "Payload": {"tenantkit": MIGRATE_REQUEST, "tenant": "{% $states.input %}"},
        },
        "Retry": [
            {
                "ErrorEquals": _LAMBDA_TRANSIENT,
                "IntervalSeconds": 2,
                "MaxAttempts": 3,
                "BackoffRate": 2,
            }
        ],
        "Output": "{% {'tenant': $states.input, 'ok': true, 'result': $states.result.Payload} %}",
        "Catch": [
            {
                "ErrorEquals": ["States.ALL"],
                "Output": (
                    "{% {'tenant': $states.input, 'ok': false, "
                    "'error': $states.errorOutput.Error, 'cause': $states.errorOutput.Cause} %}"
                ),
                "Next": "TenantFailed",
            }
        ],
        "End": True,
    }
    return {
        "Comment": "tenantkit: the application's migrations, tenant database by tenant database",
        "QueryLanguage": "JSONata",
        "StartAt": "Start",
        "States": {
            "Start": {
                "Type": "Pass",
                "Assign": {
                    "waves": "{% $states.input.waves %}",
                    "budget": (
                        "{% $exists($states.input.failureBudget) ? "
                        "$states.input.failureBudget : 0 %}"
                    ),
                    "index": 0,
                    "failed": 0,
                    "results": [],
                },
                "Next": "NextWave",
            },
            "NextWave": {
                "Type": "Choice",
                "Choices": [{"Condition": "{% $index < $count($waves) %}", "Next": "Wave"}],
                "Default": "Done",
            },
            "Wave": {
                "Type": "Map",
                "Items": "{% $waves[$index].tenants %}",
                "MaxConcurrency": "{% $waves[$index].parallelism %}",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "INLINE"},
                    "StartAt": "Migrate",
                    "States": {
                        "Migrate": migrate,
                        "TenantFailed": {"Type": "Pass", "End": True},
                    },
                },
                "Assign": {
                    "results": "{% $append($results, $states.result) %}",
                    "failed": "{% $failed + $count($states.result[ok = false]) %}",
                    "index": "{% $index + 1 %}",
                },
                "Next": "WithinBudget",
            },
            "WithinBudget": {
                "Type": "Choice",
                "Choices": [{"Condition": "{% $failed > $budget %}", "Next": "BudgetExceeded"}],
                "Default": "NextWave",
            },
            "BudgetExceeded": {
                "Type": "Fail",
                "Error": "FailureBudgetExceeded",
                "Cause": "{% $string({'failed': $failed, 'results': $results}) %}",
            },
            "Done": {
                "Type": "Succeed",
                "Output": "{% {'failed': $failed, 'results': $results} %}",
            },
        },
    }


class FleetMigration(Construct):
    """The host's rollout state machine (named HostNames.migration_state_machine), logging
    every execution to the host's log group `migrate` and traced with X-Ray; it may invoke
    the host's provisioner and nothing else."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        names: HostNames,
        provisioner: lambda_.IFunction,
        host_logs: HostLogs,
    ) -> None:
        super().__init__(scope, id_)
        log_group = host_logs.group(self, "Logs", purpose="migrate")
        definition = cdk.Stack.of(self).to_json_string(rollout_definition(provisioner.function_arn))
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=names.migration_state_machine,
            definition_body=sfn.DefinitionBody.from_string(definition),
            logs=sfn.LogOptions(
                destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False
            ),
            tracing_enabled=True,
            timeout=cdk.Duration.hours(12),
        )
        # The function itself, not its versions (grant_invoke would add `<arn>:*`).
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"], resources=[provisioner.function_arn]
            )
        )
        role = self.state_machine.role
        acknowledge_inline_policy(role)
        policy = role.node.find_child("DefaultPolicy")
        cdk.Validations.of(policy).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="Step Functions' log delivery and X-Ray actions have no resource-level "
                "permissions (AWS Service Authorization Reference)",
            )
        )
