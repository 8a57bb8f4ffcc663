"""The runtime library: verified tenant identity, and connections by access pattern, against
moto (STS session tags, Secrets Manager) and the embedded PostgreSQL."""

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws

from lambda_src.core.connection import RDS_CA_BUNDLE_PATH, RetryPolicy
from lambda_src.core.environment import (
    DB_HOST,
    DB_PREPARED_STATEMENTS,
    DB_PROXY,
    SSL_ROOT_CERT,
)
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import (
    pool_batches,
    pool_database_properties,
    pool_tenants_properties,
)
from lambda_src.tenancy import POOL, tenant_names
from lambda_src.tenant_runtime import (
    AccessConfig,
    Pattern,
    SecretLogins,
    TenantDataAccess,
    TenantSessions,
    TokenVerifier,
    UnverifiedTenantError,
    bearer_token,
    tenant_session_policy,
)
from tenantkit.embedded_pg import RunningServer

from .conftest import create_event, properties

ISSUER = "https://idp.example"
AUDIENCE = "tenantkit-tests"
ROLE_ARN = "arn:aws:iam::123456789012:role/tenant-access"


# -- identity ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def verifier(signing_key: rsa.RSAPrivateKey) -> TokenVerifier:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    return TokenVerifier(jwks={"keys": [jwk]}, issuer=ISSUER, audience=AUDIENCE)


def token(key: Any, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "tenant_id": "acme",
    }
    claims.update(overrides)
    headers = {"kid": claims.pop("kid", "k1")}
    algorithm = claims.pop("alg", "RS256")
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm, headers)


def test_a_verified_token_names_its_tenant(
    verifier: TokenVerifier, signing_key: rsa.RSAPrivateKey
) -> None:
    bearer = token(signing_key)
    assert verifier.tenant_of(bearer_token({"Authorization": f"Bearer {bearer}"})) == "acme"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "someone-else"}, "does not verify"),
        ({"iss": "https://evil.example"}, "does not verify"),
        ({"exp": None}, "does not verify"),
        ({"kid": "k2"}, "does not publish"),
        ({"tenant_id": None}, "claim 'tenant_id'"),
        ({"tenant_id": "acme'; DROP TABLE t; --"}, "claim 'tenant_id'"),
        ({"tenant_id": "tenantkit-probe-a"}, "reserved"),
    ],
)
def test_tokens_that_prove_no_tenant_are_refused(
    overrides: dict[str, Any],
    message: str,
    verifier: TokenVerifier,
    signing_key: rsa.RSAPrivateKey,
) -> None:
    with pytest.raises(UnverifiedTenantError, match=message):
        verifier.tenant_of(token(signing_key, **overrides))


def test_a_token_signed_by_another_key_is_refused(verifier: TokenVerifier) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(UnverifiedTenantError, match="does not verify"):
        verifier.tenant_of(token(other))


def test_unsigned_and_symmetric_tokens_are_refused(verifier: TokenVerifier) -> None:
    unsigned = jwt.encode({"tenant_id": "acme"}, "", algorithm="none", headers={"kid": "k1"})
    with pytest.raises(UnverifiedTenantError, match="'none' is not accepted"):
        verifier.tenant_of(unsigned)
    forged = jwt.encode(
        {"tenant_id": "acme"}, "a-shared-secret-of-thirty-two-bytes", "HS256", {"kid": "k1"}
    )
    with pytest.raises(UnverifiedTenantError, match="'HS256' is not accepted"):
        verifier.tenant_of(forged)


def test_a_request_without_a_bearer_token_is_refused() -> None:
    with pytest.raises(UnverifiedTenantError, match="no bearer token"):
        bearer_token({"X-Tenant-Id": "acme"})


# -- connections by pattern ----------------------------------------------------------------------

PASSWORD = "runtime-test-password"


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    with mock_aws():
        iam = boto3.client("iam")
        iam.create_role(RoleName="tenant-access", AssumeRolePolicyDocument="{}")
        yield boto3.client("secretsmanager")


