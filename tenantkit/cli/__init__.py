"""tenantctl: the tenantkit command line (Typer + Rich).

Exit codes: 0 success; 1 provisioning failure, an isolation leak, or a host whose registry
could not be read (`list`/`status --provision aws`, after printing what was read); 2 invalid
input (catalog, tenant id, arguments); 3 environment problem (PostgreSQL binaries missing,
server would not start, nothing provisioned yet; for `verify --dsn`, a pool it cannot reach or
without verify probes; no AWS Region or CA bundle for `--provision aws`; for
`migrate apply --provision aws`, no credentials or a host's rollout state machine not
deployed). Every non-zero exit goes through `output.fail`: with --json, one JSON document on
stdout.

The commands live by group: local_commands (validate, names, run, verify), lifecycle_commands
(onboard, suspend, resume, offboard, list, status), mobility_commands (export, import, move),
usage_commands (usage), deploy_commands (deploy, plan), migrate_commands (migrate plan, apply,
status) and bench_commands (bench rls, onboard, synth, migrate, move, usage).
"""

import inspect
from collections.abc import Callable
from typing import Any

import typer

from .bench_commands import (
    bench_migrate,
    bench_move,
    bench_onboard,
    bench_rls,
    bench_synth,
    bench_usage,
)
from .deploy_commands import deploy, plan
from .lifecycle_commands import list_tenants, offboard, onboard, resume, status, suspend
from .local_commands import names, run, validate, verify
from .migrate_commands import apply as migrate_apply
from .migrate_commands import plan as migrate_plan
from .migrate_commands import status as migrate_status
from .mobility_commands import export, import_, move
from .output import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_INVALID
from .usage_commands import usage

__all__ = ["EXIT_ENVIRONMENT", "EXIT_FAILED", "EXIT_INVALID", "app", "main"]

app = typer.Typer(
    help="tenantkit: tenant isolation tiers for PostgreSQL on AWS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: print a table, write JSON (and a plot).")
migrate_app = typer.Typer(
    help="The application's schema (the catalog's schema: directory) in every tenant database "
    "and the pool: plan, apply in waves, status.",
    no_args_is_help=True,
)


def help_as_written(command: Callable[..., Any]) -> str:
    """A command's docstring with each paragraph on one line. Rich prints a help text's line
    breaks as they are: a docstring's, wrapped at 100 columns, would break sentences."""
    paragraphs = inspect.cleandoc(command.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def _register(group: typer.Typer, command: Callable[..., Any], name: str | None = None) -> None:
    group.command(name, help=help_as_written(command))(command)


# In the order `tenantctl --help` lists them.
_register(app, validate)
_register(app, names)
_register(app, run)
_register(app, verify)
_register(app, onboard)
_register(app, suspend)
_register(app, resume)
_register(app, offboard)
_register(app, export)
_register(app, import_, "import")
_register(app, move)
_register(app, deploy)
_register(app, list_tenants, "list")
_register(app, status)
_register(app, usage)
_register(app, plan)
_register(bench_app, bench_rls, "rls")
_register(bench_app, bench_onboard, "onboard")
_register(bench_app, bench_synth, "synth")
_register(bench_app, bench_migrate, "migrate")
_register(bench_app, bench_move, "move")
_register(bench_app, bench_usage, "usage")
_register(migrate_app, migrate_plan, "plan")
_register(migrate_app, migrate_apply, "apply")
_register(migrate_app, migrate_status, "status")
app.add_typer(migrate_app, name="migrate")
app.add_typer(bench_app, name="bench")


def main() -> None:
    """Console-script entry point."""
    app()
