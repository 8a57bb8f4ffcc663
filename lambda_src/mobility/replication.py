"""The online move's logical replication, in SQL any caller that reaches both databases as the
admin can run (tenantctl locally; a function inside the VPC could): a publication of the
tenant's tables on the source (the pool's protected tables with a row filter `tenant_id =
<id>`, or every table of a tenant database), a logical slot, a replication login that lives as
long as the move, and a subscription in the target database that copies the rows and then
follows the writes until the cut-over.

Names come from the tenant id alone (ReplicationNames), so every step, and the clean-up after
a failure or a kill, finds what an earlier run made. The clean-up drops all of it, slot
first-class: a slot nobody reads keeps the source's WAL forever.

The login's password is generated here, set as a SCRAM verifier (the password itself is never
in CREATE ROLE's text) and is only in the subscription's connection string: PostgreSQL 16
requires a non-superuser's subscription to carry it there (a passfile or PGPASSWORD is refused),
so it is in pg_subscription (superusers only) and, if the server logs DDL, in the log: the
caller refuses log_statement = ddl | all (refuse_logged_ddl), the subscription is created with
connect = false (that statement cannot fail on the connection, and a failed statement is
logged with its text), the login expires on its own (VALID UNTIL) and is dropped at clean-up.
"""

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from ..core.errors import TenantkitError
from ..tenancy import validate_tenant_id
from .tables import Table, TenantScope

NAME_PREFIX = "tenantkit_move_"
LOGIN_MARGIN = timedelta(minutes=15)
"""A move's login expires this long after the move's catch-up and drain could last at most
(create_login's `timeout_s`): one the clean-up never reached stops working soon after."""
LOGGED_DDL = ("ddl", "all")


class ReplicationError(TenantkitError):
    """The online move's replication could not be set up, did not catch up, or failed."""


@dataclass(frozen=True)
class ReplicationNames:
    """The publication, slot, subscription and login of one tenant's online move (one name:
    each lives in its own namespace, and a reader of pg_replication_slots sees whose it is)."""

    tenant_id: str

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant_id)

    @property
    def name(self) -> str:
        """`tenantkit_move_<id>` (hyphens as underscores; at most 47 characters)."""
        return NAME_PREFIX + self.tenant_id.replace("-", "_")

    @property
    def identifier(self) -> sql.Identifier:
        """The name as an SQL identifier."""
        return sql.Identifier(self.name)


@dataclass(frozen=True)
class Publisher:
    """How the target's server reaches the source: its address, database and the CA file it
    verifies the source's certificate with (a path the target server can read)."""

    host: str
    port: int
    dbname: str
    ca_file: str


def refuse_unready_source(conn: psycopg.Connection) -> None:
    """The source must decode its WAL logically (wal_level = logical; on RDS and Aurora the
    rds.logical_replication parameter, applied at a reboot)."""
    level = conn.execute("SHOW wal_level").fetchone()
    if level is None or level[0] != "logical":
        raise ReplicationError(
            f"the source server runs with wal_level = {level[0] if level else '?'}, an online "
            "move needs logical (RDS/Aurora: set rds.logical_replication = 1 in the parameter "
            "group and reboot)"
        )


def refuse_logged_ddl(conn: psycopg.Connection) -> None:
    """The subscription's statement holds the login's password: refuse a database whose
    server writes DDL statements into its log (log_statement ddl or all, or every statement's
    text through log_min_duration_statement = 0 or more)."""
    row = conn.execute(
        "SELECT current_setting('log_statement'), "
        "current_setting('log_min_duration_statement')::int"
    ).fetchone()
    assert row is not None
    statement, duration = str(row[0]), int(row[1])
    if statement in LOGGED_DDL:
        raise ReplicationError(
            f"the target server logs statements (log_statement = {statement}): the "
            "subscription's connection string would be written to its log with the "
            "replication password; set log_statement to none or mod, or move offline"
        )
    if duration >= 0:
        raise ReplicationError(
            f"the target server logs every statement that runs {duration} ms or longer "
            "(log_min_duration_statement) with its text: the subscription's connection "
            "string would be written to its log with the replication password; set it to "
            "-1, or move offline"
        )