@pytest.fixture(scope="module")
def world(aws: Any, server: RunningServer, pg_root: Any) -> dict[str, str]:
    """Two tenants with databases and attached-format secrets, and the pool with two tenants,
    on the session server; returns their ids."""
    config = HandlerConfig(admin_settings=server.admin_settings(), retry=RetryPolicy(attempts=2))
    ids = {"a": "rt-alpha", "b": "rt-bravo"}
    for tenant in ids.values():
        names = tenant_names(tenant)
        secret = {
            "engine": "postgres",
            "host": server.host,
            "port": server.port,
            "username": names.login_role,
            "password": PASSWORD,
            "dbname": names.database,
        }
        arn = aws.create_secret(Name=names.secret_name, SecretString=json.dumps(secret))["ARN"]
        handle(create_event(properties(tenant, arn)), config)
    pool_secret = {
        "host": server.host,
        "port": server.port,
        "username": POOL.login_role,
        "password": PASSWORD,
        "dbname": POOL.database,
    }
    arn = aws.create_secret(Name=POOL.secret_name, SecretString=json.dumps(pool_secret))["ARN"]
    pool_props = pool_database_properties(
        runtime_secret_arn=arn, iam_auth=True, removal_policy="retain"
    )
    handle(provider_event("Create", pool_props), config)
    for batch, entries in pool_batches([(t, "retain") for t in ids.values()]).items():
        props = pool_tenants_properties(batch, entries)
        handle(provider_event("Create", props), config)
    return ids


def ssl(server: RunningServer) -> dict[str, Any]:
    return {"region": "us-east-1", "ssl_root_cert": server.ca_cert}


def whoami(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute("SELECT session_user, current_database()").fetchone()
    assert row is not None
    return tuple(row)


def test_silo_secret_pattern_reaches_its_tenant_and_refuses_any_other(
    world: dict[str, str], server: RunningServer
) -> None:
    a, b = world["a"], world["b"]
    access = TenantDataAccess(
        AccessConfig(pattern=Pattern.SILO_SECRET, silo_tenant=a, **ssl(server))
    )
    with access.connection(a) as conn:
        assert whoami(conn) == (tenant_names(a).login_role, tenant_names(a).database)
        assert conn.execute("SHOW ssl").fetchone() == ("on",)
    with (
        pytest.raises(UnverifiedTenantError, match=f"serves tenant '{a}' only"),
        access.connection(b),
    ):
        pass


def test_bridge_secret_pattern_assumes_the_role_with_the_tenant_tag(
    world: dict[str, str], server: RunningServer
) -> None:
    calls: list[dict[str, Any]] = []
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register(
        "provide-client-params.sts.AssumeRole", lambda params, **_: calls.append(params)
    )
    config = AccessConfig(
        pattern=Pattern.BRIDGE_SECRET,
        tenant_access_role_arn=ROLE_ARN,
        db_resource_id="cluster-ABC",
        **ssl(server),
    )
    access = TenantDataAccess(config)
    for tenant in (world["a"], world["b"], world["a"]):
        with access.connection(tenant) as conn:
            assert whoami(conn)[0] == tenant_names(tenant).login_role
    # one AssumeRole per tenant (the second use of a is served from the cache)
    assert [c["Tags"] for c in calls] == [
        [{"Key": "tenant", "Value": world["a"]}],
        [{"Key": "tenant", "Value": world["b"]}],
    ]
    policy = json.loads(calls[0]["Policy"])
    assert policy == tenant_session_policy(
        world["a"],
        partition="aws",
        region="us-east-1",
        account="123456789012",
        db_resource_id="cluster-ABC",
    )


def test_token_vending_policy_names_only_the_tenants_own_user_and_secret() -> None:
    policy = tenant_session_policy(
        "acme-corp", partition="aws", region="eu-west-1", account="1", db_resource_id="cluster-X"
    )
    resources = [s["Resource"] for s in policy["Statement"]]
    secret = "arn:aws:secretsmanager:eu-west-1:1:secret:tenantkit/acme-corp/app-??????"
    assert resources == [
        "arn:aws:rds-db:eu-west-1:1:dbuser:cluster-X/tenant_acme-corp_iam",
        secret,
        "arn:aws:kms:eu-west-1:1:key/*",
    ]
    # any key, but only to decrypt that secret, and only through Secrets Manager
    assert policy["Statement"][2]["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"},
        "StringLike": {"kms:EncryptionContext:SecretARN": secret},
    }


