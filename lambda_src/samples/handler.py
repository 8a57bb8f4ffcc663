"""A sample tenant function (API Gateway proxy event shape): verify the bearer JWT, connect by
the function's access pattern (TENANTKIT_PATTERN), read the tenant's rows.

401 when the token proves no tenant, 403 when this compute may not serve that tenant.
"""

import json
import os
from collections.abc import Mapping
from functools import cache
from typing import Any

import psycopg

from ..core import environment as env_names
from ..tenant_runtime import (
    Pattern,
    TenantDataAccess,
    TokenVerifier,
    UnverifiedTenantError,
    access_from_env,
    bearer_token,
)


@cache
def _verifier() -> TokenVerifier:
    return TokenVerifier(
        jwks=json.loads(os.environ[env_names.JWKS]),
        issuer=os.environ[env_names.JWT_ISSUER],
        audience=os.environ[env_names.JWT_AUDIENCE],
        claim=os.environ.get(env_names.TENANT_CLAIM, "tenant_id"),
    )


@cache
def _access() -> TenantDataAccess:
    return access_from_env()


def read_rows(conn: psycopg.Connection[Any], pattern: Pattern) -> list[list[Any]]:
    """The tenant's rows: the sample projects (pool), or what its own database holds."""
    if pattern.tier == "pool":
        query = (
            "SELECT tenant_id, project_id, name FROM tenantkit_sample.projects ORDER BY project_id"
        )
    else:
        query = (
            "SELECT current_database(), session_user, count(*) FROM information_schema.tables "
            "WHERE table_schema = 'public'"
        )
    return [list(row) for row in conn.execute(query).fetchall()]


def respond(
    event: Mapping[str, Any], verifier: TokenVerifier, access: TenantDataAccess
) -> dict[str, Any]:
    """The response for one request (the testable core of `handler`)."""
    try:
        tenant = verifier.tenant_of(bearer_token(event.get("headers") or {}))
    except UnverifiedTenantError as error:
        return {"statusCode": 401, "body": json.dumps({"error": str(error)})}
    try:
        with access.connection(tenant) as conn:
            rows = read_rows(conn, access.config.pattern)
    except UnverifiedTenantError as error:
        return {"statusCode": 403, "body": json.dumps({"error": str(error)})}
    body = {"tenant": tenant, "pattern": access.config.pattern.value, "rows": rows}
    return {"statusCode": 200, "body": json.dumps(body, default=str)}


def handler(event: Mapping[str, Any], _context: object) -> dict[str, Any]:
    """Lambda entry point."""
    return respond(event, _verifier(), _access())
