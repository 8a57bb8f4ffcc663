"""Edits of the tenant catalog file by tenantctl: validated, atomic, serialized, comments kept.

Every edit takes an exclusive lock beside the catalog, re-reads the file, applies one change,
validates the whole result with the catalog's own rules and replaces the file in one rename:
two concurrent onboardings of one tenant add it once, and a refused or invalid edit leaves the
file as it was.
"""

import fcntl
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from lambda_src.tenancy import InvalidTenantIdError, validate_tenant_id

from .catalog import Catalog, CatalogError, parse_catalog


class TierMoveError(CatalogError):
    """A tenant would change tier by an edit: its data must be moved (tenantctl move)."""


def tier_move_message(tenant_id: str, current: str, wanted: str, where: str) -> str:
    """The one wording of a tier change refused because it was asked for without the data."""
    return (
        f"tenant {tenant_id!r} is in tier {current} ({where}); a catalog edit does not move it "
        f"to {wanted}: its data must move with it. Keep it in {current} in the catalog and run "
        f"`tenantctl move {tenant_id} --to {wanted}`, which copies and verifies its data and "
        "then switches the catalog's tier"
    )


@contextmanager
def catalog_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`'s lock file (`.<name>.lock` beside it)."""
    lock_path = path.parent / f".{path.name}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _plain(node: Any) -> Any:
    """ruamel's round-trip nodes as plain dicts and lists, for validation."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


Change = Callable[[CommentedMap], str]
"""Applies one change to the parsed document; returns what it did (e.g. 'added')."""


def edit_catalog(path: Path, change: Change) -> tuple[Catalog, str]:
    """Apply `change` to the catalog file under its lock; returns the validated catalog and the
    change's outcome. The file is rewritten only when the document changed."""
    yaml = _yaml()
    with catalog_lock(path):
        try:
            text = path.read_text()
        except OSError as error:
            raise CatalogError(
                f"{path}: cannot read the tenant catalog: {error.strerror}"
            ) from None
        try:
            doc = yaml.load(text)
        except YAMLError as error:
            raise CatalogError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(doc, CommentedMap):
            raise CatalogError(f"{path}: must be a mapping with a `tenants:` list")
        before = _plain(doc)
        outcome = change(doc)
        after = _plain(doc)
        catalog = parse_catalog(after, str(path))
        if after != before:
            buffer = io.StringIO()
            yaml.dump(doc, buffer)
            _replace(path, buffer.getvalue())
        return catalog, outcome


def preview_catalog(path: Path, change: Change) -> Catalog:
    """The validated catalog `change` would make of the file, which is left as it is."""
    try:
        doc = _yaml().load(path.read_text())
    except (OSError, YAMLError) as error:
        raise CatalogError(f"{path}: cannot read the tenant catalog: {error}") from None
    if not isinstance(doc, CommentedMap):
        raise CatalogError(f"{path}: must be a mapping with a `tenants:` list")
    change(doc)
    return parse_catalog(_plain(doc), str(path))


def _replace(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path` and rename it over `path`."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _entries(doc: CommentedMap) -> list[Any]:
    tenants = doc.get("tenants")
    if tenants is None:
        tenants = doc["tenants"] = CommentedSeq()
    if not isinstance(tenants, list):
        raise CatalogError("tenants: must be a list")
    return tenants


def _find(doc: CommentedMap, tenant_id: str) -> CommentedMap | None:
    for entry in _entries(doc):
        if isinstance(entry, dict) and entry.get("id") == tenant_id:
            return entry  # type: ignore[return-value]
    return None


def _valid(tenant_id: str) -> str:
    try:
        return validate_tenant_id(tenant_id)
    except InvalidTenantIdError as error:
        raise CatalogError(f"tenant id: {error}") from None


def add_tenant(tenant_id: str, tier: str, source: str) -> Change:
    """Add `tenant_id` in `tier`; 'unchanged' if it is already there in that tier, a
    TierMoveError if it is there in another."""
    _valid(tenant_id)

    def change(doc: CommentedMap) -> str:
        existing = _find(doc, tenant_id)
        if existing is None:
            entry = CommentedMap()
            entry["id"] = tenant_id
            entry["tier"] = tier
            _entries(doc).append(entry)
            return "added"
        if existing.get("tier") != tier:
            raise TierMoveError(
                tier_move_message(tenant_id, str(existing.get("tier")), tier, source)
            )
        return "unchanged"

    return change


def remove_tenant(tenant_id: str) -> Change:
    """Remove `tenant_id`'s entry; 'removed', or 'absent' if it was not there."""
    _valid(tenant_id)

    def change(doc: CommentedMap) -> str:
        entries = _entries(doc)
        existing = _find(doc, tenant_id)
        if existing is None:
            return "absent"
        entries.remove(existing)
        return "removed"

    return change


_NO_DEFAULT = object()


def set_setting(
    tenant_id: str, key: str, value: object, *, default: object = _NO_DEFAULT
) -> Change:
    """Set one setting of `tenant_id`'s entry ('changed' or 'unchanged'); a value equal to
    `default` removes the key instead of writing it."""
    _valid(tenant_id)

    def change(doc: CommentedMap) -> str:
        existing = _find(doc, tenant_id)
        if existing is None:
            raise CatalogError(f"tenant {tenant_id!r} is not in the catalog")
        if existing.get(key, default) == value:
            return "unchanged"
        if value == default:
            del existing[key]
        else:
            existing[key] = value
        return "changed"

    return change
