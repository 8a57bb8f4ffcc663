"""Reading a migrations directory: what a valid one yields and how each bad input is refused,
naming the file, before anything reaches a database."""

import hashlib
from pathlib import Path

import pytest

from lambda_src.migrations.files import (
    Migration,
    MigrationError,
    load_migrations,
    split_statements,
)


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_a_directory_loads_sorted_by_numeric_version_with_checksums(tmp_path: Path) -> None:
    # GIVEN files whose versions sort differently as text and as numbers, a README and dotfiles
    write(tmp_path, "V10__add_price.sql", "ALTER TABLE items ADD COLUMN price bigint;\n")
    write(tmp_path, "V2__create_items.sql", "CREATE TABLE items (id bigint PRIMARY KEY);\n")
    write(tmp_path, "V0001__create_schema-objects.sql", "CREATE TABLE a (); CREATE TABLE b ();")
    write(tmp_path, "README.md", "# migrations\n")
    write(tmp_path, ".gitkeep", "")
    # WHEN the directory is loaded
    migrations = load_migrations(tmp_path)
    # THEN the migrations come in numeric order, named from their files
    assert [(m.version, m.name, m.path) for m in migrations] == [
        (1, "create_schema-objects", "V0001__create_schema-objects.sql"),
        (2, "create_items", "V2__create_items.sql"),
        (10, "add_price", "V10__add_price.sql"),
    ]
    # with the file's text and the sha256 of its bytes, in a transaction by default
    items = migrations[1]
    raw = (tmp_path / "V2__create_items.sql").read_bytes()
    assert items.sql == raw.decode()
    assert items.checksum == hashlib.sha256(raw).hexdigest()
    assert all(m.transactional for m in migrations)


def test_the_no_transaction_line_marks_a_one_statement_file(tmp_path: Path) -> None:
    # GIVEN a file that says it cannot run in a transaction
    write(
        tmp_path,
        "V3__index_items.sql",
        "-- tenantkit: no-transaction\nCREATE INDEX CONCURRENTLY items_name ON items (name);\n",
    )
    # WHEN it is loaded THEN it runs outside a transaction
    (migration,) = load_migrations(tmp_path)
    assert migration.transactional is False


def test_a_missing_directory_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(MigrationError, match=rf"{missing} does not exist"):
        load_migrations(missing)


def test_a_file_given_as_the_directory_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "V1__a.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=rf"{path} is not a directory"):
        load_migrations(path)


def test_two_files_with_one_version_are_refused_naming_both(tmp_path: Path) -> None:
    write(tmp_path, "V1__create_items.sql", "CREATE TABLE items ();")
    write(tmp_path, "V0001__create_other.sql", "CREATE TABLE other ();")
    with pytest.raises(MigrationError, match="version 1 is also") as raised:
        load_migrations(tmp_path)
    assert "V0001__create_other.sql" in str(raised.value)
    assert "V1__create_items.sql" in str(raised.value)


@pytest.mark.parametrize("name", ["notes.txt", "V1__a.py", "schema.yaml", "README"])
def test_a_file_that_is_not_sql_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    write(tmp_path, "V1__ok.sql", "SELECT 1;")
    write(tmp_path, name, "x")
    with pytest.raises(MigrationError, match=rf"{name}: not a \.sql file"):
        load_migrations(tmp_path)


@pytest.mark.parametrize(
    "name",
    [
        "create_items.sql",
        "V1_create_items.sql",
        "v1__create_items.sql",
        "V1__.sql",
        "Vx__create_items.sql",
        "V1__create items.sql",
        "V1__create_items.SQL",
        "U1__undo.sql",
    ],
)
def test_a_misnamed_sql_file_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    write(tmp_path, name, "SELECT 1;")
    with pytest.raises(MigrationError, match=r"V<version>__<name>\.sql") as raised:
        load_migrations(tmp_path)
    assert name in str(raised.value)


def test_version_zero_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "V0__init.sql", "SELECT 1;")
    with pytest.raises(MigrationError, match=r"V0__init\.sql: versions start at 1"):
        load_migrations(tmp_path)


def test_a_subdirectory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "V1__nested.sql").mkdir()
    with pytest.raises(MigrationError, match=r"V1__nested\.sql: not a migration file"):
        load_migrations(tmp_path)


@pytest.mark.parametrize("content", ["", "   \n\n", "-- only a comment\n/* and another */\n"])
def test_an_empty_file_is_refused(tmp_path: Path, content: str) -> None:
    write(tmp_path, "V1__empty.sql", content)
    with pytest.raises(MigrationError, match=r"V1__empty\.sql: the file holds no SQL statement"):
        load_migrations(tmp_path)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "V1__latin1.sql", "INSERT INTO t VALUES ('café');".encode("latin-1"))
    with pytest.raises(MigrationError, match=r"V1__latin1\.sql: not UTF-8"):
        load_migrations(tmp_path)


def test_a_no_transaction_file_with_two_statements_is_refused(tmp_path: Path) -> None:
    write(
        tmp_path,
        "V4__two_indexes.sql",
        "-- tenantkit: no-transaction\n"
        "CREATE INDEX CONCURRENTLY a_x ON a (x);\n"
        "CREATE INDEX CONCURRENTLY a_y ON a (y);\n",
    )
    with pytest.raises(MigrationError, match="exactly one statement") as raised:
        load_migrations(tmp_path)
    assert "V4__two_indexes.sql" in str(raised.value)
    assert "it holds 2" in str(raised.value)


def test_a_misspelt_directive_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    write(
        tmp_path,
        "V5__index.sql",
        "-- tenantkit: no-transactions\nCREATE INDEX CONCURRENTLY a_x ON a (x);\n",
    )
    with pytest.raises(MigrationError, match=r"V5__index\.sql: unknown tenantkit directive"):
        load_migrations(tmp_path)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("SELECT 1; SELECT 2;", 2),
        ("SELECT 1", 1),
        ("SELECT ';' AS semi;", 1),
        ("SELECT E'it\\'s; here';", 1),
        ("SELECT 'it''s; here';", 1),
        ('CREATE TABLE "a;b" (x int);', 1),
        ("-- a; comment\nSELECT 1; /* nested /* ; */ ; */ SELECT 2;", 2),
        ("DO $body$ BEGIN PERFORM 1; PERFORM 2; END $body$;", 1),
        ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; SELECT f();", 2),
        (";;  ; -- nothing\n", 0),
    ],
)
def test_statements_are_counted_outside_strings_comments_and_bodies(text: str, count: int) -> None:
    assert len(split_statements(text)) == count


def test_a_migration_never_shows_its_sql_in_its_repr() -> None:
    migration = Migration(1, "a", "V1__a.sql", "SELECT 'long text'", "00", True)
    assert "long text" not in repr(migration)
