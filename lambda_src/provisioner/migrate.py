"""The application's migrations, one database at a time: what the provisioner does after it
creates or converges a tenant database, what a migrate request asks of it (the host's fleet
rollout sends one per tenant; tenantctl's local mode sends the same), and the pool database's
migrations (the PoolDatabase resource's in AWS, `tenantctl migrate apply`'s locally)."""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ..core.connection import ConnectionSettings, RetryPolicy, connect, first_line
from ..core.errors import InvalidRequestError, TenantkitError
from ..migrations.apply import ApplyResult, apply_migrations
from ..migrations.files import Migration, load_migrations
from ..migrations.pool import protect_new_tables
from ..tenancy import POOL, InvalidTenantIdError, TenantNames, tenant_names
from .config import HandlerConfig

log = logging.getLogger(__name__)

MIGRATE_REQUEST = "migrate"
"""A migrate request's `tenantkit` field: {"tenantkit": "migrate", "tenant": "<id>"}."""


def is_migrate_request(event: Mapping[str, Any]) -> bool:
    return event.get("tenantkit") == MIGRATE_REQUEST


def migrate_database(
    names: TenantNames, migrations_dir: Path, admin: ConnectionSettings, retry: RetryPolicy
) -> ApplyResult:
    """Apply the pending migrations of `migrations_dir` to the tenant's database as its objects
    role; TenantkitError naming the tenant and the file when one fails (its database stays at
    the version before it), and naming the tenant when its database cannot be reached."""
    migrations = load_migrations(migrations_dir)
    try:
        with connect(admin.for_database(names.database), retry) as conn:
            result = apply_migrations(conn, migrations, role=names.objects_role)
    except TenantkitError as error:  # unreachable, drift, the lock held: said per tenant
        raise type(error)(f"tenant {names.tenant_id}: {error}") from None
    except psycopg.Error as error:  # the connection lost between files
        raise TenantkitError(
            f"tenant {names.tenant_id}: database {names.database}: {first_line(error)}"
        ) from None
    if result.failed is not None:
        raise TenantkitError(
            f"tenant {names.tenant_id}: migration {result.failed.path} failed, the database "
            f"stays at version {result.current}: {result.failed.error}"
        )
    return result


def migrate_tenant(
    event: Mapping[str, Any],
    config: HandlerConfig,
    admin_settings: Callable[[HandlerConfig], ConnectionSettings],
) -> dict[str, Any]:
    """A migrate request: the tenant id validated before any SQL, then its database brought
    to the newest migration. Returns the versions applied and the current one; raises (the
    rollout records the failure and the tenant stays at its version) otherwise."""
    try:
        names = tenant_names(event.get("tenant"))  # type: ignore[arg-type]
    except InvalidTenantIdError as error:
        raise InvalidRequestError(f"migrate request: tenant: {error}") from None
    if config.migrations_dir is None:
        raise InvalidRequestError(
            "migrate request: this provisioner carries no migrations (the catalog's schema: "
            "section names none)"
        )
    result = migrate_database(names, config.migrations_dir, admin_settings(config), config.retry)
    log.info(
        "tenant %s at version %s (applied %s)", names.tenant_id, result.current, result.applied
    )
    return {
        "tenant": names.tenant_id,
        "applied": list(result.applied),
        "current": result.current,
    }


@dataclass(frozen=True)
class PoolSchema:
    """What the pool's migrations need besides the files (the catalog's schema: section)."""

    tenant_schemas: tuple[str, ...] = ("public",)
    """Every table a migration creates here is put under the tenant policies."""
    shared_tables: tuple[str, ...] = ()
    """Reference data ([schema.]name): readable by the runtime, writable by no tenant."""


def migrate_pool(
    admin: ConnectionSettings,
    migrations: Sequence[Migration],
    schema: PoolSchema,
    retry: RetryPolicy,
) -> ApplyResult:
    """Apply the pending `migrations` to the pool database as the pool's owner role; after each
    file, inside its transaction, every new table of a tenant schema goes under the tenant
    policies (or the file is refused and rolled back, naming the table and the rule). `admin`:
    the admin's settings (any database). The result says where it stopped (pool_failure)."""
    protect = protect_new_tables(schema.tenant_schemas, schema.shared_tables)
    with connect(admin.for_database(POOL.database), retry) as conn:
        return apply_migrations(conn, migrations, role=POOL.owner_role, after_each=protect)


def pool_failure(result: ApplyResult) -> str | None:
    """Why a pool apply stopped, naming the database and the file (None: it did not)."""
    if result.failed is None:
        return None
    return (
        f"{POOL.database}: migration {result.failed.path} failed, the database stays at "
        f"version {result.current}: {result.failed.error}"
    )
