"""Bring one database to the newest migration: under a per-database advisory lock, each pending
file in order, as the owner of the application's objects, each recorded with its checksum.

`conn` is always an autocommit connection of the admin to the target database. The admin owns
the tracking table (`tenantkit_schema.applied_migrations`, nobody else may touch it); the files
run as `role` (the tenant database's objects role), which must be a NOLOGIN role without
SUPERUSER, CREATEROLE, CREATEDB or BYPASSRLS that the admin may SET ROLE to.
"""

import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from ..core.connection import first_line
from ..core.errors import TenantkitError
from ..provisioner.postgres import AdvisoryLock
from .files import Migration, MigrationError

log = logging.getLogger(__name__)

TRACKING_SCHEMA = "tenantkit_schema"
TRACKING_TABLE = "applied_migrations"
LOCK_SCOPE = "migrations"
DEFAULT_LOCK_WAIT_MS = 60_000
"""How long an apply waits for another apply on the same database before it gives up."""

_TABLE = sql.Identifier(TRACKING_SCHEMA, TRACKING_TABLE)
_SCHEMA = sql.Identifier(TRACKING_SCHEMA)
OBSERVE_TRACKING_TABLE = sql.SQL("SELECT to_regclass(%s) IS NOT NULL")
SELECT_APPLIED = sql.SQL(
    "SELECT version, name, checksum, applied_at, duration_ms, applied_by FROM {} ORDER BY version"
).format(_TABLE)
CREATE_TRACKING = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_SCHEMA),
    sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} ("
        " version bigint PRIMARY KEY CHECK (version > 0),"
        " name text NOT NULL,"
        " checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL,"
        " duration_ms bigint NOT NULL,"
        " applied_by text NOT NULL)"
    ).format(_TABLE),
    # Only the admin (the owner) reads or writes the record: not PUBLIC, so neither the tenant's
    # logins nor the objects role the files run as (a migration cannot forge its own history).
    sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(_SCHEMA),
    sql.SQL("REVOKE ALL ON TABLE {} FROM PUBLIC").format(_TABLE),
]
INSERT_APPLIED = sql.SQL(
    "INSERT INTO {} (version, name, checksum, applied_at, duration_ms, applied_by) "
    "VALUES (%s, %s, %s, clock_timestamp(), %s, %s)"
).format(_TABLE)
OBSERVE_ROLE = sql.SQL(
    "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, "
    "pg_has_role(current_user, oid, 'SET') FROM pg_roles WHERE rolname = %s"
)
OBSERVE_INVALID_INDEXES = sql.SQL(
    "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1"
)


def migration_lock(database: str) -> AdvisoryLock:
    """Serializes the migration runs of one database."""
    return AdvisoryLock(LOCK_SCOPE, database)


@dataclass(frozen=True)
class AppliedMigration:
    """A row of the tracking table: a migration applied to this database."""

    version: int
    name: str
    checksum: str
    applied_at: datetime
    duration_ms: int
    applied_by: str
    """The role the file ran as."""


@dataclass(frozen=True)
class Drift:
    """An applied migration that no longer matches the directory, or a file that can no longer be
    applied in order. apply_migrations refuses to run anything while there is drift."""

    version: int
    path: str | None
    """The file in the directory now; None when it is missing."""
    recorded: str | None
    """The checksum recorded when it was applied; None for a file never applied."""
    now: str | None
    """The checksum of the file now; None when it is missing."""
    kind: str = "changed"
    """`changed` (edited after it was applied), `missing` (applied, no file now) or
    `out-of-order` (a new file older than the database's current version)."""
    name: str = ""

    @property
    def description(self) -> str:
        """One line for a person: which version, which file, what is wrong."""
        if self.kind == "missing":
            return f"V{self.version} ({self.name}) was applied but its file is missing"
        if self.kind == "out-of-order":
            return (
                f"V{self.version} ({self.path}) is not applied but older than the current "
                "version: rename it to a version after the newest"
            )
        return (
            f"V{self.version} ({self.path}) changed after it was applied "
            f"(recorded sha256 {str(self.recorded)[:12]}, now {str(self.now)[:12]})"
        )


@dataclass(frozen=True)
class DatabaseStatus:
    """Where one database stands against a migrations directory."""

    current: int | None
    """The highest applied version; None when nothing was applied."""
    applied: tuple[AppliedMigration, ...]
    pending: tuple[Migration, ...]
    """In the directory, not applied, in order."""
    drift: tuple[Drift, ...]
    tracked: bool = False
    """Whether the database has the tracking table (False: never migrated)."""


@dataclass(frozen=True)
class FailedMigration:
    """The migration an apply stopped at, and why (the server's message; never a secret)."""

    version: int
    path: str
    error: str


@dataclass(frozen=True)
class ApplyResult:
    """What one apply did to one database."""

    applied: tuple[int, ...]
    """Versions applied by this call, in order."""
    current: int | None
    """The database's version after the call."""
    failed: FailedMigration | None = None
    """None when every pending migration was applied."""