def test_cached_credentials_are_reused_until_near_expiry(aws: Any) -> None:
    sessions = TenantSessions(ROLE_ARN, duration_s=900, refresh_before_s=120)
    first = sessions.session_for("acme")
    assert sessions.session_for("acme") is first
    sessions_short = TenantSessions(ROLE_ARN, duration_s=900, refresh_before_s=10_000)
    one = sessions_short.session_for("acme")
    assert sessions_short.session_for("acme") is not one  # always "near expiry": refreshed


@pytest.mark.parametrize("pattern", [Pattern.SILO_IAM, Pattern.BRIDGE_IAM])
def test_iam_patterns_mint_a_token_per_connection_as_the_tenants_iam_user(
    pattern: Pattern, world: dict[str, str], server: RunningServer
) -> None:
    captured: list[dict[str, Any]] = []

    def fake_connect(**kwargs: Any) -> Any:  # IAM tokens cannot log in to a local server
        captured.append(kwargs)
        return psycopg.connect(**server.superuser_settings().connect_kwargs())

    tenant = world["a"]
    config = AccessConfig(
        pattern=pattern,
        host="db.cluster.example",
        silo_tenant=tenant if pattern is Pattern.SILO_IAM else None,
        tenant_access_role_arn=ROLE_ARN if pattern is Pattern.BRIDGE_IAM else None,
        **ssl(server),
    )
    access = TenantDataAccess(config, connect=fake_connect)
    for attempt in range(2):
        if attempt:
            time.sleep(1.05)  # tokens carry their signing time to the second
        with access.connection(tenant):
            pass
    assert len(captured) == 2
    # a token minted for each connection, never one reused (it expires after 15 minutes)
    assert captured[0]["password"] != captured[1]["password"]
    for kwargs in captured:
        assert kwargs["user"] == tenant_names(tenant).iam_user
        assert kwargs["dbname"] == tenant_names(tenant).database
        assert kwargs["sslmode"] == "verify-full"
        token_text = kwargs["password"]
        assert token_text.startswith("db.cluster.example:5432/?Action=connect")
        assert f"DBUser={tenant_names(tenant).iam_user}" in token_text
        assert "X-Amz-Expires=900" in token_text
    if pattern is Pattern.BRIDGE_IAM:
        # signed with the tenant session's credentials, not the function's own
        assumed = access._sessions.session_for(tenant).get_credentials()  # type: ignore[union-attr]
        assert f"X-Amz-Credential={assumed.access_key}" in captured[0]["password"]


def test_secrets_are_cached_for_their_ttl_and_read_again_after_it(aws: Any) -> None:
    # GIVEN a secret read once through a cache with a 300 s TTL and a clock we move
    name = "tenantkit/ttl-probe/app"
    aws.create_secret(Name=name, SecretString=json.dumps({"password": "first"}))
    now = [1000.0]
    logins = SecretLogins(ttl_s=300.0, clock=lambda: now[0])
    session = boto3.Session()
    assert logins.get(name, session)["password"] == "first"

    # WHEN the secret rotates
    aws.put_secret_value(SecretId=name, SecretString=json.dumps({"password": "second"}))

    # THEN within the TTL the cached value is served, a fresh read sees the new one, and after
    # the TTL the new one is served
    now[0] += 299
    assert logins.get(name, session)["password"] == "first"
    assert logins.get(name, session, fresh=True)["password"] == "second"
    aws.put_secret_value(SecretId=name, SecretString=json.dumps({"password": "third"}))
    now[0] += 301
    assert logins.get(name, session)["password"] == "third"


