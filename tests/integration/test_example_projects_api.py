"""The README's example application (examples/projects_api.py), an ASGI app on SQLAlchemy
asyncio, driven through the ASGI protocol against a provisioned pool on the embedded
PostgreSQL, with tokens signed by a test issuer."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import psycopg
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from examples.projects_api import ASGIApp, Message, create_app
from lambda_src.core.connection import ConnectionSettings
from lambda_src.tenant_runtime import TokenVerifier, tenant_transaction
from lambda_src.tenant_runtime.orm import async_tenant_engine

from .pool_fixtures import aws, config, pool_server  # noqa: F401 (fixtures)
from .tenant_pool_fixtures import all_rows, pool, superuser  # noqa: F401 (fixtures)

pytestmark = pytest.mark.asyncio

ISSUER = "https://idp.example"
AUDIENCE = "projects-api"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def verifier() -> TokenVerifier:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    return TokenVerifier(jwks={"keys": [jwk]}, issuer=ISSUER, audience=AUDIENCE)


def bearer(tenant: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "tenant_id": tenant}
    return "Bearer " + jwt.encode(claims, KEY, "RS256", {"kid": "k1"})


@pytest_asyncio.fixture
async def app(pool: ConnectionSettings) -> AsyncIterator[ASGIApp]:
    """The application on a tenant engine of the runtime login, started and shut down through
    ASGI lifespan as a server would."""
    engine = async_tenant_engine(
        "postgresql+psycopg://", connect_args=pool.connect_kwargs(), pool_size=3, max_overflow=0
    )
    application = create_app(engine=engine, verifier=verifier())
    events: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    lifespan = asyncio.create_task(application({"type": "lifespan"}, events.get, send))
    await events.put({"type": "lifespan.startup"})
    yield application
    await events.put({"type": "lifespan.shutdown"})
    await lifespan
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def call(
    app: ASGIApp, method: str, path: str, *, token: str | None, body: Any = None
) -> tuple[int, Any]:
    """One HTTP request through ASGI: (status, decoded JSON body)."""
    headers = [(b"authorization", token.encode())] if token else []
    payload = json.dumps(body).encode() if body is not None else b""
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start, content = messages
    return start["status"], json.loads(content["body"])


async def test_a_tenant_lists_its_own_projects_with_their_open_tasks(app: ASGIApp) -> None:
    status, body = await call(app, "GET", "/projects", token=bearer("red"))
    assert status == 200
    assert body == [
        {"id": 1, "name": "red alpha", "open_tasks": ["red first"]},
        {"id": 2, "name": "red beta", "open_tasks": ["red third"]},
    ]


async def test_a_request_without_a_verified_tenant_is_refused(app: ASGIApp) -> None:
    assert (await call(app, "GET", "/projects", token=None))[0] == 401
    forged = "Bearer " + jwt.encode({"tenant_id": "red"}, "not-the-key-" * 3, "HS256")
    assert (await call(app, "GET", "/projects", token=forged))[0] == 401


async def test_a_task_lands_in_the_callers_tenant_whatever_the_body_says(
    app: ASGIApp, superuser: psycopg.Connection[Any]
) -> None:
    body = {"task_id": 40, "title": "from the api", "tenant_id": "blue"}
    status, answer = await call(app, "POST", "/projects/1/tasks", token=bearer("red"), body=body)
    assert (status, answer) == (200, {"id": 40, "project": 1})
    assert [r[0] for r in all_rows(superuser, "tasks") if r[1] == 40] == ["red"]
    conflict = await call(app, "POST", "/projects/1/tasks", token=bearer("red"), body=body)
    assert conflict[0] == 409


async def test_another_tenants_project_is_not_found(
    app: ASGIApp, pool: ConnectionSettings, superuser: psycopg.Connection[Any]
) -> None:
    # GIVEN a project 5 that only blue has
    with psycopg.connect(**pool.connect_kwargs()) as conn, tenant_transaction(conn, "blue"):
        conn.execute("INSERT INTO tenantkit_sample.projects VALUES ('blue', 5, 'blue only')")
    body = {"task_id": 50, "title": "into blue's project"}
    # WHEN red adds a task to it THEN it does not exist for red, and nothing was written
    refused = await call(app, "POST", "/projects/5/tasks", token=bearer("red"), body=body)
    assert refused == (404, {"error": "no project 5"})
    assert [r for r in all_rows(superuser, "tasks") if r[1] == 50] == []
    # WHEN blue does THEN it is blue's task
    accepted = await call(app, "POST", "/projects/5/tasks", token=bearer("blue"), body=body)
    assert accepted[0] == 200
    assert [r[0] for r in all_rows(superuser, "tasks") if r[1] == 50] == ["blue"]


async def test_concurrent_requests_of_several_tenants_see_their_own_projects(
    app: ASGIApp,
) -> None:
    tenants = ["red", "blue", "green"] * 8
    answers = await asyncio.gather(
        *(call(app, "GET", "/projects", token=bearer(tenant)) for tenant in tenants)
    )
    for tenant, (status, body) in zip(tenants, answers, strict=True):
        assert status == 200
        assert {p["name"].split()[0] for p in body} == {tenant}


async def test_a_malformed_request_is_answered_without_touching_the_database(
    app: ASGIApp,
) -> None:
    red = bearer("red")
    assert (await call(app, "POST", "/projects/1/tasks", token=red, body={"title": "x"}))[0] == 400
    assert (await call(app, "POST", "/projects/x/tasks", token=red, body={}))[0] == 404
    assert (await call(app, "DELETE", "/projects", token=red))[0] == 404
