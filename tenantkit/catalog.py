"""The tenant catalog (tenants.yaml): typed, validated, with per-tier defaults.

Errors name the file, the entry (index and id) and the field, e.g.
`tenants.yaml: tenants[2] (id 'globex'): connection_limit: Input should be greater than 0`.
"""

import json
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lambda_src.provisioner.migrate import PoolSchema
from lambda_src.provisioner.settings import (
    CONNECTION_LIMIT,
    STATEMENT_TIMEOUT_MS,
    RemovalPolicy,
    TenantDatabaseSettings,
    tenant_database_only_settings,
)
from lambda_src.tenancy import (
    POOL,
    TIERS,
    InvalidTenantIdError,
    PoolMode,
    TenantNames,
    Tier,
    in_tenant_schema,
    tenant_names,
    validate_tenant_id,
)

from .capacity import instance_max_connections

__all__ = ["TIERS", "Catalog", "CatalogError", "RemovalPolicy", "Tenant", "Tier", "load_catalog"]

ConnectionLimit = Annotated[int, Field(ge=CONNECTION_LIMIT.low, le=CONNECTION_LIMIT.high)]
StatementTimeoutMs = Annotated[
    int, Field(ge=STATEMENT_TIMEOUT_MS.low, le=STATEMENT_TIMEOUT_MS.high)
]


class CatalogError(ValueError):
    """The catalog file is missing, unreadable or invalid; the message says where."""


class TierDefaults(BaseModel):
    """Settings a tier gives each of its tenants unless the tenant sets its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connection_limit: ConnectionLimit = 20
    """Connections the tenant's database accepts (CONNECTION LIMIT)."""
    statement_timeout_ms: StatementTimeoutMs = 30_000
    """Default statement_timeout in the tenant's database; 0 means none."""
    removal_policy: RemovalPolicy = "retain"
    """What offboarding does to data: retain (default) or destroy."""
    iam_auth: bool = True
    """Create an IAM-auth database user (granted rds_iam) beside the password login."""


BUILTIN_DEFAULTS: dict[Tier, TierDefaults] = {
    "silo": TierDefaults(connection_limit=100, statement_timeout_ms=60_000),
    "bridge": TierDefaults(connection_limit=20, statement_timeout_ms=30_000),
    "pool": TierDefaults(),
}
# Settings that belong to a tenant's own database: pool tenants share tables and a runtime role.
_DATABASE_SETTINGS = tenant_database_only_settings()


_INSTANCE_CLASS = r"^[a-z0-9]+\.[a-z0-9]+$"
# An RDS snapshot identifier (a letter, then letters, digits, single hyphens) or its ARN.
_SNAPSHOT = (
    r"^(arn:aws[a-z-]*:rds:[a-z0-9-]+:\d{12}:(cluster-)?snapshot:)?"
    r"[A-Za-z](-?[A-Za-z0-9]){0,254}$"
)


class BackupCopySettings(BaseModel):
    """A copy of every backup in another vault (another Region or account), for disasters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vault_arn: Annotated[
        str, Field(pattern=r"^arn:aws[a-z-]*:backup:[a-z0-9-]+:\d{12}:backup-vault:[\w.-]{2,50}$")
    ]
    """The destination vault; its access policy must let this account copy into it."""
    retention_days: Annotated[int, Field(ge=1, le=36500)] | None = None
    """How long the copies are kept (default: backup_retention_days)."""


class MeteringSettings(BaseModel):
    """A host's metering (`metering:` of a cluster or a silo tenant): how often its usage is
    sampled and when a tenant is a noisy neighbour that its alarms report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule_minutes: Annotated[int, Field(ge=1, le=60)] = 5
    top_tenants: Annotated[int, Field(ge=1, le=100)] = 20
    """Tenants whose own CloudWatch series are published per signal and sample."""
    connection_percent: Annotated[int, Field(ge=10, le=100)] = 80
    """Alarm: a tenant's sessions reach this percentage of its connection limit."""
    storage_growth_mb_per_day: Annotated[int, Field(ge=1, le=10_000_000)] = 1024
    """Alarm: a tenant's storage grows faster than this (MB a day, between two samples)."""
    long_statement_seconds: Annotated[int, Field(ge=10, le=86_400)] = 300
    """Alarm: a statement of one tenant has run this long."""