def test_a_rotated_password_is_read_again_after_one_failed_login(
    world: dict[str, str], server: RunningServer, aws: Any
) -> None:
    tenant = world["b"]
    names = tenant_names(tenant)
    access = TenantDataAccess(
        AccessConfig(pattern=Pattern.SILO_SECRET, silo_tenant=tenant, **ssl(server))
    )
    with access.connection(tenant):
        pass  # the secret is now cached
    # rotation: the database and the secret get a new password
    with psycopg.connect(**server.superuser_settings().connect_kwargs(), autocommit=True) as su:
        su.execute(
            psycopg.sql.SQL("ALTER ROLE {} PASSWORD 'rotated-password-2'").format(
                psycopg.sql.Identifier(names.login_role)
            )
        )
    value = json.loads(aws.get_secret_value(SecretId=names.secret_name)["SecretString"])
    aws.put_secret_value(
        SecretId=names.secret_name,
        SecretString=json.dumps({**value, "password": "rotated-password-2"}),
    )
    with access.connection(tenant) as conn:
        assert whoami(conn)[0] == names.login_role


def test_pool_pattern_scopes_each_borrowed_connection_and_resets_it(
    world: dict[str, str], server: RunningServer
) -> None:
    access = TenantDataAccess(AccessConfig(pattern=Pattern.POOL_SECRET, **ssl(server)), pool_size=1)
    try:
        for tenant in (world["a"], world["b"]):
            with access.connection(tenant) as conn:
                conn.execute(
                    "INSERT INTO tenantkit_sample.projects VALUES (%s, 42, 'x') "
                    "ON CONFLICT DO NOTHING",
                    (tenant,),
                )
                seen = conn.execute("SELECT DISTINCT tenant_id FROM tenantkit_sample.projects")
                assert [row[0] for row in seen] == [tenant]
                # a careless borrower leaves session-level settings behind ...
                conn.execute("SET app.tenant_id = 'someone-else'")
                conn.execute("SET application_name = 'left-behind'")
        # ... the pool resets them before the next borrower (pool_size=1: the same connection)
        with access.connection(world["a"]) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert conn.execute("SHOW application_name").fetchone() == ("tenantkit-runtime",)
            seen = conn.execute("SELECT DISTINCT tenant_id FROM tenantkit_sample.projects")
            assert [row[0] for row in seen] == [world["a"]]
        with access.connection(world["b"]) as conn:
            assert conn.execute("SELECT pg_backend_pid()").fetchone() == backend
    finally:
        access.close()


def test_by_default_the_runtime_verifies_against_the_shipped_rds_bundle_and_refuses_a_local_ca(
    world: dict[str, str], server: RunningServer
) -> None:
    # GIVEN a silo function's environment without TENANTKIT_SSL_ROOT_CERT
    a = world["a"]
    env = {"TENANTKIT_PATTERN": "silo-secret", "TENANTKIT_SILO_TENANT": a}
    config = AccessConfig.from_env(env)
    assert config.ssl_root_cert == RDS_CA_BUNDLE_PATH
    # WHEN it connects to the embedded server (its certificate signed by a local CA)
    # THEN TLS verification refuses the server
    with (
        pytest.raises(psycopg.OperationalError, match="certificate verify failed"),
        TenantDataAccess(config).connection(a),
    ):
        pass
    # and the same function given the server's CA gets in (the control)
    trusting = AccessConfig.from_env({**env, SSL_ROOT_CERT: str(server.ca_cert)})
    with TenantDataAccess(trusting).connection(a) as conn:
        assert whoami(conn) == (tenant_names(a).login_role, tenant_names(a).database)


