"""The one module of the provisioner that talks to AWS: reading Secrets Manager secrets.

In AWS the Lambda's role may read only the admin secret and its tenants' secrets. Locally
tenantctl points boto3 at a moto Secrets Manager (AWS_ENDPOINT_URL_SECRETS_MANAGER), so this is
the same code either way.
"""

import json
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from .errors import ProvisioningError


def read_secret_json(secret_arn: str) -> dict[str, Any]:
    """Return the JSON object stored in a secret; raise ProvisioningError without its value."""
    try:
        response = boto3.client("secretsmanager").get_secret_value(SecretId=secret_arn)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise ProvisioningError(f"could not read secret {secret_arn}: {code}") from None
    except BotoCoreError as error:
        raise ProvisioningError(
            f"could not read secret {secret_arn}: {type(error).__name__}"
        ) from None
    try:
        value = json.loads(response["SecretString"])
    except (KeyError, ValueError):
        # Never echo the text: it is the secret.
        raise ProvisioningError(f"secret {secret_arn} does not hold a JSON object") from None
    if not isinstance(value, dict):
        raise ProvisioningError(f"secret {secret_arn} does not hold a JSON object")
    return value


def read_password(secret_arn: str) -> str:
    """Return the `password` field of a secret."""
    password = read_secret_json(secret_arn).get("password")
    if not isinstance(password, str) or not password:
        raise ProvisioningError(f"secret {secret_arn} has no password field")
    return password
