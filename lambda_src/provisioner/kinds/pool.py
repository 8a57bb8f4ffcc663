"""The pool tier's kinds: PoolDatabase (roles, registry, policies) and PoolTenants (a batch of
registry rows, and in strict mode of tenant logins, so 1,000 tenants are a handful of resources
rather than 1,000)."""

import hashlib
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ...core.connection import connect, first_line, scram_verifier
from ...core.errors import InvalidRequestError, TenantkitError
from ...core.secrets import read_password
from ...core.steps import Step
from ...migrations.apply import applied_migrations
from ...migrations.files import Migration, fingerprint, load_migrations
from ...migrations.pool import protect_tenant_schemas
from ...tenancy import (
    POOL,
    POOL_MODES,
    PROBE_TENANT_IDS,
    InvalidTenantIdError,
    PoolMode,
    in_tenant_schema,
    tenant_names,
    validate_tenant_id,
)
from .. import postgres
from ..events import pool_database_physical_id, pool_tenants_physical_id
from ..migrate import PoolSchema, migrate_pool, pool_failure
from ..plans.access import require_rds_iam
from ..plans.lifecycle import ACTIVE, FAILED, SUSPENDED, plan_record
from ..plans.pool import (
    plan_offboard,
    plan_pool_converge,
    plan_pool_destroy,
    plan_pool_retain,
    plan_purge,
    plan_register,
)
from ..plans.pool_logins import (
    TenantLogin,
    plan_disable_logins,
    plan_drop_logins,
    plan_end_sessions,
    plan_tenant_logins,
)
from ..plans.pool_rls import protect_table, protect_view
from ..settings import REMOVAL_POLICIES, RemovalPolicy
from .base import AdminSession, Outcome, bool_property, record_failure

POOL_BATCHES = 32
"""Pool tenants are spread over at most this many PoolTenants resources by a hash of their id,
so a tenant never changes batch and adding one updates one small resource."""
MAX_TENANTS_PER_BATCH = 5000
_QUALIFIED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
log = logging.getLogger(__name__)


def pool_batch_of(tenant_id: str) -> str:
    """The batch a pool tenant belongs to, fixed for the tenant's lifetime."""
    digest = hashlib.sha256(tenant_id.encode()).digest()
    return f"batch-{int.from_bytes(digest[:4], 'big') % POOL_BATCHES:02d}"


