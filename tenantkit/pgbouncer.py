"""PgBouncer for the tests: the pinned Debian build, installed without root, and an embedded
instance in transaction mode in front of an embedded PostgreSQL (TLS on both sides, SCRAM).

`make setup` installs it (`python -m tenantkit.pgbouncer`): `apt-get download` of the pinned
packages (pgbouncer and libc-ares2, which the machine image lacks), each checked against its
SHA-256, then `dpkg-deb -x` into .tenantkit/pgbouncer/<version>/. No root and no `apt-get
install`: it works as a normal user as well as root. $TENANTKIT_PGBOUNCER_BIN names another
pgbouncer binary instead (one with protocol-level prepared statements, 1.21+, say). As root,
PgBouncer runs as the embedded servers' unprivileged user, as PostgreSQL does.
"""

import hashlib
import os
import platform
import pwd
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from lambda_src.core import environment as env_names
from lambda_src.core.connection import ConnectionSettings, scram_verifier

from .embedded_pg import (
    REPO_ROOT,
    SERVER_HOME,
    RunningServer,
    copy_for_server_user,
    free_port,
    run_as,
)
from .embedded_pg import unprivileged_server_user as _server_user
from .tls import write_server_tls

PGBOUNCER_VERSION = "1.18.0"
"""What Debian 12 ships (and so what `make setup` installs): no protocol-level prepared
statements, which came with 1.21 (`max_prepared_statements`)."""


@dataclass(frozen=True)
class DebianPackage:
    """A pinned .deb: name, exact version, and the SHA-256 of its amd64 file."""

    name: str
    version: str
    sha256: str


DEBIAN_PACKAGES = (
    DebianPackage(
        "pgbouncer",
        "1.18.0-1+deb12u1",
        "b8468c31f94596da0967b1a27980a0a036268eb8e53d3e647651bd7b82b6f65e",
    ),
    # libcares.so.2: the one library pgbouncer needs that the machine image does not have.
    DebianPackage(
        "libc-ares2", "1.18.1-3", "087fd5c2ac883202e1786ab45617cdab7f77bc7f060d58cca177ddf6b6c3fa73"
    ),
)
DEBIAN_SOURCE = (
    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://deb.debian.org/debian bookworm main\n"
)
"""Where the packages come from when the machine's apt lists do not know the pinned versions
(a private `apt-get update` of this one source, into the install directory)."""
INSTALL_DIR = REPO_ROOT / ".tenantkit" / "pgbouncer"
ENV_BIN = env_names.PGBOUNCER_BIN


class PgBouncerError(RuntimeError):
    """PgBouncer could not be installed, found, started or stopped."""


@dataclass(frozen=True)
class PgBouncerInstall:
    """A pgbouncer binary, the directory of the libraries it needs (or None) and its version."""

    binary: Path
    lib_dir: Path | None
    version: str
    origin: str

    def env(self) -> dict[str, str]:
        """The environment it runs with (the extracted libc-ares on the library path)."""
        return {"LD_LIBRARY_PATH": str(self.lib_dir)} if self.lib_dir else {}


def binary_version(binary: Path, lib_dir: Path | None = None) -> str:
    """major.minor.patch that `pgbouncer --version` prints; raise if it does not run."""
    env = {**os.environ, **({"LD_LIBRARY_PATH": str(lib_dir)} if lib_dir else {})}
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, env=env
        )
    except OSError as error:
        raise PgBouncerError(f"{binary} does not run: {error}") from None
    found = re.search(r"PgBouncer (\d+\.\d+\.\d+)", out.stdout)
    if out.returncode != 0 or found is None:
        raise PgBouncerError(
            f"{binary} --version failed: {(out.stderr or out.stdout).strip()[-500:]}"
        )
    return found.group(1)


def _install_root(install_dir: Path) -> Path:
    return install_dir / PGBOUNCER_VERSION / "root"


