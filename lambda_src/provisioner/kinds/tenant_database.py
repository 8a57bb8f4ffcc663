"""TenantDatabase: a tenant's own database and roles (bridge and silo tiers)."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...core.connection import scram_verifier
from ...core.errors import InvalidRequestError, TenantkitError
from ...core.secrets import read_password
from ...core.steps import Step
from ...tenancy import InvalidTenantIdError, TenantNames, tenant_names
from .. import postgres
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
from .base import (
    AdminSession,
    Outcome,
    RemovalPolicy,
    bool_property,
    int_property,
    record_failure,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantDatabaseSpec:
    """Validated properties of a TenantDatabase resource."""

    names: TenantNames
    connection_limit: int
    statement_timeout_ms: int
    removal_policy: RemovalPolicy
    iam_auth: bool
    password_secret_arn: str | None
    suspended: bool = False

    @classmethod
    def parse(cls, props: Mapping[str, Any]) -> "TenantDatabaseSpec":
        """Validate resource properties; the tenant id is checked before anything else."""
        try:
            names = tenant_names(props.get("TenantId"))  # type: ignore[arg-type]
        except InvalidTenantIdError as error:
            raise InvalidRequestError(f"resource property TenantId: {error}") from None
        removal = props.get("RemovalPolicy", "retain")
        if removal not in ("retain", "destroy"):
            raise InvalidRequestError("resource property RemovalPolicy must be retain or destroy")
        secret = props.get("PasswordSecretArn") or None
        if secret is not None and (not isinstance(secret, str) or not secret.startswith("arn:")):
            raise InvalidRequestError("resource property PasswordSecretArn must be an ARN")
        return cls(
            names=names,
            connection_limit=int_property(props, "ConnectionLimit", 1, 5000),
            statement_timeout_ms=int_property(props, "StatementTimeoutMs", 0, 86_400_000),
            removal_policy=removal,
            iam_auth=bool_property(props, "IamAuth", False),
            password_secret_arn=secret,
            suspended=bool_property(props, "Suspended", False),
        )


def tenant_database_properties(
    *,
    tenant_id: str,
    connection_limit: int,
    statement_timeout_ms: int,
    removal_policy: RemovalPolicy,
    iam_auth: bool,
    password_secret_arn: str,
    suspended: bool = False,
) -> dict[str, str]:
    """Resource properties of a TenantDatabase, as CloudFormation passes them (all strings).

    The TenantDatabase construct and tenantctl's local mode both build them here. `Suspended`
    appears only for a suspended tenant, so other tenants' templates do not change.
    """
    suspension = {"Suspended": "true"} if suspended else {}
    return {
        "Kind": "TenantDatabase",
        "TenantId": tenant_id,
        "ConnectionLimit": str(connection_limit),
        "StatementTimeoutMs": str(statement_timeout_ms),
        "RemovalPolicy": removal_policy,
        "IamAuth": "true" if iam_auth else "false",
        "PasswordSecretArn": password_secret_arn,
        **suspension,
    }


def _physical_id(spec: TenantDatabaseSpec) -> str:
    """`tenantdb/<tenant id>`: the resource's physical id, also what the registry says
    registered the tenant."""
    return f"tenantdb/{spec.names.tenant_id}"


class TenantDatabase:
    """A tenant's database, its NOLOGIN owner role, login role and optional IAM user."""

    def physical_id(self, properties: Mapping[str, Any]) -> str:
        """`tenantdb/<tenant id>`: a new tenant id means a new resource."""
        return _physical_id(TenantDatabaseSpec.parse(properties))

    def _outcome(self, spec: TenantDatabaseSpec, changes: list[str]) -> Outcome:
        names = spec.names
        data = {
            "TenantId": names.tenant_id,
            "DatabaseName": names.database,
            "OwnerRole": names.owner_role,
            "LoginRole": names.login_role,
            "IamUser": names.iam_user if spec.iam_auth else "",
        }
        return Outcome(_physical_id(spec), data, changes)

    def create(self, db: AdminSession, properties: Mapping[str, Any]) -> Outcome:
        """Create or converge the tenant; the password is read here, never carried in events."""
        spec = TenantDatabaseSpec.parse(properties)
        password = read_password(spec.password_secret_arn) if spec.password_secret_arn else None
        hardened = postgres.harden_host(db.conn, db.settings, db.retry)
        hardened += postgres.ensure_registry(db.conn, db.settings, db.retry)
        with postgres.tenant_lock(db.conn, spec.names.tenant_id):
            observed = postgres.observe_tenant(db.conn, spec.names)
            require_rds_iam(spec.iam_auth, observed.rds_iam_exists)
            verifier = (
                scram_verifier(db.conn, spec.names.login_role, password)
                if password is not None
                else None
            )
            steps = plan_converge(
                spec.names,
                observed,
                connection_limit=spec.connection_limit,
                statement_timeout_ms=spec.statement_timeout_ms,
                iam_auth=spec.iam_auth,
                password_verifier=verifier,
                suspended=spec.suspended,
            )
            final = SUSPENDED if spec.suspended else ACTIVE
            changes = self._run_recorded(db, spec, steps, PROVISIONING, final)
        return self._outcome(spec, hardened + changes)

    def _record(self, db: AdminSession, spec: TenantDatabaseSpec, status: str, **kw: str) -> None:
        step = plan_record([spec.names.tenant_id], status, registered_by=_physical_id(spec), **kw)
        db.run([step])

    def _run_recorded(
        self,
        db: AdminSession,
        spec: TenantDatabaseSpec,
        steps: list[Step],
        working: str,
        final: str,
    ) -> list[str]:
        """Run a plan, recording `working` while it changes something, `final` when it is done
        and `failed` with the reason when a step fails."""
        try:
            if any(step.changes for step in steps):
                self._record(db, spec, working)
            changes = db.run(steps)
        except TenantkitError as error:
            failed = plan_record(
                [spec.names.tenant_id], FAILED, registered_by=_physical_id(spec), cause=str(error)
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
        with postgres.tenant_lock(db.conn, spec.names.tenant_id):
            observed = postgres.observe_tenant(db.conn, spec.names)
            if spec.removal_policy == "destroy":
                if not observed.login_enabled and not observed.database_exists:
                    return self._outcome(spec, [])  # nothing left: a replay
                steps = plan_destroy(spec.names, observed)
                changes = self._run_recorded(db, spec, steps, OFFBOARDING, OFFBOARDED)
                forget = plan_forget([spec.names.tenant_id], registered_by=_physical_id(spec))
                db.run([forget])
            else:
                steps = plan_retain(spec.names, observed)
                changes = self._run_recorded(db, spec, steps, OFFBOARDING, OFFBOARDED)
        return self._outcome(spec, changes)
