"""Every TENANTKIT_* environment variable, by name: the constructs set them, the functions and
tenantctl read them, and both import the names from here."""

# -- tenantkit's functions (set by tenant_constructs) --------------------------------------------
ADMIN_SECRET_ARN = "TENANTKIT_ADMIN_SECRET_ARN"  # noqa: S105 (a variable name)
"""The provisioner: the host's admin secret (RDS format)."""
SSL_ROOT_CERT = "TENANTKIT_SSL_ROOT_CERT"
"""Every function: the CA bundle (relative to lambda_src) the database must chain to."""
CONNECT_ATTEMPTS = "TENANTKIT_CONNECT_ATTEMPTS"
"""The provisioner: connection attempts for a server that is starting (1..20)."""
MIGRATIONS_DIR = "TENANTKIT_MIGRATIONS_DIR"
"""The provisioner: the application's migrations inside its code asset (relative to the task
root), which every tenant database it creates or updates is brought to."""
EXPORT_BUCKET = "TENANTKIT_EXPORT_BUCKET"
"""The mobility function: the host's export bucket."""
EXPORT_KEY_ARN = "TENANTKIT_EXPORT_KEY_ARN"
"""The mobility function: the host key every export object is encrypted with (SSE-KMS)."""
HOST_TIER = "TENANTKIT_HOST_TIER"
"""The mobility function: the tier of the host it serves (bridge, pool or silo)."""
HOST_TENANT = "TENANTKIT_HOST_TENANT"
"""The mobility function of a silo host: the one tenant that host holds."""

# -- tenant compute (the runtime library, tenant_runtime) ---------------------------------------
PATTERN = "TENANTKIT_PATTERN"
"""The access pattern: silo-iam, silo-secret, bridge-iam, bridge-secret, pool-iam, pool-secret."""
DB_HOST = "TENANTKIT_DB_HOST"
"""IAM patterns: the database endpoint; pool patterns through an RDS Proxy: the proxy's."""
DB_PORT = "TENANTKIT_DB_PORT"
"""IAM patterns: the database port."""
DB_RESOURCE_ID = "TENANTKIT_DB_RESOURCE_ID"
"""Bridge patterns and a strict pool: the cluster's resource id, for token-vending session
policies."""
DB_PROXY = "TENANTKIT_DB_PROXY"
"""Pool patterns: true when TENANTKIT_DB_HOST is the pool's RDS Proxy (pool-iam then logs in
as the runtime login whose secret the proxy holds; pool-secret connects to that host)."""
DB_PREPARED_STATEMENTS = "TENANTKIT_DB_PREPARED_STATEMENTS"
"""Pool patterns: true lets psycopg prepare statements on the server (default false: safe
behind PgBouncer < 1.21 in transaction mode and RDS Proxy)."""
POOL_MODE = "TENANTKIT_POOL_MODE"
"""Pool patterns: settable (default) or strict, as the pool was deployed (catalog pool.mode)."""
SILO_TENANT = "TENANTKIT_SILO_TENANT"
"""Silo patterns: the one tenant the compute serves."""
TENANT_ACCESS_ROLE_ARN = "TENANTKIT_TENANT_ACCESS_ROLE_ARN"
"""Bridge patterns and a strict pool: the tenant-access role assumed with the tenant tag."""
JWKS = "TENANTKIT_JWKS"
"""Sample functions: the token issuer's public keys (a JWKS document)."""
JWT_ISSUER = "TENANTKIT_JWT_ISSUER"
"""Sample functions: the expected token issuer."""
JWT_AUDIENCE = "TENANTKIT_JWT_AUDIENCE"
"""Sample functions: the expected token audience."""
TENANT_CLAIM = "TENANTKIT_TENANT_CLAIM"
"""Sample functions: the claim that names the tenant (default tenant_id)."""

# -- tenantctl and the tests on this machine (never set in AWS) ---------------------------------
PG_VERSION = "TENANTKIT_PG_VERSION"
"""The embedded servers' PostgreSQL version (a major or major.minor; default: the deployed)."""
PG_BINDIR = "TENANTKIT_PG_BINDIR"
"""Other PostgreSQL server binaries for the embedded servers."""
PG_USER = "TENANTKIT_PG_USER"
"""As root: the unprivileged user the embedded servers run as (default postgres)."""
PGBOUNCER_BIN = "TENANTKIT_PGBOUNCER_BIN"
"""Another pgbouncer binary for the tests' pooler (default: the pinned build of make setup)."""
