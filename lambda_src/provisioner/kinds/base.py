"""Shared parts of resource kinds: outcomes, the admin session, boolean properties."""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ...core.connection import ConnectionSettings, RetryPolicy
from ...core.errors import InvalidRequestError, TenantkitError
from ...core.steps import Step, run_steps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What a request did: the physical id to report, attributes, and the changes made."""

    physical_resource_id: str
    data: Mapping[str, str]
    changes: list[str] = field(default_factory=list)


class ResourceKind(Protocol):
    """Create/Update/Delete of one kind of resource on a PostgreSQL server."""

    def validate(self, properties: Mapping[str, Any]) -> None:
        """Raise InvalidRequestError for anything wrong in the properties, before any SQL."""
        ...

    def create(self, db: "AdminSession", properties: Mapping[str, Any]) -> Outcome:
        """Create, converging when the objects already exist."""
        ...

    def update(
        self, db: "AdminSession", properties: Mapping[str, Any], old: Mapping[str, Any]
    ) -> Outcome:
        """Apply changed properties in place, or create anew when the identity changed."""
        ...

    def delete(self, db: "AdminSession", properties: Mapping[str, Any]) -> Outcome:
        """Offboard: retain by default, drop only with an explicit destroy removal policy."""
        ...


@dataclass
class AdminSession:
    """An open admin connection with the settings and retry policy used to open more."""

    conn: Any
    settings: ConnectionSettings
    retry: RetryPolicy
    migrations_dir: Path | None = None
    """The application's migrations (HandlerConfig.migrations_dir)."""

    def run(self, steps: Sequence[Step]) -> list[str]:
        """Run a plan on this session (core.steps.run_steps); the steps that changed something."""
        return run_steps(self.conn, self.settings, self.retry, steps)


def bool_property(props: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean property: true/false (strings, as CloudFormation sends them) or absent."""
    raw = props.get(key)
    if raw is None:
        return default
    if raw in (True, "true", "True"):
        return True
    if raw in (False, "false", "False"):
        return False
    raise InvalidRequestError(f"resource property {key} must be true or false")


def record_failure(db: AdminSession, step: Step) -> None:
    """Record a failure in the registry. A registry that cannot be written (the server is gone)
    only logs: the failure itself is what the request reports."""
    try:
        db.run([step])
    except TenantkitError as unrecorded:
        log.warning("could not record the failure in the registry: %s", unrecorded)
