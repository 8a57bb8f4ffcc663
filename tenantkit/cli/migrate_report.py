"""What `tenantctl migrate` plan, apply and status share, locally and in AWS: the migrations
directory read and linted, each target's status read and shown, and the options and tables
the commands have in common."""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lambda_src.migrations.apply import DatabaseStatus
from lambda_src.migrations.files import Migration, MigrationError, load_migrations

from ..catalog import Catalog, CatalogError
from ..migrate.rollout import MigrationTarget, Skipped, read_status
from ..migrate.waves import APPLIED, FAILED
from ..migrate_lint import Finding, lint_migrations
from .output import EXIT_INVALID, fail, out

PARALLEL_READS = 4
"""Databases whose status is read at once."""

TenantsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tenant",
        help="Only this tenant (a pool tenant's id stands for the pool). Repeat for several.",
    ),
]


def migrations_of(loaded: Catalog, as_json: bool) -> tuple[Path, tuple[Migration, ...]]:
    """The catalog's migrations directory and its files; exit 2 naming the directory or file."""
    try:
        directory = loaded.migrations_directory()
        return directory, load_migrations(directory)
    except (CatalogError, MigrationError) as error:
        fail(EXIT_INVALID, str(error), as_json, label="invalid migrations")


def lint(migrations: Sequence[Migration], as_json: bool) -> list[Finding]:
    """squawk's findings; exit 2 if squawk cannot lint a file."""
    try:
        return lint_migrations(migrations)
    except MigrationError as error:
        fail(EXIT_INVALID, str(error), as_json, label="lint")


def findings_json(findings: Sequence[Finding]) -> list[dict[str, object]]:
    """The `lint` list of the JSON output."""
    return [
        {"file": f.path, "line": f.line, "rule": f.rule, "message": f.message} for f in findings
    ]


def statuses(
    targets: Sequence[MigrationTarget], migrations: Sequence[Migration]
) -> list[DatabaseStatus | str]:
    """Each target's status, or why it could not be read (in target order)."""

    def one(target: MigrationTarget) -> DatabaseStatus | str:
        try:
            return read_status(target, migrations)
        except Exception as error:  # an unreachable database is that target's report
            return str(error) or type(error).__name__

    with ThreadPoolExecutor(max_workers=PARALLEL_READS) as pool:
        return list(pool.map(one, targets))


def status_json(target: MigrationTarget, status: DatabaseStatus | str) -> dict[str, Any]:
    """One target's version, pending versions and drift (or the reason it could not be read)."""
    row: dict[str, Any] = {"target": target.label, "tier": target.tier, "database": target.database}
    if isinstance(status, str):
        return {**row, "current": None, "pending": [], "drift": [], "error": status}
    return {
        **row,
        "current": status.current,
        "pending": [m.version for m in status.pending],
        "drift": [d.description for d in status.drift],
        "error": None,
    }


def version(value: int | None) -> str:
    """A version as tables show it (`-` for none)."""
    return "-" if value is None else str(value)


ROLLOUT_COLOURS = {APPLIED: "green", FAILED: "red"}
"""A rollout result's colour in tables (any other result: yellow)."""


def rollout_cells(target: dict[str, Any]) -> tuple[str, str, str]:
    """An apply's target as its table shows it: the coloured result with its reason, the
    versions applied, and the version it is at."""
    colour = ROLLOUT_COLOURS.get(target["status"], "yellow")
    applied = target["status"] == APPLIED
    shown = "up to date" if applied and not target["applied"] else target["status"]
    detail = target["error"] or target["reason"] or ""
    return (
        f"[{colour}]{shown}[/{colour}]" + (f": {detail}" if detail else ""),
        ", ".join(map(str, target["applied"])) or "-",
        version(target["current"]),
    )


def print_statuses(
    rows: Sequence[dict[str, Any]], title: str, last: dict[str, str] | None = None
) -> None:
    """The per-target table of plan and status (with `last`: the last apply's failures)."""
    table = Table(title=title)
    columns = ["target", "tier", "current", "pending", "drift"]
    for column in columns + (["last apply"] if last is not None else []):
        table.add_column(column)
    for row in rows:
        cells = [row["target"], row["tier"]]
        if row["error"]:
            cells += ["?", "?", f"[red]{row['error']}[/red]"]
        else:
            cells += [
                version(row["current"]),
                ", ".join(map(str, row["pending"])) or "-",
                "[red]" + "; ".join(row["drift"]) + "[/red]" if row["drift"] else "-",
            ]
        table.add_row(*cells, *([last.get(row["target"], "-")] if last is not None else []))
    out.print(table)


def print_skipped(skipped: Sequence[Skipped]) -> None:
    """One line per catalog tenant left out."""
    for s in skipped:
        out.print(f"skipped {s.label} ({s.tier}): {s.reason}", highlight=False)


def print_findings(findings: Sequence[Finding]) -> None:
    """Each lint finding on a line of its own."""
    for finding in findings:
        out.print(f"[red]lint[/red] {finding.describe()}", highlight=False, soft_wrap=True)


def canary_ids(canary: str | None) -> list[str]:
    """`--canary a,b` as a list."""
    return [part.strip() for part in (canary or "").split(",") if part.strip()]
