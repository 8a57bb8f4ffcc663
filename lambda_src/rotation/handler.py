"""Entry point of the rotation Lambda: Secrets Manager calls it four times per rotation.

Single-user strategy: the login whose secret is rotated changes its own password. Between
setSecret and finishSecret the database already has the new password while AWSCURRENT still
holds the old one, so reading AWSCURRENT again does not help a client in that window: the
runtime library (lambda_src/tenant_runtime) reads the username and password from the secret
for every new connection and, when the server refuses the password, reads AWSCURRENT again
(rotated since it was cached) and then tries the AWSPENDING version (tested across the steps
in tests/integration/test_rotation.py). (Alternating users, the other strategy, needs the
admin secret in this function and a `_clone` user that clients must follow; single-user needs
neither.)

A suspended tenant's login is NOLOGIN and cannot change its own password, so its rotation keeps
the password and succeeds: createSecret sees AWSCURRENT refused with "not permitted to log in"
(PostgreSQL checks the password before the LOGIN attribute, so the password is right) and puts a
pending version with the same password; setSecret and testSecret accept that refusal for the
pending version and say so in a log line; finishSecret promotes it. The login stays NOLOGIN,
AWSCURRENT and the database agree however many rotations pass, and resuming the tenant (the
provisioner sets the login's password from AWSCURRENT and re-enables it) logs in with it; the
first rotation after resume changes the password again.

The event is never logged whole. Passwords only reach PostgreSQL as SCRAM verifiers.
"""

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from ..core import secrets
from ..core.connection import (
    RDS_CA_BUNDLE_PATH,
    LoginNotPermittedError,
    RetryPolicy,
    connect,
    scram_verifier,
    settings_from_secret,
    ssl_root_cert_from_env,
)
from ..core.errors import TenantkitError
from ..core.log import function_logger, logged_request
from ..tenancy import secret_owner

log = logging.getLogger(__name__)

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
_SAME_TARGET = ("host", "port", "dbname", "username")
_QUICK = RetryPolicy(attempts=2, first_delay_s=0.5)
APPLICATION_NAME = "tenantkit-rotation"


class RotationError(TenantkitError):
    """A rotation step cannot go on; Secrets Manager retries and then marks rotation failed."""


def on_event(event: Mapping[str, Any], _context: object) -> None:
    """Lambda handler for Secrets Manager rotation (JSON logs, core.log): every line carries
    the step, the secret and whose secret it is."""
    function_logger(APPLICATION_NAME)
    secret_id = event.get("SecretId")
    with logged_request(
        step=event.get("Step"),
        secret=secret_id,
        owner=secret_owner(secret_id) if isinstance(secret_id, str) else None,
    ):
        try:
            rotate(event, ssl_root_cert_from_env(os.environ))
        except TenantkitError as error:
            log.error("rotation step failed: %s", error)
            raise


def rotate(event: Mapping[str, Any], ssl_root_cert: Path = RDS_CA_BUNDLE_PATH) -> None:
    """Run one rotation step for the secret and version in `event`; connections verify the
    server against `ssl_root_cert` (TLS verify-full, by default the shipped RDS CA bundle)."""
    secret_id, token, step = (
        event.get("SecretId"),
        event.get("ClientRequestToken"),
        event.get("Step"),
    )
    if not isinstance(secret_id, str) or not isinstance(token, str) or step not in STEPS:
        raise RotationError("rotation event needs SecretId, ClientRequestToken and a known Step")
    metadata = secrets.describe(secret_id)
    if not metadata.get("RotationEnabled", True):
        raise RotationError(f"secret {secret_id} does not have rotation enabled")
    stages = metadata.get("VersionIdsToStages", {}).get(token)
    if stages is not None and "AWSCURRENT" in stages:
        log.info("%s: version already current", step)
        return
    if stages is not None and "AWSPENDING" not in stages:
        raise RotationError(f"version {token} of {secret_id} is not pending rotation")
    if stages is None and step != "createSecret":
        raise RotationError(f"version {token} of {secret_id} does not exist")
    log.info("%s of %s", step, secret_id)
    {
        "createSecret": _create,
        "setSecret": _set,
        "testSecret": _test,
        "finishSecret": _finish,
    }[str(step)](secret_id, token, ssl_root_cert)


