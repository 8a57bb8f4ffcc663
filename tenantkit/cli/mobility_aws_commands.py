"""What `tenantctl export --provision aws` and `offboard --provision aws --destroy-data` share:
asking a tenant's host's mobility function for an export, with progress and exit codes."""

from typing import Any, NoReturn

from lambda_src.core.errors import TenantkitError

from ..catalog import Tenant
from ..migrate.aws_api import RolloutEnvironmentError, aws_session
from ..mobility_aws import (
    MobilityEnvironmentError,
    MobilityFunctionError,
    MobilityFunctions,
    MobilityHost,
    export_request,
)
from .output import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_INVALID, err, fail


def functions_in(region: str | None, as_json: bool, fields: dict[str, Any]) -> MobilityFunctions:
    """The mobility functions of the account and `region`; exit 3 without a Region or
    credentials."""
    try:
        return MobilityFunctions(aws_session(region))
    except (RolloutEnvironmentError, MobilityEnvironmentError) as error:
        fail(EXIT_ENVIRONMENT, str(error), as_json, **fields)


def say(as_json: bool, text: str) -> None:
    """A line of progress on stderr (not with --json)."""
    if not as_json:
        err.print(text, highlight=False, soft_wrap=True)


def function_failed(error: TenantkitError, as_json: bool, fields: dict[str, Any]) -> NoReturn:
    """Exit for an error of the function's path: 3 AWS could not be asked, 2 the function
    refused the request (nothing changed), 1 it failed."""
    if isinstance(error, MobilityEnvironmentError):
        fail(EXIT_ENVIRONMENT, str(error), as_json, **fields)
    code = (
        EXIT_INVALID if isinstance(error, MobilityFunctionError) and error.refused else EXIT_FAILED
    )
    fail(code, str(error), as_json, **fields)


def export_aws(
    tenant: Tenant, region: str | None, as_json: bool, fields: dict[str, Any]
) -> dict[str, Any]:
    """Export `tenant` through its host's function into the host's bucket; the function's
    answer (exit 3 if it cannot be asked, 1 if it failed: nothing is left that passes for an
    export)."""
    host = MobilityHost.of(tenant)
    fields.update(host=host.name, function=host.function)
    functions = functions_in(region, as_json, fields)
    try:
        functions.environment(host)
        say(as_json, f"exporting {tenant.id} through {host.function} ...")
        return functions.invoke(host, export_request(tenant))
    except TenantkitError as error:
        function_failed(error, as_json, fields)
