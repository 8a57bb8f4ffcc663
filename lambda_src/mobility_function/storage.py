"""An export directory to and from the host's export bucket: one object per file under the
export's prefix, each encrypted with the host key (SSE-KMS, named on every request rather than
left to the bucket's default), the manifest uploaded last so that an interrupted upload leaves
no prefix that could pass for a complete export."""

import os
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..core.errors import TenantkitError
from ..mobility.export import MANIFEST

MAX_OBJECTS = 10_000
"""An export has a manifest and one file per table; more objects than this is not one."""


def _reason(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "error"))
    return type(error).__name__


def s3_uri(bucket: str, key: str) -> str:
    """`s3://bucket/key`, how messages and results name an object or prefix."""
    return f"s3://{bucket}/{key}"


def upload_export(s3: Any, directory: Path, bucket: str, prefix: str, key_arn: str) -> list[str]:
    """Upload every file of `directory` under `prefix`, the manifest last; the keys written.
    TenantkitError naming the object if S3 refuses one (what was written stays: it has no
    manifest, so no import takes it)."""
    files = [*sorted(p for p in directory.iterdir() if p.name != MANIFEST), directory / MANIFEST]
    extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_arn}
    written = []
    for path in files:
        key = prefix + path.name
        try:
            s3.upload_file(str(path), bucket, key, ExtraArgs=extra)
        except (BotoCoreError, ClientError) as error:
            raise TenantkitError(
                f"uploading {s3_uri(bucket, key)} failed: {_reason(error)}"
            ) from None
        written.append(key)
    return written


def download_export(s3: Any, bucket: str, prefix: str, directory: Path) -> int:
    """Download every object under `prefix` into `directory` (0600 files); the count.
    TenantkitError naming the prefix or object when it cannot be read or is not a flat
    export (a nested key, too many objects, nothing there)."""
    keys: list[str] = []
    where = s3_uri(bucket, prefix)
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [str(o["Key"]) for o in page.get("Contents", [])]
            if len(keys) > MAX_OBJECTS:
                raise TenantkitError(f"{where} holds more than {MAX_OBJECTS} objects")
    except (BotoCoreError, ClientError) as error:
        raise TenantkitError(f"listing {where} failed: {_reason(error)}") from None
    if not keys:
        raise TenantkitError(f"{where} holds no export (no objects)")
    for key in keys:
        name = key.removeprefix(prefix)
        if not name or "/" in name or name in (".", ".."):
            raise TenantkitError(f"{s3_uri(bucket, key)} is not a file of a flat export")
        target = directory / name
        try:
            s3.download_file(bucket, key, str(target))
        except (BotoCoreError, ClientError) as error:
            raise TenantkitError(
                f"downloading {s3_uri(bucket, key)} failed: {_reason(error)}"
            ) from None
        os.chmod(target, 0o600)
    return len(keys)
