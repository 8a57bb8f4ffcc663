"""tenantctl's local mode: the catalog provisioned on the embedded PostgreSQL by the provisioner's
own handler, with the same events CloudFormation would send, and secrets served by a local
Secrets Manager."""

import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg

from lambda_src.core.connection import ConnectionSettings, RetryPolicy
from lambda_src.core.errors import TenantkitError
from lambda_src.migrations.files import load_migrations
from lambda_src.mobility import ExportError, Manifest, TenantScope, export_tenant
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import (
    RequestType,
    pool_tenants_physical_id,
    provider_event,
    tenant_database_physical_id,
)
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import (
    PoolMigrations,
    RemovalPolicy,
    pool_batch_of,
    pool_batches,
    pool_database_properties,
    pool_tenants_properties,
)
from lambda_src.provisioner.migrate import PoolSchema
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS, PoolMode, tenant_names

from .catalog import Catalog, Tenant
from .embedded_pg import EmbeddedPostgres, EmbeddedPostgresError, RunningServer
from .local_aws import local_aws


class LocalSecrets:
    """Login secrets of local mode, generated once and kept in `<state>/secrets.json` (mode
    0600), served by the local Secrets Manager so the provisioner reads them as it does in AWS
    and a second run finds the same passwords."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._values: dict[str, dict[str, Any]] = (
            json.loads(path.read_text()) if path.exists() else {}
        )

    def ensure(
        self, name: str, *, username: str, dbname: str, server: RunningServer, tenant: str
    ) -> str:
        """Serve the secret `name` (creating its password on first use); return its ARN."""
        value = self._values.get(name)
        if value is None:
            value = {"username": username, "password": secrets.token_urlsafe(24)}
            self._values[name] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(mode=0o600)
            self.path.write_text(json.dumps(self._values, indent=2))
        secret = {**value, "engine": "postgres", "host": server.host, "port": server.port}
        secret["dbname"] = dbname
        client = boto3.client("secretsmanager")
        try:
            arn = client.describe_secret(SecretId=name)["ARN"]
            client.put_secret_value(SecretId=name, SecretString=json.dumps(secret))
        except client.exceptions.ResourceNotFoundException:
            arn = client.create_secret(
                Name=name,
                SecretString=json.dumps(secret),
                Tags=[{"Key": "tenant", "Value": tenant}],
            )["ARN"]
        return str(arn)

    def has(self, name: str) -> bool:
        """Whether the secret was ever created."""
        return name in self._values

    def password(self, name: str) -> str:
        """The stored password of a secret (KeyError if it was never created)."""
        return str(self._values[name]["password"])


@dataclass(frozen=True)
class ProvisionResult:
    """Outcome of provisioning one tenant (or the pool database itself) locally."""

    tenant_id: str | None
    """None for the pool database itself (PoolDatabase), which is no tenant."""
    tier: str
    database: str
    roles: tuple[str, ...]
    secret: str
    """Name of the login secret in the local Secrets Manager ('' when the tenant has none)."""
    server: str
    """host:port of the embedded server holding the tenant's data."""
    ok: bool
    changes: int
    seconds: float
    error: str | None = None
    schema_version: int | None = None
    """The application's migration its database is at (None: none applied, or no schema:
    section); a pool tenant's is the pool database's."""

    @property
    def label(self) -> str:
        """How tables and messages name it: the tenant id, or `(pool)`."""
        return self.tenant_id if self.tenant_id is not None else "(pool)"


def tenant_database_event(
    request_type: RequestType,
    tenant: Tenant,
    server: RunningServer,
    store: LocalSecrets,
    *,
    removal_policy: RemovalPolicy | None = None,
) -> dict[str, Any]:
    """The event CloudFormation sends for a bridge or silo tenant's TenantDatabase, its login
    secret served first; `removal_policy` overrides the catalog's (offboarding)."""
    names = tenant.names
    arn = store.ensure(
        names.secret_name,
        username=names.login_role,
        dbname=names.database,
        server=server,
        tenant=tenant.id,
    )
    settings = tenant.database_settings
    if removal_policy is not None:
        settings = settings.with_removal_policy(removal_policy)
    return provider_event(
        request_type,
        settings.properties(tenant_id=tenant.id, password_secret_arn=arn),
        physical_id=None if request_type == "Create" else tenant_database_physical_id(tenant.id),
    )


