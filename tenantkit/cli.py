"""tenantctl: the tenantkit command line (Typer + Rich).

Exit codes: 0 success; 1 provisioning or isolation failure; 2 invalid input (catalog, tenant id,
arguments); 3 local environment problem (PostgreSQL binaries missing, server would not start).
"""

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lambda_src.tenancy import InvalidTenantIdError, tenant_names

from .catalog import Catalog, CatalogError, load_catalog
from .embedded_pg import EmbeddedPostgres, EmbeddedPostgresError
from .local import IsolationReport, ProvisionResult, check_isolation, provision_tenant_databases
from .local_aws import local_aws

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_ENVIRONMENT = 3

app = typer.Typer(
    help="tenantkit: tenant isolation tiers for PostgreSQL on AWS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Piped output (make, CI logs) gets a fixed width rather than Rich's 80-column fallback.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

CatalogOption = Annotated[
    Path, typer.Option("--catalog", "-c", help="Tenant catalog file.", show_default=True)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]


def _load(catalog: Path) -> Catalog:
    try:
        return load_catalog(catalog)
    except CatalogError as error:
        err.print(f"[red]invalid catalog[/red]\n{error}", markup=True, highlight=False)
        raise typer.Exit(EXIT_INVALID) from None


@app.command()
def validate(catalog: CatalogOption = Path("tenants.yaml"), as_json: JsonOption = False) -> None:
    """Check the tenant catalog and print its tenants."""
    loaded = _load(catalog)
    if as_json:
        print(json.dumps({"tenants": [t.model_dump() for t in loaded.tenants]}))
        return
    out.print(f"{catalog}: {len(loaded.tenants)} tenants, valid")


@app.command()
def names(tenant_id: str, as_json: JsonOption = False) -> None:
    """Show every physical name derived from a tenant id."""
    try:
        derived = tenant_names(tenant_id)
    except InvalidTenantIdError as error:
        err.print(f"[red]invalid tenant id[/red]: {error}", highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    fields = {k: v for k, v in vars(derived).items()}
    if as_json:
        print(json.dumps(fields))
        return
    for key, value in fields.items():
        out.print(f"{key:16} {value}", highlight=False)


@app.command()
def run(
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: Annotated[
        Path, typer.Option(help="Where the embedded PostgreSQL keeps its data.")
    ] = Path(".tenantkit"),
    keep_running: Annotated[
        bool, typer.Option(help="Leave the embedded server running and print how to reach it.")
    ] = False,
    as_json: JsonOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every SQL step.")] = False,
) -> None:
    """Provision the catalog's bridge and silo tenants on the embedded PostgreSQL, then prove
    each tenant's login reaches its own database and is refused by every other one."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the local Secrets Manager's access log
    loaded = _load(catalog)
    tenants = [t for t in loaded.tenants if t.tier in ("bridge", "silo")]
    try:
        pg = EmbeddedPostgres(state_dir / "pg")
        started = time.perf_counter()
        server = pg.start()
        start_seconds = time.perf_counter() - started
    except EmbeddedPostgresError as error:
        err.print(f"[red]embedded PostgreSQL[/red]: {error}", highlight=False)
        raise typer.Exit(EXIT_ENVIRONMENT) from None
    try:
        with local_aws():
            results = provision_tenant_databases(tenants, server)
            provisioned = [r.tenant for r in results if r.ok]
            isolation = check_isolation(provisioned, server)
    finally:
        if not keep_running:
            pg.stop()

    ok = all(r.ok for r in results) and isolation.ok
    if as_json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "server": {"host": server.host, "port": server.port},
                    "tenants": [
                        {
                            "id": r.tenant.id,
                            "tier": r.tenant.tier,
                            "database": r.tenant.names.database,
                            "roles": [r.tenant.names.owner_role, r.tenant.names.login_role]
                            + ([r.tenant.names.iam_user] if r.tenant.iam_auth else []),
                            "status": "ready" if r.ok else "failed",
                            "changes": r.changes,
                            "seconds": round(r.seconds, 4),
                            "error": r.error,
                        }
                        for r in results
                    ],
                    "isolation": {
                        "own_database_ok": len(isolation.own_ok),
                        "own_database_failed": isolation.own_failed,
                        "cross_tenant_refused": isolation.cross_refused,
                        "cross_tenant_not_refused": isolation.cross_allowed,
                    },
                }
            )
        )
    else:
        _print_summary(results, isolation, server.port, start_seconds)
        if keep_running:
            out.print(
                f"server left running on 127.0.0.1:{server.port} (TLS CA: {server.ca_cert}); "
                f"stop it with: pg_ctl stop -D {pg.data_dir}",
                highlight=False,
            )
    if not ok:
        raise typer.Exit(EXIT_FAILED)


def _print_summary(
    results: list[ProvisionResult], isolation: IsolationReport, port: int, start_seconds: float
) -> None:
    table = Table(title=f"tenants on the embedded PostgreSQL (127.0.0.1:{port})")
    for column in ("tenant", "tier", "database", "roles", "status", "changes", "time"):
        table.add_column(column, justify="right" if column in ("changes", "time") else "left")
    for r in results:
        names = r.tenant.names
        roles = [names.owner_role, names.login_role] + (
            [names.iam_user] if r.tenant.iam_auth else []
        )
        table.add_row(
            r.tenant.id,
            r.tenant.tier,
            names.database,
            ", ".join(role.removeprefix(names.database + "_") for role in roles),
            "[green]ready[/green]" if r.ok else f"[red]failed[/red]: {r.error}",
            str(r.changes) if r.ok else "-",
            f"{r.seconds * 1000:.0f} ms",
        )
    out.print(table)
    out.print("roles are <database>_<suffix>, e.g. tenant_acme_app", highlight=False)
    out.print(f"embedded server ready in {start_seconds * 1000:.0f} ms", highlight=False)
    if isolation.ok:
        out.print(
            f"[green]isolation[/green]: {len(isolation.own_ok)} logins reached their own "
            f"database; {isolation.cross_refused} cross-tenant connections refused",
            highlight=False,
        )
    else:
        for failure in isolation.own_failed:
            out.print(f"[red]own database unreachable[/red]: {failure}", highlight=False)
        for leak in isolation.cross_allowed:
            out.print(f"[red]cross-tenant not refused[/red]: {leak}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()
