"""A bridge or silo tenant database's settings: one typed object, bounds included.

The catalog validates a tenant's settings against these bounds, the TenantDatabase construct
and tenantctl's local mode turn the object into the custom resource's properties (`properties`),
and the provisioner turns the properties back into the object (`from_properties`), checking
them again. Adding a setting: a field here (with its bounds), the catalog's field, and the SQL
that applies it in plans/tenant_database.py.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args

from ..core.errors import InvalidRequestError

RemovalPolicy = Literal["retain", "destroy"]
REMOVAL_POLICIES: tuple[RemovalPolicy, ...] = get_args(RemovalPolicy)


@dataclass(frozen=True)
class Bounds:
    """The range an integer setting may take."""

    low: int
    high: int

    def __contains__(self, value: object) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
        )


CONNECTION_LIMIT = Bounds(1, 5000)
STATEMENT_TIMEOUT_MS = Bounds(0, 86_400_000)


def _about(
    *,
    bounds: Bounds | None = None,
    tenant_database_only: bool = True,
    omitted_when_default: bool = False,
) -> dict[str, Any]:
    """A setting's field metadata: its bounds, whether pool tenants lack it, whether its
    property is left out when it has its default value."""
    return {
        "bounds": bounds,
        "tenant_database_only": tenant_database_only,
        "omitted_when_default": omitted_when_default,
    }


@dataclass(frozen=True, kw_only=True)
class TenantDatabaseSettings:
    """What a bridge or silo tenant's database is given (catalog names, snake case; resource
    properties, Pascal case: connection_limit is ConnectionLimit)."""

    connection_limit: int = field(metadata=_about(bounds=CONNECTION_LIMIT))
    """Connections the tenant's database accepts (CONNECTION LIMIT)."""
    statement_timeout_ms: int = field(metadata=_about(bounds=STATEMENT_TIMEOUT_MS))
    """statement_timeout of the tenant's database; 0 means none."""
    removal_policy: RemovalPolicy = field(
        default="retain", metadata=_about(tenant_database_only=False)
    )
    """What offboarding does to the data: retain (default) or destroy."""
    iam_auth: bool = field(default=True, metadata=_about())
    """An IAM-auth database user (granted rds_iam) beside the password login."""
    suspended: bool = field(
        default=False, metadata=_about(tenant_database_only=False, omitted_when_default=True)
    )
    """Logins disabled and sessions ended, data kept (the property appears only when true, so
    the templates of other tenants do not change)."""

    def __post_init__(self) -> None:
        for setting in fields(self):
            value, bounds = getattr(self, setting.name), setting.metadata["bounds"]
            if bounds is not None and value not in bounds:
                raise InvalidRequestError(
                    f"{setting.name} must be an integer {bounds.low}..{bounds.high}, not {value!r}"
                )
        if self.removal_policy not in REMOVAL_POLICIES:
            raise InvalidRequestError(
                f"removal_policy must be retain or destroy, not {self.removal_policy!r}"
            )

    def with_removal_policy(self, removal_policy: RemovalPolicy) -> "TenantDatabaseSettings":
        """The same settings, offboarded the way `removal_policy` says."""
        return replace(self, removal_policy=removal_policy)

    def properties(self, *, tenant_id: str, password_secret_arn: str) -> dict[str, str]:
        """The TenantDatabase resource's properties, as CloudFormation passes them (strings)."""
        properties = {"Kind": "TenantDatabase", "TenantId": tenant_id}
        for setting in fields(self):
            value = getattr(self, setting.name)
            if setting.metadata["omitted_when_default"] and value == setting.default:
                continue
            properties[property_name(setting.name)] = _encode(value)
        properties["PasswordSecretArn"] = password_secret_arn
        return properties

    @classmethod
    def from_properties(cls, props: Mapping[str, Any]) -> "TenantDatabaseSettings":
        """Parse resource properties back; InvalidRequestError names the bad property. Every
        property `properties` always writes must be there; the others default."""
        values: dict[str, Any] = {}
        for setting in fields(cls):
            key = property_name(setting.name)
            if key in props or not setting.metadata["omitted_when_default"]:
                values[setting.name] = _decode(
                    key, props.get(key), setting.type, setting.metadata["bounds"]
                )
        return cls(**values)


def tenant_database_only_settings() -> tuple[str, ...]:
    """The settings that belong to a tenant's own database (not for pool tenants)."""
    return tuple(
        f.name for f in fields(TenantDatabaseSettings) if f.metadata["tenant_database_only"]
    )


def property_name(setting: str) -> str:
    """connection_limit -> ConnectionLimit."""
    return "".join(part.capitalize() for part in setting.split("_"))


def _encode(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode(key: str, raw: object, type_: object, bounds: Bounds | None) -> object:
    where = f"resource property {key}"
    if type_ is bool:
        if raw in (True, "true", "True"):
            return True
        if raw in (False, "false", "False"):
            return False
        raise InvalidRequestError(f"{where} must be true or false")
    if type_ is int:
        text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
        if not re.fullmatch(r"-?[0-9]{1,12}", text) or (bounds and int(text) not in bounds):
            span = f" {bounds.low}..{bounds.high}" if bounds else ""
            raise InvalidRequestError(f"{where} must be an integer{span}")
        return int(text)
    if raw not in REMOVAL_POLICIES:
        raise InvalidRequestError(f"{where} must be retain or destroy")
    return raw
