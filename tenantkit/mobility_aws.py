"""The AWS side of `tenantctl export|import --provision aws`: each host's mobility function
(`<host>-mobility`, tenant_constructs/mobility.py), found by its fixed name and invoked
synchronously, and an export in another host's bucket copied into the target host's bucket
(server-side, SSE-KMS under the target host's key) before the target's function imports it.

Every AWS failure becomes a MobilityEnvironmentError (tenantctl's exit 3) naming the host and
what to do; an error the function raised becomes a MobilityFunctionError carrying its type.
"""

import json
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from lambda_src.core.environment import EXPORT_BUCKET, EXPORT_KEY_ARN
from lambda_src.core.errors import TenantkitError
from lambda_src.mobility_function.request import export_prefix
from lambda_src.tenancy import HostNames

from .catalog import Tenant
from .fleet import tenant_host

INVOKE_READ_TIMEOUT_S = 960
"""The function may run 15 minutes: wait that long, and a minute more, for its answer."""
REFUSALS = frozenset({"InvalidRequestError", "ImportRefusedError"})
"""The function's error types that mean bad input (nothing was changed): exit 2."""


class MobilityEnvironmentError(TenantkitError):
    """AWS cannot be asked or refuses (no Region or credentials, a function that is not
    deployed, a call denied): exit 3."""


class MobilityFunctionError(TenantkitError):
    """The function ran and raised: `error_type` is its exception's class name."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type

    @property
    def refused(self) -> bool:
        """Bad input, nothing changed (exit 2), rather than a failure (exit 1)."""
        return self.error_type in REFUSALS


@dataclass(frozen=True)
class MobilityHost:
    """The host holding a catalog tenant's data, and its mobility function."""

    name: str
    tier: str
    deploy: str
    """The tenantctl command that deploys the host (with its function)."""

    @classmethod
    def of(cls, tenant: Tenant) -> "MobilityHost":
        """The host of `tenant` as the stacks name it."""
        deploy = f"tenantctl deploy {tenant.id if tenant.tier == 'silo' else tenant.tier}"
        return cls(tenant_host(tenant), tenant.tier, deploy)

    @property
    def function(self) -> str:
        """`<host>-mobility`."""
        return HostNames(self.name).mobility_function


