"""tenantctl export and import: one tenant's data out of its tier into a directory, and back
into a tenant of any tier, locally (lambda_src.mobility does the work; this wraps it)."""

import json
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table

from lambda_src.mobility import (
    ExportError,
    ImportFailedError,
    ImportRefusedError,
    Manifest,
    TenantScope,
    default_export_dir,
    import_tenant,
    verify_export,
)

from ..lifecycle import REQUESTED
from ..local import EXPORTS_DIR, export_local_tenant, tenant_admin_settings
from .lifecycle_commands import catalog_tenant, status_of
from .options import CatalogOption, JsonOption, StateDirOption
from .output import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_INVALID,
    checked_id,
    configure_logging,
    fail,
    load,
    out,
    session,
)


def export_fields(manifest: Manifest, directory: Path) -> dict[str, Any]:
    """The JSON an export reports."""
    return {
        "path": str(directory),
        "schema_version": manifest.schema.version,
        "rows": manifest.total_rows,
        "tables": [{"name": t.name, "rows": t.rows, "sha256": t.sha256} for t in manifest.tables],
        "sequences": [
            {"table": s.table, "column": s.column, "position": s.position}
            for s in manifest.sequences
        ],
    }


def _print_tables(title: str, rows: list[tuple[str, int, str]]) -> None:
    table = Table(title=title)
    for column in ("table", "rows", "sha256"):
        table.add_column(column)
    for name, count, sha in rows:
        table.add_row(name, str(count), sha[:16])
    out.print(table)


def export(
    tenant_id: str,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Directory to write (must not exist; default: <state-dir>/exports/<id>-<UTC>).",
        ),
    ] = None,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    as_json: JsonOption = False,
) -> None:
    """Export one tenant's data from its tier (locally) into a directory: manifest.json (tenant,
    tier, schema version, tables in foreign-key order with row counts and sha256) and one COPY
    file per table, from one consistent snapshot; mode 0700, files 0600."""
    configure_logging(False)
    tenant_id = checked_id(tenant_id, as_json)
    loaded = load(catalog, as_json)
    tenant = catalog_tenant(loaded, tenant_id, as_json)
    directory = out_dir or default_export_dir(state_dir / EXPORTS_DIR, tenant_id)
    fields: dict[str, Any] = {"tenant": tenant_id, "tier": tenant.tier}
    if directory.exists():
        fail(EXIT_INVALID, f"{directory} already exists: choose a new --out", as_json, **fields)
    with session(state_dir, loaded, as_json) as local:
        if status_of(local.servers, tenant) == REQUESTED:
            fail(
                EXIT_ENVIRONMENT,
                f"{tenant_id} is not provisioned locally (tenantctl onboard or run first)",
                as_json,
                **fields,
            )
        try:
            manifest = export_local_tenant(local.servers, tenant_id, tenant.tier, directory)
        except ExportError as error:
            fail(EXIT_FAILED, str(error), as_json, **fields)
    fields.update(export_fields(manifest, directory))
    if as_json:
        print(json.dumps({"ok": True, **fields}))
        return
    _print_tables(
        f"{tenant_id} ({tenant.tier}) exported at schema V{manifest.schema.version}",
        [(t.name, t.rows, t.sha256) for t in manifest.tables],
    )
    out.print(f"export: {directory}", highlight=False)


def import_(
    tenant_id: str,
    export_dir: Annotated[Path, typer.Argument(help="An export directory (tenantctl export).")],
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Delete the tenant's existing rows first (in the same transaction).",
        ),
    ] = False,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    as_json: JsonOption = False,
) -> None:
    """Import an export into a tenant of any tier at the same schema version (locally), in one
    transaction: every file's sha256 checked first, the tenant's rows checked after loading,
    all rolled back on any mismatch; a tenant with rows is refused unless --replace."""
    configure_logging(False)
    tenant_id = checked_id(tenant_id, as_json)
    loaded = load(catalog, as_json)
    tenant = catalog_tenant(loaded, tenant_id, as_json)
    fields: dict[str, Any] = {"tenant": tenant_id, "tier": tenant.tier, "path": str(export_dir)}
    try:
        manifest = verify_export(export_dir, tenant_id)  # before any server starts
    except ImportRefusedError as error:
        fail(EXIT_INVALID, str(error), as_json, **fields)
    with session(state_dir, loaded, as_json) as local:
        if status_of(local.servers, tenant) == REQUESTED:
            fail(
                EXIT_ENVIRONMENT,
                f"{tenant_id} is not provisioned locally (tenantctl onboard or run first)",
                as_json,
                **fields,
            )
        settings = tenant_admin_settings(local.servers, tenant_id, tenant.tier)
        scope = TenantScope.of_tier(tenant_id, tenant.tier)
        try:
            with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
                result = import_tenant(conn, scope, manifest, export_dir, replace=replace)
        except ImportRefusedError as error:
            fail(EXIT_INVALID, str(error), as_json, **fields)
        except (ImportFailedError, psycopg.OperationalError) as error:
            fail(EXIT_FAILED, str(error), as_json, **fields)
    fields.update(
        source_tier=manifest.tier,
        schema_version=manifest.schema.version,
        rows=result.total_rows,
        replaced_rows=result.replaced_rows,
        tables=[{"name": name, "rows": rows} for name, rows in result.tables.items()],
        sequences=result.sequences,
    )
    if as_json:
        print(json.dumps({"ok": True, **fields}))
        return
    entries = {t.name: t.sha256 for t in manifest.tables}
    _print_tables(
        f"{tenant_id} ({tenant.tier}) imported from a {manifest.tier} export, verified",
        [(name, rows, entries[name]) for name, rows in result.tables.items()],
    )
    if result.replaced_rows:
        out.print(f"replaced {result.replaced_rows} existing rows", highlight=False)