class HostOperationsSettings(BaseModel):
    """Backups and monitoring of a host's database, the same for every kind of host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backup_retention_days: Annotated[int, Field(ge=1, le=35)] = 14
    """Automated backups (point-in-time recovery) and the daily AWS Backup recovery points."""
    backup_copy: BackupCopySettings | None = None
    performance_insights: bool = True
    monitoring_interval: Literal[0, 1, 5, 10, 15, 30, 60] = 60
    """Seconds between enhanced-monitoring samples; 0 turns enhanced monitoring off."""
    metering: MeteringSettings = MeteringSettings()
    restore_snapshot: Annotated[str, Field(pattern=_SNAPSHOT)] | None = None
    """Create the cluster (or instance) from this snapshot, e.g. the final snapshot a deleted
    stack of this host left. Keep it once deployed: CloudFormation replaces a restored
    cluster whose template drops it with an empty one (tenantctl deploy refuses that)."""


class ClusterSettings(HostOperationsSettings):
    """A shared cluster (`clusters.bridge`, `clusters.pool`): Aurora PostgreSQL, Serverless v2
    between min_acu and max_acu, or provisioned instances of instance_class."""

    min_acu: Annotated[float, Field(ge=0, le=256)] = 0.5
    max_acu: Annotated[float, Field(ge=0.5, le=256)] = 16
    instance_class: Annotated[str, Field(pattern=_INSTANCE_CLASS)] | None = None
    """Provisioned instances of this class (without `db.`, e.g. r6g.large) instead of
    Serverless v2; it must be one whose memory tenantkit knows (tenantkit/capacity.py)."""
    readers: Annotated[int, Field(ge=0, le=15)] = 1
    """Readers, the first in the other Availability Zone; one takes over if the writer fails."""

    @field_validator("instance_class")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        if value is not None:
            instance_max_connections(value)  # ValueError naming the known classes
        return value

    @model_validator(mode="after")
    def _one_kind_of_capacity(self) -> "ClusterSettings":
        if self.instance_class is not None and self.model_fields_set & {"min_acu", "max_acu"}:
            raise ValueError(
                "give instance_class (provisioned) or min_acu/max_acu (Serverless v2), not both"
            )
        if self.min_acu > self.max_acu:
            raise ValueError(f"min_acu ({self.min_acu}) is above max_acu ({self.max_acu})")
        return self


class ClustersSettings(BaseModel):
    """The shared clusters (`clusters:` in the catalog)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bridge: ClusterSettings = ClusterSettings()
    pool: ClusterSettings = ClusterSettings()


class SiloSettings(HostOperationsSettings):
    """A silo tenant's own database (`silo:` in its catalog entry)."""

    engine: Literal["aurora", "rds"] = "aurora"
    """Aurora PostgreSQL Serverless v2, or an RDS for PostgreSQL instance."""
    min_acu: Annotated[float, Field(ge=0, le=256)] = 0.5
    max_acu: Annotated[float, Field(ge=0.5, le=256)] = 4
    instance_class: Annotated[str, Field(pattern=_INSTANCE_CLASS)] = "t4g.medium"
    """RDS only: the DB instance class without `db.` (e.g. m7g.large)."""
    storage_gb: Annotated[int, Field(ge=20, le=65536)] = 20
    """RDS only: allocated storage in GiB (grows automatically up to 5x)."""
    multi_az: bool = False
    """A standby (RDS) or reader (Aurora) in a second Availability Zone."""
    dedicated_kms_key: bool = True
    """Encrypt the tenant's storage with its own KMS key (else the account's aws/rds; its
    secrets, logs and backups use a key of its own either way)."""

    @model_validator(mode="after")
    def _acu_order(self) -> "SiloSettings":
        if self.min_acu > self.max_acu:
            raise ValueError(f"min_acu ({self.min_acu}) is above max_acu ({self.max_acu})")
        return self


