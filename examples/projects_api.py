"""An example ASGI application on the pool tier: SQLAlchemy asyncio, one tenant per request.

    GET  /projects                   the caller's projects, each with its open tasks
    POST /projects/<id>/tasks        {"task_id": 7, "title": "..."}: a task in one of them

Run it (any ASGI server; the database from libpq's PG* variables, the runtime login):

    PGHOST=... PGDATABASE=tenantkit_pool PGUSER=tenantkit_pool_app PGPASSWORD=... \\
    PGSSLMODE=verify-full PGSSLROOTCERT=lambda_src/certs/rds-ca-bundle.pem \\
    TENANTKIT_JWKS='{"keys": [...]}' TENANTKIT_JWT_ISSUER=... TENANTKIT_JWT_AUDIENCE=... \\
    uvicorn --factory examples.projects_api:app_from_env

The tenant is the verified claim of the bearer token, never a field of the request, and each
request is one async_tenant_session: its queries see that tenant's rows only, its writes land
in that tenant only (a task for another tenant's project is refused by the database: 404 here),
and nothing of it stays on the pooled connection. The models map the pool's verify-probe
sample tables (tenantkit_sample); an application maps its own protected tables the same way.
No web framework, so the example needs nothing beyond SQLAlchemy: one with routing and request
parsing (Starlette, FastAPI) changes the plumbing below, not the data access.
"""

import json
import os
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

from sqlalchemy import BigInteger, ForeignKeyConstraint, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

from lambda_src.core import environment as env_names
from lambda_src.tenant_runtime import TokenVerifier, UnverifiedTenantError, bearer_token
from lambda_src.tenant_runtime.orm import async_tenant_engine, async_tenant_session

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = {"schema": "tenantkit_sample"}  # noqa: RUF012 (SQLAlchemy's form)

    tenant_id: Mapped[str] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str]
    tasks: Mapped[list["Task"]] = relationship(order_by="Task.task_id")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # tenant_id leads every key: a foreign key check never compares two tenants' rows
        ForeignKeyConstraint(
            ["tenant_id", "project_id"],
            ["tenantkit_sample.projects.tenant_id", "tenantkit_sample.projects.project_id"],
        ),
        {"schema": "tenantkit_sample"},
    )

    tenant_id: Mapped[str] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    project_id: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str]
    done: Mapped[bool] = mapped_column(default=False)


FOREIGN_KEY_VIOLATION = "23503"
UNIQUE_VIOLATION = "23505"


class HttpError(Exception):
    """An answer other than 200: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(*, engine: AsyncEngine, verifier: TokenVerifier) -> ASGIApp:
    """The application: `engine` from async_tenant_engine(), tokens checked by `verifier`."""
    sessions = async_sessionmaker(engine)

    async def list_projects(tenant: str) -> Any:
        async with async_tenant_session(sessions, tenant) as session:
            projects = await session.scalars(
                select(Project).options(selectinload(Project.tasks)).order_by(Project.project_id)
            )
            return [
                {
                    "id": p.project_id,
                    "name": p.name,
                    "open_tasks": [t.title for t in p.tasks if not t.done],
                }
                for p in projects
            ]

    async def add_task(tenant: str, project_id: int, body: dict[str, Any]) -> Any:
        try:
            task_id, title = int(body["task_id"]), str(body["title"])
        except (KeyError, TypeError, ValueError):
            raise HttpError(400, 'expected {"task_id": <int>, "title": <text>}') from None
        try:
            async with async_tenant_session(sessions, tenant) as session:
                # tenant_id is the verified tenant, whatever the body says
                session.add(
                    Task(tenant_id=tenant, task_id=task_id, project_id=project_id, title=title)
                )
        except DBAPIError as error:
            code = getattr(error.orig, "sqlstate", None)
            if code == FOREIGN_KEY_VIOLATION:
                # The foreign key leads with tenant_id: it finds the project only among the
                # tenant's own, so another tenant's project is as absent as a missing one.
                raise HttpError(404, f"no project {project_id}") from None
            if code == UNIQUE_VIOLATION:
                raise HttpError(409, f"task {task_id} exists") from None
            raise
        return {"id": task_id, "project": project_id}

    async def route(method: str, path: str, tenant: str, body: bytes) -> Any:
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["projects"]:
            return await list_projects(tenant)
        if method == "POST" and len(parts) == 3 and parts[0] == "projects" and parts[2] == "tasks":
            if not parts[1].isdigit():
                raise HttpError(404, "no such project")
            try:
                payload = json.loads(body or b"{}")
            except json.JSONDecodeError:
                raise HttpError(400, "the body is not JSON") from None
            if not isinstance(payload, dict):
                raise HttpError(400, "the body must be a JSON object")
            return await add_task(tenant, int(parts[1]), payload)
        raise HttpError(404, "not found")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, engine)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            tenant = verifier.tenant_of(bearer_token(headers))
            status, answer = 200, await route(scope["method"], scope["path"], tenant, body)
        except UnverifiedTenantError as error:
            status, answer = 401, {"error": str(error)}
        except HttpError as error:
            status, answer = error.status, {"error": str(error)}
        await _respond(send, status, answer)

    return app


async def _lifespan(receive: Receive, send: Send, engine: AsyncEngine) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await engine.dispose()  # close the pooled connections
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Send, status: int, answer: Any) -> None:
    payload = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def app_from_env() -> ASGIApp:
    """The application configured from the environment (an ASGI server's --factory)."""
    verifier = TokenVerifier(
        jwks=json.loads(os.environ[env_names.JWKS]),
        issuer=os.environ[env_names.JWT_ISSUER],
        audience=os.environ[env_names.JWT_AUDIENCE],
        claim=os.environ.get(env_names.TENANT_CLAIM, "tenant_id"),
    )
    # No host or user in the URL: psycopg takes them from the PG* variables.
    engine = async_tenant_engine("postgresql+psycopg://", pool_size=5, pool_pre_ping=True)
    return create_app(engine=engine, verifier=verifier)
