"""Entry point of the provisioner Lambda: parse the Provider event, dispatch, report.

`on_event` is what aws_cdk.custom_resources.Provider invokes (and the host's fleet rollout
state machine, with migrate requests). `handle` is the same logic with
the configuration passed in: tenantctl's local mode calls it with the very same event shapes.
The whole event is never logged: it names secrets and carries the resource's properties.
"""

import logging
import os
from collections.abc import Mapping
from typing import Any

from ..core.connection import ConnectionSettings, connect, settings_from_secret
from ..core.errors import InvalidRequestError, TenantkitError
from ..core.log import function_logger, logged_request
from ..core.secrets import read_secret_json
from .config import APPLICATION_NAME, HandlerConfig
from .events import ProviderEvent, parse_event
from .kinds import KINDS, AdminSession, Outcome, ResourceKind
from .migrate import MIGRATE_REQUEST, is_migrate_request, migrate_tenant

log = logging.getLogger(__name__)


def on_event(event: Mapping[str, Any], _context: object) -> dict[str, Any]:
    """Lambda handler for the Provider framework's onEvent (JSON logs, core.log)."""
    function_logger(APPLICATION_NAME)
    return handle(event, HandlerConfig.from_env(os.environ))


def admin_settings(config: HandlerConfig) -> ConnectionSettings:
    """The admin's connection settings: given (local mode) or from the admin secret."""
    if config.admin_settings is not None:
        return config.admin_settings
    assert config.admin_secret_arn, "HandlerConfig needs admin settings or a secret"
    return settings_from_secret(
        read_secret_json(config.admin_secret_arn),
        config.ssl_root_cert,
        application_name=APPLICATION_NAME,
    )


def _kind_of(event: ProviderEvent) -> ResourceKind:
    kind = KINDS.get(event.kind)
    if kind is None:
        raise InvalidRequestError(
            f"unknown resource Kind {event.kind!r}; known kinds: {', '.join(sorted(KINDS))}"
        )
    return kind


def _response(outcome: Outcome) -> dict[str, Any]:
    data = dict(outcome.data)
    data["Changes"] = str(len(outcome.changes))
    return {"PhysicalResourceId": outcome.physical_resource_id, "Data": data}


def handle(event: Mapping[str, Any], config: HandlerConfig) -> dict[str, Any]:
    """Validate the request, then run it against the admin connection; every log line of the
    request carries its kind, tenant (or pool batch) and logical resource id. A migrate request
    (`{"tenantkit": "migrate", "tenant": id}`, the fleet rollout's) brings one tenant database
    to the newest migration instead."""
    if is_migrate_request(event):
        with logged_request(request_type=MIGRATE_REQUEST, tenant=str(event.get("tenant"))):
            return migrate_tenant(event, config, admin_settings)
    request = parse_event(event)
    properties = request.properties
    with logged_request(
        request_type=request.request_type,
        kind=properties.get("Kind"),
        tenant=properties.get("TenantId"),
        batch=properties.get("BatchId"),
        logical_resource_id=request.logical_resource_id,
    ):
        try:
            return _handle(request, config)
        except TenantkitError as error:  # its text holds no secret
            log.error("%s %s failed: %s", request.request_type, properties.get("Kind"), error)
            raise


def _handle(request: ProviderEvent, config: HandlerConfig) -> dict[str, Any]:
    log.info(
        "%s %s (%s)",
        request.request_type,
        request.properties.get("Kind"),
        request.logical_resource_id,
    )
    try:
        kind = _kind_of(request)
        # Validate everything before the first connection, so bad input never reaches SQL.
        kind.validate(request.properties)
    except InvalidRequestError as error:
        if request.request_type == "Delete":
            # A resource whose properties never validated never ran SQL: nothing to remove.
            # Failing here would leave the stack stuck in DELETE_FAILED.
            log.warning("Delete of an invalid resource is a no-op: %s", error)
            return {"PhysicalResourceId": request.physical_resource_id, "Data": {}}
        raise

    settings = admin_settings(config)
    conn = connect(settings, config.retry)
    try:
        session = AdminSession(
            conn=conn, settings=settings, retry=config.retry, migrations_dir=config.migrations_dir
        )
        if request.request_type == "Create":
            outcome = kind.create(session, request.properties)
        elif request.request_type == "Update":
            assert request.old_properties is not None
            outcome = kind.update(session, request.properties, request.old_properties)
        else:
            outcome = kind.delete(session, request.properties)
            # Delete never changes the physical id CloudFormation asked about.
            outcome = Outcome(str(request.physical_resource_id), outcome.data, outcome.changes)
    finally:
        conn.close()
    for change in outcome.changes:
        log.info("changed: %s", change)
    return _response(outcome)