class TenantEntry(BaseModel):
    """One entry of `tenants:` as written; unset settings come from the tier's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    tier: Tier
    connection_limit: ConnectionLimit | None = None
    statement_timeout_ms: StatementTimeoutMs | None = None
    removal_policy: RemovalPolicy | None = None
    iam_auth: bool | None = None
    suspended: bool = False
    """Keep the tenant and its data but let nobody in (logins disabled; the pool policy
    denies it) until this is false again."""
    silo: SiloSettings | None = None

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        try:
            return validate_tenant_id(value)
        except InvalidTenantIdError as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="after")
    def _pool_has_no_database_settings(self) -> "TenantEntry":
        if self.tier == "pool":
            given = [name for name in _DATABASE_SETTINGS if getattr(self, name) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} can be set for silo and bridge tenants only: pool "
                    "tenants share the pool's tables and runtime role"
                )
        if self.silo is not None and self.tier != "silo":
            raise ValueError(f"silo settings apply to silo tenants only, not to tier {self.tier}")
        return self


class Tenant(BaseModel):
    """A tenant with every setting resolved."""

    model_config = ConfigDict(frozen=True)

    id: str
    tier: Tier
    connection_limit: int
    statement_timeout_ms: int
    removal_policy: RemovalPolicy
    iam_auth: bool
    suspended: bool = False
    silo: SiloSettings | None = None
    """Set (defaults filled in) for silo tenants only."""

    @property
    def names(self) -> TenantNames:
        """Physical names of this tenant's objects."""
        return tenant_names(self.id)

    @property
    def database_settings(self) -> TenantDatabaseSettings:
        """What its TenantDatabase is given (silo and bridge tenants)."""
        return TenantDatabaseSettings(
            **{
                setting.name: getattr(self, setting.name)
                for setting in fields(TenantDatabaseSettings)
            }
        )


_QUALIFIED_NAME = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$"


class ProxySettings(BaseModel):
    """An RDS Proxy in front of the pool's cluster (`pool.proxy`, or `pool.proxy: true` for
    these defaults). TLS is always required; IAM authentication is required when the pool's
    is (`pool.iam_auth`), else the proxy takes the runtime login's password (SCRAM)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idle_client_timeout_s: Annotated[int, Field(ge=1, le=28_800)] = 1_800
    """Seconds a client connection may stay idle before the proxy closes it (RDS Proxy's
    range 1 to 28,800 and default, 30 minutes); the database connection stays in its pool."""
    max_connections_percent: Annotated[int, Field(ge=1, le=100)] = 90
    """The share of the cluster's max_connections the proxy may open; the rest is left for
    what connects to the cluster directly (the provisioner, the rotator, tenantctl)."""

    @model_validator(mode="before")
    @classmethod
    def _fixed_by_tenantkit(cls, value: object) -> object:
        fixed = {
            "require_tls": "TLS is always required",
            "iam_auth": "IAM authentication follows pool.iam_auth",
        }
        given = [
            f"{name}: {why}"
            for name, why in fixed.items()
            if isinstance(value, dict) and name in value
        ]
        if given:
            raise ValueError(f"not a setting: {'; '.join(given)}")
        return value


class PoolSettings(BaseModel):
    """The pool tier's own settings (`pool:` in the catalog)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_tables: tuple[Annotated[str, Field(pattern=_QUALIFIED_NAME)], ...] = ()
    """Your tables ([schema.]name, with a tenant_id column) to put under the tenant policies.
    Optional with a schema: section: every table of its tenant_schemas is protected anyway
    (by each pool migration that creates it and by every deploy of the pool), so a table
    listed there is derived (redundant, and fine); list only tables outside them."""
    tenant_views: tuple[Annotated[str, Field(pattern=_QUALIFIED_NAME)], ...] = ()
    """Your views over those tables; they are made security_invoker."""
    iam_auth: bool = True
    """Create the IAM-auth login of the shared application."""
    removal_policy: RemovalPolicy = "retain"
    """What deleting the pool does to its data."""
    verify_probes: bool = True
    """Keep the sample schema (tenantkit_sample) and the probe tenants (tenantkit-probe-*) that
    `tenantctl verify --dsn` attacks through; false: none, and removed if they exist."""
    proxy: ProxySettings | None = None
    """An RDS Proxy for the pool's runtime login (`true`, or its settings); none by default."""

    @field_validator("proxy", mode="before")
    @classmethod
    def _proxy_switch(cls, value: object) -> object:
        if value is True:
            return ProxySettings()
        if value is False or value is None:
            return None
        if not isinstance(value, dict | ProxySettings):
            raise ValueError(
                "true, false or the proxy's settings (idle_client_timeout_s, "
                f"max_connections_percent), not {value!r}"
            )
        return value

    mode: PoolMode = "settable"
    """How the policies learn the tenant: settable (one shared runtime login; the application
    sets the tenant per transaction) or strict (each tenant logs in as its own login; nothing
    to set). Changing it converts the pool on the next deploy."""

    @model_validator(mode="after")
    def _strict_logs_in_with_iam(self) -> "PoolSettings":
        if self.mode == "strict" and not self.iam_auth:
            raise ValueError(
                "mode strict needs iam_auth: true: each pool tenant logs in with IAM "
                "authentication. A password login per tenant would need a Secrets Manager "
                "secret per tenant (USD 0.40 a month each, 1,000 tenants USD 400) and three "
                "template resources each (a pool stack holds at most 500)"
            )
        if self.mode == "strict" and self.proxy is not None:
            raise ValueError(
                "mode strict and proxy: the pool's RDS Proxy logs in with the shared runtime "
                "login's secret, and a strict pool's tenants log in as their own logins"
            )
        return self


