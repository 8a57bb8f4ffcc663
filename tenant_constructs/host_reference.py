"""A database host by name: what a stack needs to put tenants on a host it did not create."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aws_cdk as cdk
import aws_cdk.aws_kms as kms
import aws_cdk.aws_lambda as lambda_
import aws_cdk.aws_rds as rds
import aws_cdk.aws_secretsmanager as secretsmanager
import aws_cdk.aws_ssm as ssm
from constructs import Construct

from lambda_src.tenancy import HOST_TAG, HostNames

from .databases import AttachmentTarget

ROTATION_PERIOD = cdk.Duration.days(30)

HOST_INTERFACE_VERSION = "1"
"""What a stack that reaches a host by name relies on (the provisioner's and the rotator's
function names, the key alias, the database identifier), as a version the host's stack publishes
(HostNames.interface_parameter) and the referring stack checks before it creates anything. Bump
it when those names change."""


def publish_interface(
    scope: Construct, id_: str, *, names: HostNames, after: Sequence[Construct]
) -> ssm.StringParameter:
    """The host's interface version in SSM, written only once `after` (what the referring
    stacks reach by name) exists, so its presence means the host can take tenants."""
    parameter = ssm.StringParameter(
        scope,
        id_,
        parameter_name=names.interface_parameter,
        string_value=HOST_INTERFACE_VERSION,
        description=(
            f"{names.host} is deployed: stacks that reach it by name (its tenants) may deploy"
        ),
    )
    for construct in after:
        parameter.node.add_dependency(construct)
    return parameter


@dataclass(frozen=True)
class HostReference:
    """A DatabaseHost in this account and region, known by its name alone.

    Everything is derived from fixed names (HostNames), so a bridge tenant's stack refers to
    the bridge cluster's stack with no CloudFormation export: deploying a tenant never updates
    the cluster stack, and the cluster stack never refuses an update because a tenant imports
    one of its values. The host's stack must be deployed first.
    """

    names: HostNames
    kind: Literal["cluster", "instance"] = "cluster"
    """An Aurora cluster or an RDS instance."""
    key: kms.IKey | None = None
    """The host's KMS key when the host is in the same stack; else it is found by its fixed
    alias (HostNames.key_alias)."""

    @classmethod
    def named(cls, host: str, kind: Literal["cluster", "instance"] = "cluster") -> "HostReference":
        """The host called `host` (its stack name)."""
        return cls(HostNames(host), kind)

    def require_deployed(self, scope: Construct, id_: str) -> None:
        """Make `scope`'s stack fail before it creates anything unless the host's stack is
        deployed, as cdk bootstrap's version is checked: a parameter CloudFormation resolves
        from SSM when it creates the change set (a missing one fails at once, naming
        /tenantkit/<host>/interface-version) and a rule on its value that says what to deploy
        first. Plain `cdk deploy -c tenant=<id>` gets the check too."""
        version = cdk.CfnParameter(
            scope,
            id_,
            type="AWS::SSM::Parameter::Value<String>",
            default=self.names.interface_parameter,
            description=(
                f"Interface version of {self.names.host}, read from SSM; written by the "
                f"{self.names.host} stack: deploy it first"
            ),
        )
        cdk.CfnRule(
            scope,
            f"{id_}Check",
            assertions=[
                cdk.CfnRuleAssertion(
                    assert_=cdk.Fn.condition_contains(
                        [HOST_INTERFACE_VERSION], version.value_as_string
                    ),
                    assert_description=(
                        f"this stack needs {self.names.host} deployed at interface version "
                        f"{HOST_INTERFACE_VERSION}: deploy {self.names.host} first "
                        f"(npx cdk deploy {self.names.host})"
                    ),
                )
            ],
        )

    def service_token(self, scope: Construct) -> str:
        """ARN of the host's provisioner (the custom-resource framework function)."""
        return str(
            cdk.Stack.of(scope).format_arn(
                service="lambda",
                resource="function",
                resource_name=self.names.provisioner_function,
                arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
            )
        )

    def secrets_key(self, scope: Construct, id_: str) -> kms.IKey:
        """The key the host's secrets are encrypted with: the host's own, or its alias."""
        if self.key is not None:
            return self.key
        return kms.Alias.from_alias_name(scope, id_, self.names.key_alias)

    def add_login_secret(
        self,
        scope: Construct,
        id_: str,
        *,
        username: str,
        dbname: str,
        secret_name: str,
        tenant_tag: str,
        retain: bool,
    ) -> secretsmanager.ISecret:
        """A login's secret: password generated by Secrets Manager, encrypted with the host's
        key, tagged `tenant=<tag>` and with the host tag (so the host's provisioner may read it
        and its rotator rotate it), attached to the host's cluster, rotated every 30 days.

        Single-user rotation: the login changes its own password; clients read the username
        and password from the secret on every new connection (and again on an authentication
        failure), so rotation never strands them.
        """
        secret = rds.DatabaseSecret(
            scope,
            id_,
            username=username,
            dbname=dbname,
            secret_name=secret_name,
            encryption_key=self.secrets_key(scope, f"{id_}Key"),
        )
        secret.apply_removal_policy(
            cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        )
        cdk.Tags.of(secret).add("tenant", tenant_tag)
        cdk.Tags.of(secret).add(HOST_TAG, self.names.host)
        attached = secret.attach(AttachmentTarget(self.names.database_identifier, self.kind))
        rotator = lambda_.Function.from_function_attributes(
            scope,
            f"{id_}Rotator",
            function_arn=cdk.Stack.of(scope).format_arn(
                service="lambda",
                resource="function",
                resource_name=self.names.rotation_function,
                arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
            ),
            same_environment=True,
            # The host grants Secrets Manager the right to invoke it, once for all secrets.
            skip_permissions=True,
        )
        attached.add_rotation_schedule(
            "Rotation", rotation_lambda=rotator, automatically_after=ROTATION_PERIOD
        )
        return attached
