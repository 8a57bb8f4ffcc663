"""SQL steps and the one runner that executes them: a plan is a list of Steps (pure data, built
by the provisioner's plans), run_steps sends them in order, grouping consecutive steps for one
database and role into one transaction."""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .connection import ConnectionSettings, RetryPolicy, connect, first_line
from .errors import TenantkitError

log = logging.getLogger(__name__)


def compose(text: str, names: Mapping[str, sql.Composable]) -> sql.Composed:
    """`text` with the `names` (identifiers and literals of constants) its {placeholders} use;
    values from a request are never formatted in: they are bound parameters (%s)."""
    return sql.SQL(text).format(**{k: v for k, v in names.items() if "{" + k + "}" in text})


@dataclass(frozen=True)
class Step:
    """One SQL statement of a plan, where to run it, and whether it changes anything."""

    description: str
    """What the step does, for logs and summaries; never holds a secret."""
    statement: sql.SQL | sql.Composed
    params: tuple[object, ...] = ()
    database: str | None = None
    """None: the admin connection's database; else run inside this database."""
    changes: bool = True
    """False for re-assertions that are no-ops once the tenant has converged."""
    changes_only_if_rows: bool = False
    """For DML: the step changed something only if it touched a row."""
    role: str | None = None
    """Run as this role (SET LOCAL ROLE), e.g. the pool maintainer."""
    transactional: bool = True
    """False for statements PostgreSQL refuses inside a transaction block (CREATE DATABASE)."""


def transaction_groups(steps: Sequence[Step]) -> list[list[Step]]:
    """Consecutive steps for one database and one role run in one transaction; a step that
    cannot run in a transaction (CREATE/DROP DATABASE) runs alone."""
    groups: list[list[Step]] = []
    for step in steps:
        previous = groups[-1][-1] if groups else None
        if (
            previous is not None
            and step.transactional
            and previous.transactional
            and (step.database, step.role) == (previous.database, previous.role)
        ):
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def run_steps(
    conn: psycopg.Connection,
    settings: ConnectionSettings,
    retry: RetryPolicy,
    steps: Sequence[Step],
) -> list[str]:
    """Run steps in order (admin database on `conn`, others on a connection to their database).

    Consecutive steps share a transaction (one commit instead of one per statement; all or
    nothing). Returns the descriptions of the steps that changed something. A failing step
    raises TenantkitError naming it; committed groups stay done and a replay converges.
    """
    changed: list[str] = []
    others: dict[str, psycopg.Connection] = {}
    try:
        for group in transaction_groups(steps):
            first = group[0]
            target = conn
            if first.database is not None and first.database != settings.dbname:
                if first.database not in others:
                    others[first.database] = connect(settings.for_database(first.database), retry)
                target = others[first.database]
            done: list[str] = []
            step = first
            try:
                if not first.transactional:
                    rowcount = target.execute(first.statement, first.params or None).rowcount
                    done += _changed(first, rowcount)
                else:
                    with target.transaction():
                        if first.role is not None:
                            target.execute(
                                sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(first.role))
                            )
                        for step in group:
                            rowcount = target.execute(step.statement, step.params or None).rowcount
                            done += _changed(step, rowcount)
            except psycopg.Error as error:
                raise TenantkitError(
                    f"step '{step.description}' failed: {first_line(error)}"
                ) from None
            for step in group:
                log.info("done: %s", step.description)
            changed += done
    finally:
        for other in others.values():
            other.close()
    return changed


def _changed(step: Step, rowcount: int) -> list[str]:
    if step.changes and (rowcount > 0 or not step.changes_only_if_rows):
        return [step.description]
    return []