def test_configuration_errors_name_what_is_missing() -> None:
    with pytest.raises(ValueError, match="needs host"):
        AccessConfig(pattern=Pattern.POOL_IAM, region="us-east-1")
    with pytest.raises(ValueError, match="needs tenant_access_role_arn"):
        AccessConfig(pattern=Pattern.BRIDGE_SECRET, region="us-east-1")
    with pytest.raises(ValueError, match="TENANTKIT_PATTERN must be one of"):
        AccessConfig.from_env({"TENANTKIT_PATTERN": "shared-everything"})
    with pytest.raises(ValueError, match="TENANTKIT_DB_PREPARED_STATEMENTS must be true or false"):
        AccessConfig.from_env({"TENANTKIT_PATTERN": "pool-secret", DB_PREPARED_STATEMENTS: "yes"})


# -- through the pool's RDS Proxy (pool.proxy in the catalog) ------------------------------------

PROXY_HOST = "tenantkit-pool.proxy-c0ffee.us-east-1.rds.amazonaws.com"


def test_the_proxy_switch_is_read_from_the_environment_and_only_for_the_pool() -> None:
    pool = {"TENANTKIT_PATTERN": "pool-iam", DB_HOST: PROXY_HOST}
    assert AccessConfig.from_env(pool).through_proxy is False
    assert AccessConfig.from_env({**pool, DB_PROXY: "true"}).through_proxy is True
    with pytest.raises(ValueError, match="TENANTKIT_DB_PROXY must be true or false, not 'yes'"):
        AccessConfig.from_env({**pool, DB_PROXY: "yes"})
    with pytest.raises(ValueError, match=r"pool-secret needs host .* to go through the proxy"):
        AccessConfig.from_env({"TENANTKIT_PATTERN": "pool-secret", DB_PROXY: "true"})
    with pytest.raises(ValueError, match="only the pool patterns go through an RDS Proxy"):
        AccessConfig(
            pattern=Pattern.BRIDGE_IAM,
            region="us-east-1",
            host=PROXY_HOST,
            tenant_access_role_arn=ROLE_ARN,
            through_proxy=True,
        )


@pytest.mark.parametrize("through_proxy", [False, True])
def test_pool_iam_mints_its_token_for_the_proxy_as_the_login_whose_secret_it_holds(
    through_proxy: bool, aws: Any, server: RunningServer
) -> None:
    # GIVEN pool-iam compute pointed at the cluster, or at the pool's proxy
    captured: list[dict[str, Any]] = []

    def fake_connect(**kwargs: Any) -> Any:  # IAM tokens cannot log in to a local server
        captured.append(kwargs)
        return psycopg.connect(**server.superuser_settings().connect_kwargs())

    host = PROXY_HOST if through_proxy else "db.cluster.example"
    config = AccessConfig(
        pattern=Pattern.POOL_IAM, host=host, through_proxy=through_proxy, **ssl(server)
    )
    access = TenantDataAccess(config, connect=fake_connect, pool_size=1)
    # WHEN it opens its pool's connection
    try:
        with access.connection("rt-alpha"):
            pass
    finally:
        access.close()
    # THEN the token is for the host it connects to, as the user that host lets in: the
    # cluster's IAM user directly, the runtime login (the proxy's secret) through the proxy
    user = POOL.login_role if through_proxy else POOL.iam_user
    kwargs = captured[0]
    assert (kwargs["host"], kwargs["user"], kwargs["dbname"]) == (host, user, POOL.database)
    assert kwargs["sslmode"] == "verify-full"
    assert kwargs["password"].startswith(f"{host}:5432/?Action=connect")
    assert f"DBUser={user}&" in kwargs["password"]


