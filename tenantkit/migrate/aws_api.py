"""The AWS side of `tenantctl migrate --provision aws`: each host's rollout state machine
through Step Functions (is it deployed, is an execution running, start one, follow it), and
each host's databases as migration targets through its admin secret (Secrets Manager), for
reading schema versions. Every AWS failure becomes a RolloutEnvironmentError naming the host
and what to do; none holds a secret."""

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from lambda_src.core.connection import settings_from_secret
from lambda_src.core.errors import TenantkitError
from lambda_src.core.secrets import read_secret_json
from lambda_src.tenancy import POOL, HostNames

from ..catalog import Catalog
from ..fleet import APPLICATION_NAME, tenant_host
from .aws_rollout import RolloutHost
from .rollout import POOL_TARGET, MigrationTarget

EXECUTION_PREFIX = "tenantctl"


class RolloutEnvironmentError(TenantkitError):
    """AWS cannot be asked or refuses (no Region or credentials, a state machine that is not
    deployed, a call denied): tenantctl's exit 3."""


def _describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        return f"{code}: {error.response.get('Error', {}).get('Message', '')}".strip(": ")
    return str(error) or type(error).__name__


def aws_session(region: str | None) -> boto3.session.Session:
    """The default credential chain in `region` (None: the environment's or profile's)."""
    try:
        session = boto3.session.Session(region_name=region)
    except (BotoCoreError, ValueError) as error:  # a profile that does not exist
        raise RolloutEnvironmentError(f"cannot make an AWS session: {error}") from None
    if session.region_name is None:
        raise RolloutEnvironmentError(
            "no AWS Region: pass --region or set AWS_REGION (or AWS_DEFAULT_REGION)"
        )
    return session