def refuse_subscription_not_allowed(conn: psycopg.Connection) -> None:
    """Check what CREATE SUBSCRIPTION needs before it is sent: a statement that fails is
    written to the server log with its text (log_min_error_statement), password included."""
    row = conn.execute(
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
        "OR pg_has_role(current_user, 'pg_create_subscription', 'USAGE'), "
        "has_database_privilege(current_database(), 'CREATE')"
    ).fetchone()
    if row != (True, True):
        raise ReplicationError(
            "the target's admin may not create a subscription in this database (it needs "
            "pg_create_subscription and CREATE on the database): move offline"
        )


def table_owner(conn: psycopg.Connection, tables: Sequence[Table]) -> str:
    """The one role owning every table (a publication FOR TABLE is made by their owner)."""
    owners = {
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class "
            "WHERE oid = ANY(%s::regclass[])",
            ([t.qualified for t in tables],),
        ).fetchall()
    }
    if len(owners) != 1:
        raise ReplicationError(
            f"the tenant's tables have {len(owners)} owners ({', '.join(sorted(owners))}): a "
            "publication is made by the one owner of its tables"
        )
    return str(owners.pop())


def publication_sql(
    names: ReplicationNames, scope: TenantScope, tables: Sequence[Table]
) -> sql.Composed:
    """CREATE PUBLICATION of the tenant's tables: in the pool each with `WHERE (tenant_id =
    <id>)` (PostgreSQL 15+; UPDATE and DELETE then need tenant_id in the replica identity,
    which every pool table's primary key leads with). The id is validated and a literal: a
    publication's row filter takes no parameter."""
    entries: list[sql.Composable] = []
    for table in tables:
        if scope.pooled:
            entries.append(
                sql.SQL("{} WHERE (tenant_id = {})").format(
                    table.identifier, sql.Literal(scope.tenant_id)
                )
            )
        else:
            entries.append(table.identifier)
    # no TRUNCATE: a row filter does not apply to it, and a TRUNCATE of a pool table would
    # empty the target's table whatever tenant it was meant for
    return sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish = {})").format(
        names.identifier, sql.SQL(", ").join(entries), sql.Literal("insert, update, delete")
    )


def refuse_unreplicable_tables(
    conn: psycopg.Connection, tables: Sequence[Table], *, filtered: bool
) -> None:
    """Refuse a table whose updates and deletes could not be published: once a table is in a
    publication, PostgreSQL refuses UPDATE and DELETE on it without a replica identity (the
    primary key, by default), so the tenant's own writes would fail while the move catches up.
    With a row filter on tenant_id (`filtered`, the pool), tenant_id must be in it too."""
    for table in tables:
        row = conn.execute(
            "SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (table.qualified,)
        ).fetchone()
        identity = row[0] if row else "?"
        if identity == "f":
            continue
        if identity == "d" and not table.key:
            raise ReplicationError(
                f"{table.qualified}: no primary key (its replica identity): once published, "
                "its updates and deletes would be refused while the move catches up; move "
                "it offline, or give it a primary key"
            )
        if filtered and (identity != "d" or "tenant_id" not in table.key):
            raise ReplicationError(
                f"{table.qualified}: tenant_id is not in its replica identity (its primary "
                "key): the row filter could not replicate its updates and deletes"
            )
        if identity not in ("d", "i"):
            raise ReplicationError(
                f"{table.qualified}: replica identity {identity!r}: its updates and deletes "
                "could not be published"
            )


def create_publication(
    conn: psycopg.Connection, names: ReplicationNames, scope: TenantScope, tables: Sequence[Table]
) -> None:
    """Publish the tenant's tables, as their owner (the admin holds SET on it)."""
    refuse_unreplicable_tables(conn, tables, filtered=scope.pooled)
    owner = table_owner(conn, tables)
    database, database_owner = _database_and_owner(conn)
    may_create = conn.execute(
        "SELECT has_database_privilege(%s, current_database(), 'CREATE')", (owner,)
    ).fetchone()
    with conn.transaction():
        # CREATE PUBLICATION also needs CREATE on the database, which a tenant database's
        # objects role lacks: granted for this one statement, in its transaction
        grant = may_create != (True,)
        grant_sql = sql.SQL("GRANT CREATE ON DATABASE {} TO {}")
        revoke_sql = sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}")
        if grant:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(database_owner)))
            conn.execute(grant_sql.format(sql.Identifier(database), sql.Identifier(owner)))
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
        conn.execute(publication_sql(names, scope, tables))
        if grant:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(database_owner)))
            conn.execute(revoke_sql.format(sql.Identifier(database), sql.Identifier(owner)))


