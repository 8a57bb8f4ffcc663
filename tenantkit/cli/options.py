"""The options several tenantctl commands share, and the choices they take."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from lambda_src.tenancy import TIERS

TierName = StrEnum("TierName", {tier: tier for tier in TIERS})  # type: ignore[misc]
"""The isolation tiers as a choice (lambda_src.tenancy.TIERS)."""


class Provision(StrEnum):
    """Where onboarding and offboarding provision."""

    local = "local"
    aws = "aws"
    none = "none"


class RegistrySource(StrEnum):
    """Where `list` and `status` read the registries."""

    local = "local"
    aws = "aws"


class Approval(StrEnum):
    """cdk deploy's --require-approval."""

    never = "never"
    any_change = "any-change"
    broadening = "broadening"


CatalogOption = Annotated[
    Path, typer.Option("--catalog", "-c", help="Tenant catalog file.", show_default=True)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]
StateDirOption = Annotated[
    Path, typer.Option(help="Where the embedded PostgreSQL and local secrets are kept.")
]
TierOption = Annotated[TierName, typer.Option("--tier", help=f"{', '.join(TIERS)}.")]
ProvisionOption = Annotated[
    Provision,
    typer.Option(
        "--provision",
        help="local: on the embedded PostgreSQL; aws: cdk deploy the stacks it needs; "
        "none: edit the catalog only.",
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the cdk commands instead of running them.")
]
ApprovalOption = Annotated[
    Approval,
    typer.Option(
        "--require-approval",
        help="Passed to cdk deploy; `never` for pipelines whose environment is gated.",
    ),
]
RegistrySourceOption = Annotated[
    RegistrySource,
    typer.Option(
        "--provision",
        help="local: the embedded PostgreSQL's registries; aws: each deployed host's registry, "
        "read as its admin (secret tenantkit/<host>/admin, TLS verify-full).",
    ),
]
RegionOption = Annotated[
    str | None,
    typer.Option(
        "--region", help="AWS Region of the fleet (default: AWS_REGION, AWS_DEFAULT_REGION)."
    ),
]
ConnectTimeoutOption = Annotated[
    int,
    typer.Option(
        "--connect-timeout",
        min=2,
        max=60,
        help="Seconds to wait for each host (--provision aws).",
    ),
]
OffboardOption = Annotated[
    list[str] | None,
    typer.Option(
        "--offboard",
        help="A tenant this run offboards (already gone from the catalog): the deploy may drop "
        "it from the stack that holds it. Repeat for several.",
    ),
]
