"""Typed view of the events aws_cdk.custom_resources.Provider sends to an on_event handler."""

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from ..core.errors import InvalidRequestError

RequestType = Literal["Create", "Update", "Delete"]
_REQUEST_TYPES: tuple[RequestType, ...] = ("Create", "Update", "Delete")


@dataclass(frozen=True)
class ProviderEvent:
    """One custom-resource request: what to do, to which resource, with which properties."""

    request_type: RequestType
    logical_resource_id: str
    physical_resource_id: str | None
    properties: Mapping[str, Any]
    old_properties: Mapping[str, Any] | None

    @property
    def kind(self) -> str:
        """The resource kind named by the `Kind` property (TenantDatabase, ...)."""
        kind = self.properties.get("Kind")
        if not isinstance(kind, str) or not kind:
            raise InvalidRequestError("resource property Kind is missing")
        return kind


def parse_event(event: Mapping[str, Any]) -> ProviderEvent:
    """Validate the shape of a Provider event; raise InvalidRequestError naming the bad field."""
    request_type = event.get("RequestType")
    if request_type not in _REQUEST_TYPES:
        raise InvalidRequestError(
            f"RequestType must be one of {', '.join(_REQUEST_TYPES)}, not {request_type!r}"
        )
    properties = event.get("ResourceProperties")
    if not isinstance(properties, Mapping):
        raise InvalidRequestError("ResourceProperties is missing or not an object")
    old_properties = event.get("OldResourceProperties")
    if request_type == "Update" and not isinstance(old_properties, Mapping):
        raise InvalidRequestError("an Update event must carry OldResourceProperties")
    physical_id = event.get("PhysicalResourceId")
    if request_type != "Create" and not isinstance(physical_id, str):
        raise InvalidRequestError(f"a {request_type} event must carry PhysicalResourceId")
    return ProviderEvent(
        request_type=cast(RequestType, request_type),
        logical_resource_id=str(event.get("LogicalResourceId", "")),
        physical_resource_id=physical_id if isinstance(physical_id, str) else None,
        properties=properties,
        old_properties=old_properties if isinstance(old_properties, Mapping) else None,
    )


# -- building events: what CloudFormation sends, for tenantctl's local mode and the tests ------

LOCAL_SERVICE_TOKEN = "arn:aws:lambda:us-east-1:000000000000:function:tenantkit-local"  # noqa: S105
"""The Provider framework's function ARN in a real event; unused locally."""


def resource_type(kind: str) -> str:
    """The CloudFormation type of a kind's custom resource (Custom::TenantDatabase, ...)."""
    return f"Custom::{kind}"


def tenant_database_physical_id(tenant_id: str) -> str:
    """`tenantdb/<tenant id>`: a TenantDatabase's physical id (a new tenant id is a new
    resource), also what the registry records as having registered the tenant."""
    return f"tenantdb/{tenant_id}"


def pool_database_physical_id(database: str) -> str:
    """`pool/<database>`: the PoolDatabase's physical id (one pool per cluster)."""
    return f"pool/{database}"


def pool_tenants_physical_id(batch_id: str) -> str:
    """`pooltenants/<batch id>`: a PoolTenants batch's physical id."""
    return f"pooltenants/{batch_id}"


def provider_event(
    request_type: RequestType,
    properties: Mapping[str, Any],
    *,
    physical_id: str | None = None,
    old_properties: Mapping[str, Any] | None = None,
    logical_id: str = "Local",
) -> dict[str, Any]:
    """An event as CloudFormation's Provider framework sends it to the onEvent handler for the
    resource `properties` describe (their `Kind` names the type). Update and Delete name the
    `physical_id` the resource has; Update carries the `old_properties`."""
    if request_type != "Create" and physical_id is None:
        raise ValueError(f"a {request_type} event needs the resource's physical id")
    if request_type == "Update" and old_properties is None:
        raise ValueError("an Update event needs the old properties")
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": LOCAL_SERVICE_TOKEN,
        "ResponseURL": "http://127.0.0.1/unused",
        "StackId": "arn:aws:cloudformation:us-east-1:000000000000:stack/tenantkit-local/0",
        "RequestId": secrets.token_hex(8),
        "LogicalResourceId": logical_id,
        "ResourceType": resource_type(str(properties.get("Kind"))),
        "ResourceProperties": {"ServiceToken": LOCAL_SERVICE_TOKEN, **properties},
    }
    if physical_id is not None:
        event["PhysicalResourceId"] = physical_id
    if old_properties is not None:
        event["OldResourceProperties"] = {"ServiceToken": LOCAL_SERVICE_TOKEN, **old_properties}
    return event