def handler_config(server: RunningServer, migrations_dir: Path | None = None) -> HandlerConfig:
    """The provisioner's configuration against the embedded server (admin like RDS's master);
    with the catalog's migrations, as the bundled asset gives them to it in AWS."""
    return HandlerConfig(
        admin_settings=server.admin_settings(),
        retry=RetryPolicy(attempts=3),
        migrations_dir=migrations_dir,
    )


def provision_tenant_databases(
    tenants: list[Tenant],
    server_for: Callable[[Tenant], RunningServer],
    store: LocalSecrets,
    done: Callable[[ProvisionResult], None] = lambda _result: None,
    *,
    migrations_dir: Path | None = None,
) -> list[ProvisionResult]:
    """Create-or-converge each bridge or silo tenant's database through the handler, on the
    server `server_for` gives it (and with `migrations_dir`, bring it to the newest migration
    before it is active); `done` hears of each tenant as it finishes."""
    results = []
    for tenant in tenants:
        server = server_for(tenant)
        config = handler_config(server, migrations_dir)
        names = tenant.names
        roles = (names.owner_role, names.objects_role, names.login_role) + (
            (names.iam_user,) if tenant.iam_auth else ()
        )
        started = time.perf_counter()
        try:
            response = handle(tenant_database_event("Create", tenant, server, store), config)
            ok, changes, error = True, int(response["Data"]["Changes"]), None
        except TenantkitError as failure:
            ok, changes, error = False, 0, str(failure)
        results.append(
            ProvisionResult(
                tenant.id,
                tenant.tier,
                names.database,
                roles,
                names.secret_name,
                f"{server.host}:{server.port}",
                ok,
                changes,
                time.perf_counter() - started,
                error,
            )
        )
        done(results[-1])
    return results


def pool_login_secrets(
    tenant_ids: Sequence[str], server: RunningServer, store: LocalSecrets
) -> dict[str, str]:
    """A strict pool on the embedded server (no IAM authentication): each tenant's login
    secret (`tenantkit/<id>/app`, its pool login and the pool database), served first; tenant
    id -> ARN. In AWS a strict pool's tenants log in with IAM tokens and have no secret."""
    return {
        tenant: store.ensure(
            tenant_names(tenant, allow_probes=True).secret_name,
            username=tenant_names(tenant, allow_probes=True).pool_login,
            dbname=POOL.database,
            server=server,
            tenant=tenant,
        )
        for tenant in tenant_ids
    }


def provision_pool(
    tenants: list[Tenant],
    server: RunningServer,
    store: LocalSecrets,
    *,
    iam_auth: bool = True,
    mode: PoolMode = "settable",
    done: Callable[[ProvisionResult], None] = lambda _result: None,
    migrations_dir: Path | None = None,
    pool_schema: PoolSchema = PoolSchema(),
) -> list[ProvisionResult]:
    """Create-or-converge the pool database in `mode`, then register the pool tenants batch by
    batch (in a strict pool each with its login, password from its local secret); `done` hears
    of the pool and of each tenant as they finish. With `migrations_dir` (the catalog's schema:
    directory) the PoolDatabase names the migrations as the pool stack does and the handler
    carries them as the pool's provisioner does in AWS, so the pool database is brought to the
    newest (each new table of `pool_schema`'s tenant schemas put under the tenant policies)
    before any tenant is registered; a failed migration fails the pool, and no tenant is
    registered."""
    config = handler_config(server, migrations_dir)
    runtime = (POOL.login_role,) + ((POOL.iam_user,) if iam_auth else ())
    strict = mode == "strict"
    started = time.perf_counter()
    try:
        arn = store.ensure(
            POOL.secret_name,
            username=POOL.login_role,
            dbname=POOL.database,
            server=server,
            tenant="pool",
        )
        migrations = (
            None
            if migrations_dir is None
            else PoolMigrations.of(load_migrations(migrations_dir), pool_schema)
        )
        properties = pool_database_properties(
            runtime_secret_arn=arn,
            iam_auth=iam_auth,
            removal_policy="retain",
            migrations=migrations,
            mode=mode,
            probe_secrets=pool_login_secrets(PROBE_TENANT_IDS, server, store) if strict else None,
        )
        response = handle(provider_event("Create", properties), config)
        ok, changes, error = True, int(response["Data"]["Changes"]), None
    except TenantkitError as failure:
        ok, changes, error = False, 0, str(failure)
    pool_result = ProvisionResult(
        None,
        "pool",
        POOL.database,
        runtime,
        POOL.secret_name,
        f"{server.host}:{server.port}",
        ok,
        changes,
        time.perf_counter() - started,
        error,
    )
    done(pool_result)
    results = [pool_result]
    if not ok:
        return results
    by_id = {t.id: t for t in tenants}
    secrets = pool_login_secrets(list(by_id), server, store) if strict else None
    batches = pool_batches(
        [(t.id, t.removal_policy) for t in tenants],
        suspended=[t.id for t in tenants if t.suspended],
        password_secrets=secrets,
    )
    for batch_id, entries in batches.items():
        started = time.perf_counter()
        try:
            response = handle(
                provider_event("Create", pool_tenants_properties(batch_id, entries, mode=mode)),
                config,
            )
            ok, changes, error = True, int(response["Data"]["Changes"]), None
        except TenantkitError as failure:
            ok, changes, error = False, 0, str(failure)
        seconds = (time.perf_counter() - started) / len(entries)
        for entry in entries:
            tenant = by_id[entry["Id"]]
            results.append(
                ProvisionResult(
                    tenant.id,
                    "pool",
                    POOL.database,
                    (tenant.names.pool_login,) if strict else (POOL.runtime_role,),
                    tenant.names.secret_name if strict else "",
                    f"{server.host}:{server.port}",
                    ok,
                    changes,
                    seconds,
                    error,
                )
            )
            done(results[-1])
    return results


