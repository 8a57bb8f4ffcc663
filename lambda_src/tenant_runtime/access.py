"""One entry point for tenant compute: a connection to one tenant's data, by access pattern.

    access = TenantDataAccess(AccessConfig.from_env(os.environ))
    tenant = verifier.tenant_of(bearer_token(event["headers"]))
    with access.connection(tenant) as conn:
        ...

The six patterns (silo or pooled compute x database per tenant or pooled database x IAM auth
or Secrets Manager):
- silo-iam / silo-secret: the function is the tenant's own; it serves that tenant only;
- bridge-iam / bridge-secret: a shared function assumes the tenant-access role with the
  session tag tenant=<id>; the role reaches only that tenant's db user or secret;
- pool-iam / pool-secret: a shared function logs in as the pool's runtime login; the tenant is
  the transaction-local setting (tenant_transaction), connections come from a pool (through
  the pool's RDS Proxy when TENANTKIT_DB_PROXY is true). In a strict pool
  (TENANTKIT_POOL_MODE=strict) it logs in as the tenant's own login instead, through the
  tenant-access role as for bridge (its db user `tenant_<id>_pool`, or its secret), with a
  connection pool per tenant login and a bound on the connections of all of them.
IAM auth mints a fresh token for every new connection (tokens live 15 minutes). Passwords are
read from the secret and cached for a few minutes. When the server refuses a password, the
library reads AWSCURRENT again (the secret was rotated since it was cached) and, if that is
refused too, tries the AWSPENDING version: between a rotation's setSecret and finishSecret the
database already has the pending password while AWSCURRENT still holds the old one. TLS is
always verify-full: against TENANTKIT_SSL_ROOT_CERT if set, else the RDS CA bundle shipped in
lambda_src/certs (a server the bundle does not sign is refused).
"""

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import boto3
import psycopg
from botocore.exceptions import ClientError
from psycopg_pool import ConnectionPool

from ..core import environment as env_names
from ..core.connection import RDS_CA_BUNDLE_PATH, ConnectionSettings, ssl_root_cert_from_env
from ..tenancy import POOL, POOL_MODES, PoolMode, tenant_names, validate_tenant_id
from .credentials import TenantSessions, tenant_session_policy
from .identity import UnverifiedTenantError
from .login_pools import TenantLoginPools
from .pool import tenant_transaction

APPLICATION_NAME = "tenantkit-runtime"


class Pattern(StrEnum):
    """How compute reaches tenant data."""

    SILO_IAM = "silo-iam"
    SILO_SECRET = "silo-secret"  # noqa: S105 (a pattern name)
    BRIDGE_IAM = "bridge-iam"
    BRIDGE_SECRET = "bridge-secret"  # noqa: S105
    POOL_IAM = "pool-iam"
    POOL_SECRET = "pool-secret"  # noqa: S105

    @property
    def iam_auth(self) -> bool:
        """Logs in with an IAM token rather than a password."""
        return self.value.endswith("-iam")

    @property
    def tier(self) -> str:
        """silo, bridge or pool."""
        return self.value.split("-")[0]


