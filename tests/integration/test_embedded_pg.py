"""The embedded PostgreSQL: scram-sha-256, TLS required, restartable, RDS-like roles."""

import socket
from pathlib import Path

import psycopg
import pytest

from tenantkit.embedded_pg import (
    ADMIN_USER,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    RunningServer,
    find_bindir,
)


def test_wrong_password_is_refused(server: RunningServer) -> None:
    settings = server.settings("postgres", "wrong")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**settings.connect_kwargs())


def test_connections_without_tls_are_refused(server: RunningServer) -> None:
    kwargs = {**server.superuser_settings().connect_kwargs(), "sslmode": "disable"}
    kwargs.pop("sslrootcert")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(**kwargs)


def test_passwords_are_stored_as_scram_verifiers(server: RunningServer) -> None:
    with psycopg.connect(**server.superuser_settings().connect_kwargs()) as conn:
        stored = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ADMIN_USER,)
        ).fetchone()
    assert stored is not None
    assert stored[0].startswith("SCRAM-SHA-256$")


def test_admin_is_like_the_rds_master_user_not_a_superuser(server: RunningServer) -> None:
    with psycopg.connect(**server.admin_settings().connect_kwargs()) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row == (False, True, True)
        # rds_iam exists, as on RDS, and nobody can log in as it
        assert conn.execute(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'rds_iam'"
        ).fetchall() == [(False,)]


def test_listens_on_loopback_only(server: RunningServer) -> None:
    assert server.host == "127.0.0.1"
    with psycopg.connect(**server.superuser_settings().connect_kwargs()) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)


def test_stop_start_keeps_data_and_credentials(pg_root: Path) -> None:
    pg = EmbeddedPostgres(pg_root / "restart", durable=False)
    try:
        first = pg.start()
        with psycopg.connect(**first.admin_settings().connect_kwargs(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE survives")
        pg.stop()
        second = EmbeddedPostgres(pg_root / "restart", durable=False).start()
        with psycopg.connect(**second.admin_settings("survives").connect_kwargs()) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("survives",)
    finally:
        pg.destroy()
    assert not (pg_root / "restart").exists()


def test_start_moves_to_another_port_when_one_is_taken(pg_root: Path) -> None:
    pg = EmbeddedPostgres(pg_root / "ports", durable=False)
    try:
        running = pg.start()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", running.port)) == 0
    finally:
        pg.destroy()


def test_missing_binaries_give_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TENANTKIT_PG_BINDIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedPostgresError, match=r"server binaries \(initdb.*not found"):
        find_bindir(install_roots=[tmp_path])