def offboard_tenant_database(
    tenant: Tenant, server: RunningServer, store: LocalSecrets, *, destroy: bool
) -> int:
    """Send the Delete CloudFormation sends when a bridge or silo tenant's resource goes, with
    the removal policy the caller chose; returns the number of changes."""
    policy: RemovalPolicy = "destroy" if destroy else "retain"
    event = tenant_database_event("Delete", tenant, server, store, removal_policy=policy)
    response = handle(event, handler_config(server))
    return int(response["Data"]["Changes"])


def offboard_pool_tenant(
    tenant: Tenant,
    pool_tenants: list[Tenant],
    server: RunningServer,
    *,
    destroy: bool,
    mode: PoolMode = "settable",
    store: LocalSecrets | None = None,
) -> int:
    """Send the Update of the tenant's batch that a deploy without it sends: the batch's old
    properties hold the tenant with the chosen removal policy, the new ones do not (a strict
    pool: with the tenants' login secrets from `store`)."""
    others = [t for t in pool_tenants if t.id != tenant.id]
    policy: RemovalPolicy = "destroy" if destroy else "retain"
    suspended = [t.id for t in pool_tenants if t.suspended]
    secrets = None
    if mode == "strict" and store is not None:
        secrets = pool_login_secrets([t.id for t in pool_tenants], server, store)
    batch = pool_batch_of(tenant.id)
    before = pool_batches(
        [*((t.id, t.removal_policy) for t in others), (tenant.id, policy)],
        suspended=suspended,
        password_secrets=secrets,
    )[batch]
    after = pool_batches(
        [(t.id, t.removal_policy) for t in others], suspended=suspended, password_secrets=secrets
    )
    event = provider_event(
        "Update",
        pool_tenants_properties(batch, after.get(batch, []), mode=mode),
        physical_id=pool_tenants_physical_id(batch),
        old_properties=pool_tenants_properties(batch, before, mode=mode),
    )
    response = handle(event, handler_config(server))
    return int(response["Data"]["Changes"])


def pool_runtime_settings(server: RunningServer, store: LocalSecrets) -> ConnectionSettings:
    """How the application logs in to the pool (what `tenantctl verify` attacks as)."""
    return server.settings(POOL.login_role, store.password(POOL.secret_name), POOL.database)


def pool_login_settings(
    server: RunningServer, store: LocalSecrets, tenant_id: str
) -> ConnectionSettings:
    """How a strict pool's tenant (a probe tenant too) logs in as its own login, locally."""
    names = tenant_names(tenant_id, allow_probes=True)
    return server.settings(names.pool_login, store.password(names.secret_name), POOL.database)


