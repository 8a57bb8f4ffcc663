"""What every tenantctl command group shares: the two consoles, the exit codes, and loading
the catalog, checking a tenant id, editing the catalog, starting the embedded servers and
failing, each reported the same way."""

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from lambda_src.tenancy import InvalidTenantIdError, validate_tenant_id

from ..catalog import Catalog, CatalogError, load_catalog
from ..catalog_edit import Change, edit_catalog
from ..embedded_pg import EmbeddedPostgresError, RunningServer
from ..lifecycle import (
    local_silo_ids,
)
from ..local import (
    LocalServers,
)

EXIT_FAILED = 1


EXIT_INVALID = 2


EXIT_ENVIRONMENT = 3


# Piped output (make, CI logs) gets a fixed width rather than Rich's 80-column fallback.
out = Console(width=None if sys.stdout.isatty() else 120)


err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def fail(code: int, message: str, as_json: bool, **fields: object) -> NoReturn:
    """Report a failure (as JSON on stdout with --json) and exit with `code`."""
    if as_json:
        print(json.dumps({"ok": False, "error": message, **fields}))
    else:
        err.print(f"[red]error[/red]: {message}", highlight=False)
    raise typer.Exit(code)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the local Secrets Manager's access log


def load(catalog: Path) -> Catalog:
    try:
        return load_catalog(catalog)
    except CatalogError as error:
        err.print(f"[red]invalid catalog[/red]\n{error}", markup=True, highlight=False)
        raise typer.Exit(EXIT_INVALID) from None


def checked_id(tenant_id: str, as_json: bool) -> str:
    try:
        return validate_tenant_id(tenant_id)
    except InvalidTenantIdError as error:
        fail(EXIT_INVALID, f"invalid tenant id: {error}", as_json)


def edit(catalog: Path, change: Change, as_json: bool) -> tuple[Catalog, str]:
    try:
        return edit_catalog(catalog, change)
    except CatalogError as error:
        fail(EXIT_INVALID, str(error), as_json)


def start_embedded(
    state_dir: Path, catalog: Catalog, extra_silos: Sequence[str] = ()
) -> tuple[LocalServers, RunningServer, float]:
    """The shared embedded server and one per silo tenant (the catalog's, those left on disk,
    and `extra_silos`)."""
    servers = LocalServers(state_dir, local_silo_ids(state_dir, catalog) + list(extra_silos))
    try:
        started = time.perf_counter()
        shared = servers.start()
    except EmbeddedPostgresError as error:
        servers.stop()
        err.print(f"[red]embedded PostgreSQL[/red]: {error}", highlight=False)
        raise typer.Exit(EXIT_ENVIRONMENT) from None
    return servers, shared, time.perf_counter() - started
