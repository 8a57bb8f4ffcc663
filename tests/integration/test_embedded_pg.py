"""The embedded PostgreSQL: scram-sha-256, TLS required, restartable, RDS-like roles."""

import os
import socket
from pathlib import Path

import psycopg
import pytest

from tenantkit.embedded_pg import (
    ADMIN_USER,
    EmbeddedPostgres,
    EmbeddedPostgresError,
    RunningServer,
    find_server,
)
from tenantkit.engine import ENGINE_VERSION, version_matches, wanted_server_version


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


def test_the_server_runs_the_version_the_templates_deploy(server: RunningServer) -> None:
    with psycopg.connect(**server.superuser_settings().connect_kwargs()) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    running = ".".join(row[0].split(".")[:2])
    assert version_matches(running, wanted_server_version())
    if not os.environ.get("TENANTKIT_PG_VERSION"):  # `make test`, not `make test PG_VERSION=17`
        assert running == ENGINE_VERSION


def test_the_admin_holds_what_rds_gives_its_master_user_and_no_more(server: RunningServer) -> None:
    # (the admin is also a member, WITH ADMIN OPTION, of every role it created: tenants' roles)
    with psycopg.connect(**server.superuser_settings().connect_kwargs()) as conn:
        memberships = conn.execute(
            r"""SELECT m.rolname, r.rolname, a.admin_option
               FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid
               JOIN pg_roles m ON m.oid = a.member
               WHERE m.rolname IN (%s, 'rds_superuser')
                 AND (r.rolname LIKE 'pg\_%%' OR r.rolname LIKE 'rds\_%%')""",
            (ADMIN_USER,),
        ).fetchall()
        attributes = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolreplication, rolcreatedb, rolcreaterole "
            "FROM pg_roles WHERE rolname = %s",
            (ADMIN_USER,),
        ).fetchone()
    assert sorted(memberships) == sorted(
        [
            (ADMIN_USER, "rds_superuser", False),
            ("rds_superuser", "pg_monitor", False),
            ("rds_superuser", "pg_create_subscription", False),
            ("rds_superuser", "pg_signal_backend", False),
            ("rds_superuser", "rds_iam", True),
            ("rds_superuser", "rds_replication", True),
        ]
    )
    # REPLICATION: stock PostgreSQL's stand-in for what membership in rds_replication gives on
    # RDS (slots and streaming for the online move); never SUPERUSER or BYPASSRLS
    assert attributes == (False, False, True, True, True)


def test_the_servers_decode_their_wal_for_logical_replication(server: RunningServer) -> None:
    # what rds.logical_replication = 1 sets on RDS and Aurora (the online move needs it)
    with psycopg.connect(**server.admin_settings().connect_kwargs()) as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        slots = conn.execute("SHOW max_replication_slots").fetchone()
    assert slots is not None
    assert int(slots[0]) >= 10


def test_the_admin_may_grant_rds_iam_as_the_rds_master_user_may(server: RunningServer) -> None:
    # PostgreSQL 16: CREATEROLE alone no longer lets a role grant rds_iam; rds_superuser's
    # ADMIN OPTION does, as on RDS and Aurora.
    with psycopg.connect(**server.admin_settings().connect_kwargs(), autocommit=True) as conn:
        conn.execute("CREATE ROLE probe_rds_iam_grant LOGIN")
        try:
            conn.execute("GRANT rds_iam TO probe_rds_iam_grant")
            assert conn.execute(
                "SELECT pg_has_role('probe_rds_iam_grant', 'rds_iam', 'MEMBER')"
            ).fetchone() == (True,)
        finally:
            conn.execute("DROP ROLE probe_rds_iam_grant")


