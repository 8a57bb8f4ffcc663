"""The Secrets Manager calls of tenantkit's functions: reading a login or admin secret, and the
rotation protocol's steps.

In AWS the provisioner may read, and the rotation function rotate, only the secrets tagged for
their host (tenantkit-host=<host>). Locally tenantctl points boto3 at a moto Secrets Manager
(AWS_ENDPOINT_URL), so this is the same code either way."""

import functools
import json
import os
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from .errors import TenantkitError

_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_DEFAULT_REGION")


def _client() -> Any:
    """A Secrets Manager client, kept across (warm) invocations: creating one costs tens of
    milliseconds. A new one is made if the endpoint settings change (tenantctl's local runs)."""
    return _cached_client(tuple(os.environ.get(name) for name in _ENDPOINT_VARIABLES))


@functools.lru_cache(maxsize=4)
def _cached_client(_endpoint_settings: tuple[str | None, ...]) -> Any:
    return boto3.client("secretsmanager")


def read_secret_json(secret_arn: str, *, client: Any = None) -> dict[str, Any]:
    """Return the JSON object stored in a secret; raise TenantkitError without its value.
    `client`: a Secrets Manager client of the caller's (tenantctl's, for another Region)."""
    try:
        response = (client or _client()).get_secret_value(SecretId=secret_arn)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise TenantkitError(f"could not read secret {secret_arn}: {code}") from None
    except BotoCoreError as error:
        raise TenantkitError(
            f"could not read secret {secret_arn}: {type(error).__name__}"
        ) from None
    try:
        value = json.loads(response["SecretString"])
    except (KeyError, ValueError):
        # Never echo the text: it is the secret.
        raise TenantkitError(f"secret {secret_arn} does not hold a JSON object") from None
    if not isinstance(value, dict):
        raise TenantkitError(f"secret {secret_arn} does not hold a JSON object")
    return value


def read_password(secret_arn: str) -> str:
    """Return the `password` field of a secret."""
    password = read_secret_json(secret_arn).get("password")
    if not isinstance(password, str) or not password:
        raise TenantkitError(f"secret {secret_arn} has no password field")
    return password


# -- rotation (lambda_src.rotation): the calls Secrets Manager's rotation protocol needs ----------


def describe(secret_id: str) -> dict[str, Any]:
    """DescribeSecret: rotation settings and VersionIdsToStages."""
    return dict(_client().describe_secret(SecretId=secret_id))


def read_version(secret_id: str, *, stage: str, version_id: str | None = None) -> dict[str, Any]:
    """The JSON object of one version of a secret, chosen by stage (and version id)."""
    kwargs: dict[str, str] = {"SecretId": secret_id, "VersionStage": stage}
    if version_id is not None:
        kwargs["VersionId"] = version_id
    try:
        value = json.loads(_client().get_secret_value(**kwargs)["SecretString"])
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise TenantkitError(f"could not read {stage} of secret {secret_id}: {code}") from None
    if not isinstance(value, dict):
        raise TenantkitError(f"secret {secret_id} does not hold a JSON object")
    return value


def version_exists(secret_id: str, *, stage: str, version_id: str) -> bool:
    """Whether the version `version_id` carries `stage`."""
    try:
        _client().get_secret_value(SecretId=secret_id, VersionId=version_id, VersionStage=stage)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return False
        raise
    return True


def random_password() -> str:
    """A new password from Secrets Manager (letters and digits only: safe in any DSN)."""
    response = _client().get_random_password(PasswordLength=40, ExcludePunctuation=True)
    return str(response["RandomPassword"])


def put_pending(secret_id: str, version_id: str, value: dict[str, Any]) -> None:
    """Store `value` as the AWSPENDING version `version_id`."""
    _client().put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=version_id,
        SecretString=json.dumps(value),
        VersionStages=["AWSPENDING"],
    )


def promote(secret_id: str, version_id: str, current_version_id: str) -> None:
    """Move AWSCURRENT to `version_id` (the old version becomes AWSPREVIOUS)."""
    _client().update_secret_version_stage(
        SecretId=secret_id,
        VersionStage="AWSCURRENT",
        MoveToVersionId=version_id,
        RemoveFromVersionId=current_version_id,
    )
