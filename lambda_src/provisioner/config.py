"""The provisioner's configuration, read from its Lambda environment once per invocation."""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.connection import (
    RDS_CA_BUNDLE_PATH,
    ConnectionSettings,
    RetryPolicy,
    ssl_root_cert_from_env,
)
from ..core.environment import ADMIN_SECRET_ARN, CONNECT_ATTEMPTS, MIGRATIONS_DIR
from ..core.errors import TenantkitError

APPLICATION_NAME = "tenantkit-provisioner"
ASSET_ROOT = Path(__file__).resolve().parents[2]
"""The code asset's root (lambda_src/'s parent), where a bundled migrations directory is."""


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
    migrations_dir: Path | None = None
    """The application's migrations: every tenant database the provisioner creates or updates
    is brought to the newest, and a migrate request applies them (None: no application
    schema). Read when needed, so a broken directory never blocks a Delete."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "HandlerConfig":
        """Read the Lambda's environment; raise TenantkitError naming a bad variable.

        Local mode does not come through here: tenantctl builds the config with admin_settings.
        """
        ssl_root_cert = ssl_root_cert_from_env(env)
        retry = RetryPolicy()
        if attempts := env.get(CONNECT_ATTEMPTS):
            if not attempts.isdigit() or not 1 <= int(attempts) <= 20:
                raise TenantkitError(f"{CONNECT_ATTEMPTS} must be 1..20, not {attempts!r}")
            retry = replace(retry, attempts=int(attempts))
        secret_arn = env.get(ADMIN_SECRET_ARN)
        if not secret_arn:
            raise TenantkitError(f"{ADMIN_SECRET_ARN} is not set")
        migrations = env.get(MIGRATIONS_DIR)
        return cls(
            admin_secret_arn=secret_arn,
            ssl_root_cert=ssl_root_cert,
            retry=retry,
            migrations_dir=ASSET_ROOT / migrations if migrations else None,
        )