def test_pool_secret_through_the_proxy_sends_the_secrets_password_to_the_proxy(
    world: dict[str, str], server: RunningServer
) -> None:
    # GIVEN the runtime login's secret as attached to the cluster (it names the cluster) ...
    secrets = SecretLogins()
    secrets.keep(
        POOL.secret_name,
        {
            "host": "cluster.invalid",
            "port": 5432,
            "username": POOL.login_role,
            "password": PASSWORD,
            "dbname": POOL.database,
        },
    )
    # ... and pool-secret compute told to go through the proxy (the local server stands in)
    config = AccessConfig(
        pattern=Pattern.POOL_SECRET,
        host=server.host,
        port=server.port,
        through_proxy=True,
        **ssl(server),
    )
    access = TenantDataAccess(config, secrets=secrets, pool_size=1)
    # WHEN it connects THEN it reached the proxy's host, not the secret's, as the login
    try:
        with access.connection(world["a"]) as conn:
            assert whoami(conn) == (POOL.login_role, POOL.database)
    finally:
        access.close()


def test_prepared_statements_are_off_unless_the_environment_turns_them_on() -> None:
    pool = {"TENANTKIT_PATTERN": "pool-secret"}
    assert AccessConfig.from_env(pool).prepared_statements is False
    on = AccessConfig.from_env({**pool, DB_PREPARED_STATEMENTS: "true"})
    assert on.prepared_statements is True


# -- the six sample functions, run locally -------------------------------------------------------


def sample_config(pattern: Pattern, world: dict[str, str], server: RunningServer) -> AccessConfig:
    return AccessConfig(
        pattern=pattern,
        host="db.cluster.example" if pattern.iam_auth else None,
        silo_tenant=world["a"] if pattern.tier == "silo" else None,
        tenant_access_role_arn=ROLE_ARN if pattern.tier == "bridge" else None,
        **ssl(server),
    )


@pytest.mark.parametrize("pattern", list(Pattern))
def test_each_sample_function_reads_its_tenants_rows_and_only_with_a_verified_token(
    pattern: Pattern,
    world: dict[str, str],
    server: RunningServer,
    verifier: TokenVerifier,
    signing_key: rsa.RSAPrivateKey,
) -> None:
    from lambda_src.samples.handler import respond

    tenant = world["a"]

    def password_login(**kwargs: Any) -> Any:
        # IAM tokens cannot log in locally: the minted token is checked, then the tenant's own
        # login (password from its secret) stands in for it.
        assert kwargs["password"].startswith("db.cluster.example:5432/?Action=connect")
        names = tenant_names(tenant) if kwargs["user"] != POOL.iam_user else None
        user = names.login_role if names else POOL.login_role
        dbname = kwargs["dbname"]
        return psycopg.connect(**server.settings(user, PASSWORD, dbname).connect_kwargs())

    connect = password_login if pattern.iam_auth else psycopg.connect
    access = TenantDataAccess(sample_config(pattern, world, server), connect=connect)
    try:
        if pattern.tier == "pool":
            with access.connection(tenant) as conn:
                conn.execute(
                    "INSERT INTO tenantkit_sample.projects VALUES (%s, 7, 'seven') "
                    "ON CONFLICT DO NOTHING",
                    (tenant,),
                )
        headers = {"authorization": f"Bearer {token(signing_key, tenant_id=tenant)}"}
        response = respond({"headers": headers}, verifier, access)
        assert response["statusCode"] == 200, response
        body = json.loads(response["body"])
        assert body["tenant"] == tenant
        if pattern.tier == "pool":
            assert [7, "seven"] in [row[1:] for row in body["rows"]]
            assert {row[0] for row in body["rows"]} == {tenant}
        else:
            assert body["rows"][0][:2] == [
                tenant_names(tenant).database,
                tenant_names(tenant).login_role,
            ]
        forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        refused = respond(
            {"headers": {"authorization": f"Bearer {token(forged)}"}}, verifier, access
        )
        assert refused["statusCode"] == 401
        if pattern.tier == "silo":
            other = {"authorization": f"Bearer {token(signing_key, tenant_id=world['b'])}"}
            assert respond({"headers": other}, verifier, access)["statusCode"] == 403
    finally:
        access.close()