def create_login(
    conn: psycopg.Connection, names: ReplicationNames, scope: TenantScope, timeout_s: float
) -> str:
    """A replication login for this move (a generated password, set as a SCRAM verifier;
    it expires LOGIN_MARGIN after twice `timeout_s`, the catch-up's two waits) that reads the
    tenant's rows as the scope's reader role: in the pool the maintainer, whose policy admits
    every row while the initial copy reads them (the row filter keeps the others out).
    Returns the password."""
    password = secrets.token_urlsafe(32)
    verifier = conn.pgconn.encrypt_password(
        password.encode(), names.name.encode(), b"scram-sha-256"
    ).decode()
    until = (datetime.now(UTC) + 2 * timedelta(seconds=timeout_s) + LOGIN_MARGIN).isoformat()
    conn.execute(
        sql.SQL("CREATE ROLE {} LOGIN NOINHERIT PASSWORD {} VALID UNTIL {}").format(
            names.identifier, sql.Literal(verifier), sql.Literal(until)
        )
    )
    # RDS and Aurora: membership in rds_replication allows slots and streaming; stock
    # PostgreSQL checks the REPLICATION attribute, which a role holding it may give.
    has_role = conn.execute("SELECT to_regrole('rds_replication') IS NOT NULL").fetchone()
    if has_role == (True,):
        conn.execute(sql.SQL("GRANT rds_replication TO {}").format(names.identifier))
    replicates = conn.execute(
        "SELECT rolreplication FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if replicates == (True,):
        conn.execute(sql.SQL("ALTER ROLE {} REPLICATION").format(names.identifier))
    # INHERIT on the one grant: the login acts as the reader role and as nothing else
    conn.execute(
        sql.SQL("GRANT {} TO {} WITH INHERIT TRUE").format(
            sql.Identifier(scope.reader_role), names.identifier
        )
    )
    # tenant databases and the pool revoke CONNECT from PUBLIC: the login gets it by name
    _on_database(conn, sql.SQL("GRANT CONNECT ON DATABASE {} TO {}"), names)
    return password


def _database_and_owner(conn: psycopg.Connection) -> tuple[str, str]:
    row = conn.execute(
        "SELECT current_database(), pg_get_userbyid(datdba) FROM pg_database "
        "WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def _on_database(conn: psycopg.Connection, statement: sql.SQL, names: ReplicationNames) -> None:
    """GRANT or REVOKE on the current database, as its owner (the admin holds SET on it)."""
    database, owner = _database_and_owner(conn)
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
        conn.execute(statement.format(sql.Identifier(database), names.identifier))


def create_slot(conn: psycopg.Connection, names: ReplicationNames) -> None:
    """The logical slot, made here and not by CREATE SUBSCRIPTION: a subscription that makes
    its slot on its own server waits forever for its own transaction."""
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (names.name,))


def conninfo(publisher: Publisher, names: ReplicationNames, password: str) -> str:
    """The subscription's libpq connection string: TLS verify-full against the CA file."""
    fields = {
        "host": publisher.host,
        "port": str(publisher.port),
        "dbname": publisher.dbname,
        "user": names.name,
        "password": password,
        "sslmode": "verify-full",
        "sslrootcert": publisher.ca_file,
        "application_name": names.name,
    }
    return " ".join(f"{k}='{_conninfo_value(v)}'" for k, v in fields.items())


def _conninfo_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def create_subscription(
    conn: psycopg.Connection, names: ReplicationNames, publisher: Publisher, password: str
) -> None:
    """Subscribe the target database (the admin: pg_create_subscription and CREATE on the
    database) and start it: the initial copy of the filtered rows, then the stream. The
    statement that holds the password is sent only once the database's logging and the
    admin's rights were checked on this connection (a failing statement is logged whole)."""
    refuse_logged_ddl(conn)
    refuse_subscription_not_allowed(conn)
    conn.execute(
        sql.SQL(
            "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (connect = false, "
            "slot_name = {}, create_slot = false, enabled = false)"
        ).format(
            names.identifier,
            sql.Literal(conninfo(publisher, names, password)),
            names.identifier,
            sql.Literal(names.name),
        )
    )
    conn.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(names.identifier))
    conn.execute(
        sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION WITH (copy_data = true)").format(
            names.identifier
        )
    )


