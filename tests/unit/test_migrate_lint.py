"""Linting migrations with squawk: lock hazards are findings naming file, line and rule, unless
the file acknowledges the rule; the timeouts the engine sets are not findings."""

import subprocess
from pathlib import Path

import pytest

from lambda_src.migrations.files import Migration, load_migrations
from tenantkit import migrate_lint
from tenantkit.migrate_lint import Finding, lint_migrations, squawk_binary

CREATE_ITEMS = "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL);\n"


def migrations(tmp_path: Path, files: dict[str, str]) -> tuple[Migration, ...]:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return load_migrations(tmp_path)


def test_a_blocking_index_build_on_an_existing_table_is_a_finding(tmp_path: Path) -> None:
    # GIVEN a table made in one migration and indexed without CONCURRENTLY in the next
    found = lint_migrations(
        migrations(
            tmp_path,
            {
                "V1__create_items.sql": CREATE_ITEMS,
                "V2__index_names.sql": (
                    "-- speeds up search\n\nCREATE INDEX items_name ON items (name);\n"
                ),
            },
        )
    )
    # THEN squawk flags the index build, naming the file, the line and the rule
    assert [(f.path, f.line, f.rule) for f in found] == [
        ("V2__index_names.sql", 3, "require-concurrent-index-creation")
    ]
    assert "blocked" in found[0].message
    assert (
        found[0]
        .describe()
        .startswith("V2__index_names.sql:3:1: require-concurrent-index-creation: ")
    )


def test_the_engines_own_timeouts_are_no_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a concurrent index build (no transaction): squawk's timeout rules apply to it
    files = migrations(
        tmp_path,
        {
            "V1__create_items.sql": CREATE_ITEMS,
            "V2__index.sql": (
                "-- tenantkit: no-transaction\n"
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS items_name ON items (name);\n"
            ),
        },
    )
    # THEN it is clean: squawk is told the timeouts the engine sets before every file
    assert lint_migrations(files) == []
    # (without that, squawk would ask the file for both)
    monkeypatch.setattr(migrate_lint, "ENGINE_PREAMBLE", "")
    assert sorted(f.rule for f in lint_migrations(files)) == [
        "require-lock-timeout",
        "require-statement-timeout",
    ]


@pytest.mark.parametrize(
    "acknowledgement",
    [
        "-- squawk-ignore require-concurrent-index-creation\n",
        "-- squawk-ignore-file require-concurrent-index-creation\n\n",
    ],
)
def test_a_finding_the_file_acknowledges_passes(tmp_path: Path, acknowledgement: str) -> None:
    # GIVEN the blocking index build, acknowledged (the table is small, say)
    found = lint_migrations(
        migrations(
            tmp_path,
            {
                "V1__create_items.sql": CREATE_ITEMS,
                "V2__index_names.sql": acknowledgement
                + "CREATE INDEX items_name ON items (name);\n",
            },
        )
    )
    # THEN there is no finding
    assert found == []


def test_only_the_acknowledged_rule_is_silenced(tmp_path: Path) -> None:
    found = lint_migrations(
        migrations(
            tmp_path,
            {
                "V1__create_items.sql": CREATE_ITEMS,
                "V2__change.sql": (
                    "-- squawk-ignore-file require-concurrent-index-creation\n"
                    "CREATE INDEX items_name ON items (name);\n"
                    "ALTER TABLE items ADD COLUMN price bigint NOT NULL;\n"
                ),
            },
        )
    )
    assert [(f.path, f.line, f.rule) for f in found] == [
        ("V2__change.sql", 3, "adding-required-field")
    ]


def test_a_statement_squawk_cannot_parse_is_a_finding(tmp_path: Path) -> None:
    found = lint_migrations(migrations(tmp_path, {"V1__typo.sql": "CREAT TABLE items ();\n"}))
    assert found
    assert {f.path for f in found} == {"V1__typo.sql"}
    assert all(f.line == 1 for f in found)


def test_the_linter_is_the_pinned_squawk() -> None:
    version = subprocess.run(
        [str(squawk_binary()), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == "squawk 2.70.0"


def test_rules_left_out_say_why() -> None:
    assert migrate_lint.EXCLUDED_RULES
    assert all(len(reason) > 40 for reason in migrate_lint.EXCLUDED_RULES.values())
    assert Finding("V1__a.sql", 1, 1, "r", "m").describe() == "V1__a.sql:1:1: r: m"


def test_the_sample_applications_migrations_pass_the_lint_and_show_a_no_transaction_file() -> None:
    # GIVEN the migrations the sample catalog (tenants.yaml, schema: section) names
    sample = load_migrations(Path(__file__).resolve().parents[2] / "migrations")
    # THEN squawk finds nothing in them, as `tenantctl migrate plan` would refuse otherwise,
    # and one of them is a concurrent index build outside a transaction
    assert lint_migrations(sample) == []
    assert [m.transactional for m in sample] == [True, True, False]
    assert "CREATE INDEX CONCURRENTLY" in sample[-1].sql
