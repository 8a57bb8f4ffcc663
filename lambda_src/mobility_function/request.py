"""The mobility function's request and configuration, typed and checked before anything runs.

A request is `{"action": "export" | "import", "tenant": id, "tier": tier, "prefix": ...,
"replace": bool}`; `prefix` (import only) is an export's key prefix in the host's bucket,
`exports/<tenant>/<timestamp>/`. The tenant id is validated first, so a bad one never reaches
S3 or SQL; the tier must be the host's own (a function serves the tenants of its host only).
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..core.connection import RDS_CA_BUNDLE_PATH, ssl_root_cert_from_env
from ..core.environment import (
    ADMIN_SECRET_ARN,
    EXPORT_BUCKET,
    EXPORT_KEY_ARN,
    HOST_TENANT,
    HOST_TIER,
)
from ..core.errors import InvalidRequestError, TenantkitError
from ..tenancy import TIERS, InvalidTenantIdError, Tier, validate_tenant_id

Action = Literal["export", "import"]
ACTIONS: tuple[Action, ...] = ("export", "import")
EXPORTS_PREFIX = "exports/"
"""Every export's key starts `exports/<tenant>/<timestamp>/`."""
_TIMESTAMP = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{6}Z")


def export_prefix(tenant_id: str, timestamp: str) -> str:
    """`exports/<tenant>/<timestamp>/`: where one export's objects are."""
    return f"{EXPORTS_PREFIX}{tenant_id}/{timestamp}/"


def tenant_prefix(tenant_id: str) -> str:
    """`exports/<tenant>/`: every export of one tenant."""
    return f"{EXPORTS_PREFIX}{tenant_id}/"


@dataclass(frozen=True)
class MobilityConfig:
    """The function's environment: its host's tier (and a silo host's one tenant), the
    bucket and key of its exports, the admin secret and the CA bundle."""

    tier: Tier
    bucket: str
    key_arn: str
    admin_secret_arn: str
    host_tenant: str | None = None
    """A silo host: the only tenant it holds."""
    ssl_root_cert: Path = RDS_CA_BUNDLE_PATH

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "MobilityConfig":
        """Read the Lambda's environment; TenantkitError naming a missing or bad variable."""
        missing = [
            name
            for name in (HOST_TIER, EXPORT_BUCKET, EXPORT_KEY_ARN, ADMIN_SECRET_ARN)
            if not env.get(name)
        ]
        if missing:
            raise TenantkitError(f"not set: {', '.join(missing)}")
        tier = env[HOST_TIER]
        if tier not in TIERS:
            raise TenantkitError(f"{HOST_TIER} must be one of {', '.join(TIERS)}, not {tier!r}")
        host_tenant = env.get(HOST_TENANT) or None
        if (tier == "silo") != (host_tenant is not None):
            raise TenantkitError(f"{HOST_TENANT} is set for a silo host, and only for one")
        return cls(
            tier=tier,
            bucket=env[EXPORT_BUCKET],
            key_arn=env[EXPORT_KEY_ARN],
            admin_secret_arn=env[ADMIN_SECRET_ARN],
            host_tenant=host_tenant,
            ssl_root_cert=ssl_root_cert_from_env(env),
        )


@dataclass(frozen=True)
class MobilityRequest:
    """One export or import of one tenant of the function's host."""

    action: Action
    tenant: str
    tier: Tier
    prefix: str | None = None
    """Import: the export's prefix (`exports/<tenant>/<timestamp>/`)."""
    replace: bool = False
    """Import: delete the tenant's rows first (in the import's transaction)."""


def parse_request(event: Mapping[str, Any], config: MobilityConfig) -> MobilityRequest:
    """The request, checked: InvalidRequestError naming the field (the tenant id first)."""
    try:
        tenant = validate_tenant_id(event.get("tenant"))
    except InvalidTenantIdError as error:
        raise InvalidRequestError(f"tenant: {error}") from None
    action = event.get("action")
    if action not in ACTIONS:
        raise InvalidRequestError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    tier = event.get("tier")
    if tier != config.tier:
        raise InvalidRequestError(
            f"tier {tier!r}: this function serves the {config.tier} host's tenants only"
        )
    if config.host_tenant is not None and tenant != config.host_tenant:
        raise InvalidRequestError(
            f"tenant {tenant!r}: this silo host holds tenant {config.host_tenant!r} only"
        )
    replace = event.get("replace", False)
    if not isinstance(replace, bool):
        raise InvalidRequestError(f"replace must be true or false, not {replace!r}")
    prefix = event.get("prefix")
    if action == "export":
        if prefix is not None or replace:
            raise InvalidRequestError("an export takes no prefix and no replace")
        return MobilityRequest("export", tenant, config.tier)
    if not isinstance(prefix, str):
        raise InvalidRequestError("an import needs the export's prefix")
    _, _, timestamp = prefix.removesuffix("/").rpartition("/")
    if prefix != export_prefix(tenant, timestamp) or not _TIMESTAMP.fullmatch(timestamp):
        raise InvalidRequestError(
            f"prefix {prefix!r} is not an export of {tenant}: expected "
            f"{tenant_prefix(tenant)}<YYYYmmddTHHMMSS.ffffffZ>/"
        )
    return MobilityRequest("import", tenant, config.tier, prefix, replace)