def current_lsn(conn: psycopg.Connection) -> str:
    """The source's WAL position now."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def subscription_state(conn: psycopg.Connection, names: ReplicationNames) -> dict[str, Any]:
    """Where the subscription is: its tables' sync states and its error counts (None: gone)."""
    found = conn.execute(
        "SELECT s.oid, coalesce(st.apply_error_count, 0), coalesce(st.sync_error_count, 0) "
        "FROM pg_subscription s LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid "
        "WHERE s.subname = %s AND s.subdbid = (SELECT oid FROM pg_database "
        "WHERE datname = current_database())",
        (names.name,),
    ).fetchone()
    if found is None:
        return {"exists": False}
    states: dict[str, int] = dict(
        conn.execute(
            "SELECT srsubstate, count(*) FROM pg_subscription_rel WHERE srsubid = %s GROUP BY 1",
            (found[0],),
        ).fetchall()
    )
    return {"exists": True, "oid": found[0], "errors": found[1] + found[2], "states": states}


def wait_synced(
    target: psycopg.Connection, names: ReplicationNames, tables: int, timeout: float
) -> None:
    """Until every table finished its initial copy (state `r`eady); ReplicationError on an
    apply or sync error or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        state = subscription_state(target, names)
        if not state["exists"]:
            raise ReplicationError(f"the subscription {names.name} is gone")
        if state["errors"]:
            raise ReplicationError(
                f"the subscription {names.name} reported {state['errors']} error(s) while "
                "copying (the target server's log has the reason)"
            )
        if state["states"].get("r", 0) == tables:
            return
        if time.monotonic() > deadline:
            raise ReplicationError(
                f"the initial copy did not finish in {timeout:.0f} s (tables by state: "
                f"{state['states']})"
            )
        time.sleep(0.05)


def wait_applied(
    source: psycopg.Connection,
    target: psycopg.Connection,
    names: ReplicationNames,
    lsn: str,
    timeout: float,
) -> float:
    """Until the subscriber confirmed it applied everything up to `lsn` (the slot's
    confirmed_flush_lsn: the apply worker confirms a position once it committed what came
    before it). Seconds waited; ReplicationError on an apply error or after `timeout`."""
    started = time.monotonic()
    while True:
        row = source.execute(
            "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (lsn, names.name),
        ).fetchone()
        if row is None:
            raise ReplicationError(f"the replication slot {names.name} is gone")
        if row[0]:
            return time.monotonic() - started
        state = subscription_state(target, names)
        if not state["exists"] or state["errors"]:
            raise ReplicationError(
                f"the subscription {names.name} "
                + ("is gone" if not state["exists"] else "reported an apply error")
                + " (the target server's log has the reason)"
            )
        if time.monotonic() - started > timeout:
            raise ReplicationError(
                f"the target did not apply the source's WAL up to {lsn} in {timeout:.0f} s"
            )
        time.sleep(0.01)


# The source database's transactions that had an id before `xmax` (32-bit xids compared
# modulo 2^32, as PostgreSQL does), among sessions and prepared transactions.
_OLDER_IN_DATABASE = """
SELECT (SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND backend_xid IS NOT NULL
           AND ((%(xmax)s - backend_xid::text::bigint) & 4294967295) BETWEEN 1 AND 2147483647)
     + (SELECT count(*) FROM pg_prepared_xacts
         WHERE database = current_database()
           AND ((%(xmax)s - transaction::text::bigint) & 4294967295) BETWEEN 1 AND 2147483647)
