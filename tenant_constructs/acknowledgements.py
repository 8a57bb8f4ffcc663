"""Acknowledging a compliance-pack finding on one construct, in every pack that has the rule.

HIPAA Security, NIST 800-53 rev. 5 and PCI DSS 3.2.1 share rule names (`<pack>-<rule>`);
AwsSolutions rules have names of their own and are acknowledged with cdk.Validations directly.
"""

import aws_cdk as cdk
from constructs import IConstruct

HIPAA = "HIPAA.Security"
NIST = "NIST.800.53.R5"
PCI = "PCI.DSS.321"

RULE_PACKS: dict[str, tuple[str, ...]] = {
    "EC2RestrictedCommonPorts": (HIPAA, NIST, PCI),
    "EC2RestrictedSSH": (HIPAA, NIST, PCI),
    "IAMNoInlinePolicy": (HIPAA, NIST, PCI),
    "LambdaConcurrency": (HIPAA, NIST),
    "LambdaDLQ": (HIPAA, NIST),
    "LambdaInsideVPC": (HIPAA, NIST, PCI),
    "RDSEnhancedMonitoringEnabled": (HIPAA, NIST),
    "RDSInBackupPlan": (HIPAA, NIST),
    "RDSMultiAZSupport": (HIPAA, NIST),
    "S3BucketLoggingEnabled": (HIPAA, NIST, PCI),
    "S3BucketReplicationEnabled": (HIPAA, NIST, PCI),
    "S3DefaultEncryptionKMS": (HIPAA, NIST, PCI),
}
"""The compliance rules tenantkit acknowledges anywhere, and the packs (cdk-nag 3.0.2) that
have each one."""


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge `rule` on `construct` (and what it contains) in each pack that has it."""
    for pack in RULE_PACKS[rule]:
        cdk.Validations.of(construct).acknowledge(
            cdk.Acknowledgment(id=f"{pack}-{rule}", reason=reason)
        )


INLINE_POLICY = (
    "The policy of this one role, created and deleted with it: an inline policy keeps the "
    "strict one-to-one link AWS recommends for permissions specific to one principal, where a "
    "managed policy could be attached to any other"
)
"""Why IAMNoInlinePolicy is acknowledged on every role policy tenantkit creates."""


def acknowledge_inline_policy(policy_or_role: IConstruct) -> None:
    """IAMNoInlinePolicy on one role's policy: an iam.Policy, or a role (for its
    DefaultPolicy, which CDK creates at the first grant, whenever that comes)."""
    acknowledge(policy_or_role, "IAMNoInlinePolicy", INLINE_POLICY)


BOUNDED_BY_CALLERS = (
    "Its callers bound its concurrency (one CloudFormation event per tenant resource, one "
    "rotation step per secret); a reserved limit would throttle parallel tenant deploys into "
    "failures and take from the account's unreserved concurrency (new accounts may have 10)"
)
"""Why LambdaConcurrency is acknowledged on the host's own functions."""


def acknowledge_synchronous(function: IConstruct, invoked_by: str) -> None:
    """LambdaDLQ on a function only ever invoked synchronously, by `invoked_by` (which then
    gets and handles every error)."""
    acknowledge(
        function,
        "LambdaDLQ",
        f"Invoked synchronously by {invoked_by}, which receives every error; a dead-letter "
        "queue only ever receives asynchronous invocations",
    )
