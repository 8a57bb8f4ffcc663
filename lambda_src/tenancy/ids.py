"""The tenant-id rules, checked before a tenant id reaches SQL, IAM or CloudFormation.

A tenant id is a short lowercase slug: it must be usable, after derivation, as a PostgreSQL
identifier (at most 63 bytes), an IAM session-tag value, a Secrets Manager name segment and a
CloudFormation stack-name segment. Underscores are not allowed, so the derivation that turns
hyphens into underscores (names.py) can never map two tenant ids onto one name.
"""

import re

from .tiers import TIERS

MAX_TENANT_ID_LENGTH = 32
MIN_TENANT_ID_LENGTH = 2

TENANT_ID_PATTERN = r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$"
"""The tenant-id shape as a regular expression (also the pool registry's CHECK constraint)."""
_TENANT_ID = re.compile(TENANT_ID_PATTERN)

# Names that mean something to PostgreSQL, RDS, AWS or tenantkit itself. Derived names carry a
# prefix so most of these could not collide, but a tenant called "postgres" or "rdsadmin" is a
# mistake or a probe, and either way it is refused. The tier names are reserved too: a tenant
# "pool" would share its secret name (tenantkit/pool/app) with the pool's runtime login, and
# `tenantctl deploy <tier>` reads a tier name as the tier.
RESERVED_TENANT_IDS = frozenset(
    {
        *TIERS,
        "admin",
        "all",
        "aws",
        "current-user",
        "default",
        "master",
        "none",
        "pg",
        "postgres",
        "public",
        "rds",
        "rdsadmin",
        "rdsrepladmin",
        "rds-superuser",
        "root",
        "session-user",
        "superuser",
        "system",
        "template0",
        "template1",
        "tenant",
        "tenantkit",
        "user",
    }
)
RESERVED_TENANT_ID_PREFIXES = ("tenantkit-", "pg-", "rds-", "aws-")

PROBE_TENANT_IDS = ("tenantkit-probe-a", "tenantkit-probe-b", "tenantkit-probe-gone")
"""Synthetic tenants `tenantctl verify` attacks with: in the reserved `tenantkit-` namespace, so
no catalog tenant can be one of them. The last one is registered as offboarded."""


class InvalidTenantIdError(ValueError):
    """A tenant id broke the tenant-id rules; the message names the value and the rule."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_tenant_id(value: object, *, allow_probes: bool = False) -> str:
    """Return `value` if it is a valid tenant id, else raise InvalidTenantIdError saying why.

    `allow_probes` also admits PROBE_TENANT_IDS (for the verify suite's runtime connections).
    """
    if not isinstance(value, str):
        raise InvalidTenantIdError(
            f"tenant id {_shown(value)} must be a string, not {type(value).__name__}"
        )
    if not value.isascii():
        raise InvalidTenantIdError(
            f"tenant id {_shown(value)} must be ASCII: lowercase letters, digits and hyphens"
        )
    if not MIN_TENANT_ID_LENGTH <= len(value) <= MAX_TENANT_ID_LENGTH:
        raise InvalidTenantIdError(
            f"tenant id {_shown(value)} must be {MIN_TENANT_ID_LENGTH} to "
            f"{MAX_TENANT_ID_LENGTH} characters long, not {len(value)}"
        )
    if not _TENANT_ID.fullmatch(value):
        raise InvalidTenantIdError(
            f"tenant id {_shown(value)} must start with a lowercase letter and contain only "
            "lowercase letters, digits and single hyphens between them"
        )
    if allow_probes and value in PROBE_TENANT_IDS:
        return value
    if value in RESERVED_TENANT_IDS or value.startswith(RESERVED_TENANT_ID_PREFIXES):
        raise InvalidTenantIdError(
            f"tenant id {_shown(value)} is reserved (PostgreSQL, RDS, AWS or tenantkit use it)"
        )
    return value