def test_the_admin_cannot_grant_itself_what_rds_withholds(server: RunningServer) -> None:
    with psycopg.connect(**server.admin_settings().connect_kwargs(), autocommit=True) as conn:
        for statement in (
            f"GRANT pg_read_server_files TO {ADMIN_USER}",
            f"ALTER ROLE {ADMIN_USER} SUPERUSER",
            f"ALTER ROLE {ADMIN_USER} BYPASSRLS",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_an_override_without_server_binaries_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TENANTKIT_PG_BINDIR", str(tmp_path))
    with pytest.raises(EmbeddedPostgresError, match=r"TENANTKIT_PG_BINDIR=.*: no initdb"):
        find_server()


def _fake_server(bindir: Path, version: str) -> Path:
    bindir.mkdir(parents=True)
    for binary in ("initdb", "pg_ctl", "postgres"):
        script = bindir / binary
        script.write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {version} (Fake)'\n")
        script.chmod(0o755)
    return bindir


def test_no_server_of_the_wanted_version_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN no npm build and only a server of another major on the machine
    monkeypatch.delenv("TENANTKIT_PG_BINDIR", raising=False)
    monkeypatch.delenv("TENANTKIT_PG_VERSION", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    _fake_server(tmp_path / "lib" / "15" / "bin", "15.18")
    # WHEN a server is looked for THEN the error names the version, what was found, the fix
    with pytest.raises(EmbeddedPostgresError) as raised:
        find_server(node_modules=tmp_path / "node_modules", install_roots=[tmp_path / "lib"])
    message = str(raised.value)
    assert f"PostgreSQL {ENGINE_VERSION} server binaries" in message
    assert "found only 15.18 in" in message
    assert "make setup" in message
    assert "TENANTKIT_PG_BINDIR" in message


def test_a_system_server_of_the_same_major_is_the_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TENANTKIT_PG_BINDIR", raising=False)
    monkeypatch.setenv("TENANTKIT_PG_VERSION", "17")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    _fake_server(tmp_path / "lib" / "16" / "bin", "16.2")
    wanted = _fake_server(tmp_path / "lib" / "17" / "bin", "17.1")
    found = find_server(node_modules=tmp_path / "node_modules", install_roots=[tmp_path / "lib"])
    assert (found.bindir, found.version) == (wanted, "17.1")


def test_the_pinned_npm_build_comes_before_system_servers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TENANTKIT_PG_BINDIR", raising=False)
    monkeypatch.delenv("TENANTKIT_PG_VERSION", raising=False)
    system = _fake_server(tmp_path / "lib" / ENGINE_VERSION.split(".")[0] / "bin", "16.1")
    found = find_server(install_roots=[system.parent.parent])
    assert found.origin.startswith("npm package postgresql-")
    assert found.version == ENGINE_VERSION


def test_a_data_directory_of_another_major_is_refused_and_kept(pg_root: Path) -> None:
    # GIVEN a stopped cluster whose files say another major made them
    pg = EmbeddedPostgres(pg_root / "other-major", durable=False)
    try:
        pg.start()
        pg.stop()
        (pg.data_dir / "PG_VERSION").write_text("15\n")
        # WHEN it is started THEN the error says what made it and what to do; nothing is lost
        with pytest.raises(EmbeddedPostgresError, match=r"made by PostgreSQL 15; this run uses"):
            EmbeddedPostgres(pg_root / "other-major", durable=False).start()
        assert (pg.data_dir / "base").is_dir()
    finally:
        pg.destroy()


@pytest.mark.slow
def test_a_server_under_a_closed_home_directory_starts(pg_root: Path) -> None:
    # GIVEN a state directory under a 0700 directory of the invoking user (root's own home,
    # for example): as root the server runs as `postgres`, which cannot traverse it
    home = pg_root / "closed-home"
    home.mkdir(mode=0o700)
    server_home = pg_root / "server-home"
    pg = EmbeddedPostgres(home / "clone" / ".tenantkit" / "pg", server_home=server_home)
    try:
        # WHEN it starts, stops and starts again
        first = pg.start()
        with psycopg.connect(**first.admin_settings().connect_kwargs(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE kept_across_restarts")
        pg.stop()
        again = EmbeddedPostgres(home / "clone" / ".tenantkit" / "pg", server_home=server_home)
        second = again.start()
        # THEN the data survived; as root the files live under server_home, linked from the
        # state directory; as a normal user they stay where asked
        with psycopg.connect(**second.admin_settings("kept_across_restarts").connect_kwargs()):
            pass
        if os.geteuid() == 0:
            assert again.moved_to is not None
            assert again.moved_to.parent == server_home / "servers"
            assert (home / "clone" / ".tenantkit" / "pg").is_symlink()
        else:
            assert again.moved_to is None
            assert not (server_home / "servers").exists()
    finally:
        pg.destroy()
    assert not (home / "clone" / ".tenantkit" / "pg").exists()
    assert not (home / "clone" / ".tenantkit" / "pg").is_symlink()
