"""What a catalog consumes of an AWS account's default quotas, and where it goes beyond them.

Default values as documented by AWS (archive, 2023); accounts can have them raised, and AWS may
change them. Used by synth-time annotations (and by `tenantctl plan`).
"""

from dataclasses import dataclass

from lambda_src.tenancy import TIERS_ON_SHARED_CLUSTERS

from .catalog import Catalog
from .deployment import EVERY_STACK

DEFAULT_QUOTAS = {
    "VPCs per Region": 5,
    "DB clusters": 40,
    "DB instances (Aurora instances count)": 40,
    "CloudFormation stacks": 2000,
    "IAM roles": 1000,
}
ROLES_PER_HOST = 7
"""Provisioner, its framework, rotator, VPC flow logs, default-security-group restriction,
enhanced monitoring, AWS Backup."""


@dataclass(frozen=True)
class QuotaUse:
    """How much of one quota the catalog uses."""

    quota: str
    used: int
    default: int

    @property
    def exceeded(self) -> bool:
        """True when the default quota is not enough."""
        return self.used > self.default

    def describe(self) -> str:
        """`VPCs per Region: 7 of 5 (raise the quota)`."""
        verdict = " (raise the quota before deploying)" if self.exceeded else ""
        return f"{self.quota}: {self.used} of {self.default}{verdict}"


def silo_consumption(engine: str, multi_az: bool) -> str:
    """One silo tenant's share, for its stack's annotation."""
    database = (
        f"1 DB cluster and {2 if multi_az else 1} DB instance(s)"
        if engine == "aurora"
        else f"1 DB instance{' (Multi-AZ)' if multi_az else ''}"
    )
    return (
        f"this silo tenant uses 1 VPC (default quota 5 per Region), {database} (default 40 "
        f"each), {ROLES_PER_HOST + 1} IAM roles, 1 KMS key, 1 backup vault, 1 interface "
        "endpoint, no NAT gateway and no Elastic IP"
    )


def quota_use(catalog: Catalog) -> list[QuotaUse]:
    """The catalog's use of each default quota."""
    hosts = [t.tier for t in catalog.tenants if t.tier == "silo"]
    shared = [tier for tier in TIERS_ON_SHARED_CLUSTERS if catalog.in_tier(tier)]
    silos = catalog.in_tier("silo")
    aurora_silos = [t for t in silos if t.silo and t.silo.engine == "aurora"]
    # a shared cluster's writer and its readers
    shared_instances = {
        "bridge": 1 + catalog.clusters.bridge.readers,
        "pool": 1 + catalog.clusters.pool.readers,
    }
    instances = (
        sum(shared_instances[tier] for tier in shared)
        + sum(1 + (1 if t.silo and t.silo.multi_az else 0) for t in aurora_silos)
        + sum(1 for t in silos if t.silo and t.silo.engine == "rds")
    )
    stacks = len(EVERY_STACK.stacks(catalog))
    return [
        QuotaUse("VPCs per Region", len(hosts) + len(shared), DEFAULT_QUOTAS["VPCs per Region"]),
        QuotaUse("DB clusters", len(shared) + len(aurora_silos), DEFAULT_QUOTAS["DB clusters"]),
        QuotaUse(
            "DB instances (Aurora instances count)",
            instances,
            DEFAULT_QUOTAS["DB instances (Aurora instances count)"],
        ),
        QuotaUse("CloudFormation stacks", stacks, DEFAULT_QUOTAS["CloudFormation stacks"]),
        QuotaUse(
            "IAM roles",
            ROLES_PER_HOST * (len(hosts) + len(shared)) + len(silos),
            DEFAULT_QUOTAS["IAM roles"],
        ),
    ]
