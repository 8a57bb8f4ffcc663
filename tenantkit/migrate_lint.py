"""Lint migrations with squawk (the `squawk-cli` wheel's binary) before they reach any database.

Every finding is an error unless the file acknowledges the rule with squawk's own comments:
`-- squawk-ignore <rule>` on the line before the statement, or `-- squawk-ignore-file <rule>`.
Each file is linted as the engine runs it: squawk sees the `lock_timeout` and
`statement_timeout` the engine sets first (so its require-lock-timeout and
require-statement-timeout rules count them instead of asking every file for its own; squawk 2.70
does not notice a file that sets them back to 0 itself), and a transactional file is linted as
inside a transaction (`--assume-in-transaction`).
"""

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lambda_src.migrations.files import Migration, MigrationError

from .engine import ENGINE_VERSION

SQUAWK = "squawk"
SQUAWK_TIMEOUT_S = 60
EXCLUDED_RULES = {
    "prefer-robust-stmts": (
        "the engine records every file and never runs an applied one again, and a transactional "
        "file rolls back whole; for a no-transaction CREATE INDEX CONCURRENTLY the `IF NOT "
        "EXISTS` this rule asks for would hide the INVALID index a failed build leaves, where "
        "the re-run should fail loudly"
    ),
}
"""squawk rules that do not apply to tenantkit's engine, with the reason."""
ENGINE_PREAMBLE = "SET lock_timeout = '5s'; SET statement_timeout = '10min';\n"
"""What the engine sets before each file (apply_migrations' lock_timeout_ms and
statement_timeout_ms; the values do not matter to squawk), as one line put before the file's
text: findings' lines are shifted back by one."""


@dataclass(frozen=True)
class Finding:
    """One squawk finding in one migration file (an error: the file does not acknowledge it)."""

    path: str
    """The migration's file name."""
    line: int
    """1-based line in the file."""
    column: int
    """1-based column."""
    rule: str
    message: str
    help: str | None = None

    def describe(self) -> str:
        """`V0002__index.sql:3:1: require-concurrent-index-creation: ...` (with squawk's hint)."""
        text = f"{self.path}:{self.line}:{self.column}: {self.rule}: {self.message}"
        return f"{text} ({self.help})" if self.help else text


def squawk_binary() -> Path:
    """The squawk of this environment (beside its Python, as pip installs it), else on PATH."""
    beside = Path(sys.executable).parent / SQUAWK
    if beside.is_file():
        return beside
    found = shutil.which(SQUAWK)
    if found is None:
        raise MigrationError(
            "squawk is not installed (make setup installs squawk-cli from requirements-dev.txt)"
        )
    return Path(found)


def lint_migrations(
    migrations: Sequence[Migration], *, pg_version: str = ENGINE_VERSION
) -> list[Finding]:
    """squawk's findings for every migration, in file order; [] when all are clean or every
    finding is acknowledged in its file. Raises MigrationError naming a file squawk could not
    lint."""
    binary = squawk_binary()
    findings: list[Finding] = []
    for migration in migrations:
        findings += _lint_one(binary, migration, pg_version)
    return findings


def _lint_one(binary: Path, migration: Migration, pg_version: str) -> list[Finding]:
    command = [
        str(binary),
        "--reporter=json",
        f"--pg-version={pg_version}",
        f"--exclude={','.join(sorted(EXCLUDED_RULES))}",
        f"--stdin-filepath={migration.path}",
        "--assume-in-transaction" if migration.transactional else "--no-assume-in-transaction",
    ]
    completed = subprocess.run(
        command,
        input=ENGINE_PREAMBLE + migration.sql,
        capture_output=True,
        text=True,
        timeout=SQUAWK_TIMEOUT_S,
        check=False,
    )
    try:
        reported = json.loads(completed.stdout or "[]")
    except json.JSONDecodeError:
        reported = None
    if completed.returncode not in (0, 1) or not isinstance(reported, list):
        reason = (completed.stderr or completed.stdout).strip().splitlines()
        raise MigrationError(
            f"{migration.path}: squawk could not lint it (exit {completed.returncode}: "
            f"{reason[0] if reason else 'no output'})"
        )
    preamble_lines = ENGINE_PREAMBLE.count("\n")
    return [
        Finding(
            path=migration.path,
            line=int(item["line"]) + 1 - preamble_lines,
            column=int(item["column"]) + 1,
            rule=str(item["rule_name"]),
            message=str(item["message"]),
            help=str(item["help"]) if item.get("help") else None,
        )
        for item in reported
    ]