@dataclass(frozen=True)
class AccessConfig:
    """Where the data is and how this compute may reach it."""

    pattern: Pattern
    region: str
    host: str | None = None
    """IAM patterns: the database endpoint (secret patterns read it from the secret, unless
    `through_proxy`)."""
    port: int = 5432
    ssl_root_cert: Path = RDS_CA_BUNDLE_PATH
    """The CA bundle the database's certificate must chain to (TLS verify-full)."""
    silo_tenant: str | None = None
    """Silo patterns: the one tenant this compute serves."""
    tenant_access_role_arn: str | None = None
    """Bridge patterns and a strict pool: the role assumed with the session tag tenant=<id>."""
    db_resource_id: str | None = None
    """Bridge patterns and a strict pool: the cluster's resource id; set, the assumed session
    is also narrowed by a session policy to the tenant's own db user and secret (token
    vending)."""
    pool_mode: PoolMode = "settable"
    """Pool patterns: settable (the shared runtime login, the tenant set per transaction) or
    strict (the tenant's own login; what the pool was deployed with)."""
    prepared_statements: bool = False
    """Pool patterns: let psycopg prepare statements on the server (tenant_transaction). Off by
    default: wrong behind PgBouncer < 1.21 in transaction mode, pinning behind RDS Proxy. On
    for a direct connection or PgBouncer 1.21+ with max_prepared_statements > 0."""
    through_proxy: bool = False
    """Pool patterns: `host` is the pool's RDS Proxy. pool-iam then mints its token for the
    proxy's endpoint as the runtime login whose secret the proxy holds (the proxy logs in to
    the cluster with that secret's password; an rds_iam user has none); pool-secret sends the
    secret's password to `host` instead of the cluster endpoint the secret names."""

    def __post_init__(self) -> None:
        missing = []
        if self.pattern.iam_auth and not self.host:
            missing.append("host (TENANTKIT_DB_HOST)")
        if self.pattern.tier == "silo" and not self.silo_tenant:
            missing.append("silo_tenant (TENANTKIT_SILO_TENANT)")
        if self.tenant_logins and not self.tenant_access_role_arn:
            missing.append("tenant_access_role_arn (TENANTKIT_TENANT_ACCESS_ROLE_ARN)")
        if self.through_proxy and self.pattern.tier == "pool" and not self.host:
            missing.append("host (TENANTKIT_DB_HOST) to go through the proxy")
        if missing:
            raise ValueError(f"pattern {self.pattern.value} needs {', '.join(missing)}")
        if self.through_proxy and self.pattern.tier == "pool" and self.pool_mode == "strict":
            raise ValueError(
                f"{env_names.DB_PROXY}: a strict pool's tenants log in as their own logins, "
                "which the pool's RDS Proxy has no secrets for; connect to the cluster"
            )
        if self.through_proxy and self.pattern.tier != "pool":
            raise ValueError(
                f"{env_names.DB_PROXY}: only the pool patterns go through an RDS Proxy, "
                f"not {self.pattern.value}"
            )
        if self.silo_tenant is not None:
            validate_tenant_id(self.silo_tenant)

    @property
    def tenant_logins(self) -> bool:
        """Shared compute that logs in as each tenant's own login (bridge, strict pool)."""
        return self.pattern.tier == "bridge" or (
            self.pattern.tier == "pool" and self.pool_mode == "strict"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "AccessConfig":
        """Read TENANTKIT_* variables (and AWS_REGION); raise ValueError naming a bad one."""
        try:
            pattern = Pattern(env.get(env_names.PATTERN, ""))
        except ValueError:
            known = ", ".join(p.value for p in Pattern)
            raise ValueError(f"{env_names.PATTERN} must be one of {known}") from None
        port = env.get(env_names.DB_PORT, "5432")
        if not port.isdigit():
            raise ValueError(f"{env_names.DB_PORT} must be a number, not {port!r}")
        switches = {}
        for name in (env_names.DB_PREPARED_STATEMENTS, env_names.DB_PROXY):
            value = env.get(name, "false")
            if value not in ("true", "false"):
                raise ValueError(f"{name} must be true or false, not {value!r}")
            switches[name] = value == "true"
        raw_mode = env.get(env_names.POOL_MODE, "settable")
        mode = next((m for m in POOL_MODES if m == raw_mode), None)
        if mode is None:
            raise ValueError(
                f"{env_names.POOL_MODE} must be one of {', '.join(POOL_MODES)}, not {raw_mode!r}"
            )
        return cls(
            pattern=pattern,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            host=env.get(env_names.DB_HOST) or None,
            port=int(port),
            ssl_root_cert=ssl_root_cert_from_env(env),
            silo_tenant=env.get(env_names.SILO_TENANT) or None,
            tenant_access_role_arn=env.get(env_names.TENANT_ACCESS_ROLE_ARN) or None,
            db_resource_id=env.get(env_names.DB_RESOURCE_ID) or None,
            prepared_statements=switches[env_names.DB_PREPARED_STATEMENTS],
            through_proxy=switches[env_names.DB_PROXY],
            pool_mode=mode,
        )


@dataclass
class SecretLogins:
    """Login secrets read from Secrets Manager and kept for `ttl_s` seconds."""

    ttl_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, secret_id: str, session: boto3.Session, *, fresh: bool = False) -> dict[str, Any]:
        """The secret's JSON (username, password, host, port, dbname): AWSCURRENT, or the
        version `keep` last kept."""
        with self._lock:
            cached = self._cache.get(secret_id)
            if cached and not fresh and self.clock() - cached[1] < self.ttl_s:
                return cached[0]
        value = json.loads(
            session.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
        )
        self.keep(secret_id, value)
        return value  # type: ignore[no-any-return]

    def pending(self, secret_id: str, session: boto3.Session) -> dict[str, Any] | None:
        """The secret's AWSPENDING version (a rotation has created it and not finished yet), or
        None when no rotation is pending. Never cached: `keep` it once it has logged in."""
        client = session.client("secretsmanager")
        try:
            response = client.get_secret_value(SecretId=secret_id, VersionStage=PENDING_STAGE)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        return json.loads(response["SecretString"])  # type: ignore[no-any-return]

    def keep(self, secret_id: str, value: dict[str, Any]) -> None:
        """Serve `value` for the secret for the next `ttl_s` seconds."""
        with self._lock:
            self._cache[secret_id] = (value, self.clock())


