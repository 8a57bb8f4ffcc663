"""A directory of versioned migration files, read and checked before anything reaches a database.

File format: `V<version>__<name>.sql` (version: digits, compared as an integer; name: letters,
digits, `_` and `-`), UTF-8, at least one statement. A file with the line
`-- tenantkit: no-transaction` runs outside a transaction and must hold exactly one statement
(e.g. CREATE INDEX CONCURRENTLY). Dotfiles and README.md are ignored; anything else is refused.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import TenantkitError

FILE_PATTERN = re.compile(r"V(?P<version>[0-9]+)__(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)\.sql")
"""`V0001__create_items.sql`: the form Flyway uses for versioned migrations."""
NO_TRANSACTION_DIRECTIVE = "-- tenantkit: no-transaction"
"""A line of its own that makes a file run outside a transaction."""
_DIRECTIVE_PREFIX = re.compile(r"--\s*tenantkit\s*:", re.IGNORECASE)
IGNORED_FILES = frozenset({"readme.md"})
"""Besides dotfiles (.gitkeep, editor files), the only files a migrations directory may hold
that are not migrations (compared lowercase)."""


class MigrationError(TenantkitError):
    """A migration file or directory is unusable, or a database cannot be migrated; the message
    names the file or the database (and never holds a secret)."""


@dataclass(frozen=True)
class Migration:
    """One versioned migration file."""

    version: int
    """From the file name (`V0001__...` is 1)."""
    name: str
    """The part of the file name after `__`, without `.sql`."""
    path: str
    """The file name, relative to the migrations directory."""
    sql: str = field(repr=False)
    checksum: str
    """sha256 (hex) of the file's bytes: an applied file whose checksum changes is drift."""
    transactional: bool = True
    """False when the file has the line `-- tenantkit: no-transaction`."""


def fingerprint(versions: Iterable[tuple[int, str]]) -> str:
    """sha256 (hex) of (version, checksum) pairs in version order: the same for a directory's
    files and for a database that recorded exactly those files (their checksums), so a deploy
    can name the migrations a database must have and the provisioner can tell if it has them."""
    digest = hashlib.sha256()
    for version, checksum in sorted(versions):
        digest.update(f"{version}:{checksum}\n".encode())
    return digest.hexdigest()


def load_migrations(directory: Path | str) -> tuple[Migration, ...]:
    """Every migration of `directory`, sorted by version; raise MigrationError naming the path
    of the first problem (no directory, a stray or misnamed file, two files with one version, an
    empty or non-UTF-8 file, a no-transaction file with more than one statement)."""
    root = Path(directory)
    if not root.exists():
        raise MigrationError(f"migrations directory {root} does not exist")
    if not root.is_dir():
        raise MigrationError(f"migrations directory {root} is not a directory")
    by_version: dict[int, Migration] = {}
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.lower() in IGNORED_FILES:
            continue
        migration = _load_file(entry)
        other = by_version.get(migration.version)
        if other is not None:
            raise MigrationError(
                f"{root / entry.name}: version {migration.version} is also {other.path} "
                "(one file per version)"
            )
        by_version[migration.version] = migration
    return tuple(by_version[version] for version in sorted(by_version))


def _load_file(path: Path) -> Migration:
    if not path.is_file():
        raise MigrationError(f"{path}: not a migration file (a migrations directory holds files)")
    if path.suffix.lower() != ".sql":
        raise MigrationError(
            f"{path}: not a .sql file (a migrations directory holds V<version>__<name>.sql "
            "files, README.md and dotfiles only)"
        )
    match = FILE_PATTERN.fullmatch(path.name)
    if match is None:
        raise MigrationError(
            f"{path}: the name must be V<version>__<name>.sql (e.g. V0001__create_items.sql; "
            "the name of letters, digits, '_' and '-')"
        )
    version = int(match["version"])
    if version < 1:
        raise MigrationError(f"{path}: versions start at 1")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MigrationError(f"{path}: not UTF-8 (byte {error.start})") from None
    statements = split_statements(text)
    if not statements:
        raise MigrationError(f"{path}: the file holds no SQL statement")
    transactional = _transactional(path, text)
    if not transactional and len(statements) != 1:
        raise MigrationError(
            f"{path}: a {NO_TRANSACTION_DIRECTIVE!r} file must hold exactly one statement "
            f"(it holds {len(statements)}): without a transaction, a failure after the first "
            "would leave the database between versions"
        )
    return Migration(
        version=version,
        name=match["name"],
        path=path.name,
        sql=text,
        checksum=hashlib.sha256(data).hexdigest(),
        transactional=transactional,
    )


def _transactional(path: Path, text: str) -> bool:
    """False if the file has the no-transaction line; a misspelt tenantkit directive is refused
    rather than silently running the file in a transaction."""
    transactional = True
    for line in text.splitlines():
        stripped = line.strip()
        if not _DIRECTIVE_PREFIX.match(stripped):
            continue
        if " ".join(stripped.split()) != NO_TRANSACTION_DIRECTIVE:
            raise MigrationError(
                f"{path}: unknown tenantkit directive {stripped!r} (the only one is "
                f"{NO_TRANSACTION_DIRECTIVE!r})"
            )
        transactional = False
    return transactional


_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def split_statements(text: str) -> list[str]:
    """The statements of a SQL text, split at semicolons outside comments, quoted strings and
    identifiers and dollar-quoted bodies; comment-only and empty pieces are left out.

    Used to count statements (a no-transaction file must hold one): the server itself runs a
    file's text as it is.
    """
    statements: list[str] = []
    current: list[str] = []
    has_code = False
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if text.startswith("/*", i):
            i = _skip_block_comment(text, i)
            continue
        start = i
        if char in "'\"":
            # E'...' strings take backslash escapes; a doubled quote escapes in every form.
            backslash = char == "'" and i > 0 and text[i - 1] in "eE"
            i = _skip_quoted(text, i, char, backslash)
        elif char == "$" and (tag := _DOLLAR_TAG.match(text, i)) is not None:
            end = text.find(tag.group(), tag.end())
            i = n if end < 0 else end + len(tag.group())
        elif char == ";":
            if has_code:
                statements.append("".join(current).strip())
            current, has_code = [], False
            i += 1
            continue
        else:
            i += 1
        current.append(text[start:i])
        has_code = has_code or not text[start:i].isspace()
    if has_code:
        statements.append("".join(current).strip())
    return statements


def _skip_block_comment(text: str, i: int) -> int:
    depth = 0
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return i


def _skip_quoted(text: str, i: int, quote: str, backslash: bool) -> int:
    i += 1
    while i < len(text):
        if backslash and text[i] == "\\":
            i += 2
        elif text[i] == quote:
            if text.startswith(quote * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return i