def _ordered(migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    ordered = tuple(sorted(migrations, key=lambda m: m.version))
    for before, after in itertools.pairwise(ordered):
        if before.version == after.version:
            raise MigrationError(
                f"version {after.version} is both {before.path} and {after.path} (one file per "
                "version)"
            )
    return ordered


def _read_tracking(conn: psycopg.Connection) -> tuple[bool, tuple[AppliedMigration, ...]]:
    qualified = f"{TRACKING_SCHEMA}.{TRACKING_TABLE}"
    tracked = conn.execute(OBSERVE_TRACKING_TABLE, (qualified,)).fetchone() == (True,)
    if not tracked:
        return False, ()
    return True, tuple(AppliedMigration(*row) for row in conn.execute(SELECT_APPLIED))


def applied_migrations(conn: psycopg.Connection) -> tuple[AppliedMigration, ...]:
    """What the database recorded, in version order (none if it was never migrated)."""
    return _read_tracking(conn)[1]


def database_status(conn: psycopg.Connection, migrations: Sequence[Migration]) -> DatabaseStatus:
    """Compare what the database recorded with `migrations` (read only: a database without the
    tracking table is at None with everything pending)."""
    files = _ordered(migrations)
    tracked, applied = _read_tracking(conn)
    by_version = {m.version: m for m in files}
    drift: list[Drift] = []
    for row in applied:
        file = by_version.get(row.version)
        if file is None:
            drift.append(Drift(row.version, None, row.checksum, None, "missing", row.name))
        elif file.checksum != row.checksum:
            drift.append(Drift(row.version, file.path, row.checksum, file.checksum, name=file.name))
    done = {row.version for row in applied}
    current = max(done) if done else None
    pending = tuple(m for m in files if m.version not in done)
    drift += [
        Drift(m.version, m.path, None, m.checksum, "out-of-order", m.name)
        for m in pending
        if current is not None and m.version < current
    ]
    return DatabaseStatus(current, applied, pending, tuple(drift), tracked)


AfterEach = Callable[[psycopg.Connection, Migration], None]


def apply_migrations(
    conn: psycopg.Connection,
    migrations: Sequence[Migration],
    *,
    role: str | None,
    lock_timeout_ms: int = 5000,
    statement_timeout_ms: int = 600_000,
    after_each: AfterEach | None = None,
    lock_wait_ms: int = DEFAULT_LOCK_WAIT_MS,
) -> ApplyResult:
    """Apply the pending `migrations` in order, each once, as `role`; stop at the first failure.

    Under the database's migration lock (a concurrent apply waits up to `lock_wait_ms`, then
    raises MigrationError; 0: do not wait). Raises MigrationError, changing nothing, on drift or
    an unusable role. A transactional file runs with the timeouts and the role in one transaction
    with `after_each(conn, migration)` (run as the admin; a raise rolls the file back) and its
    tracking row; a failure rolls all of it back and is returned in `failed`. `role=None` runs
    the files as the connection's own user: only for a connection that logs in as the owner of
    the application's objects, never the admin's.
    """
    if not conn.autocommit:
        raise MigrationError("apply_migrations needs an autocommit connection")
    for label, value in (
        ("lock_timeout_ms", lock_timeout_ms),
        ("statement_timeout_ms", statement_timeout_ms),
        ("lock_wait_ms", lock_wait_ms),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise MigrationError(f"{label} must be a whole number of milliseconds >= 0")
    database = conn.info.dbname
    with _holding_migration_lock(conn, database, lock_wait_ms):
        status = database_status(conn, migrations)
        if status.drift:
            raise MigrationError(
                f"database {database}: refusing to migrate, the migrations drifted from what "
                f"was applied: {'; '.join(d.description for d in status.drift)}"
            )
        if not status.pending:
            return ApplyResult((), status.current)
        if role is not None:
            _check_role(conn, database, role)
        if not status.tracked:
            with conn.transaction():
                for statement in CREATE_TRACKING:
                    conn.execute(statement)
        applied: list[int] = []
        current = status.current
        timeouts = (lock_timeout_ms, statement_timeout_ms)
        for migration in status.pending:
            failure = _apply_one(conn, database, migration, role, timeouts, after_each)
            if failure is not None:
                return ApplyResult(tuple(applied), current, failure)
            applied.append(migration.version)
            current = migration.version
        return ApplyResult(tuple(applied), current)


@contextmanager
def _holding_migration_lock(
    conn: psycopg.Connection, database: str, lock_wait_ms: int
) -> Iterator[None]:
    """The database's session advisory lock for migrations: waited for at most lock_wait_ms
    (lock_timeout bounds an advisory lock wait like any other lock wait)."""
    key = migration_lock(database).key
    held_elsewhere = MigrationError(
        f"another migration run holds the lock on database {database} "
        f"(waited {lock_wait_ms} ms); retry when it has finished"
    )
    if lock_wait_ms == 0:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row != (True,):
            raise held_elsewhere
    else:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (str(lock_wait_ms),))
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        except errors.LockNotAvailable:
            raise held_elsewhere from None
        finally:
            conn.execute("RESET lock_timeout")
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def _check_role(conn: psycopg.Connection, database: str, role: str) -> None:
    """Refuse, before any change, a role the files must not run as or cannot be run as."""
    row = conn.execute(OBSERVE_ROLE, (role,)).fetchone()
    if row is None:
        raise MigrationError(f"database {database}: role {role} (to run migrations as) is missing")
    login, superuser, createrole, createdb, bypassrls, can_set = row
    powers = [
        name
        for name, held in (
            ("LOGIN", login),
            ("SUPERUSER", superuser),
            ("CREATEROLE", createrole),
            ("CREATEDB", createdb),
            ("BYPASSRLS", bypassrls),
        )
        if held
    ]
    if powers:
        raise MigrationError(
            f"database {database}: migrations run as the owner of the application's objects, "
            f"a NOLOGIN role without special powers; {role} has {', '.join(powers)}"
        )
    if not can_set:
        raise MigrationError(
            f"database {database}: the admin may not SET ROLE {role} (it needs the role granted "
            "WITH SET TRUE: the provisioner's tenant database plan grants it)"
        )


def _set_session(conn: psycopg.Connection, role: str | None, timeouts: tuple[int, int]) -> None:
    """The timeouts and the role for the file. Session-level on purpose, not SET LOCAL: set
    inside a transaction they end with its rollback, and a file that (wrongly) commits would
    not run its rest as the admin without timeouts; _reset_session ends them after the file."""
    lock_timeout_ms, statement_timeout_ms = timeouts
    conn.execute(
        "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
        (str(lock_timeout_ms), str(statement_timeout_ms)),
    )
    if role is not None:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))


