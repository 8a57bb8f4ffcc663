"""The pool's verify probes (sample schema and probe tenants) as a catalog choice, on a real
PostgreSQL: a pool without them, turning them on and off, and `tenantctl verify --dsn` against
a pool that has none."""

import json
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from lambda_src.core.connection import ConnectionSettings
from lambda_src.core.errors import TenantkitError
from lambda_src.provisioner.config import HandlerConfig
from lambda_src.provisioner.events import provider_event
from lambda_src.provisioner.handler import handle
from lambda_src.provisioner.kinds import (
    pool_batches,
    pool_database_properties,
    pool_tenants_properties,
)
from lambda_src.tenancy import POOL, PROBE_TENANT_IDS
from tenantkit.cli import app
from tenantkit.embedded_pg import RunningServer
from tenantkit.verify import PoolProbesOffError, run_pool_attacks

from .pool_fixtures import PASSWORD, aws, config, pool_server  # noqa: F401 (fixtures)

TENANT = "acme"


@pytest.fixture(scope="module")
def runtime(pool_server: RunningServer) -> ConnectionSettings:
    return pool_server.settings(POOL.login_role, PASSWORD, POOL.database)


def provision(aws: Any, config: HandlerConfig, *, verify_probes: bool) -> int:
    """Create-or-converge the pool (CloudFormation's Update runs the same); the changes made."""
    props = pool_database_properties(
        runtime_secret_arn=aws.describe_secret(SecretId=POOL.secret_name)["ARN"],
        iam_auth=True,
        removal_policy="retain",
        verify_probes=verify_probes,
    )
    return int(handle(provider_event("Create", props), config)["Data"]["Changes"])


def superuser(server: RunningServer) -> psycopg.Connection[Any]:
    settings = server.superuser_settings(POOL.database)
    return psycopg.connect(**settings.connect_kwargs(), autocommit=True)


def probes_in(server: RunningServer) -> tuple[bool, list[str]]:
    """(does the sample schema exist, which probe tenants are registered)."""
    with superuser(server) as conn:
        schema = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", (POOL.sample_schema,)
        ).fetchone()
        registered = conn.execute(
            "SELECT tenant_id FROM tenantkit.tenants WHERE tenant_id = ANY(%s) ORDER BY 1",
            (list(PROBE_TENANT_IDS),),
        ).fetchall()
    assert schema is not None
    return bool(schema[0]), [row[0] for row in registered]


def verify_dsn(runtime: ConnectionSettings, *args: str) -> Any:
    dsn = (
        f"host={runtime.host} port={runtime.port} dbname={runtime.dbname} user={runtime.user} "
        f"password={runtime.password} sslrootcert={runtime.ssl_root_cert}"
    )
    return CliRunner().invoke(app, ["verify", *args, "--dsn", dsn])


def register(config: HandlerConfig) -> None:
    """TENANT registered and active (a replay changes nothing): each test that needs it says
    so, as tests of one module may run on different pytest-xdist workers, in any order."""
    for batch, entries in pool_batches([(TENANT, "retain")]).items():
        handle(provider_event("Create", pool_tenants_properties(batch, entries)), config)


def test_a_pool_created_without_verify_probes_has_no_sample_schema_and_no_probe_tenants(
    pool_server: RunningServer, aws: Any, config: HandlerConfig
) -> None:
    # GIVEN a fresh server WHEN the pool is created with verify_probes off
    provision(aws, config, verify_probes=False)
    # THEN there is no sample schema and no probe tenant, and a replay changes nothing
    assert probes_in(pool_server) == (False, [])
    assert provision(aws, config, verify_probes=False) == 0
    # while the pool itself works: a tenant registers and is active
    register(config)
    with superuser(pool_server) as conn:
        status = conn.execute(
            "SELECT status FROM tenantkit.tenants WHERE tenant_id = %s", (TENANT,)
        ).fetchone()
    assert status == ("active",)


def test_verify_against_a_pool_without_probes_says_they_are_off_instead_of_leaks(
    aws: Any, config: HandlerConfig, runtime: ConnectionSettings
) -> None:
    provision(aws, config, verify_probes=False)
    with pytest.raises(PoolProbesOffError, match="has no verify probes"):
        run_pool_attacks(runtime)
    result = verify_dsn(runtime, "--json")
    assert result.exit_code == 3, result.output
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is False
    assert "no verify probes" in verdict["error"]
    assert "verify_probes: false" in verdict["error"]
    assert "leaks" not in verdict
    plain = verify_dsn(runtime)
    assert plain.exit_code == 3
    assert "no verify probes" in plain.stderr


def test_turning_the_probes_on_and_off_again_adds_and_removes_them(
    pool_server: RunningServer, aws: Any, config: HandlerConfig, runtime: ConnectionSettings
) -> None:
    # GIVEN a pool with a tenant whose probes are turned on: the suite runs and finds nothing
    provision(aws, config, verify_probes=True)
    register(config)
    assert probes_in(pool_server) == (True, sorted(PROBE_TENANT_IDS))
    assert [r.attack for r in run_pool_attacks(runtime) if not r.blocked] == []
    assert verify_dsn(runtime).exit_code == 0
    # WHEN they are turned off again
    assert provision(aws, config, verify_probes=False) == 1  # the registry rows removed
    # THEN schema and probe tenants are gone, the real tenant is untouched, a replay is a no-op
    assert probes_in(pool_server) == (False, [])
    with superuser(pool_server) as conn:
        tenants = conn.execute("SELECT tenant_id, status FROM tenantkit.tenants").fetchall()
    assert tenants == [(TENANT, "active")]
    assert provision(aws, config, verify_probes=False) == 0


def test_turning_the_probes_off_is_refused_while_the_sample_holds_another_tenants_rows(
    pool_server: RunningServer, aws: Any, config: HandlerConfig
) -> None:
    # GIVEN probes on and a row of a real tenant in the sample table
    provision(aws, config, verify_probes=True)
    register(config)
    with superuser(pool_server) as conn:
        conn.execute("INSERT INTO tenantkit_sample.projects VALUES (%s, 7, 'real data')", (TENANT,))
    # WHEN the probes are turned off THEN it is refused, saying why, and nothing is removed
    with pytest.raises(TenantkitError, match="holds rows of tenants other than the verify"):
        provision(aws, config, verify_probes=False)
    assert probes_in(pool_server) == (True, sorted(PROBE_TENANT_IDS))
    with superuser(pool_server) as conn:
        rows = conn.execute("SELECT count(*) FROM tenantkit_sample.projects").fetchone()
    assert rows == (len(PROBE_TENANT_IDS) + 2,)  # a project each, one more for b, and acme's
    # and once that row is gone, turning them off goes through
    with superuser(pool_server) as conn:
        conn.execute("DELETE FROM tenantkit_sample.projects WHERE tenant_id = %s", (TENANT,))
    provision(aws, config, verify_probes=False)
    assert probes_in(pool_server) == (False, [])