PENDING_STAGE = "AWSPENDING"
"""The stage of a rotation's new version, from createSecret until finishSecret moves AWSCURRENT
to it (the compute roles may read every stage of their secrets)."""


def _auth_failed(error: psycopg.OperationalError) -> bool:
    return "password authentication failed" in str(error)


class TenantDataAccess:
    """Connections scoped to one tenant, for one configured access pattern."""

    def __init__(
        self,
        config: AccessConfig,
        *,
        sessions: TenantSessions | None = None,
        secrets: SecretLogins | None = None,
        connect: Callable[..., psycopg.Connection[Any]] = psycopg.connect,
        pool_size: int = 10,
        pool_size_per_tenant: int = 2,
    ) -> None:
        """`pool_size`: pool patterns, the most connections open at once (in a strict pool,
        over all the tenants' logins together); `pool_size_per_tenant`: a strict pool, the most
        one tenant's login may hold of them."""
        self.config = config
        self._sessions = sessions
        if sessions is None and config.tenant_access_role_arn is not None:
            self._sessions = TenantSessions(
                config.tenant_access_role_arn,
                session_policy=self._token_vending() if config.db_resource_id else None,
            )
        self._secrets = secrets or SecretLogins()
        self._connect = connect
        self._pool_size = pool_size
        self._pool_size_per_tenant = pool_size_per_tenant
        self._pool: ConnectionPool | None = None
        self._login_pools: TenantLoginPools | None = None
        self._pool_lock = threading.Lock()

    # -- the entry point ----------------------------------------------------------------------
    @contextmanager
    def connection(self, tenant_id: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection that reaches `tenant_id`'s data and no other tenant's.

        Bridge and silo: a new connection as the tenant's own login, closed afterwards. Pool:
        a pooled runtime connection inside tenant_transaction (committed on success); strict
        pool: a pooled connection of the tenant's own login, inside tenant_transaction(strict).
        """
        tenant = validate_tenant_id(tenant_id)
        if self.config.pattern.tier == "silo" and tenant != self.config.silo_tenant:
            raise UnverifiedTenantError(
                f"this compute serves tenant {self.config.silo_tenant!r} only, not {tenant!r}"
            )
        if self.config.pattern.tier == "pool" and self.config.pool_mode == "strict":
            prepared = self.config.prepared_statements
            with (
                self._tenant_pools().connection(tenant) as conn,
                tenant_transaction(conn, tenant, prepared_statements=prepared, strict=True),
            ):
                yield conn
            return
        if self.config.pattern.tier == "pool":
            prepared = self.config.prepared_statements
            with (
                self._pooled().connection() as conn,
                tenant_transaction(conn, tenant, prepared_statements=prepared),
            ):
                yield conn
            return
        conn = self._open(tenant)
        try:
            yield conn
        finally:
            conn.close()

    def close(self) -> None:
        """Close the connection pools, if any was opened."""
        if self._pool is not None:
            self._pool.close()
        if self._login_pools is not None:
            self._login_pools.close()

    # -- credentials ----------------------------------------------------------------------------
    def _token_vending(self) -> Callable[[str], dict[str, Any]]:
        role_arn = str(self.config.tenant_access_role_arn)
        _, partition, _, _, account, _ = role_arn.split(":", 5)
        region, resource_id = self.config.region, str(self.config.db_resource_id)
        pool = self.config.pattern.tier == "pool"
        return lambda tenant: tenant_session_policy(
            tenant,
            partition=partition,
            region=region,
            account=account,
            db_resource_id=resource_id,
            db_user=tenant_names(tenant).pool_login if pool else None,
        )

    def _session(self, tenant: str) -> boto3.Session:
        if self.config.tenant_logins:
            assert self._sessions is not None
            return self._sessions.session_for(tenant)
        return boto3.Session()

    def _iam_settings(self, user: str, dbname: str, session: boto3.Session) -> ConnectionSettings:
        # A fresh token per connection: tokens expire after 15 minutes.
        host = str(self.config.host)
        token = session.client("rds", region_name=self.config.region).generate_db_auth_token(
            DBHostname=host, Port=self.config.port, DBUsername=user, Region=self.config.region
        )
        return ConnectionSettings(
            host=host,
            port=self.config.port,
            user=user,
            password=token,
            dbname=dbname,
            ssl_root_cert=self.config.ssl_root_cert,
            application_name=APPLICATION_NAME,
        )

    def _secret_settings(self, secret: Mapping[str, Any]) -> ConnectionSettings:
        # The attached secret names the cluster; through the proxy, the proxy's endpoint.
        proxy = self.config.through_proxy
        return ConnectionSettings(
            host=str(self.config.host if proxy else secret["host"]),
            port=self.config.port if proxy else int(secret.get("port", 5432)),
            user=str(secret["username"]),
            password=str(secret["password"]),
            dbname=str(secret["dbname"]),
            ssl_root_cert=self.config.ssl_root_cert,
            application_name=APPLICATION_NAME,
        )

    def _whom(self, tenant: str | None) -> tuple[str, str, str, boto3.Session]:
        """IAM user, database, login secret and AWS session for `tenant`'s own login, or for
        the pool's (None)."""
        if tenant is None:
            # Through an RDS Proxy the token names a user whose secret the proxy holds.
            user = POOL.login_role if self.config.through_proxy else POOL.iam_user
            return user, POOL.database, POOL.secret_name, boto3.Session()
        names = tenant_names(tenant)
        if self.config.pattern.tier == "pool":  # a strict pool: the tenant's own pool login
            return names.pool_login, POOL.database, names.secret_name, self._session(tenant)
        return names.iam_user, names.database, names.secret_name, self._session(tenant)

    def _open(self, tenant: str | None) -> psycopg.Connection[Any]:
        """A new connection as `tenant`'s login (the pool's for None).

        Secret patterns: the cached password first; refused, AWSCURRENT read again (rotated
        since it was cached); refused again, AWSPENDING if a rotation is pending (past its
        setSecret, the database has that one). Any other failure, or the last refusal, is
        raised as the server gave it.
        """
        user, dbname, secret_name, session = self._whom(tenant)
        if self.config.pattern.iam_auth:
            return self._connect(**self._iam_settings(user, dbname, session).connect_kwargs())
        refused: psycopg.OperationalError | None = None
        tried: list[object] = []  # a password the server refused is not sent again
        for fresh in (False, True):
            secret = self._secrets.get(secret_name, session, fresh=fresh)
            if secret.get("password") in tried:
                continue
            tried.append(secret.get("password"))
            try:
                return self._connect(**self._secret_settings(secret).connect_kwargs())
            except psycopg.OperationalError as error:
                if not _auth_failed(error):
                    raise
                refused = error
        assert refused is not None
        pending = self._secrets.pending(secret_name, session)
        if pending is None or pending.get("password") in tried:
            raise refused
        conn = self._connect(**self._secret_settings(pending).connect_kwargs())
        # Until finishSecret makes it AWSCURRENT, the pending version is the one that works.
        self._secrets.keep(secret_name, pending)
        return conn

    def _pooled(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                access = self

                class _Login(psycopg.Connection[Any]):  # a new login per pooled connection
                    @classmethod
                    def connect(cls, *_args: Any, **_kwargs: Any) -> Any:
                        conn = access._open(None)
                        conn.autocommit = True  # tenant_transaction sends its own BEGIN
                        return conn

                self._pool = ConnectionPool(
                    connection_class=_Login,
                    min_size=1,
                    max_size=self._pool_size,
                    reset=reset_pooled_connection,
                    open=True,
                )
            return self._pool

    def _tenant_pools(self) -> TenantLoginPools:
        with self._pool_lock:
            if self._login_pools is None:

                def open_login(tenant: str) -> psycopg.Connection[Any]:
                    conn = self._open(tenant)
                    conn.autocommit = True  # tenant_transaction sends its own BEGIN
                    return conn

                self._login_pools = TenantLoginPools(
                    open_login,
                    max_total=self._pool_size,
                    max_per_tenant=min(self._pool_size_per_tenant, self._pool_size),
                    reset=reset_pooled_connection,
                )
            return self._login_pools


def reset_pooled_connection(conn: psycopg.Connection[Any]) -> None:
    """Whatever the borrower left: no held cursor, no session setting (a tenant set with SET)."""
    conn.execute("CLOSE ALL; RESET ALL")


def access_from_env() -> TenantDataAccess:
    """TenantDataAccess configured from this function's environment."""
    return TenantDataAccess(AccessConfig.from_env(os.environ))


__all__ = ["AccessConfig", "Pattern", "SecretLogins", "TenantDataAccess", "access_from_env"]
