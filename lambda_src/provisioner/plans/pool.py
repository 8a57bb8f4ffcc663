"""The pool tier's plans: the pool database and its roles, and the tenants in its registry.

The policies and procedures are in pool_rls, the verify probes in pool_probes, strict mode's
tenant logins in pool_logins; the roles: a NOLOGIN owner owns every table, the application logs
in as members of the NOLOGIN runtime group (not the owner, NOBYPASSRLS, DML only, no TEMP, no
CREATE anywhere): the shared runtime logins, and in strict mode each tenant's own login; a
NOLOGIN maintainer has the only other policy, used by the provisioner alone.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from psycopg import sql

from ...core.steps import Step
from ...tenancy import POOL, PROBE_TENANT_IDS, PoolMode, tenant_names
from .access import (
    act_as,
    create_role,
    disable_logins,
    drop_database,
    drop_roles,
    end_sessions_of,
    iam_user,
    lock_down_schema_public,
    login_role,
    revoke_public_access,
    set_password,
)
from .lifecycle import (
    ACTIVE,
    OFFBOARDED,
    OFFBOARDING,
    SUSPENDED,
    plan_forget,
    plan_mark,
    plan_record,
    plan_registry,
)
from .pool_logins import (
    TenantLogin,
    plan_disable_logins,
    plan_drop_logins,
    plan_end_sessions,
    plan_tenant_logins,
)
from .pool_probes import plan_probes, plan_probes_removal
from .pool_rls import (
    plan_mode,
    plan_rls,
    pool_sql,
    protect_table,
    protect_view,
    purge_order,
    split_qualified_name,
)


@dataclass(frozen=True)
class ObservedPool:
    """What already exists of the pool: its roles, whether its database exists, its mode."""

    login_enabled: Mapping[str, bool] = field(default_factory=dict)
    database_exists: bool = False
    rds_iam_exists: bool = False
    mode: PoolMode | None = None
    """The mode the pool database records (settable for one made before modes; None: no
    pool database yet)."""
    tenant_logins: Mapping[str, bool] = field(default_factory=dict)
    """Strict mode's tenant logins that exist (members of the runtime group) -> can log in."""


def plan_pool_converge(
    observed: ObservedPool,
    *,
    iam_auth: bool,
    password_verifier: str | None,
    tables: Sequence[str],
    views: Sequence[str],
    verify_probes: bool,
    mode: PoolMode = "settable",
    probe_logins: Sequence[TenantLogin] = (),
) -> list[Step]:
    """Steps that bring the pool database, roles, registry, policies and grants to the desired
    state from any start; `tables`/`views` are the user's own, protected like the sample's.
    `verify_probes`: the sample schema and probe tenants exist (true) or are removed (false).
    `mode`: the policies' (pool_rls); a pool in another mode is converted in one transaction.
    Strict: `probe_logins` are the probe tenants' logins. Settable: every tenant login left
    from a strict past is disabled and its sessions ended (kept: a change back enables it)."""
    roles = observed.login_enabled
    steps = [
        *create_role(POOL.owner_role, roles, login=False),
        *create_role(POOL.maintainer_role, roles, login=False),
        *create_role(POOL.runtime_role, roles, login=False),
    ]
    logins = [POOL.login_role, POOL.iam_user] if iam_auth else [POOL.login_role]
    steps += login_role(POOL.login_role, roles, enabled=True)
    steps += iam_user(POOL.iam_user, roles, iam_auth=iam_auth)
    steps += [
        Step(
            f"make {login} a member of {POOL.runtime_role}",
            pool_sql("GRANT {runtime} TO {login}", login=sql.Identifier(login)),
            changes=False,
        )
        for login in logins
    ]
    if password_verifier is not None:
        steps.append(set_password(POOL.login_role, password_verifier))
    steps.append(act_as(POOL.owner_role, POOL.maintainer_role))
    if not observed.database_exists:
        steps.append(
            Step(
                f"create database {POOL.database}",
                pool_sql("CREATE DATABASE {db} OWNER {owner}"),
                transactional=False,
            )
        )
    steps += [
        revoke_public_access(POOL.database),
        # CONNECT only: no TEMP, so the application cannot create temporary functions.
        Step(
            f"grant CONNECT on {POOL.database} to {POOL.runtime_role}",
            pool_sql("GRANT CONNECT ON DATABASE {db} TO {runtime}"),
            changes=False,
        ),
        *lock_down_schema_public(POOL.database, POOL.owner_role),
        *plan_registry(database=POOL.database, owner=POOL.owner_role),
        *plan_rls(mode),
        *plan_mode(mode, observed.mode),
        *(protect_table(table) for table in tables),
        *(protect_view(view) for view in views),
    ]
    steps += plan_probes() if verify_probes else plan_probes_removal()
    if not verify_probes:
        probes = [tenant_names(t, allow_probes=True).pool_login for t in PROBE_TENANT_IDS]
        steps += plan_drop_logins(probes, observed.tenant_logins)
    if mode == "strict":
        steps += plan_tenant_logins(probe_logins, observed.tenant_logins)
        gone = [login.role for login in probe_logins if not login.enabled]
    else:
        gone = list(observed.tenant_logins)
        steps += plan_disable_logins(gone, observed.tenant_logins)
    return steps + plan_end_sessions(gone)