def _create(secret_id: str, token: str, ssl_root_cert: Path) -> None:
    current = secrets.read_version(secret_id, stage="AWSCURRENT")
    if secrets.version_exists(secret_id, stage="AWSPENDING", version_id=token):
        return
    if _suspended(current, ssl_root_cert):
        log.info(
            "createSecret: %s may not log in (suspended): the pending version keeps its "
            "password, which resuming sets again from AWSCURRENT",
            current.get("username"),
        )
        secrets.put_pending(secret_id, token, current)
        return
    secrets.put_pending(secret_id, token, {**current, "password": secrets.random_password()})


def _connect(secret: Mapping[str, Any], ssl_root_cert: Path) -> psycopg.Connection[Any]:
    settings = settings_from_secret(secret, ssl_root_cert, application_name=APPLICATION_NAME)
    return connect(settings, _QUICK)


def _suspended(secret: Mapping[str, Any], ssl_root_cert: Path) -> bool:
    """Whether the server accepts `secret`'s password but refuses the login as NOLOGIN. Any
    other outcome is False: a login that works, or a failure setSecret reports."""
    try:
        _connect(secret, ssl_root_cert).close()
    except LoginNotPermittedError:
        return True
    except TenantkitError:
        return False
    return False


def _set(secret_id: str, token: str, ssl_root_cert: Path) -> None:
    pending = secrets.read_version(secret_id, stage="AWSPENDING", version_id=token)
    current = secrets.read_version(secret_id, stage="AWSCURRENT")
    changed = [key for key in _SAME_TARGET if pending.get(key) != current.get(key)]
    if changed:
        # A rotation may change the password only, never where or as whom it connects.
        raise RotationError(f"pending version of {secret_id} changes {', '.join(changed)}")
    try:
        _connect(pending, ssl_root_cert).close()
        log.info("setSecret: the pending password already works")
        return
    except LoginNotPermittedError:
        log.info(
            "setSecret: the server accepts the pending password of %s, which may not log in "
            "(suspended): nothing to set",
            pending.get("username"),
        )
        return
    except TenantkitError:
        pass
    conn, reasons = None, []
    for stage, secret in (("AWSCURRENT", current), ("AWSPREVIOUS", None)):
        try:
            secret = secret or secrets.read_version(secret_id, stage=stage)
            conn = _connect(secret, ssl_root_cert)
            break
        except TenantkitError as error:  # its text holds no secret
            reasons.append(f"{stage}: {error}")
            log.warning("setSecret: could not log in with %s", reasons[-1])
    if conn is None:
        # The reasons tell a wrong password from a server the CA bundle does not sign.
        raise RotationError(
            f"setSecret: no version of {secret_id} can log in ({'; '.join(reasons)})"
        )
    with conn:
        # A tenant login's sessions start as its database's objects role (SET role at login):
        # back to the login itself, which may change its own password and no other.
        conn.execute("SET ROLE NONE")
        user = conn.execute("SELECT current_user").fetchone()
        assert user is not None
        verifier = scram_verifier(conn, str(user[0]), str(pending["password"]))
        conn.execute(
            psycopg.sql.SQL("ALTER ROLE CURRENT_USER PASSWORD {}").format(
                psycopg.sql.Literal(verifier)
            )
        )


def _test(secret_id: str, token: str, ssl_root_cert: Path) -> None:
    pending = secrets.read_version(secret_id, stage="AWSPENDING", version_id=token)
    try:
        conn = _connect(pending, ssl_root_cert)
    except LoginNotPermittedError:
        # The password was checked and accepted before the LOGIN attribute refused the role.
        log.info(
            "testSecret: the server accepts the pending password of %s, which may not log in "
            "(suspended): passed",
            pending.get("username"),
        )
        return
    with conn:
        conn.execute("SELECT 1")


def _finish(secret_id: str, token: str, _ssl_root_cert: Path) -> None:
    versions = secrets.describe(secret_id).get("VersionIdsToStages", {})
    current = next((v for v, stages in versions.items() if "AWSCURRENT" in stages), None)
    if current is None:
        raise RotationError(f"secret {secret_id} has no AWSCURRENT version")
    if current != token:
        secrets.promote(secret_id, token, current)
