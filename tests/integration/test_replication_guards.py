"""The online move's guards on a real server (lambda_src/mobility/replication.py): what it
refuses before a publication or a subscription exists, and what its drain waits for."""

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from lambda_src.mobility.replication import (
    ReplicationError,
    ReplicationNames,
    create_publication,
    refuse_logged_ddl,
    transaction_id_now,
    wait_transactions_before,
)
from lambda_src.mobility.tables import Column, Table, TenantScope
from tenantkit.embedded_pg import RunningServer

DATABASES = ("replguard_a", "replguard_b")


@pytest.fixture(scope="module")
def databases(server: RunningServer) -> Iterator[RunningServer]:
    with psycopg.connect(**server.superuser_settings().connect_kwargs(), autocommit=True) as su:
        for name in DATABASES:
            su.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield server
    with psycopg.connect(**server.superuser_settings().connect_kwargs(), autocommit=True) as su:
        for name in DATABASES:
            su.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def superuser(server: RunningServer, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(**server.superuser_settings(database).connect_kwargs(), autocommit=True)


def test_a_server_logging_every_statement_by_duration_is_refused(databases: RunningServer) -> None:
    with superuser(databases, DATABASES[0]) as conn:
        refuse_logged_ddl(conn)  # the defaults log no statement text
        conn.execute("SET log_min_duration_statement = 0")
        with pytest.raises(ReplicationError, match="log_min_duration_statement"):
            refuse_logged_ddl(conn)
        conn.execute("RESET log_min_duration_statement")
        conn.execute("SET log_statement = 'ddl'")
        with pytest.raises(ReplicationError, match="log_statement = ddl"):
            refuse_logged_ddl(conn)


def test_a_tenant_database_table_without_a_primary_key_is_not_published(
    databases: RunningServer,
) -> None:
    # GIVEN a tenant database's table with no primary key: published, its UPDATE and DELETE
    # would be refused while the move catches up
    with superuser(databases, DATABASES[0]) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        table = Table("public", "notes", (Column("body", "text"),), (), ())
        # WHEN an online move would publish it THEN it is refused, naming the table, and no
        # publication exists
        with pytest.raises(ReplicationError, match=r"public\.notes: no primary key"):
            create_publication(
                conn, ReplicationNames("guard"), TenantScope("guard", "database"), [table]
            )
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
        conn.execute("UPDATE notes SET body = 'still writable'")


def test_the_drain_waits_for_its_own_database_only(databases: RunningServer) -> None:
    # GIVEN a transaction with an id open in another database of the server
    held = threading.Event()
    release = threading.Event()

    def hold(database: str) -> None:
        with superuser(databases, database) as conn, conn.transaction():
            conn.execute("SELECT pg_current_xact_id()")
            held.set()
            release.wait(10)

    other = threading.Thread(target=hold, args=(DATABASES[1],))
    other.start()
    try:
        assert held.wait(10)
        with psycopg.connect(
            **databases.admin_settings(DATABASES[0]).connect_kwargs(), autocommit=True
        ) as admin:
            # THEN the drain of this database does not wait for it (it timed out before)
            wait_transactions_before(admin, transaction_id_now(admin), timeout=1.0)
    finally:
        release.set()
        other.join()
    # and a transaction of its own database it does wait for
    held.clear()
    release.clear()
    same = threading.Thread(target=hold, args=(DATABASES[0],))
    same.start()
    try:
        assert held.wait(10)
        with (
            psycopg.connect(
                **databases.admin_settings(DATABASES[0]).connect_kwargs(), autocommit=True
            ) as admin,
            pytest.raises(ReplicationError, match="older than the freeze"),
        ):
            wait_transactions_before(admin, transaction_id_now(admin), timeout=0.5)
    finally:
        release.set()
        same.join()
