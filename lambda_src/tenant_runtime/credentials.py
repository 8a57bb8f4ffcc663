"""AWS credentials for one tenant: the pooled-compute patterns' tenant-access role, assumed
with a session tag `tenant=<id>` (and optionally a scoped-down session policy)."""

import datetime
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

from ..tenancy import tenant_names, validate_tenant_id

SessionPolicy = Callable[[str], dict[str, Any]]


@dataclass
class TenantSessions:
    """AssumeRole of the tenant-access role per tenant, cached until shortly before expiry."""

    role_arn: str
    session_policy: SessionPolicy | None = None
    """Token vending: a policy that narrows the role to one tenant (see tenant_session_policy)."""
    duration_s: int = 900
    refresh_before_s: int = 120
    _cache: dict[str, tuple[boto3.Session, datetime.datetime]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def session_for(self, tenant_id: str) -> boto3.Session:
        """A boto3 session acting as `tenant_id` (tag `tenant=<id>` on the role session)."""
        validate_tenant_id(tenant_id)
        now = datetime.datetime.now(datetime.UTC)
        with self._lock:
            cached = self._cache.get(tenant_id)
            if cached and cached[1] - now > datetime.timedelta(seconds=self.refresh_before_s):
                return cached[0]
        request: dict[str, Any] = {
            "RoleArn": self.role_arn,
            "RoleSessionName": f"tenant-{tenant_id}"[:64],
            "DurationSeconds": self.duration_s,
            "Tags": [{"Key": "tenant", "Value": tenant_id}],
        }
        if self.session_policy is not None:
            request["Policy"] = json.dumps(self.session_policy(tenant_id))
        credentials = boto3.client("sts").assume_role(**request)["Credentials"]
        session = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
        expiry = credentials["Expiration"]
        if isinstance(expiry, str):
            expiry = datetime.datetime.fromisoformat(expiry)
        with self._lock:
            self._cache[tenant_id] = (session, expiry)
        return session


def tenant_session_policy(
    tenant_id: str,
    *,
    partition: str,
    region: str,
    account: str,
    db_resource_id: str,
    db_user: str | None = None,
) -> dict[str, Any]:
    """The token-vending session policy: this tenant's IAM db user (`db_user`, by default its
    bridge user; a strict pool's: TenantNames.pool_login) and secret (and the key use that
    reading the secret needs), nothing else.

    The role's own policy already says the same through `${aws:PrincipalTag/tenant}`; the
    session policy makes a mistake in either one insufficient to reach another tenant.
    """
    names = tenant_names(tenant_id)
    # Secrets Manager ARNs end in -<6 random characters>.
    secret_arn = (
        f"arn:{partition}:secretsmanager:{region}:{account}:secret:{names.secret_name}-??????"
    )
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "rds-db:connect",
                "Resource": f"arn:{partition}:rds-db:{region}:{account}:dbuser:"
                f"{db_resource_id}/{db_user or names.iam_user}",
            },
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": secret_arn,
            },
            {
                # The secret is encrypted with the host's key: decrypting it, through Secrets
                # Manager and for this secret only (its ARN is the encryption context).
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": f"arn:{partition}:kms:{region}:{account}:key/*",
                "Condition": {
                    "StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"},
                    "StringLike": {"kms:EncryptionContext:SecretARN": secret_arn},
                },
            },
        ],
    }
