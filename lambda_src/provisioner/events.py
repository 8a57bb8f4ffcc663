"""Typed view of the events aws_cdk.custom_resources.Provider sends to an on_event handler."""

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