def plan_pool_retain(observed: ObservedPool) -> list[Step]:
    """Offboard the whole pool keeping its data: logins disabled (the shared ones and every
    tenant's), sessions ended."""
    logins = (POOL.login_role, POOL.iam_user)
    tenant_logins = list(observed.tenant_logins)
    return [
        *disable_logins(logins, observed.login_enabled),
        *plan_disable_logins(tenant_logins, observed.tenant_logins),
        end_sessions_of(logins, "the pool application"),
        *plan_end_sessions(tenant_logins),
    ]


def plan_pool_destroy(observed: ObservedPool) -> list[Step]:
    """Drop the pool database and roles (the tenants' logins too): only with an explicit
    destroy removal policy."""
    steps = plan_pool_retain(observed)
    if observed.database_exists:
        steps += drop_database(POOL.database, POOL.owner_role)
    steps += plan_drop_logins(list(observed.tenant_logins), observed.tenant_logins)
    return steps + drop_roles(role for role in POOL.roles if role in observed.login_enabled)


def plan_register(tenant_ids: Sequence[str], batch: str, *, suspended: bool = False) -> list[Step]:
    """Register (or re-activate) tenants as active, or as suspended (the policy admits neither
    a suspended tenant nor an offboarded one); `batch` records which resource registered them."""
    if not tenant_ids:
        return []
    status = SUSPENDED if suspended else ACTIVE
    return [plan_record(tenant_ids, status, registered_by=batch, database=POOL.database)]


def plan_offboard(tenant_ids: Sequence[str], batch: str) -> list[Step]:
    """Mark tenants offboarded (their rows stay; the policy no longer admits them). Only rows
    this batch registered: a tenant that moved to another batch is left alone."""
    if not tenant_ids:
        return []
    return [plan_mark(tenant_ids, OFFBOARDED, registered_by=batch, database=POOL.database)]


def plan_purge(
    tenant_ids: Sequence[str], batch: str, references: Mapping[str, Sequence[str]]
) -> list[Step]:
    """Delete the tenants' rows from every protected table (referencing tables first), then
    their registry rows: only for tenants whose removal policy says destroy. The deletes run
    as the maintainer; a replay after a failure deletes what is left."""
    if not tenant_ids:
        return []
    offboarding = plan_mark(tenant_ids, OFFBOARDING, registered_by=batch, database=POOL.database)
    steps = [
        Step(
            f"delete the rows of {len(tenant_ids)} pool tenant(s) from {table}",
            sql.SQL("DELETE FROM {} WHERE tenant_id = ANY(%s)").format(
                sql.SQL(".").join(sql.Identifier(part) for part in split_qualified_name(table))
            ),
            (list(tenant_ids),),
            database=POOL.database,
            role=POOL.maintainer_role,
            changes_only_if_rows=True,
        )
        for table in purge_order(references)
    ]
    return [
        offboarding,
        *steps,
        plan_mark(tenant_ids, OFFBOARDED, registered_by=batch, database=POOL.database),
        plan_forget(tenant_ids, registered_by=batch, database=POOL.database),
    ]