_SCHEMA_NAME = r"^[A-Za-z_][A-Za-z0-9_$]*$"
# Schemas PostgreSQL and tenantkit keep for themselves: never the application's tenant schemas.
_RESERVED_SCHEMAS = frozenset({"information_schema", POOL.registry_schema, POOL.sample_schema})


class SchemaSettings(BaseModel):
    """The application's schema (`schema:` in the catalog): the versioned migrations every
    tenant database and the pool are brought to (`tenantctl migrate`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Annotated[str, Field(min_length=1)]
    """The directory of `V<version>__<name>.sql` files, relative to the catalog file."""
    tenant_schemas: Annotated[
        tuple[Annotated[str, Field(pattern=_SCHEMA_NAME)], ...], Field(min_length=1)
    ] = ("public",)
    """The schemas that hold tenant data. In the pool every table there is a tenant table, put
    under the tenant policies without being listed in pool.tenant_tables (or refused: no
    tenant_id, a key not led by it), except the shared_tables."""
    shared_tables: tuple[Annotated[str, Field(pattern=_QUALIFIED_NAME)], ...] = ()
    """Pool reference data ([schema.]name): readable by every tenant, writable by none."""

    @property
    def pool_schema(self) -> PoolSchema:
        """What the pool's migrations need besides the files (locally and in AWS alike)."""
        return PoolSchema(self.tenant_schemas, self.shared_tables)

    @field_validator("tenant_schemas")
    @classmethod
    def _usable_schemas(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        reserved = [s for s in value if s in _RESERVED_SCHEMAS or s.startswith("pg_")]
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: reserved by PostgreSQL or tenantkit")
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"listed twice: {', '.join(repeated)}")
        return value


class AuthSettings(BaseModel):
    """How tenant compute learns the tenant (`auth:` in the catalog): a JWT claim, verified
    against the issuer's public keys (a JWKS file next to the catalog)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: Annotated[str, Field(pattern=r"^https://")]
    audience: Annotated[str, Field(min_length=1)]
    jwks_file: str
    """Path of the issuer's JWKS (public keys), relative to the catalog file."""
    tenant_claim: str = "tenant_id"


