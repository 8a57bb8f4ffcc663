"""tenantctl export and import: one tenant's data out of its tier into a directory, and back
into a tenant of any tier, locally (lambda_src.mobility does the work; this wraps it), or in
AWS through the host's mobility function and export bucket (--provision aws,
tenantkit.mobility_aws)."""

import json
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table

from lambda_src.core.environment import EXPORT_BUCKET, EXPORT_KEY_ARN
from lambda_src.core.errors import TenantkitError
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
from lambda_src.mobility.journal import DONE

from ..catalog import Tenant
from ..lifecycle import REQUESTED
from ..local import EXPORTS_DIR, export_local_tenant, tenant_admin_settings
from ..mobility_aws import ExportLocation, MobilityHost, import_request, is_export_of
from ..move import Move, MoveFailedError, MoveRefusedError
from .lifecycle_commands import catalog_tenant, status_of
from .mobility_aws_commands import export_aws, function_failed, functions_in, say
from .options import (
    CatalogOption,
    JsonOption,
    Provision,
    RegionOption,
    StateDirOption,
    TierName,
)
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

MobilityProvision = Annotated[
    Provision,
    typer.Option(
        "--provision",
        help="local: the embedded PostgreSQL and a directory; aws: the host's mobility "
        "function (<host>-mobility) and its export bucket.",
    ),
]


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
    provision: MobilityProvision = Provision.local,
    region: RegionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export one tenant's data from its tier (locally) into a directory, mode 0700.

    manifest.json (tenant, tier, schema version, tables in foreign-key order with row counts
    and sha256) and one COPY file per table (0600), from one consistent snapshot.

    --provision aws: the host's function writes it to s3://<export bucket>/exports/<id>/<UTC>/,
    encrypted with the host key."""
    configure_logging(False)
    tenant_id = checked_id(tenant_id, as_json)
    loaded = load(catalog, as_json)
    tenant = catalog_tenant(loaded, tenant_id, as_json)
    fields: dict[str, Any] = {"tenant": tenant_id, "tier": tenant.tier}
    if provision is Provision.none:
        fail(EXIT_INVALID, "export needs --provision local or aws", as_json, **fields)
    if provision is Provision.aws:
        fields["provision"] = "aws"
        if out_dir is not None:
            fail(
                EXIT_INVALID,
                "--out is local only: an AWS export goes to the host's bucket",
                as_json,
                **fields,
            )
        fields.update(export_aws(tenant, region, as_json, fields))
        if as_json:
            print(json.dumps({"ok": True, **fields}))
            return
        _print_tables(
            f"{tenant_id} ({tenant.tier}) exported at schema V{fields.get('schema_version')}",
            [(t["name"], t["rows"], t["sha256"]) for t in fields.get("tables", [])],
        )
        out.print(f"export: {fields.get('uri')}", highlight=False)
        return
    directory = out_dir or default_export_dir(state_dir / EXPORTS_DIR, tenant_id)
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
    source: Annotated[
        str,
        typer.Argument(
            help="An export directory (tenantctl export), or with --provision aws its "
            "s3://<bucket>/exports/<id>/<UTC>/ prefix.",
            metavar="EXPORT",
        ),
    ],
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Delete the tenant's existing rows first (in the same transaction).",
        ),
    ] = False,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    provision: MobilityProvision = Provision.local,
    region: RegionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import an export into a tenant of any tier at the same schema version (locally).

    Every file's sha256 is checked first; one transaction loads the tables and checks the
    tenant's rows after, rolled back on any mismatch.

    A tenant with rows is refused unless --replace.

    --provision aws: the host's function imports an s3:// export from the host's bucket (one in
    another bucket is copied there first, encrypted with the host key)."""
    configure_logging(False)
    tenant_id = checked_id(tenant_id, as_json)
    loaded = load(catalog, as_json)
    tenant = catalog_tenant(loaded, tenant_id, as_json)
    if provision is Provision.none:
        fail(EXIT_INVALID, "import needs --provision local or aws", as_json, tenant=tenant_id)
    if provision is Provision.aws:
        _import_aws(tenant, source, replace, region, as_json)
        return
    export_dir = Path(source)
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


def _import_aws(
    tenant: Tenant, source: str, replace: bool, region: str | None, as_json: bool
) -> None:
    """Import an s3:// export through the tenant's host's function (exit 2 refused: nothing
    changed; 1 failed: rolled back; 3 AWS cannot be asked or the function is not deployed)."""
    host = MobilityHost.of(tenant)
    fields: dict[str, Any] = {
        "tenant": tenant.id,
        "tier": tenant.tier,
        "provision": "aws",
        "source": source,
        "host": host.name,
        "function": host.function,
    }
    try:
        location = ExportLocation.parse(source)
    except ValueError as error:
        fail(EXIT_INVALID, str(error), as_json, **fields)
    if not is_export_of(location, tenant.id):
        fail(
            EXIT_INVALID,
            f"{location.uri} is not an export of {tenant.id}: its prefix must be "
            f"exports/{tenant.id}/<UTC>/",
            as_json,
            **fields,
        )
    functions = functions_in(region, as_json, fields)
    try:
        variables = functions.environment(host)
        bucket = variables[EXPORT_BUCKET]
        if location.bucket != bucket:
            # The function may read its own host's bucket only: bring the export there.
            say(as_json, f"copying {location.uri} into s3://{bucket}/ ...")
            fields["copied"] = functions.copy_export(location, bucket, variables[EXPORT_KEY_ARN])
        say(as_json, f"importing {tenant.id} through {host.function} ...")
        answer = functions.invoke(host, import_request(tenant, location.prefix, replace))
    except TenantkitError as error:
        function_failed(error, as_json, fields)
    fields.update(answer)
    if as_json:
        print(json.dumps({"ok": True, **fields}))
        return
    _print_tables(
        f"{tenant.id} ({tenant.tier}) imported from a {answer.get('source_tier')} export, verified",
        [(t["name"], t["rows"], "") for t in answer.get("tables", [])],
    )
    if answer.get("replaced_rows"):
        out.print(f"replaced {answer['replaced_rows']} existing rows", highlight=False)