"""


def wait_transactions_before(conn: psycopg.Connection, xmax: int, timeout: float) -> None:
    """Until every transaction of the source database that had an id when `xmax` was read has
    ended (a write the freeze let through before it took effect must commit, or abort, before
    the drain). Other databases' transactions are not waited for. A role that cannot see
    other logins' transaction ids (pg_read_all_stats) waits for every transaction of the
    server instead, which is never too early."""
    sees_all = conn.execute(
        "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')"
    ).fetchone() == (True,)
    deadline = time.monotonic() + timeout
    while True:
        if sees_all:
            row = conn.execute(_OLDER_IN_DATABASE, {"xmax": xmax & 0xFFFFFFFF}).fetchone()
            done = row is not None and int(row[0]) == 0
        else:
            row = conn.execute(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
            ).fetchone()
            done = row is not None and int(row[0]) >= xmax
        if done:
            return
        if time.monotonic() > deadline:
            raise ReplicationError(
                f"a transaction older than the freeze is still open after {timeout:.0f} s"
            )
        time.sleep(0.01)


def transaction_id_now(conn: psycopg.Connection) -> int:
    """A transaction id assigned now (`conn` in autocommit: its transaction ends at once):
    every transaction with a smaller id had it before this call. A snapshot's xmax is not
    that: it is one past the newest *completed* id, and a transaction in progress may hold it
    (the drain let such a one through)."""
    row = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
    assert row is not None
    return int(row[0])


def detach_subscription(conn: psycopg.Connection, names: ReplicationNames) -> int | None:
    """Disable the subscription in the target database and detach it from its slot, without
    reaching the source (this works with the source down); its oid, which names its table-sync
    slots on the source, or None when there is no subscription. Idempotent: the subscription
    stays (and its oid with it) until drop_subscription, after the source's side is gone."""
    state = subscription_state(conn, names)
    if not state["exists"]:
        return None
    conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(names.identifier))
    conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(names.identifier))
    return int(state["oid"])


def drop_subscription(conn: psycopg.Connection, names: ReplicationNames) -> None:
    """Drop the (detached) subscription from the target database."""
    conn.execute(sql.SQL("DROP SUBSCRIPTION IF EXISTS {}").format(names.identifier))


def drop_source_side(
    conn: psycopg.Connection,
    names: ReplicationNames,
    subscription_oid: int | None,
    timeout: float = 30.0,
) -> list[str]:
    """Drop, on the source, the move's slots (its own and the table-sync slots of the
    subscription `subscription_oid`), its publication and its login, ending the sessions
    that still use them; what was dropped, by name. Idempotent."""
    dropped: list[str] = []
    sync_prefix = f"pg_{subscription_oid}_sync_" if subscription_oid is not None else None
    deadline = time.monotonic() + timeout
    login = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (names.name,)).fetchone()
    if login is not None:
        # fence the login first: a table-sync walsender still creating its slot would
        # otherwise add one after the loop below found none
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(names.identifier))
        while conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
            (names.name,),
        ).fetchone() != (0,):
            if time.monotonic() > deadline:
                raise ReplicationError(
                    f"the sessions of {names.name} did not end in {timeout:.0f} s"
                )
            time.sleep(0.05)
    while True:
        slots = conn.execute(
            "SELECT slot_name, active_pid FROM pg_replication_slots "
            "WHERE slot_name = %s OR (%s::text IS NOT NULL AND starts_with(slot_name, %s))",
            (names.name, sync_prefix, sync_prefix),
        ).fetchall()
        if not slots:
            break
        for slot, pid in slots:
            if pid is not None:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                continue
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                dropped.append(f"slot {slot}")
            except psycopg.errors.ObjectInUse:
                pass  # its walsender is still going away
        if time.monotonic() > deadline:
            left = ", ".join(s for s, _ in slots)
            raise ReplicationError(
                f"could not drop the replication slot(s) {left} in {timeout:.0f} s"
            )
        time.sleep(0.05)
    owner = conn.execute(
        "SELECT pg_get_userbyid(pubowner) FROM pg_publication WHERE pubname = %s", (names.name,)
    ).fetchone()
    if owner is not None:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner[0])))
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(names.identifier))
        dropped.append(f"publication {names.name}")
    if login is not None:
        _on_database(conn, sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}"), names)
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(names.identifier))
        dropped.append(f"login {names.name}")
    return dropped