@dataclass(frozen=True)
class ExportLocation:
    """An export's objects: `s3://bucket/prefix`."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> "ExportLocation":
        """`s3://<bucket>/exports/<tenant>/<timestamp>/` (the trailing slash optional);
        ValueError saying what is wrong."""
        if not uri.startswith("s3://"):
            raise ValueError(f"{uri!r} is not an s3:// URI")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket or not prefix:
            raise ValueError(f"{uri!r}: expected s3://<bucket>/exports/<tenant>/<timestamp>/")
        return cls(bucket, prefix if prefix.endswith("/") else prefix + "/")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        return f"{code}: {error.response.get('Error', {}).get('Message', '')}".strip(": ")
    return str(error) or type(error).__name__


class MobilityFunctions:
    """The hosts' mobility functions, by name, in one account and Region."""

    def __init__(self, session: boto3.session.Session) -> None:
        try:
            session.client("sts").get_caller_identity()
        except NoCredentialsError:
            raise MobilityEnvironmentError(
                "no AWS credentials (the default chain found none: a profile, environment "
                "variables or an instance role)"
            ) from None
        except (BotoCoreError, ClientError) as error:
            raise MobilityEnvironmentError(
                f"AWS refused the credentials: {_describe(error)}"
            ) from None
        # No retries: a retried import or export would run twice.
        config = Config(read_timeout=INVOKE_READ_TIMEOUT_S, retries={"total_max_attempts": 1})
        self.lambda_ = session.client("lambda", config=config)
        self.s3 = session.client("s3")

    def environment(self, host: MobilityHost) -> dict[str, str]:
        """The deployed function's environment (its bucket and key); MobilityEnvironmentError
        naming the host and its deploy if it is not deployed."""
        try:
            found = self.lambda_.get_function_configuration(FunctionName=host.function)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise MobilityEnvironmentError(
                    f"host {host.name}: function {host.function} is not deployed: deploy the "
                    f"host with `{host.deploy}`"
                ) from None
            raise MobilityEnvironmentError(
                f"host {host.name}: describing {host.function}: {_describe(error)}"
            ) from None
        except BotoCoreError as error:
            raise MobilityEnvironmentError(
                f"host {host.name}: describing {host.function}: {_describe(error)}"
            ) from None
        variables = dict(found.get("Environment", {}).get("Variables", {}))
        if not variables.get(EXPORT_BUCKET) or not variables.get(EXPORT_KEY_ARN):
            raise MobilityEnvironmentError(
                f"host {host.name}: {host.function} names no export bucket or key: deploy the "
                f"host again with `{host.deploy}`"
            )
        return variables

    def invoke_function(self, function: str, payload: bytes) -> tuple[str | None, bytes]:
        """Lambda's Invoke, synchronous: (FunctionError or None, the answer's bytes). The one
        call that runs the function (tests stand in for it: moto cannot run it)."""
        response = self.lambda_.invoke(
            FunctionName=function, InvocationType="RequestResponse", Payload=payload
        )
        return response.get("FunctionError"), response["Payload"].read()

    def invoke(self, host: MobilityHost, request: dict[str, Any]) -> dict[str, Any]:
        """Invoke the function synchronously with `request`; its answer, or
        MobilityFunctionError (it raised) or MobilityEnvironmentError (it could not be asked)."""
        try:
            function_error, payload = self.invoke_function(
                host.function, json.dumps(request).encode()
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise MobilityEnvironmentError(
                    f"host {host.name}: function {host.function} is not deployed: deploy the "
                    f"host with `{host.deploy}`"
                ) from None
            raise MobilityEnvironmentError(
                f"host {host.name}: invoking {host.function}: {_describe(error)}"
            ) from None
        except BotoCoreError as error:
            raise MobilityEnvironmentError(
                f"host {host.name}: invoking {host.function}: {_describe(error)}"
            ) from None
        try:
            answer = json.loads(payload) if payload else None
        except ValueError:
            answer = None
        if function_error:
            document = answer if isinstance(answer, dict) else {}
            raise MobilityFunctionError(
                str(document.get("errorType") or function_error),
                str(document.get("errorMessage") or "the function failed without a message"),
            )
        if not isinstance(answer, dict):
            raise MobilityFunctionError(
                "InvalidAnswer", f"{host.function} answered something other than a JSON object"
            )
        return answer

    def copy_export(self, source: ExportLocation, bucket: str, key_arn: str) -> int:
        """Copy every object of the export at `source` into `bucket` under the same prefix,
        encrypted with `key_arn` (server-side copies); the number copied. Nothing is verified
        here: the target's function checks every object against the manifest."""
        keys: list[str] = []
        try:
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=source.bucket, Prefix=source.prefix):
                keys += [str(o["Key"]) for o in page.get("Contents", [])]
            for key in keys:
                self.s3.copy(
                    {"Bucket": source.bucket, "Key": key},
                    bucket,
                    key,
                    ExtraArgs={"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_arn},
                )
        except (BotoCoreError, ClientError) as error:
            raise MobilityEnvironmentError(
                f"copying {source.uri} into s3://{bucket}/: {_describe(error)}"
            ) from None
        if not keys:
            raise MobilityFunctionError("ImportRefusedError", f"{source.uri} holds no export")
        return len(keys)


def export_request(tenant: Tenant) -> dict[str, Any]:
    """The function's export request for `tenant`."""
    return {"action": "export", "tenant": tenant.id, "tier": tenant.tier}


def import_request(tenant: Tenant, prefix: str, replace: bool) -> dict[str, Any]:
    """The function's import request for `tenant` from `prefix` of its host's bucket."""
    return {
        "action": "import",
        "tenant": tenant.id,
        "tier": tenant.tier,
        "prefix": prefix,
        "replace": replace,
    }


def is_export_of(location: ExportLocation, tenant_id: str) -> bool:
    """Whether the prefix has the shape of an export of `tenant_id` (the function checks the
    timestamp and, from the manifest, the tenant itself)."""
    timestamp = location.prefix.removesuffix("/").rpartition("/")[2]
    return bool(timestamp) and location.prefix == export_prefix(tenant_id, timestamp)