def _pinned(root: Path) -> PgBouncerInstall:
    return PgBouncerInstall(
        binary=root / "usr" / "sbin" / "pgbouncer",
        lib_dir=root / "usr" / "lib" / "x86_64-linux-gnu",
        version=PGBOUNCER_VERSION,
        origin=f"Debian {DEBIAN_PACKAGES[0].name} {DEBIAN_PACKAGES[0].version}",
    )


def find_pgbouncer(install_dir: Path = INSTALL_DIR) -> PgBouncerInstall:
    """The pgbouncer to run: $TENANTKIT_PGBOUNCER_BIN, else the pinned build `make setup`
    installed; raise saying what to do if there is none (never a silent skip)."""
    if override := os.environ.get(ENV_BIN):
        binary = Path(override)
        if not binary.is_file():
            raise PgBouncerError(f"{ENV_BIN}={override}: no such file")
        return PgBouncerInstall(binary, None, binary_version(binary), ENV_BIN)
    install = _pinned(_install_root(install_dir))
    if not install.binary.is_file():
        raise PgBouncerError(
            f"PgBouncer {PGBOUNCER_VERSION} is not installed in {install_dir}: run `make setup` "
            f"(it downloads the pinned Debian packages with apt-get, no root needed), or point "
            f"{ENV_BIN} at a pgbouncer binary"
        )
    found = binary_version(install.binary, install.lib_dir)
    if found != PGBOUNCER_VERSION:
        raise PgBouncerError(
            f"{install.binary} is PgBouncer {found}, not the pinned {PGBOUNCER_VERSION}: "
            f"remove {install_dir} and run `make setup`"
        )
    return install


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _apt_download(debs: Path, apt_options: list[str]) -> subprocess.CompletedProcess[str]:
    wanted = [f"{p.name}={p.version}" for p in DEBIAN_PACKAGES]
    return subprocess.run(
        ["apt-get", *apt_options, "download", *wanted],
        cwd=debs,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _private_apt(work: Path) -> list[str]:
    """apt options for lists of our own (Debian's archive only), updated without root."""
    lists, cache = work / "lists", work / "cache"
    for directory in (lists / "partial", cache / "archives" / "partial"):
        directory.mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text(DEBIAN_SOURCE)
    options = [
        f"-o=Dir::State::Lists={lists}",
        f"-o=Dir::Cache={cache}",
        f"-o=Dir::Etc::SourceList={work / 'sources.list'}",
        "-o=Dir::Etc::SourceParts=-",
        "-o=Debug::NoLocking=1",
        "-o=APT::Sandbox::User=" + pwd.getpwuid(os.geteuid()).pw_name,
    ]
    update = subprocess.run(
        ["apt-get", *options, "update"], capture_output=True, text=True, timeout=300
    )
    if update.returncode != 0:
        raise PgBouncerError(f"apt-get update (private lists) failed: {update.stderr[-1000:]}")
    return options


def install(install_dir: Path = INSTALL_DIR) -> PgBouncerInstall:
    """Install the pinned PgBouncer into `install_dir` unless it is there; idempotent.

    The packages are downloaded with the machine's apt lists, or, if those do not know the
    pinned versions, with private lists of Debian's archive; a file whose SHA-256 is not the
    pinned one fails the install and nothing is kept.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise PgBouncerError(
            f"the pinned PgBouncer packages are amd64 builds; on {platform.machine()} point "
            f"{ENV_BIN} at a pgbouncer binary"
        )
    root = _install_root(install_dir)
    if _pinned(root).binary.is_file():
        return find_pgbouncer(install_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=".install-") as work_name:
        work = Path(work_name)
        debs = work / "debs"
        debs.mkdir()
        result = _apt_download(debs, [])
        if result.returncode != 0:  # the machine's lists lack the pinned versions
            result = _apt_download(debs, _private_apt(work / "apt"))
        if result.returncode != 0:
            raise PgBouncerError(
                "apt-get download "
                + " ".join(f"{p.name}={p.version}" for p in DEBIAN_PACKAGES)
                + f" failed: {result.stderr.strip()[-1000:]} (if Debian has replaced a pinned "
                "version, pin the new one and its SHA-256 in tenantkit/pgbouncer.py)"
            )
        staging = work / "root"
        for package in DEBIAN_PACKAGES:
            files = sorted(debs.glob(f"{package.name}_*.deb"))
            if len(files) != 1:
                raise PgBouncerError(f"apt-get download left {files} for {package.name}")
            if (digest := _sha256(files[0])) != package.sha256:
                raise PgBouncerError(
                    f"{files[0].name}: SHA-256 {digest}, pinned {package.sha256}; not installed"
                )
            extract = subprocess.run(
                ["dpkg-deb", "-x", str(files[0]), str(staging)], capture_output=True, text=True
            )
            if extract.returncode != 0:
                raise PgBouncerError(f"dpkg-deb -x {files[0].name}: {extract.stderr.strip()}")
        staged = _pinned(staging)
        if (found := binary_version(staged.binary, staged.lib_dir)) != PGBOUNCER_VERSION:
            raise PgBouncerError(f"the extracted pgbouncer is {found}, not {PGBOUNCER_VERSION}")
        staging.chmod(0o755)
        staging.rename(root)
    return find_pgbouncer(install_dir)


@dataclass(frozen=True)
class RunningPgBouncer:
    """How to reach a started PgBouncer: its address and the CA its TLS certificate chains to."""

    host: str
    port: int
    ca_cert: Path
    admin_user: str
    admin_password: str = field(repr=False)

    def settings(self, user: str, password: str, dbname: str) -> ConnectionSettings:
        """Connection settings for a login through the pooler (TLS verify-full, as always)."""
        return ConnectionSettings(
            host=self.host,
            port=self.port,
            user=user,
            password=password,
            dbname=dbname,
            ssl_root_cert=self.ca_cert,
        )

    def admin_settings(self) -> ConnectionSettings:
        """The admin console (database `pgbouncer`): SHOW POOLS, SHOW SERVERS, RECONNECT."""
        return self.settings(self.admin_user, self.admin_password, "pgbouncer")


ADMIN_USER = "tenantkit_pgbouncer_admin"
"""The console's only user: known to PgBouncer alone (it never logs in to PostgreSQL)."""

LOOKUP_USER = "tenantkit_pgbouncer_auth"
"""The login PgBouncer looks up the pool's tenant logins as (auth_user): it may call the lookup
function and nothing else."""
LOOKUP_SCHEMA = "tenantkit_pgbouncer"
LOOKUP_FUNCTION = "login_secret"
TENANT_LOGINS = "tenant\\_%\\_pool"
"""LIKE pattern of the logins the lookup serves: a strict pool's tenant logins (TenantNames.
pool_login), never the runtime, admin or any other role's verifier."""


@dataclass(frozen=True)
class LoginLookup:
    """PgBouncer's auth_query for a strict pool: a login without an auth_file entry (every
    tenant's own login) is looked up on the server as `user`, through the function
    install_login_lookup made; the SCRAM verifier it returns lets PgBouncer check the client's
    password and log in to the server with the client's own SCRAM proof (pass-through)."""

    user: str
    password: str = field(repr=False)

    @property
    def query(self) -> str:
        """The auth_query (PgBouncer binds the login's name to $1)."""
        function = sql.Identifier(LOOKUP_SCHEMA, LOOKUP_FUNCTION)
        return sql.SQL("SELECT usename, passwd FROM {}($1)").format(function).as_string(None)


def install_login_lookup(
    admin: ConnectionSettings, *, password: str, user: str = LOOKUP_USER
) -> LoginLookup:
    """Create (or converge) the lookup PgBouncer's auth_query calls, in the database `admin`
    connects to, as that superuser: the login `user` (its SCRAM verifier sent, never the
    password), allowed to connect and to call one SECURITY DEFINER function that returns the
    verifier of a strict pool's tenant login and of no other role.

    The function returns disabled (NOLOGIN) logins too: PgBouncer then admits the client and
    the server refuses the login itself, with its own reason ("not permitted to log in"), and a
    login enabled again needs nothing of PgBouncer. The server enforces LOGIN either way.
    Reading pg_authid needs a superuser: RDS and Aurora give no one that (see the README).
    """
    names = {
        "user": sql.Identifier(user),
        "schema": sql.Identifier(LOOKUP_SCHEMA),
        "function": sql.Identifier(LOOKUP_SCHEMA, LOOKUP_FUNCTION),
        "db": sql.Identifier(admin.dbname),
        "logins": sql.Literal(TENANT_LOGINS),
    }
    with psycopg.connect(**admin.connect_kwargs(), autocommit=True) as conn, conn.transaction():
        verifier = sql.Literal(scram_verifier(conn, user, password))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        create = (
            "ALTER ROLE {user} LOGIN PASSWORD {verifier}"
            if exists
            else ("CREATE ROLE {user} LOGIN PASSWORD {verifier}")
        )
        conn.execute(sql.SQL(create).format(verifier=verifier, **names))
        for statement in (
            "GRANT CONNECT ON DATABASE {db} TO {user}",
            "CREATE SCHEMA IF NOT EXISTS {schema}",
            "REVOKE ALL ON SCHEMA {schema} FROM PUBLIC",
            "GRANT USAGE ON SCHEMA {schema} TO {user}",
            "CREATE OR REPLACE FUNCTION {function}(login text) "
            "RETURNS TABLE (usename name, passwd text) LANGUAGE sql STABLE SECURITY DEFINER "
            "SET search_path = pg_catalog AS "
            "$$SELECT rolname, rolpassword FROM pg_catalog.pg_authid "
            "WHERE rolname = login AND rolname LIKE {logins}$$",
            "REVOKE ALL ON FUNCTION {function}(text) FROM PUBLIC",
            "GRANT EXECUTE ON FUNCTION {function}(text) TO {user}",
        ):
            conn.execute(sql.SQL(statement).format(**names))
    return LoginLookup(user, password)


class EmbeddedPgBouncer:
    """PgBouncer in transaction mode for one database of an embedded server, kept in `root`.

    `logins` maps each login PgBouncer admits to its password (auth_file: SCRAM from the
    client, the same password to the server). `login_lookup` (a strict pool, a login per
    tenant): every other login is looked up on the server by auth_query, and each (login,
    database) gets a pool of its own, `pool_size` server connections at most, all of them
    together at most `max_db_connections`. TLS both ways: clients verify-full against this
    instance's own CA (ConnectionSettings has no other mode), and PgBouncer verify-full
    against the server's. `reset_always` runs `server_reset_query` (DISCARD ALL) after every
    transaction, which PgBouncer does only in session mode by default: without it a session
    `SET` one client makes stays on the server connection for the next client.
    """

    def __init__(
        self,
        root: Path,
        *,
        upstream: RunningServer,
        database: str,
        logins: Mapping[str, str],
        pool_size: int = 4,
        reset_always: bool = True,
        max_prepared_statements: int | None = None,
        login_lookup: LoginLookup | None = None,
        max_db_connections: int | None = None,
        server_home: Path = SERVER_HOME,
    ) -> None:
        self.root = root.absolute()
        self.install = find_pgbouncer()
        self._upstream = upstream
        self._database = database
        self._logins = dict(logins)
        self._pool_size = pool_size
        self._reset_always = reset_always
        self._max_prepared = max_prepared_statements
        self._lookup = login_lookup
        self._max_db_connections = max_db_connections
        self._user = _server_user()
        self._server_home = server_home
        self._admin_password = hashlib.sha256(os.urandom(32)).hexdigest()
        self.server: RunningPgBouncer | None = None

    @property
    def log_file(self) -> Path:
        """PgBouncer's log."""
        return self.root / "pgbouncer.log"

    @property
    def _pid_file(self) -> Path:
        return self.root / "pgbouncer.pid"

    def _own(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _reachable(self) -> PgBouncerInstall:
        """The install as the server user can run it: a copy under server_home if the
        repository's .tenantkit is closed to it (a clone in root's 0700 home)."""
        install = self.install
        if self._user is None or run_as(self._user, "test", "-x", install.binary).returncode == 0:
            return install
        if install.lib_dir is None:
            raise PgBouncerError(
                f"user {self._user.pw_name!r} cannot run {install.binary}: put it where it can"
            )
        source = install.binary.parents[2]  # .../root (usr/sbin/pgbouncer)
        into = self._server_home / "pgbouncer"
        return _pinned(copy_for_server_user(source, install.binary, into, install.version))

    def _write_config(self, port: int) -> Path:
        tls = write_server_tls(self.root, self.root)  # ca.crt, server.crt, server.key
        userlist = self.root / "userlist.txt"
        userlist.touch(mode=0o600)
        entries = {**self._logins, ADMIN_USER: self._admin_password}
        if self._lookup is not None:  # auth_user logs in with a password of the auth_file
            entries[self._lookup.user] = self._lookup.password
        # auth_file format: "name" "password", a double quote doubled.
        userlist.write_text(
            "".join(
                '"{}" "{}"\n'.format(name.replace('"', '""'), secret.replace('"', '""'))
                for name, secret in entries.items()
            )
        )
        upstream = self._upstream
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(port),
            "unix_socket_dir": "",
            "pidfile": str(self._pid_file),
            "logfile": str(self.log_file),
            "auth_type": "scram-sha-256",
            "auth_file": str(userlist),
            "admin_users": ADMIN_USER,
            "pool_mode": "transaction",
            "default_pool_size": str(self._pool_size),
            "max_client_conn": "200",
            "server_reset_query": "DISCARD ALL",
            "server_reset_query_always": "1" if self._reset_always else "0",
            "server_tls_sslmode": "verify-full",
            "server_tls_ca_file": str(upstream.ca_cert),
            "client_tls_sslmode": "require",
            "client_tls_cert_file": str(tls.server_cert),
            "client_tls_key_file": str(tls.server_key),
            "client_tls_ca_file": str(tls.ca_cert),
        }
        if self._max_prepared is not None:  # 1.21+; older versions refuse the unknown key
            settings["max_prepared_statements"] = str(self._max_prepared)
        if self._lookup is not None:
            settings["auth_user"] = self._lookup.user
            settings["auth_query"] = self._lookup.query
        if self._max_db_connections is not None:
            # a pool per (login, database): the bound on what all of them open together
            settings["max_db_connections"] = str(self._max_db_connections)
        config = self.root / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"{self._database} = host={upstream.host} port={upstream.port} "
            f"dbname={self._database}\n\n[pgbouncer]\n"
            + "".join(f"{key} = {value}\n" for key, value in settings.items())
        )
        for path in (self.root, config, userlist, tls.server_cert, tls.server_key, tls.ca_cert):
            self._own(path)
        return config

    def start(self) -> RunningPgBouncer:
        """Write the configuration and start PgBouncer as a daemon; wait until it listens."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        install = self._reachable()
        for _attempt in range(3):
            port = free_port()
            config = self._write_config(port)
            result = run_as(self._user, install.binary, "-d", "-q", config, env=install.env())
            if result.returncode == 0 and self._wait_listening(port):
                self.server = RunningPgBouncer(
                    "127.0.0.1", port, self.root / "ca.crt", ADMIN_USER, self._admin_password
                )
                return self.server
            self._signal(signal.SIGTERM)
        log_tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
        raise PgBouncerError(f"pgbouncer did not start: {result.stderr.strip()}\n{log_tail}")

    @staticmethod
    def _wait_listening(port: int, timeout_s: float = 10) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return True
            time.sleep(0.05)
        return False

    def _pid(self) -> int | None:
        try:
            return int(self._pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _signal(self, signum: int) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """Shut PgBouncer down (SIGTERM: at once, connections closed) and wait for it."""
        pid = self._pid()
        if pid is not None and self._signal(signal.SIGTERM):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                raise PgBouncerError(f"pgbouncer (pid {pid}) did not stop within 10 s")
        self.server = None


def main() -> int:
    """`python -m tenantkit.pgbouncer`: install the pinned PgBouncer (make setup)."""
    try:
        found = install()
    except PgBouncerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"PgBouncer: {found.version} ({found.origin})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