def execution_name(now: datetime | None = None) -> str:
    """A name unique per start (Step Functions keeps names 90 days): when, and a random tail."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{EXECUTION_PREFIX}-{stamp}-{time.time_ns() % 1_000_000:06d}"


class StepFunctions:
    """The hosts' rollout state machines, by name, in one account and Region."""

    def __init__(self, session: boto3.session.Session) -> None:
        self._session = session
        try:
            self.client = session.client("stepfunctions")
            identity = session.client("sts").get_caller_identity()
        except NoCredentialsError:
            raise RolloutEnvironmentError(
                "no AWS credentials (the default chain found none: a profile, environment "
                "variables or an instance role)"
            ) from None
        except (BotoCoreError, ClientError) as error:
            raise RolloutEnvironmentError(
                f"AWS refused the credentials: {_describe(error)}"
            ) from None
        region = str(session.region_name)
        partition = session.get_partition_for_region(region)
        self._prefix = f"arn:{partition}:states:{region}:{identity['Account']}:stateMachine:"

    def arn(self, host: RolloutHost) -> str:
        """The host's state machine ARN (it need not exist)."""
        return self._prefix + host.state_machine

    def _call(self, host: RolloutHost, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "StateMachineDoesNotExist":
                raise RolloutEnvironmentError(
                    f"host {host.name}: state machine {host.state_machine} is not deployed "
                    f"(a catalog with a schema: section gives the host its rollout): deploy it "
                    f"with `{host.deploy}`"
                ) from None
            raise RolloutEnvironmentError(
                f"host {host.name}: {what} {host.state_machine}: {_describe(error)}"
            ) from None
        except BotoCoreError as error:
            raise RolloutEnvironmentError(
                f"host {host.name}: {what} {host.state_machine}: {_describe(error)}"
            ) from None

    def require_deployed(self, host: RolloutHost) -> None:
        """RolloutEnvironmentError naming the host and the deploy if its machine is missing."""
        self._call(
            host,
            "describing",
            lambda: self.client.describe_state_machine(stateMachineArn=self.arn(host)),
        )

    def running(self, host: RolloutHost) -> list[dict[str, Any]]:
        """The host's executions that are RUNNING (newest first)."""
        found: list[dict[str, Any]] = []
        arguments: dict[str, str] = {"stateMachineArn": self.arn(host), "statusFilter": "RUNNING"}
        while True:
            page = self._call(
                host,
                "listing the executions of",
                lambda: self.client.list_executions(**arguments),
            )
            found += page.get("executions", [])
            if not page.get("nextToken"):
                return found
            arguments["nextToken"] = page["nextToken"]

    def start(self, host: RolloutHost, name: str, document: Mapping[str, Any]) -> str:
        """Start an execution with `document` as its input; its ARN."""
        started = self._call(
            host,
            "starting",
            lambda: self.client.start_execution(
                stateMachineArn=self.arn(host), name=name, input=json.dumps(document)
            ),
        )
        return str(started["executionArn"])

    def describe(self, host: RolloutHost, execution_arn: str) -> dict[str, Any]:
        """describe_execution's answer."""
        return dict(
            self._call(
                host,
                "following",
                lambda: self.client.describe_execution(executionArn=execution_arn),
            )
        )

    def last_execution(self, host: RolloutHost) -> dict[str, Any] | None:
        """The host's newest execution, described (None: it never ran). A machine that is not
        deployed raises RolloutEnvironmentError."""
        page = self._call(
            host,
            "listing the executions of",
            lambda: self.client.list_executions(stateMachineArn=self.arn(host), maxResults=1),
        )
        executions = page.get("executions", [])
        if not executions:
            return None
        return self.describe(host, str(executions[0]["executionArn"]))


@dataclass(frozen=True)
class Followed:
    """The executions after following: each one's last answer (RUNNING if it outlasted the
    timeout)."""

    descriptions: dict[str, dict[str, Any]]
    """Host name -> describe_execution's last answer."""
    timed_out: bool


def follow(
    api: StepFunctions,
    executions: Mapping[str, tuple[RolloutHost, str]],
    *,
    deadline: float,
    poll_s: float,
    ended: Callable[[RolloutHost, dict[str, Any]], None] = lambda _host, _answer: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Followed:
    """Poll each execution (host name -> (host, execution ARN)) until all have ended or the
    `deadline` (a `clock` time) passed; `ended` hears of each as it ends."""
    last: dict[str, dict[str, Any]] = {}
    waiting = dict(executions)
    while True:
        for name, (host, arn) in list(waiting.items()):
            answer = api.describe(host, arn)
            last[name] = answer
            if answer.get("status") != "RUNNING":
                del waiting[name]
                ended(host, answer)
        if not waiting:
            return Followed(last, timed_out=False)
        if clock() >= deadline:
            return Followed(last, timed_out=True)
        sleep(min(poll_s, max(deadline - clock(), 0)))


@dataclass(frozen=True)
class DeployedTargets:
    """The catalog's databases as the hosts' admin secrets reach them, and the hosts whose
    secret could not be read (their targets cannot be)."""

    targets: list[MigrationTarget]
    unreadable: dict[str, tuple[str, str, str]]
    """Target label -> (tier, database, why its host's secret could not be read)."""


def deployed_targets(
    catalog: Catalog,
    session: boto3.session.Session,
    *,
    ssl_root_cert: Path,
    connect_timeout_s: int,
    only: Sequence[str] = (),
) -> DeployedTargets:
    """Every bridge and silo tenant database of the catalog and the pool database (if it has
    pool tenants), as migration targets connected as their host's admin (the secret
    `tenantkit/<host>/admin`, verify-full against `ssl_root_cert`)."""
    try:
        secrets = session.client("secretsmanager")
    except (BotoCoreError, ValueError) as error:
        raise RolloutEnvironmentError(f"cannot make a Secrets Manager client: {error}") from None
    admin: dict[str, Any] = {}

    def host_settings(host: str) -> Any:
        if host not in admin:
            try:
                secret = read_secret_json(HostNames(host).admin_secret_name, client=secrets)
                settings = settings_from_secret(
                    secret, ssl_root_cert, application_name=APPLICATION_NAME
                )
                admin[host] = replace(settings, connect_timeout_s=connect_timeout_s)
            except TenantkitError as error:
                admin[host] = str(error)
        return admin[host]

    targets: list[MigrationTarget] = []
    unreadable: dict[str, tuple[str, str, str]] = {}
    wanted = [t for t in catalog.tenants if not only or t.id in only]
    for tenant in wanted:
        if tenant.tier == "pool":
            continue
        settings = host_settings(tenant_host(tenant))
        names = tenant.names
        if isinstance(settings, str):
            unreadable[tenant.id] = (tenant.tier, names.database, settings)
            continue
        targets.append(
            MigrationTarget(
                tenant.id,
                tenant.tier,
                names.database,
                names.objects_role,
                settings.for_database(names.database),
            )
        )
    if any(t.tier == "pool" for t in wanted):
        settings = host_settings(POOL.stack_name)
        if isinstance(settings, str):
            unreadable[POOL_TARGET] = ("pool", POOL.database, settings)
        else:
            schema = catalog.schema
            targets.append(
                MigrationTarget(
                    POOL_TARGET,
                    "pool",
                    POOL.database,
                    POOL.owner_role,
                    settings.for_database(POOL.database),
                    schema.pool_schema if schema is not None else None,
                )
            )
    return DeployedTargets(targets, unreadable)