def move(
    tenant_id: str,
    to: Annotated[
        TierName | None, typer.Option("--to", help="The tier to move the tenant to.")
    ] = None,
    purge_source: Annotated[
        bool,
        typer.Option(
            "--purge-source",
            help="After a finished move: export the rows left in the old tier, then destroy them.",
        ),
    ] = False,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Copy by logical replication while the tenant writes; freeze only for the "
            "cut-over (out of the pool, or between bridge and silo).",
        ),
    ] = False,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    as_json: JsonOption = False,
) -> None:
    """Move a tenant to another tier, locally, verified table by table.

    Steps: provision the target (suspended), freeze the source, copy, verify counts and
    checksums, switch the catalog's tier, activate the target.

    The source's rows are kept, marked moved and read by no one, until --purge-source (which
    exports them first).

    A failure before the switch rolls back (the source active as before, the cause recorded);
    an interrupted move is finished or rolled back by the next `tenantctl move <id>`.

    --online copies by logical replication while the tenant keeps writing, then freezes for
    the cut-over only (a publication with the tenant's row filter, a subscription).

    An online move into the pool is refused (row-level security): move into it offline."""
    configure_logging(False)
    tenant_id = checked_id(tenant_id, as_json)
    loaded = load(catalog, as_json)
    tenant = catalog_tenant(loaded, tenant_id, as_json)
    fields: dict[str, Any] = {"tenant": tenant_id, "tier": tenant.tier}
    if to is not None and to.value == tenant.tier and not purge_source:
        fail(EXIT_INVALID, f"{tenant_id} is already in {tenant.tier}", as_json, **fields)
    if to is not None and purge_source:
        fail(EXIT_INVALID, "--purge-source takes no --to", as_json, **fields)
    if online and to is None:
        fail(EXIT_INVALID, "--online needs --to bridge|silo", as_json, **fields)
    extra = [tenant_id] if to is not None and to.value == "silo" else []
    with session(state_dir, loaded, as_json, extra_silos=extra) as local:
        mover = Move(local, catalog, state_dir, tenant_id)
        try:
            interrupted = mover.find_open()
            if interrupted is not None:
                report = mover.resume(loaded, interrupted)
                fields.update(report.as_json())
                if not as_json:
                    out.print(
                        f"{tenant_id}: an interrupted move {interrupted.source_tier} -> "
                        f"{interrupted.target_tier} (after step {interrupted.step}) "
                        f"{'finished' if report.outcome == DONE else 'rolled back'}",
                        highlight=False,
                    )
                if to is None or report.outcome == DONE:
                    finish_move(fields, as_json)
                    return
                loaded = load(catalog, as_json)
            if purge_source:
                record, directory = mover.purge_source()
                fields.update(purged=record.source_tier, export=str(directory))
                if not as_json:
                    out.print(
                        f"{tenant_id}: rows left in {record.source_tier} exported to "
                        f"{directory}, then destroyed",
                        highlight=False,
                    )
                finish_move(fields, as_json)
                return
            if to is None:
                fail(EXIT_INVALID, "give --to pool|bridge|silo (or --purge-source)", as_json)
            report = mover.run(loaded, to.value, online=online)
        except MoveRefusedError as error:
            fail(EXIT_INVALID, str(error), as_json, **fields)
        except MoveFailedError as error:
            fail(EXIT_FAILED, str(error), as_json, **fields)
        except (TenantkitError, psycopg.Error, ExportError) as error:
            fail(EXIT_FAILED, f"moving {tenant_id}: {error}", as_json, **fields)
    fields.update(report.as_json())
    if report.freeze_seconds is not None:
        fields["freeze_seconds"] = round(report.freeze_seconds, 3)
    if not as_json:
        _print_tables(
            f"{tenant_id} moved {report.source_tier} -> {report.target_tier}, verified",
            [(name, rows, sha) for name, (rows, sha) in report.tables.items()],
        )
        out.print(
            f"steps: {', '.join(report.steps)}; the {report.source_tier} rows are kept, marked "
            f"moved (tenantctl move {tenant_id} --purge-source to export and destroy them)",
            highlight=False,
        )
    finish_move(fields, as_json)


def finish_move(fields: dict[str, Any], as_json: bool) -> None:
    """The JSON document of a move that ended well."""
    if as_json:
        print(json.dumps({"ok": True, **fields}))