class CatalogFile(BaseModel):
    """The document: optional per-tier defaults, pool settings and the list of tenants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: dict[Tier, TierDefaults] = Field(default_factory=dict)
    pool: PoolSettings = PoolSettings()
    clusters: ClustersSettings = ClustersSettings()
    auth: AuthSettings | None = None
    schema_: SchemaSettings | None = Field(None, alias="schema")
    tenants: list[TenantEntry]

    @model_validator(mode="after")
    def _unique_ids(self) -> "CatalogFile":
        counts = Counter(entry.id for entry in self.tenants)
        duplicated = sorted(tenant_id for tenant_id, n in counts.items() if n > 1)
        if duplicated:
            places = []
            for tenant_id in duplicated:
                where = [str(i) for i, entry in enumerate(self.tenants) if entry.id == tenant_id]
                places.append(f"{tenant_id!r} at tenants[{', '.join(where)}]")
            raise ValueError(f"duplicate tenant id(s): {'; '.join(places)}")
        return self

    @model_validator(mode="after")
    def _shared_tables_are_not_tenant_tables(self) -> "CatalogFile":
        if self.schema_ is None:
            return self
        both = sorted(set(self.schema_.shared_tables) & set(self.pool.tenant_tables))
        if both:
            raise ValueError(
                f"schema.shared_tables: {', '.join(both)} also in pool.tenant_tables (a table "
                "is shared reference data or tenant data, not both)"
            )
        return self


class Catalog:
    """The validated catalog: tenants in file order, settings resolved."""

    def __init__(
        self,
        tenants: list[Tenant],
        source: str = "<catalog>",
        pool: PoolSettings = PoolSettings(),
        auth: AuthSettings | None = None,
        clusters: ClustersSettings = ClustersSettings(),
        schema: SchemaSettings | None = None,
    ) -> None:
        self.tenants = tuple(tenants)
        self.schema = schema
        self.source = source
        self.pool = pool
        self.auth = auth
        self.clusters = clusters

    def jwks(self) -> dict[str, Any]:
        """The issuer's JWKS named by `auth.jwks_file`; CatalogError saying what is wrong."""
        if self.auth is None:
            raise CatalogError(f"{self.source}: no auth: section (issuer, audience, jwks_file)")
        path = Path(self.source).parent / self.auth.jwks_file
        try:
            jwks: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CatalogError(f"{self.source}: auth.jwks_file {path}: {error}") from None
        keys = jwks.get("keys") if isinstance(jwks, dict) else None
        if not keys or not all(isinstance(k, dict) and k.get("kid") for k in keys):
            raise CatalogError(f"{self.source}: auth.jwks_file {path}: needs keys, each with a kid")
        if any("d" in key for key in keys):
            raise CatalogError(f"{self.source}: auth.jwks_file {path} holds a private key")
        return jwks

    def migrations_directory(self) -> Path:
        """The `schema.directory` the migrations are in, relative to the catalog file;
        CatalogError if the catalog has no schema: section."""
        if self.schema is None:
            raise CatalogError(f"{self.source}: no schema: section (directory of migrations)")
        return Path(self.source).parent / self.schema.directory

    @property
    def derived_tenant_tables(self) -> tuple[str, ...]:
        """The `pool.tenant_tables` a tenant schema holds: protected with every table of the
        schema, so listing them is redundant (they are kept working all the same)."""
        if self.schema is None:
            return ()
        schemas = self.schema.tenant_schemas
        return tuple(t for t in self.pool.tenant_tables if in_tenant_schema(t, schemas))

    @property
    def application_migrations(self) -> Path | None:
        """The migrations directory if the catalog has a schema: section, else None."""
        return self.migrations_directory() if self.schema is not None else None

    def in_tier(self, tier: Tier) -> tuple[Tenant, ...]:
        """The tenants of one tier, in catalog order."""
        return tuple(t for t in self.tenants if t.tier == tier)

    def get(self, tenant_id: str) -> Tenant:
        """The tenant with this id; KeyError naming the catalog if absent."""
        for tenant in self.tenants:
            if tenant.id == tenant_id:
                return tenant
        raise KeyError(f"tenant {tenant_id!r} is not in {self.source}")


def _where(doc: object, loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as `tenants[2] (id 'x'): field`."""
    parts: list[str] = []
    entry_label = ""
    for index, key in enumerate(loc):
        if isinstance(key, int) and parts and parts[-1] == "tenants":
            parts[-1] = f"tenants[{key}]"
            try:
                tenant_id = doc["tenants"][key].get("id")  # type: ignore[index]
                entry_label = f" (id {tenant_id!r})" if tenant_id is not None else ""
            except (AttributeError, IndexError, KeyError, TypeError):
                entry_label = ""
            parts[-1] += entry_label
        elif index > 0 and isinstance(key, str) and key.startswith(("function-after", "union")):
            continue
        else:
            parts.append(str(key))
    if not parts:
        return ""
    head, *fields = parts
    return head + (": " + ".".join(fields) if fields else "")


def parse_catalog(doc: object, source: str = "<catalog>") -> Catalog:
    """Validate a parsed YAML document; raise CatalogError naming source, entry and field."""
    try:
        parsed = CatalogFile.model_validate(doc)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            where = _where(doc, tuple(problem["loc"]))
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {where + ': ' if where else ''}{message}")
        raise CatalogError("\n".join(lines)) from None
    tenants = []
    for entry in parsed.tenants:
        resolved = BUILTIN_DEFAULTS[entry.tier].model_dump()
        if entry.tier in parsed.defaults:
            resolved.update(parsed.defaults[entry.tier].model_dump(exclude_unset=True))
        resolved.update(entry.model_dump(exclude_none=True, exclude={"silo"}))
        if entry.tier == "silo":
            resolved["silo"] = entry.silo or SiloSettings()
        tenants.append(Tenant(**resolved))
    return Catalog(tenants, source, parsed.pool, parsed.auth, parsed.clusters, parsed.schema_)


def load_catalog(path: Path) -> Catalog:
    """Read and validate a catalog file."""
    try:
        text = path.read_text()
    except OSError as error:
        raise CatalogError(f"{path}: cannot read the tenant catalog: {error.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CatalogError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(doc, dict):
        raise CatalogError(f"{path}: must be a mapping with a `tenants:` list")
    return parse_catalog(doc, str(path))