def _reset_session(conn: psycopg.Connection) -> None:
    if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        return
    conn.execute("RESET ROLE")
    conn.execute("RESET lock_timeout")
    conn.execute("RESET statement_timeout")


def _run_file(conn: psycopg.Connection, migration: Migration) -> None:
    # No parameters and prepare=False: psycopg sends the text with the simple query protocol,
    # which runs a file of several statements as the server reads it.
    conn.execute(migration.sql.encode(), prepare=False)


def _error_text(error: BaseException, timeouts: tuple[int, int]) -> str:
    """The server's primary message (no DETAIL: it can quote row values), with the timeout a
    cancellation came from."""
    text = first_line(error)
    if isinstance(error, psycopg.Error) and error.diag.message_primary:
        text = error.diag.message_primary
    if isinstance(error, errors.LockNotAvailable):
        text += f" (lock_timeout {timeouts[0]} ms)"
    elif isinstance(error, errors.QueryCanceled):
        text += f" (statement_timeout {timeouts[1]} ms)"
    return text


def _apply_one(
    conn: psycopg.Connection,
    database: str,
    migration: Migration,
    role: str | None,
    timeouts: tuple[int, int],
    after_each: AfterEach | None,
) -> FailedMigration | None:
    started = time.monotonic()
    applied_by = role or conn.info.user

    def finish() -> None:
        """As the admin, in the transaction that records it: the caller's hook, then the row."""
        if after_each is not None:
            after_each(conn, migration)
        duration_ms = round((time.monotonic() - started) * 1000)
        conn.execute(
            INSERT_APPLIED,
            (migration.version, migration.name, migration.checksum, duration_ms, applied_by),
        )
        log.info(
            "applied migration V%s (%s) to database %s in %d ms",
            migration.version,
            migration.path,
            database,
            duration_ms,
        )

    try:
        if migration.transactional:
            with conn.transaction():
                _set_session(conn, role, timeouts)
                _run_file(conn, migration)
                if conn.info.transaction_status != TransactionStatus.INTRANS:
                    raise MigrationError(
                        "the file ended its own transaction (COMMIT or ROLLBACK in a "
                        "transactional migration); what ran before that stays"
                    )
                conn.execute("RESET ROLE")
                finish()
        else:
            try:
                _set_session(conn, role, timeouts)
                _run_file(conn, migration)
            finally:
                _reset_session(conn)
            with conn.transaction():
                finish()
    except (psycopg.Error, TenantkitError) as error:
        text = _error_text(error, timeouts)
        if not migration.transactional:
            text += _invalid_indexes(conn)
        log.warning(
            "migration V%s (%s) failed on database %s: %s",
            migration.version,
            migration.path,
            database,
            text,
        )
        return FailedMigration(migration.version, migration.path, text)
    finally:
        _reset_session(conn)
    return None


def _invalid_indexes(conn: psycopg.Connection) -> str:
    """A failed CREATE INDEX CONCURRENTLY leaves an INVALID index behind, and the next apply runs
    the file again: name such indexes, to drop (DROP INDEX CONCURRENTLY) before the retry."""
    if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        return ""
    try:
        names = [row[0] for row in conn.execute(OBSERVE_INVALID_INDEXES)]
    except psycopg.Error:
        return ""
    if not names:
        return ""
    return (
        f"; invalid indexes left in the database: {', '.join(names)} (drop them with DROP INDEX "
        "CONCURRENTLY before the next apply, which runs the file again)"
    )
