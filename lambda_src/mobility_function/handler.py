"""Entry point of a host's mobility function (`<host>-mobility`, inside the host's VPC).

export: the tenant's data is exported (lambda_src.mobility.export_tenant) into a private
directory under /tmp, uploaded to `exports/<tenant>/<timestamp>/` of the host's bucket with
SSE-KMS under the host key, and the directory removed. import: an export prefix of that bucket
is downloaded, verified file by file against its manifest (verify_export: nothing touches the
database before every file matches) and loaded (import_tenant: one transaction, verified
after loading). Either way the answer is the manifest's summary: tables, row counts, sha256s,
sequences and the S3 prefix. `tenantctl export|import --provision aws` invokes it.

The event is never logged whole, nor any row: only the action, tenant, tier and prefix.
Errors are raised (the invoker gets errorType and errorMessage): InvalidRequestError and
ImportRefusedError for bad input (nothing was changed), TenantkitError otherwise.
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from ..core.connection import (
    ConnectionSettings,
    RetryPolicy,
    connect,
    first_line,
    settings_from_secret,
)
from ..core.errors import TenantkitError
from ..core.log import function_logger, logged_request
from ..core.secrets import read_secret_json
from ..mobility import (
    ImportFailedError,
    ImportRefusedError,
    Manifest,
    TenantScope,
    export_tenant,
    import_tenant,
    verify_export,
)
from ..tenancy import POOL, tenant_names
from .request import MobilityConfig, MobilityRequest, export_prefix, parse_request
from .storage import download_export, s3_uri, upload_export

APPLICATION_NAME = "tenantkit-mobility"
log = logging.getLogger(__name__)

AdminSettings = Callable[[MobilityConfig], ConnectionSettings]


def admin_from_secret(config: MobilityConfig) -> ConnectionSettings:
    """The host admin's settings from its secret (RDS format), TLS verify-full."""
    return settings_from_secret(
        read_secret_json(config.admin_secret_arn),
        config.ssl_root_cert,
        application_name=APPLICATION_NAME,
    )


def on_event(event: Mapping[str, Any], _context: object) -> dict[str, Any]:
    """Lambda handler (JSON logs, core.log)."""
    function_logger(APPLICATION_NAME)
    return handle(event, MobilityConfig.from_env(os.environ), boto3.client("s3"))


def _database(request: MobilityRequest) -> str:
    return POOL.database if request.tier == "pool" else tenant_names(request.tenant).database


def _tables(manifest: Manifest) -> list[dict[str, Any]]:
    return [{"name": t.name, "rows": t.rows, "sha256": t.sha256} for t in manifest.tables]


def handle(
    event: Mapping[str, Any],
    config: MobilityConfig,
    s3: Any,
    *,
    admin_settings: AdminSettings = admin_from_secret,
    retry: RetryPolicy = RetryPolicy(),
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Check the request (the tenant id before anything), then export or import it. Whatever
    it wrote under /tmp is removed before it returns or raises."""
    if not isinstance(event, Mapping):
        raise TenantkitError("the event must be a JSON object")
    request = parse_request(event, config)
    with logged_request(
        request_type=request.action, tenant=request.tenant, tier=request.tier, prefix=request.prefix
    ):
        work = Path(tempfile.mkdtemp(prefix="tenantkit-mobility-"))  # 0700
        try:
            if request.action == "export":
                return _export(request, config, s3, admin_settings, retry, now(), work)
            return _import(request, config, s3, admin_settings, retry, work)
        except TenantkitError as error:
            # Its first line holds no secret and no row (a server's DETAIL line may quote a
            # key's values: it goes to the invoker, not to the log).
            log.error("%s of %s failed: %s", request.action, request.tenant, first_line(error))
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _export(
    request: MobilityRequest,
    config: MobilityConfig,
    s3: Any,
    admin_settings: AdminSettings,
    retry: RetryPolicy,
    moment: datetime,
    work: Path,
) -> dict[str, Any]:
    settings = admin_settings(config).for_database(_database(request))
    directory = work / "export"
    with connect(settings, retry) as conn:
        scope = TenantScope.of_tier(request.tenant, request.tier)
        manifest = export_tenant(conn, scope, request.tier, directory)
    prefix = export_prefix(request.tenant, moment.strftime("%Y%m%dT%H%M%S.%fZ"))
    objects = upload_export(s3, directory, config.bucket, prefix, config.key_arn)
    log.info(
        "exported %s: %d rows in %d tables to %s",
        request.tenant,
        manifest.total_rows,
        len(manifest.tables),
        s3_uri(config.bucket, prefix),
    )
    return {
        "action": "export",
        "tenant": request.tenant,
        "tier": request.tier,
        "bucket": config.bucket,
        "prefix": prefix,
        "uri": s3_uri(config.bucket, prefix),
        "objects": len(objects),
        "schema_version": manifest.schema.version,
        "exported_at": manifest.exported_at,
        "rows": manifest.total_rows,
        "tables": _tables(manifest),
        "sequences": [
            {"table": s.table, "column": s.column, "position": s.position}
            for s in manifest.sequences
        ],
    }


def _import(
    request: MobilityRequest,
    config: MobilityConfig,
    s3: Any,
    admin_settings: AdminSettings,
    retry: RetryPolicy,
    work: Path,
) -> dict[str, Any]:
    assert request.prefix is not None  # parse_request: an import has one
    directory = work / "import"
    directory.mkdir(mode=0o700)
    uri = s3_uri(config.bucket, request.prefix)
    download_export(s3, config.bucket, request.prefix, directory)
    try:
        manifest = verify_export(directory, request.tenant)
        settings = admin_settings(config).for_database(_database(request))
        scope = TenantScope.of_tier(request.tenant, request.tier)
        with connect(settings, retry) as conn:
            result = import_tenant(conn, scope, manifest, directory, replace=request.replace)
    except (ImportRefusedError, ImportFailedError) as error:
        # Name the objects as the caller knows them, not this sandbox's copies of them.
        message = str(error).replace(f"{directory}/", uri).replace(str(directory), uri)
        raise type(error)(message) from None
    log.info(
        "imported %s: %d rows from %s (replaced %d)",
        request.tenant,
        result.total_rows,
        uri,
        result.replaced_rows,
    )
    return {
        "action": "import",
        "tenant": request.tenant,
        "tier": request.tier,
        "source_tier": manifest.tier,
        "bucket": config.bucket,
        "prefix": request.prefix,
        "uri": uri,
        "schema_version": manifest.schema.version,
        "rows": result.total_rows,
        "replaced_rows": result.replaced_rows,
        "tables": [{"name": name, "rows": rows} for name, rows in result.tables.items()],
        "sequences": result.sequences,
    }
