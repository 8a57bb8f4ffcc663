"""An embedded PostgreSQL server: initdb + pg_ctl in a directory, on 127.0.0.1 at a free port,
scram-sha-256 passwords, TLS required. Used by the tests, tenantctl and `make run`.

As root, the server runs as an unprivileged user (`postgres`, or $TENANTKIT_PG_USER) because
initdb and pg_ctl refuse to run as root.
"""

import contextlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from lambda_src.provisioner.config import ConnectionSettings
from lambda_src.provisioner.plan import RDS_IAM_ROLE

from .tls import write_server_tls

SUPERUSER = "postgres"
ADMIN_USER = "tenantkit_admin"
"""Provisioning admin: CREATEDB CREATEROLE but not superuser, like the RDS master user."""
_BINARIES = ("initdb", "pg_ctl", "postgres")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be found, initialized, started or stopped."""


DEBIAN_INSTALL_ROOT = Path("/usr/lib/postgresql")


def find_bindir(install_roots: Sequence[Path] = (DEBIAN_INSTALL_ROOT,)) -> Path:
    """Directory holding initdb, pg_ctl and postgres; raise with install advice if absent.

    Looks at $TENANTKIT_PG_BINDIR, `pg_config --bindir`, <root>/<version>/bin (newest first)
    and the directory of `initdb` on PATH.
    """
    candidates: list[Path] = []
    if env_dir := os.environ.get("TENANTKIT_PG_BINDIR"):
        candidates.append(Path(env_dir))
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, check=True)
            candidates.append(Path(out.stdout.decode().strip()))
    for root in install_roots:
        candidates += sorted(
            root.glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if all((candidate / binary).is_file() for binary in _BINARIES):
            return candidate
    raise EmbeddedPostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found. Install them "
        "(Debian/Ubuntu: apt-get install postgresql; `make setup` does it when run as root) "
        "or point TENANTKIT_PG_BINDIR at their directory."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Credentials:
    """Passwords of the server's superuser and provisioning admin (kept in credentials.json)."""

    superuser_password: str = field(repr=False)
    admin_password: str = field(repr=False)


@dataclass(frozen=True)
class RunningServer:
    """How to reach a started embedded server."""

    host: str
    port: int
    ca_cert: Path
    credentials: Credentials

    def settings(self, user: str, password: str, dbname: str = "postgres") -> ConnectionSettings:
        """Connection settings for any role on this server (TLS verify-full against its CA)."""
        return ConnectionSettings(
            host=self.host,
            port=self.port,
            user=user,
            password=password,
            dbname=dbname,
            ssl_root_cert=self.ca_cert,
        )

    def admin_settings(self, dbname: str = "postgres") -> ConnectionSettings:
        """The provisioning admin: what the provisioner Lambda gets from the admin secret."""
        return self.settings(ADMIN_USER, self.credentials.admin_password, dbname)

    def superuser_settings(self, dbname: str = "postgres") -> ConnectionSettings:
        """The bootstrap superuser: for setting the server up and for tests' inspections."""
        return self.settings(SUPERUSER, self.credentials.superuser_password, dbname)