def pool_batches(
    tenants: Sequence[tuple[str, RemovalPolicy]],
    *,
    suspended: Collection[str] = (),
    password_secrets: Mapping[str, str] | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Group (tenant id, removal policy) pairs into batches: batch id -> PoolTenants entries.
    Tenants in `suspended` get `"Suspended": "true"` (the key is absent for the others);
    tenants in `password_secrets` (strict mode on a server without IAM authentication) get
    `"PasswordSecretArn"`, the secret their login's password comes from."""
    secrets = password_secrets or {}
    batches: dict[str, list[dict[str, str]]] = {}
    for tenant_id, removal_policy in tenants:
        entry = {"Id": tenant_id, "RemovalPolicy": removal_policy}
        if tenant_id in suspended:
            entry["Suspended"] = "true"
        if tenant_id in secrets:
            entry["PasswordSecretArn"] = secrets[tenant_id]
        batches.setdefault(pool_batch_of(tenant_id), []).append(entry)
    return dict(sorted(batches.items()))


@dataclass(frozen=True)
class PoolMigrations:
    """The PoolDatabase's `Migrations` property: the pool database must hold every migration up
    to `latest`, exactly the files whose fingerprint (migrations.files.fingerprint) this is.
    A deploy that adds or changes a migration changes it, so CloudFormation sends Update."""

    latest: int
    """The newest version (0: the directory is empty)."""
    fingerprint: str
    schema: PoolSchema

    @classmethod
    def of(cls, migrations: Sequence[Migration], schema: PoolSchema) -> "PoolMigrations":
        """The property for a directory's migrations (at synth, from the catalog's schema:)."""
        latest = max((m.version for m in migrations), default=0)
        return cls(latest, fingerprint((m.version, m.checksum) for m in migrations), schema)

    def properties(self) -> dict[str, Any]:
        """As CloudFormation passes it (strings and lists of strings)."""
        return {
            "Latest": str(self.latest),
            "Fingerprint": self.fingerprint,
            "TenantSchemas": list(self.schema.tenant_schemas),
            "SharedTables": list(self.schema.shared_tables),
        }

    @classmethod
    def parse(cls, raw: object) -> "PoolMigrations":
        """Validate the property before any SQL, naming the field."""
        where = "resource property Migrations"
        if not isinstance(raw, Mapping):
            raise InvalidRequestError(f"{where} must be an object")
        latest = raw.get("Latest")
        if not isinstance(latest, str) or not latest.isdigit():
            raise InvalidRequestError(f"{where}.Latest must be a version number")
        digest = raw.get("Fingerprint")
        if not isinstance(digest, str) or not _FINGERPRINT.fullmatch(digest):
            raise InvalidRequestError(f"{where}.Fingerprint must be a sha256 in hex")
        schemas = raw.get("TenantSchemas")
        if (
            not isinstance(schemas, list)
            or not schemas
            or not all(isinstance(s, str) and _SCHEMA_NAME.fullmatch(s) for s in schemas)
        ):
            raise InvalidRequestError(f"{where}.TenantSchemas must be a list of schema names")
        shared = _names_property(raw, "SharedTables")
        return cls(int(latest), digest, PoolSchema(tuple(schemas), tuple(shared)))


def pool_database_properties(
    *,
    runtime_secret_arn: str,
    iam_auth: bool,
    removal_policy: RemovalPolicy,
    tenant_tables: Sequence[str] = (),
    tenant_views: Sequence[str] = (),
    verify_probes: bool = True,
    migrations: PoolMigrations | None = None,
    mode: PoolMode = "settable",
    probe_secrets: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Resource properties of the PoolDatabase, as CloudFormation passes them (`Migrations`
    only with the application's migrations, so a pool without them keeps its template; `Mode`
    for a strict pool only, absent: settable, as before the property existed; `probe_secrets`:
    the probe tenants' password secrets, strict mode without IAM auth)."""
    properties: dict[str, Any] = {
        "Kind": "PoolDatabase",
        "RuntimeSecretArn": runtime_secret_arn,
        "IamAuth": "true" if iam_auth else "false",
        "RemovalPolicy": removal_policy,
        "TenantTables": list(tenant_tables),
        "TenantViews": list(tenant_views),
        "VerifyProbes": "true" if verify_probes else "false",
    }
    if migrations is not None:
        properties["Migrations"] = migrations.properties()
    if mode != "settable":
        properties["Mode"] = mode
    if probe_secrets:
        properties["ProbePasswordSecretArns"] = dict(probe_secrets)
    return properties


def pool_tenants_properties(
    batch_id: str, entries: Sequence[Mapping[str, str]], *, mode: PoolMode = "settable"
) -> dict[str, Any]:
    """Resource properties of one PoolTenants batch (`Mode` only for a strict pool: a change
    of mode then updates every batch, which gives or takes its tenants' logins)."""
    properties: dict[str, Any] = {
        "Kind": "PoolTenants",
        "BatchId": batch_id,
        "Tenants": [dict(e) for e in entries],
    }
    if mode != "settable":
        properties["Mode"] = mode
    return properties


def _names_property(props: Mapping[str, Any], key: str) -> list[str]:
    raw = props.get(key) or []
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise InvalidRequestError(f"resource property {key} must be a list of table names")
    for name in raw:
        if not _QUALIFIED_NAME.fullmatch(name):
            raise InvalidRequestError(
                f"resource property {key}: {name[:80]!r} is not a [schema.]name identifier"
            )
    return list(raw)


def _removal_policy(raw: object, where: str) -> RemovalPolicy:
    for policy in REMOVAL_POLICIES:
        if raw == policy:
            return policy
    raise InvalidRequestError(f"{where} must be retain or destroy")


def _mode(props: Mapping[str, Any]) -> PoolMode:
    raw = props.get("Mode", "settable")
    for mode in POOL_MODES:
        if raw == mode:
            return mode
    raise InvalidRequestError(f"resource property Mode must be one of {', '.join(POOL_MODES)}")


def _secret_arn(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not raw.startswith("arn:"):
        raise InvalidRequestError(f"{where} must be a secret's ARN")
    return raw


def _password_verifier(db: AdminSession, role: str, secret_arn: str | None) -> str | None:
    """The SCRAM verifier of the password in `secret_arn` for `role` (None: IAM auth)."""
    if secret_arn is None:
        return None
    return scram_verifier(db.conn, role, read_password(secret_arn))


@dataclass(frozen=True)
class PoolDatabaseSpec:
    """Validated properties of the PoolDatabase resource."""

    runtime_secret_arn: str
    iam_auth: bool
    removal_policy: RemovalPolicy
    tenant_tables: list[str]
    tenant_views: list[str]
    verify_probes: bool = True
    """The sample schema and probe tenants `tenantctl verify` attacks through (absent: true,
    as before the property existed)."""
    migrations: PoolMigrations | None = None
    """The application's migrations the pool database must hold (absent: none)."""
    mode: PoolMode = "settable"
    probe_secrets: Mapping[str, str] = field(default_factory=dict)
    """Strict mode: probe tenant -> the secret of its login's password (absent: IAM auth)."""

    @property
    def tables_by_name(self) -> list[str]:
        """The listed tenant tables protected by name (each must exist). With migrations, a
        listed table in one of their tenant schemas is not among them: every table there is
        protected anyway (_protect_tenant_schemas), so it may also be one no file created yet."""
        if self.migrations is None:
            return list(self.tenant_tables)
        schemas = self.migrations.schema.tenant_schemas
        return [t for t in self.tenant_tables if not in_tenant_schema(t, schemas)]

    @classmethod
    def parse(cls, props: Mapping[str, Any]) -> "PoolDatabaseSpec":
        """Validate resource properties before any SQL."""
        secret = props.get("RuntimeSecretArn")
        if not isinstance(secret, str) or not secret.startswith("arn:"):
            raise InvalidRequestError("resource property RuntimeSecretArn must be an ARN")
        raw_migrations = props.get("Migrations")
        probes = props.get("ProbePasswordSecretArns") or {}
        if not isinstance(probes, Mapping) or not set(probes) <= set(PROBE_TENANT_IDS):
            raise InvalidRequestError(
                "resource property ProbePasswordSecretArns must map probe tenant ids to ARNs"
            )
        probe_secrets = {
            tenant: _secret_arn(arn, f"resource property ProbePasswordSecretArns.{tenant}")
            for tenant, arn in probes.items()
        }
        return cls(
            runtime_secret_arn=secret,
            iam_auth=bool_property(props, "IamAuth", False),
            removal_policy=_removal_policy(
                props.get("RemovalPolicy", "retain"), "resource property RemovalPolicy"
            ),
            tenant_tables=_names_property(props, "TenantTables"),
            tenant_views=_names_property(props, "TenantViews"),
            verify_probes=bool_property(props, "VerifyProbes", True),
            migrations=None if raw_migrations is None else PoolMigrations.parse(raw_migrations),
            mode=_mode(props),
            probe_secrets=probe_secrets,
        )


class PoolDatabase:
    """The pool database: roles, registry, RLS procedures, the application's migrations (with
    a Migrations property), the user's tables, and the verify probes (sample schema and probe
    tenants) unless VerifyProbes is false."""

    def validate(self, properties: Mapping[str, Any]) -> None:
        """Raise InvalidRequestError for anything wrong in the properties, before any SQL."""
        PoolDatabaseSpec.parse(properties)

    def _outcome(self, changes: list[str]) -> Outcome:
        data = {
            "DatabaseName": POOL.database,
            "RuntimeRole": POOL.runtime_role,
            "LoginRole": POOL.login_role,
            "IamUser": POOL.iam_user,
        }
        return Outcome(pool_database_physical_id(POOL.database), data, changes)

    def create(self, db: AdminSession, properties: Mapping[str, Any]) -> Outcome:
        """Create or converge the pool: roles, database, registry and policies, then the
        application's migrations, then the user's listed tables and views (which the
        migrations may be what creates). A failed migration fails the request (CloudFormation
        rolls the deploy back; the file was rolled back, the database stays where it was)."""
        spec = PoolDatabaseSpec.parse(properties)
        password = read_password(spec.runtime_secret_arn)
        hardened = postgres.harden_host(db.conn, db.settings, db.retry)
        with postgres.holding(db.conn, postgres.POOL_LOCK):
            observed = postgres.observe_pool(db.conn, db.settings, db.retry)
            require_rds_iam(spec.iam_auth, observed.rds_iam_exists)
            probe_logins = self._probe_logins(db, spec)
            if any(login.password_verifier is None for login in probe_logins):
                require_rds_iam(True, observed.rds_iam_exists)
            steps = plan_pool_converge(
                observed,
                iam_auth=spec.iam_auth,
                password_verifier=scram_verifier(db.conn, POOL.login_role, password),
                tables=(),
                views=(),
                verify_probes=spec.verify_probes,
                mode=spec.mode,
                probe_logins=probe_logins,
            )
            changes = db.run(steps)
            if spec.migrations is not None:
                changes += self._migrate(db, spec.migrations)
                changes += self._protect_tenant_schemas(db, spec.migrations.schema)
            protect = [protect_table(t) for t in spec.tables_by_name]
            changes += db.run(protect + [protect_view(v) for v in spec.tenant_views])
        return self._outcome(hardened + changes)

    @staticmethod
    def _probe_logins(db: AdminSession, spec: PoolDatabaseSpec) -> list[TenantLogin]:
        """Strict mode with the verify probes: the probe tenants' logins (the offboarded one
        disabled), with their secrets' passwords or IAM auth."""
        if spec.mode != "strict" or not spec.verify_probes:
            return []
        logins = []
        for tenant in PROBE_TENANT_IDS:
            role = tenant_names(tenant, allow_probes=True).pool_login
            verifier = _password_verifier(db, role, spec.probe_secrets.get(tenant))
            logins.append(TenantLogin(role, tenant != PROBE_TENANT_IDS[-1], verifier))
        return logins

    @staticmethod
    def _protect_tenant_schemas(db: AdminSession, schema: PoolSchema) -> list[str]:
        """Every table of the tenant schemas under the tenant policies, whoever created it (a
        migration protects its own; this takes one made by hand too), in one transaction of
        the pool database; one that cannot be protected fails the request, naming it."""
        with connect(db.settings.for_database(POOL.database), db.retry) as conn:
            try:
                with conn.transaction():
                    changes = protect_tenant_schemas(
                        conn, schema.tenant_schemas, schema.shared_tables
                    )
            except psycopg.Error as error:
                raise TenantkitError(
                    f"protecting the tables of {', '.join(schema.tenant_schemas)}: "
                    f"{first_line(error)}"
                ) from None
        for change in changes:
            log.info("%s", change)
        return changes

    @staticmethod
    def _migrate(db: AdminSession, wanted: PoolMigrations) -> list[str]:
        """Bring the pool database to `wanted`. A database that already recorded exactly those
        files (a replay, an Update that changed something else, or CloudFormation rolling back
        to an older fingerprint after a newer file failed) is left as it is: a migration is
        never reverted, and never applied twice."""
        with connect(db.settings.for_database(POOL.database), db.retry) as conn:
            applied = applied_migrations(conn)
        held = [(a.version, a.checksum) for a in applied if a.version <= wanted.latest]
        if fingerprint(held) == wanted.fingerprint:
            newer = [a.version for a in applied if a.version > wanted.latest]
            if newer:
                log.warning(
                    "%s holds versions %s, newer than this deploy's %s: kept (a rollback is a "
                    "new forward migration)",
                    POOL.database,
                    ", ".join(map(str, newer)),
                    wanted.latest,
                )
            return []
        if db.migrations_dir is None:
            raise InvalidRequestError(
                "PoolDatabase: the resource names migrations and this provisioner carries "
                "none (deploy the pool stack from a catalog with a schema: section)"
            )
        files = [m for m in load_migrations(db.migrations_dir) if m.version <= wanted.latest]
        if fingerprint((m.version, m.checksum) for m in files) != wanted.fingerprint:
            raise TenantkitError(
                f"{POOL.database}: the provisioner's migrations up to version {wanted.latest} "
                "are not the ones this resource names (its Migrations.Fingerprint): the "
                "provisioner's code and the template come from different catalogs"
            )
        result = migrate_pool(db.settings, files, wanted.schema, db.retry)
        failure = pool_failure(result)
        if failure is not None:
            raise TenantkitError(failure)
        return [f"migrated {POOL.database} to version {v}" for v in result.applied]

    def update(
        self, db: AdminSession, properties: Mapping[str, Any], old: Mapping[str, Any]
    ) -> Outcome:
        """Converge in place (new tables get protected; tables dropped from the list keep
        their policies: unprotecting a table is a deliberate act, not a side effect)."""
        kept = set(_names_property(old, "TenantTables")) - set(
            _names_property(properties, "TenantTables")
        )
        if kept:
            log.warning("no longer listed, still protected: %s", ", ".join(sorted(kept)))
        return self.create(db, properties)

    def delete(self, db: AdminSession, properties: Mapping[str, Any]) -> Outcome:
        """Retain: the application's logins disabled, data kept. Destroy: pool dropped."""
        spec = PoolDatabaseSpec.parse(properties)
        with postgres.holding(db.conn, postgres.POOL_LOCK):
            observed = postgres.observe_pool(db.conn, db.settings, db.retry)
            plan = plan_pool_destroy if spec.removal_policy == "destroy" else plan_pool_retain
            changes = db.run(plan(observed))
        return self._outcome(changes)


@dataclass(frozen=True)
class PoolTenantsSpec:
    """Validated properties of one PoolTenants batch."""

    batch_id: str
    tenants: dict[str, RemovalPolicy]
    suspended: frozenset[str] = frozenset()
    mode: PoolMode = "settable"
    password_secrets: Mapping[str, str] = field(default_factory=dict)
    """Strict mode: tenant -> the secret of its login's password (absent: IAM auth)."""

    @classmethod
    def parse(cls, props: Mapping[str, Any]) -> "PoolTenantsSpec":
        """Validate the batch: every tenant id checked before any SQL."""
        batch_id = props.get("BatchId")
        if not isinstance(batch_id, str) or not re.fullmatch(r"batch-[0-9]{2}", batch_id):
            raise InvalidRequestError("resource property BatchId must look like batch-07")
        entries = props.get("Tenants")
        if not isinstance(entries, list) or len(entries) > MAX_TENANTS_PER_BATCH:
            raise InvalidRequestError(
                f"resource property Tenants must be a list of at most {MAX_TENANTS_PER_BATCH}"
            )
        mode = _mode(props)
        tenants: dict[str, RemovalPolicy] = {}
        suspended: set[str] = set()
        secrets: dict[str, str] = {}
        for index, entry in enumerate(entries):
            where = f"resource property Tenants[{index}]"
            if not isinstance(entry, Mapping):
                raise InvalidRequestError(f"{where} must be an object with Id and RemovalPolicy")
            try:
                tenant_id = validate_tenant_id(entry.get("Id"))
            except InvalidTenantIdError as error:
                raise InvalidRequestError(f"{where}.Id: {error}") from None
            if tenant_id in tenants:
                raise InvalidRequestError(f"{where}.Id: {tenant_id!r} appears twice")
            tenants[tenant_id] = _removal_policy(
                entry.get("RemovalPolicy", "retain"), f"{where}.RemovalPolicy"
            )
            try:
                if bool_property(entry, "Suspended", False):
                    suspended.add(tenant_id)
            except InvalidRequestError:
                raise InvalidRequestError(f"{where}.Suspended must be true or false") from None
            if "PasswordSecretArn" in entry:
                if mode != "strict":
                    raise InvalidRequestError(
                        f"{where}.PasswordSecretArn: only a strict pool's tenants have logins"
                    )
                secrets[tenant_id] = _secret_arn(
                    entry["PasswordSecretArn"], f"{where}.PasswordSecretArn"
                )
        return cls(
            batch_id=batch_id,
            tenants=tenants,
            suspended=frozenset(suspended),
            mode=mode,
            password_secrets=secrets,
        )

    def register(self) -> list[Step]:
        """Steps that register the batch's tenants: active, or suspended."""
        active = [t for t in self.tenants if t not in self.suspended]
        return plan_register(active, self.batch_id) + plan_register(
            [t for t in self.tenants if t in self.suspended], self.batch_id, suspended=True
        )


def _login_of(tenant_id: str) -> str:
    return tenant_names(tenant_id).pool_login


class PoolTenants:
    """A batch of pool tenants in the registry; Update registers and offboards the difference.
    In strict mode each tenant's login follows it: enabled while it is active, disabled (its
    sessions ended) while it is suspended or offboarded, dropped when its rows are purged."""

    def validate(self, properties: Mapping[str, Any]) -> None:
        """Raise InvalidRequestError for anything wrong in the batch, before any SQL."""
        PoolTenantsSpec.parse(properties)

    def _outcome(self, spec: PoolTenantsSpec, changes: list[str]) -> Outcome:
        data = {"BatchId": spec.batch_id, "TenantCount": str(len(spec.tenants))}
        return Outcome(pool_tenants_physical_id(spec.batch_id), data, changes)

    @staticmethod
    def _check_mode(db: AdminSession, spec: PoolTenantsSpec) -> None:
        """Refuse, before any change, a batch written for a pool in the other mode (the
        PoolDatabase resource changes the mode, and is deployed before its batches)."""
        recorded = postgres.pool_mode(db.settings, db.retry)
        if recorded != spec.mode:
            raise InvalidRequestError(
                f"batch {spec.batch_id} is for a {spec.mode} pool, but the pool database is "
                f"{recorded}: the PoolDatabase resource changes the mode first"
            )

    def _remove(
        self, db: AdminSession, spec: PoolTenantsSpec, removed: Mapping[str, RemovalPolicy]
    ) -> list[str]:
        keep = [t for t, policy in removed.items() if policy == "retain"]
        purge = [t for t, policy in removed.items() if policy == "destroy"]
        batch = spec.batch_id
        logins = [_login_of(t) for t in removed]
        # Whatever the mode: a login left from a strict past goes with its tenant.
        existing = postgres.observe_logins(db.conn, logins)
        steps = plan_disable_logins(logins, existing) + plan_end_sessions(
            [login for login in logins if login in existing]
        )
        steps += plan_offboard(keep, batch)
        if purge:
            references = postgres.protected_tables(db.settings, db.retry)
            steps += plan_purge(purge, batch, references)
            steps += plan_drop_logins([_login_of(t) for t in purge], existing)
        return db.run(steps)

    def create(self, db: AdminSession, properties: Mapping[str, Any]) -> Outcome:
        """Register every tenant of the batch (re-activating offboarded ones)."""
        spec = PoolTenantsSpec.parse(properties)
        with postgres.holding(db.conn, postgres.pool_batch_lock(spec.batch_id)):
            self._check_mode(db, spec)
            changes = self._register(db, spec)
        return self._outcome(spec, changes)

    def _logins(self, db: AdminSession, spec: PoolTenantsSpec) -> list[Step]:
        """Strict mode: each tenant's login as its state says; the sessions of suspended
        tenants ended once their logins are disabled."""
        if spec.mode != "strict":
            return []
        logins = [
            TenantLogin(
                _login_of(tenant),
                tenant not in spec.suspended,
                _password_verifier(db, _login_of(tenant), spec.password_secrets.get(tenant)),
            )
            for tenant in spec.tenants
        ]
        existing = postgres.observe_logins(db.conn, [login.role for login in logins])
        if any(login.password_verifier is None for login in logins):
            require_rds_iam(True, postgres.rds_iam_exists(db.conn))
        suspended = [login.role for login in logins if not login.enabled]
        return plan_tenant_logins(logins, existing) + plan_end_sessions(suspended)

    def _register(self, db: AdminSession, spec: PoolTenantsSpec) -> list[str]:
        """Register the batch, in strict mode after giving its tenants their logins (the
        registry says active once the login works); on failure, record it (with its reason)
        for the tenants the registry does not already hold in a settled state."""
        try:
            return db.run(self._logins(db, spec) + spec.register())
        except TenantkitError as error:
            failed = plan_record(
                list(spec.tenants),
                FAILED,
                registered_by=spec.batch_id,
                cause=str(error),
                database=POOL.database,
                keep=(ACTIVE, SUSPENDED),
            )
            record_failure(db, failed)
            raise

    def update(
        self, db: AdminSession, properties: Mapping[str, Any], old: Mapping[str, Any]
    ) -> Outcome:
        """Register the batch's tenants; offboard (or purge, per their old removal policy) the
        ones no longer in it."""
        spec = PoolTenantsSpec.parse(properties)
        try:
            previous = PoolTenantsSpec.parse(old)
        except InvalidRequestError:
            previous = PoolTenantsSpec(batch_id=spec.batch_id, tenants={})
        removed = {t: p for t, p in previous.tenants.items() if t not in spec.tenants}
        with postgres.holding(db.conn, postgres.pool_batch_lock(spec.batch_id)):
            self._check_mode(db, spec)
            changes = self._register(db, spec)
            if previous.batch_id == spec.batch_id:
                changes += self._remove(db, spec, removed)
        return self._outcome(spec, changes)

    def delete(self, db: AdminSession, properties: Mapping[str, Any]) -> Outcome:
        """Offboard every tenant of the batch (retain keeps rows; destroy purges them)."""
        spec = PoolTenantsSpec.parse(properties)
        with postgres.holding(db.conn, postgres.pool_batch_lock(spec.batch_id)):
            changes = self._remove(db, spec, spec.tenants)
        return self._outcome(spec, changes)
