"""How tenantctl reports: its two consoles, its exit codes and `fail`, the one way every
command exits with an error, with the library calls whose errors every command reports alike.
"""

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from lambda_src.tenancy import InvalidTenantIdError, validate_tenant_id

from ..catalog import Catalog, CatalogError, load_catalog
from ..catalog_edit import Change, edit_catalog
from ..embedded_pg import EmbeddedPostgresError
from ..local import LocalSession, local_session

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_ENVIRONMENT = 3

# Piped output (make, CI logs) gets a fixed width rather than Rich's 80-column fallback.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def fail(code: int, message: str, as_json: bool, *, label: str = "", **fields: object) -> NoReturn:
    """Exit with `code`, saying why. With --json: one JSON document on stdout, `ok` false, the
    `error` (led by `label`, which names what failed) and the command's own `fields` (an
    `error` among them is kept as the command reports it). Otherwise: the red label ("error"
    by default) and the message on stderr, not rewrapped."""
    if as_json:
        error = f"{label}: {message}" if label else message
        print(json.dumps({"ok": False, "error": error, **fields}))
    else:
        err.print(
            f"[red]{label or 'error'}[/red]: {escape(message)}", highlight=False, soft_wrap=True
        )
    raise typer.Exit(code)


def configure_logging(verbose: bool) -> None:
    """Warnings only (every SQL step with `verbose`), on stderr."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the local Secrets Manager's access log


def load(catalog: Path, as_json: bool) -> Catalog:
    """The validated catalog; exit 2 naming the file, the entry and the field if it is not."""
    try:
        return load_catalog(catalog)
    except CatalogError as error:
        fail(EXIT_INVALID, str(error), as_json, label="invalid catalog")


def checked_id(tenant_id: str, as_json: bool) -> str:
    """The tenant id if the tenant-id rules accept it; exit 2 otherwise."""
    try:
        return validate_tenant_id(tenant_id)
    except InvalidTenantIdError as error:
        fail(EXIT_INVALID, f"invalid tenant id: {error}", as_json)


def edit(catalog: Path, change: Change, as_json: bool) -> tuple[Catalog, str]:
    """Apply one change to the catalog file (see catalog_edit); exit 2 if it is refused or
    its result does not validate, the file left as it was."""
    try:
        return edit_catalog(catalog, change)
    except CatalogError as error:
        fail(EXIT_INVALID, str(error), as_json)


@contextmanager
def session(
    state_dir: Path,
    catalog: Catalog,
    as_json: bool,
    *,
    extra_silos: Sequence[str] = (),
    keep_running: bool = False,
) -> Iterator[LocalSession]:
    """tenantkit.local's session (state lock, embedded servers, local Secrets Manager); exit 3
    if an embedded server cannot start. Errors inside the `with` block are the caller's."""
    with ExitStack() as stack:
        try:
            started = stack.enter_context(
                local_session(
                    state_dir, catalog, extra_silos=extra_silos, keep_running=keep_running
                )
            )
        except EmbeddedPostgresError as error:
            fail(EXIT_ENVIRONMENT, str(error), as_json, label="embedded PostgreSQL")
        yield started