class EmbeddedPostgres:
    """A PostgreSQL cluster kept in `root` (data/, server.log, ca.crt, credentials.json)."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = root.resolve()
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self.durable = durable
        self.bindir = find_bindir()
        self._server_user = self._pick_server_user()
        self.server: RunningServer | None = None

    # -- running commands as the server user ------------------------------------------------
    @staticmethod
    def _pick_server_user() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        name = os.environ.get("TENANTKIT_PG_USER", "postgres")
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedPostgresError(
                f"running as root, the server must run as an unprivileged user, but user "
                f"{name!r} does not exist: create it (useradd --system {name}), set "
                "TENANTKIT_PG_USER, or run as a normal user"
            ) from None

    def _run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in args]
        if self._server_user is not None:
            command = ["runuser", "-u", self._server_user.pw_name, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def _give_to_server_user(self, path: Path) -> None:
        if self._server_user is None:
            return
        os.chown(path, self._server_user.pw_uid, self._server_user.pw_gid)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        """Whether initdb has run in this root."""
        return (self.data_dir / "PG_VERSION").is_file()

    def _credentials_file(self) -> Path:
        return self.root / "credentials.json"

    def _init(self) -> Credentials:
        self.root.mkdir(parents=True, exist_ok=True)
        self._give_to_server_user(self.root)
        if self._server_user is not None:
            probe = self._run("test", "-w", self.root)
            if probe.returncode != 0:
                raise EmbeddedPostgresError(
                    f"user {self._server_user.pw_name!r} cannot write to {self.root}: a parent "
                    "directory is not traversable by it; choose a state directory it can reach"
                )
        credentials = Credentials(
            superuser_password=secrets.token_urlsafe(24), admin_password=secrets.token_urlsafe(24)
        )
        pwfile = self.root / "superuser.pwfile"
        pwfile.touch(mode=0o600)
        pwfile.write_text(credentials.superuser_password + "\n")
        self._give_to_server_user(pwfile)
        try:
            result = self._run(
                self.bindir / "initdb",
                "-D",
                self.data_dir,
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
                *([] if self.durable else ["--no-sync"]),
            )
        finally:
            pwfile.unlink()
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip()[-2000:]}")

        tls = write_server_tls(self.root, self.data_dir)
        for path in (tls.server_cert, tls.server_key):
            self._give_to_server_user(path)
        (self.data_dir / "pg_hba.conf").write_text(
            "# tenantkit embedded server: TCP on loopback only, TLS and SCRAM passwords required.\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
        )
        settings = [
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",
            "ssl = on",
            "ssl_cert_file = 'server.crt'",
            "ssl_key_file = 'server.key'",
            "password_encryption = 'scram-sha-256'",
            "max_connections = 200",
            "shared_buffers = '128MB'",
            "log_min_messages = warning",
        ]
        if not self.durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tenantkit\n" + "\n".join(settings) + "\n")
        creds_file = self._credentials_file()
        creds_file.touch(mode=0o600)
        creds_file.write_text(
            json.dumps(
                {
                    "superuser_password": credentials.superuser_password,
                    "admin_password": credentials.admin_password,
                }
            )
        )
        return credentials

    def _load_credentials(self) -> Credentials:
        try:
            raw = json.loads(self._credentials_file().read_text())
            return Credentials(raw["superuser_password"], raw["admin_password"])
        except (OSError, ValueError, KeyError) as error:
            raise EmbeddedPostgresError(
                f"{self._credentials_file()} is missing or damaged ({error}); remove "
                f"{self.root} to start over"
            ) from None

    def _running_port(self) -> int | None:
        status = self._run(self.bindir / "pg_ctl", "status", "-D", self.data_dir)
        if status.returncode != 0:
            return None
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[3])

    def start(self) -> RunningServer:
        """Initialize on first use, start (or reuse a running server), bootstrap roles."""
        credentials = self._init() if not self.initialized else self._load_credentials()
        port = self._running_port()
        attempts = 0
        while port is None:
            attempts += 1
            candidate = _free_port()
            result = self._run(
                self.bindir / "pg_ctl",
                "start",
                "-D",
                self.data_dir,
                "-l",
                self.log_file,
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {candidate}",
            )
            if result.returncode == 0:
                port = candidate
            elif attempts >= 3:
                log_tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
                raise EmbeddedPostgresError(
                    f"pg_ctl start failed: {result.stderr.strip()}\n{log_tail}"
                )
        self.server = RunningServer(
            host="127.0.0.1", port=port, ca_cert=self.root / "ca.crt", credentials=credentials
        )
        self._bootstrap(self.server)
        return self.server

    def _bootstrap(self, server: RunningServer) -> None:
        """Create what RDS/Aurora would have: a non-superuser admin and the rds_iam role."""
        with psycopg.connect(
            **server.superuser_settings().connect_kwargs(), autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                ([ADMIN_USER, RDS_IAM_ROLE],),
            ).fetchall()
            existing = {row[0] for row in exists}
            if RDS_IAM_ROLE not in existing:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(RDS_IAM_ROLE)))
            verifier = conn.pgconn.encrypt_password(
                server.credentials.admin_password.encode(), ADMIN_USER.encode(), b"scram-sha-256"
            ).decode()
            verb = "ALTER" if ADMIN_USER in existing else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                    sql.Identifier(ADMIN_USER), sql.Literal(verifier)
                )
            )
            # RDS's rds_superuser holds pg_signal_backend: ending a tenant's sessions needs it.
            conn.execute(
                sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(ADMIN_USER))
            )
            # As RDS's master user can, the admin may change who connects to these databases.
            for database in ("postgres", "template1"):
                conn.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(database), sql.Identifier(ADMIN_USER)
                    )
                )

    def stop(self) -> None:
        """Stop the server (fast shutdown); the data directory stays."""
        if self._running_port() is None:
            self.server = None
            return
        result = self._run(self.bindir / "pg_ctl", "stop", "-D", self.data_dir, "-m", "fast", "-w")
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"pg_ctl stop failed: {result.stderr.strip()}")
        self.server = None

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
