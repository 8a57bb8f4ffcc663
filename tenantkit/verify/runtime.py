"""Attacks on the runtime library: what tenant compute accepts as a tenant, and what a pooled
connection carries from one borrower to the next."""

import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import psycopg
from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg import sql

from lambda_src.core.connection import ConnectionSettings
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS
from lambda_src.tenant_runtime import (
    AccessConfig,
    Pattern,
    TenantDataAccess,
    TokenVerifier,
    UnverifiedTenantError,
    bearer_token,
)
from lambda_src.tenant_runtime.access import reset_pooled_connection

from .report import AttackResult

ISSUER = "https://issuer.verify.tenantkit.invalid/"
AUDIENCE = "tenantkit-verify"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _token(key: Any, algorithm: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "tenant_id": "acme"}
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm, {"kid": "verify-1"})


def _refused(attempt: Callable[[], object]) -> tuple[bool, str]:
    try:
        attempt()
    except UnverifiedTenantError as error:
        return True, f"refused: {error}"
    return False, "accepted"


def run_runtime_attacks(pool_runtime: ConnectionSettings | None = None) -> list[AttackResult]:
    """Forged, expired and misdirected tokens; a silo function asked for another tenant; and,
    given the pool's runtime login, a tenant setting left on a pooled connection."""
    issuer_key, other_key = _key(), _key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(issuer_key.public_key()))
    verifier = TokenVerifier(
        jwks={"keys": [{**jwk, "kid": "verify-1"}]}, issuer=ISSUER, audience=AUDIENCE
    )
    silo = TenantDataAccess(
        AccessConfig(pattern=Pattern.SILO_SECRET, region="us-east-1", silo_tenant="acme")
    )

    def silo_asked_for_another() -> None:
        with silo.connection("globex"):
            pass

    attacks: dict[str, Callable[[], tuple[bool, str]]] = {
        "token signed by a key the issuer does not publish": lambda: _refused(
            lambda: verifier.tenant_of(_token(other_key))
        ),
        "unsigned token (alg none)": lambda: _refused(
            lambda: verifier.tenant_of(_token("", algorithm="none"))
        ),
        "HMAC token (algorithm confusion)": lambda: _refused(
            lambda: verifier.tenant_of(_token("k" * 32, algorithm="HS256"))
        ),
        "expired token": lambda: _refused(
            lambda: verifier.tenant_of(_token(issuer_key, exp=int(time.time()) - 600))
        ),
        "token for another audience": lambda: _refused(
            lambda: verifier.tenant_of(_token(issuer_key, aud="another-service"))
        ),
        "token from another issuer": lambda: _refused(
            lambda: verifier.tenant_of(_token(issuer_key, iss="https://evil.invalid/"))
        ),
        "tenant claim that is not a tenant id": lambda: _refused(
            lambda: verifier.tenant_of(_token(issuer_key, tenant_id="acme' OR '1'='1"))
        ),
        "tenant named in a header instead of a token": lambda: _refused(
            lambda: bearer_token({"X-Tenant-Id": "acme"})
        ),
        "silo function asked for another tenant": lambda: _refused(silo_asked_for_another),
    }
    if pool_runtime is not None:
        attacks["tenant setting left on a pooled connection"] = lambda: _reset_clears(pool_runtime)
        attacks["session SET by one client read by the next (transaction pooler)"] = lambda: (
            _session_set_stays_with_its_client(pool_runtime)
        )
    results = []
    for name, attack in attacks.items():
        blocked, detail = attack()
        results.append(AttackResult("runtime", name, blocked, detail))
    return results


def _reset_clears(settings: ConnectionSettings) -> tuple[bool, str]:
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as conn:
        setting_name = sql.Identifier(*POOL.tenant_setting.split("."))
        conn.execute(sql.SQL("SET {} = 'tenantkit-probe-a'").format(setting_name))
        conn.execute("DECLARE kept CURSOR WITH HOLD FOR SELECT 1")
        reset_pooled_connection(conn)
        setting = conn.execute("SELECT current_setting(%s, true)", (POOL.tenant_setting,))
        value = setting.fetchone()
        cursors = conn.execute("SELECT count(*) FROM pg_cursors").fetchone()
    if value == ("",) and cursors == (0,):
        return True, "the pool's reset cleared the setting and the held cursor"
    return False, f"after reset: setting {value}, {cursors} cursor(s)"


def _session_set_stays_with_its_client(settings: ConnectionSettings) -> tuple[bool, str]:
    """One client sets a tenant for its session and goes away; the next client, with no tenant
    of its own, must see no rows. Straight to the server they are two sessions. Behind a
    transaction-mode pooler (PgBouncer serves the next client from the server connection it
    released last) the SET stays on the server connection unless the pooler resets it after
    every transaction (PgBouncer: server_reset_query_always = 1)."""
    setting = sql.Identifier(*POOL.tenant_setting.split("."))
    projects = sql.SQL("SELECT tenant_id FROM {}.projects").format(
        sql.Identifier(POOL.sample_schema)
    )
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as first:
        first.execute(sql.SQL("SET {} = {}").format(setting, sql.Literal(PROBE_TENANT_IDS[1])))
        (set_on,) = first.execute("SELECT pg_backend_pid()").fetchone() or (None,)
    with psycopg.connect(**settings.connect_kwargs(), autocommit=True) as second:
        tenants = {row[0] for row in second.execute(projects)}
        (read_on,) = second.execute("SELECT pg_backend_pid()").fetchone() or (None,)
    where = "the same server backend" if set_on == read_on else "another server backend"
    if tenants:
        return False, f"the next client read {sorted(tenants)} on {where}"
    return True, f"the next client read 0 rows ({where})"
