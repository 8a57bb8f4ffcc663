"""TenantDatabase: a tenant's own database and roles (bridge and silo tiers)."""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...core.connection import scram_verifier
from ...core.errors import InvalidRequestError, TenantkitError
from ...core.secrets import read_password
from ...core.steps import Step
from ...tenancy import InvalidTenantIdError, TenantNames, tenant_names
from .. import postgres
from ..events import tenant_database_physical_id
from ..migrate import migrate_database
from ..plans.access import require_rds_iam
from ..plans.lifecycle import (
    ACTIVE,
    FAILED,
    OFFBOARDED,
    OFFBOARDING,
    PROVISIONING,
    SUSPENDED,
    plan_forget,
    plan_record,
)
from ..plans.tenant_database import plan_converge, plan_destroy, plan_retain
from ..settings import TenantDatabaseSettings
from .base import AdminSession, Outcome, record_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantDatabaseSpec:
    """Validated properties of a TenantDatabase resource: the tenant, its settings and the
    secret its login's password is read from."""

    names: TenantNames
    settings: TenantDatabaseSettings
    password_secret_arn: str | None

    @classmethod
    def parse(cls, props: Mapping[str, Any]) -> "TenantDatabaseSpec":
        """Validate resource properties; the tenant id is checked before anything else."""
        try:
            names = tenant_names(props.get("TenantId"))  # type: ignore[arg-type]
        except InvalidTenantIdError as error:
            raise InvalidRequestError(f"resource property TenantId: {error}") from None
        secret = props.get("PasswordSecretArn") or None
        if secret is not None and (not isinstance(secret, str) or not secret.startswith("arn:")):
            raise InvalidRequestError("resource property PasswordSecretArn must be an ARN")
        return cls(names, TenantDatabaseSettings.from_properties(props), secret)

    @property
    def physical_id(self) -> str:
        """`tenantdb/<tenant id>`; also what the registry says registered the tenant."""
        return tenant_database_physical_id(self.names.tenant_id)


class TenantDatabase:
    """A tenant's database, its NOLOGIN owner role and objects role, login role and optional
    IAM user."""

    def validate(self, properties: Mapping[str, Any]) -> None:
        """Raise InvalidRequestError for anything wrong in the properties, before any SQL."""
        TenantDatabaseSpec.parse(properties)

    def _outcome(self, spec: TenantDatabaseSpec, changes: list[str]) -> Outcome:
        names = spec.names
        data = {
            "TenantId": names.tenant_id,
            "DatabaseName": names.database,
            "OwnerRole": names.owner_role,
            "ObjectsRole": names.objects_role,
            "LoginRole": names.login_role,
            "IamUser": names.iam_user if spec.settings.iam_auth else "",
        }
        return Outcome(spec.physical_id, data, changes)

    def create(self, db: AdminSession, properties: Mapping[str, Any]) -> Outcome:
        """Create or converge the tenant; the password is read here, never carried in events."""
        spec = TenantDatabaseSpec.parse(properties)
        password = read_password(spec.password_secret_arn) if spec.password_secret_arn else None
        hardened = postgres.harden_host(db.conn, db.settings, db.retry)
        hardened += postgres.ensure_registry(db.conn, db.settings, db.retry)
        with postgres.holding(db.conn, postgres.tenant_lock(spec.names.tenant_id)):
            observed = postgres.observe_tenant(db.conn, spec.names)
            require_rds_iam(spec.settings.iam_auth, observed.rds_iam_exists)
            verifier = (
                scram_verifier(db.conn, spec.names.login_role, password)
                if password is not None
                else None
            )
            steps = plan_converge(spec.names, observed, spec.settings, password_verifier=verifier)
            final = SUSPENDED if spec.settings.suspended else ACTIVE
            changes = self._run_recorded(
                db, spec, steps, PROVISIONING, final, then=self._migrate(db, spec)
            )
        return self._outcome(spec, hardened + changes)

    @staticmethod
    def _migrate(db: AdminSession, spec: TenantDatabaseSpec) -> Callable[[], list[str]] | None:
        """With the application's migrations: bring the database to the newest before the
        tenant is recorded active (a failure leaves it `failed` with the file and the server's
        reason; the next Create or Update resumes where it stopped)."""
        migrations_dir = db.migrations_dir
        if migrations_dir is None:
            return None

        def migrate() -> list[str]:
            result = migrate_database(spec.names, migrations_dir, db.settings, db.retry)
            return [f"migrated {spec.names.database} to version {v}" for v in result.applied]

        return migrate

    def _record(self, db: AdminSession, spec: TenantDatabaseSpec, status: str, **kw: str) -> None:
        step = plan_record([spec.names.tenant_id], status, registered_by=spec.physical_id, **kw)
        db.run([step])

    def _run_recorded(
        self,
        db: AdminSession,
        spec: TenantDatabaseSpec,
        steps: list[Step],
        working: str,
        final: str,
        then: Callable[[], list[str]] | None = None,
    ) -> list[str]:
        """Run a plan (and `then`, the migrations), recording `working` while it changes
        something, `final` when it is done and `failed` with the reason when a step fails."""
        try:
            if any(step.changes for step in steps):
                self._record(db, spec, working)
            changes = db.run(steps)
            if then is not None:
                changes += then()
        except TenantkitError as error:
            failed = plan_record(
                [spec.names.tenant_id], FAILED, registered_by=spec.physical_id, cause=str(error)
            )
            record_failure(db, failed)
            raise
        self._record(db, spec, final)
        return changes

    def update(
        self, db: AdminSession, properties: Mapping[str, Any], old: Mapping[str, Any]
    ) -> Outcome:
        """Settings converge in place. A new tenant id is a new resource: CloudFormation then
        sends Delete for the old physical id, which keeps its data unless it said destroy."""
        if old.get("TenantId") != properties.get("TenantId"):
            log.info(
                "tenant id changed from %r to %r: creating the new tenant; the old one is "
                "offboarded by the Delete CloudFormation sends next",
                old.get("TenantId"),
                properties.get("TenantId"),
            )
        return self.create(db, properties)

    def delete(self, db: AdminSession, properties: Mapping[str, Any]) -> Outcome:
        """Retain: logins disabled, sessions ended. Destroy: database and roles dropped."""
        spec = TenantDatabaseSpec.parse(properties)
        postgres.ensure_registry(db.conn, db.settings, db.retry)
        with postgres.holding(db.conn, postgres.tenant_lock(spec.names.tenant_id)):
            observed = postgres.observe_tenant(db.conn, spec.names)
            if spec.settings.removal_policy == "destroy":
                if not observed.login_enabled and not observed.database_exists:
                    return self._outcome(spec, [])  # nothing left: a replay
                steps = plan_destroy(spec.names, observed)
                changes = self._run_recorded(db, spec, steps, OFFBOARDING, OFFBOARDED)
                forget = plan_forget([spec.names.tenant_id], registered_by=spec.physical_id)
                db.run([forget])
            else:
                steps = plan_retain(spec.names, observed)
                changes = self._run_recorded(db, spec, steps, OFFBOARDING, OFFBOARDED)
        return self._outcome(spec, changes)