class LocalServers:
    """The embedded servers of local mode: one shared by the bridge and pool tiers (in
    `<state>/pg`), and one per silo tenant (in `<state>/silo-<id>/pg`), as in AWS each silo
    tenant has a database server of its own."""

    def __init__(self, state_dir: Path, silo_ids: list[str]) -> None:
        self.state_dir = state_dir
        self.shared = EmbeddedPostgres(state_dir / "pg")
        self.silos = {t: EmbeddedPostgres(state_dir / f"silo-{t}" / "pg") for t in silo_ids}
        self._running: dict[str, RunningServer] = {}

    def start(self) -> RunningServer:
        """Start every server; returns the shared one."""
        self._running["(shared)"] = self.shared.start()
        for tenant_id, pg in self.silos.items():
            self._running[tenant_id] = pg.start()
        return self._running["(shared)"]

    def server_for(self, tenant: Tenant) -> RunningServer:
        """The server holding `tenant`'s database (its own for a silo tenant). A tenant of
        another tier whose silo server is still on disk (it was moved out of the silo) is on
        the shared one."""
        if tenant.tier != "silo":
            return self._running["(shared)"]
        return self._running.get(tenant.id, self._running["(shared)"])

    def running(self, tenant_id: str) -> RunningServer:
        """The started server of a silo tenant (KeyError if it has none)."""
        return self._running[tenant_id]

    def server_for_pool(self) -> RunningServer:
        """The server holding the pool (the shared one)."""
        return self._running["(shared)"]

    def placement_note(self) -> str | None:
        """One line saying where the servers' files are when they cannot be in the state
        directory (as root, under a home directory the server user cannot traverse)."""
        moved = [pg for pg in (self.shared, *self.silos.values()) if pg.moved_to is not None]
        if not moved:
            return None
        homes = ", ".join(sorted({str(pg.root.parent) for pg in moved}))
        return (
            f"servers' files in {homes}: user {moved[0].server_user!r} cannot reach "
            f"{self.state_dir.absolute()}"
        )

    def stop(self) -> None:
        """Stop every server (their data stays)."""
        for pg in (self.shared, *self.silos.values()):
            pg.stop()


@dataclass(frozen=True)
class LocalSession:
    """What a local operation works with: the started servers, the shared one (bridge and
    pool), the login secrets and how long the servers took to start."""

    servers: LocalServers
    shared: RunningServer
    store: LocalSecrets
    start_seconds: float


@contextmanager
def local_session(
    state_dir: Path,
    catalog: Catalog,
    *,
    extra_silos: Sequence[str] = (),
    keep_running: bool = False,
) -> Iterator[LocalSession]:
    """One local operation on `state_dir`: its lock held, the embedded servers started (the
    shared one and one per silo tenant: the catalog's, those left on disk and `extra_silos`),
    the local Secrets Manager up and the secrets store open. On exit the servers stop unless
    `keep_running`. Raises EmbeddedPostgresError if a server cannot start, after stopping
    those that did."""
    # tenantkit.lifecycle imports this module (LocalServers), so its lock is imported here.
    from .lifecycle import local_silo_ids, state_lock

    with state_lock(state_dir):
        servers = LocalServers(state_dir, [*local_silo_ids(state_dir, catalog), *extra_silos])
        started = time.perf_counter()
        try:
            shared = servers.start()
        except EmbeddedPostgresError:
            servers.stop()
            raise
        start_seconds = time.perf_counter() - started
        try:
            with local_aws():
                yield LocalSession(
                    servers, shared, LocalSecrets(state_dir / "secrets.json"), start_seconds
                )
        finally:
            if not keep_running:
                servers.stop()


def tenant_admin_settings(servers: LocalServers, tenant_id: str, tier: str) -> ConnectionSettings:
    """The admin's connection to the database holding a tenant's data locally: the pool
    database, the tenant's database on the shared server (bridge) or on its own (silo)."""
    if tier == "pool":
        return servers.server_for_pool().admin_settings(POOL.database)
    server = servers.running(tenant_id) if tier == "silo" else servers.server_for_pool()
    return server.admin_settings(tenant_names(tenant_id).database)


EXPORTS_DIR = "exports"
"""Where exports go by default, under the state directory."""


def export_local_tenant(
    servers: LocalServers, tenant_id: str, tier: str, directory: Path
) -> Manifest:
    """Export a provisioned tenant's data into `directory` (ExportError if it cannot: nothing
    is left there)."""
    settings = tenant_admin_settings(servers, tenant_id, tier)
    try:
        with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
            return export_tenant(conn, TenantScope.of_tier(tenant_id, tier), tier, directory)
    except psycopg.OperationalError as error:
        raise ExportError(f"exporting {tenant_id} failed: {error}") from error
