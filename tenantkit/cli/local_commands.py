"""tenantctl validate, names, run and verify: the catalog checked, the names a tenant id derives,
and the whole catalog provisioned and attacked on the embedded PostgreSQL."""

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import boto3
import psycopg
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lambda_src.core.connection import settings_from_dsn
from lambda_src.migrations.files import MigrationError, load_migrations
from lambda_src.provisioner.migrate import PoolSchema
from lambda_src.tenancy import POOL, TIERS_WITH_TENANT_DATABASES, InvalidTenantIdError, tenant_names

from ..catalog import Catalog, Tenant
from ..local import (
    LocalSecrets,
    LocalServers,
    ProvisionResult,
    pool_login_settings,
    pool_runtime_settings,
    provision_pool,
    provision_tenant_databases,
)
from ..migrate.rollout import POOL_TARGET, pool_target, schema_versions, tenant_target
from ..usage import local_hosts, sample_host
from ..verify import (
    AttackResult,
    PoolProbesOffError,
    report,
    run_database_attacks,
    run_pool_attacks,
    run_runtime_attacks,
)
from ..verify.pool import given_probe_logins
from .lifecycle_commands import refuse_tier_moves
from .options import CatalogOption, JsonOption, StateDirOption
from .output import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_INVALID,
    configure_logging,
    err,
    fail,
    load,
    out,
    session,
)
from .usage_commands import print_usage


def validate(catalog: CatalogOption = Path("tenants.yaml"), as_json: JsonOption = False) -> None:
    """Check the tenant catalog and print its tenants.

    With a schema: section, it also says which pool tables are protected because they are in
    a tenant schema, and which pool.tenant_tables entries that makes redundant."""
    loaded = load(catalog, as_json)
    tables = pool_tables(loaded)
    if as_json:
        print(
            json.dumps({"tenants": [t.model_dump() for t in loaded.tenants], "pool_tables": tables})
        )
        return
    out.print(f"{catalog}: {len(loaded.tenants)} tenants, valid")
    if loaded.schema is not None:
        shared = ", ".join(tables["shared"])
        out.print(
            f"pool: every table of the tenant schemas {', '.join(tables['tenant_schemas'])} is "
            "put under the tenant policies" + (f", but the shared {shared}" if shared else ""),
            highlight=False,
        )
    for table in tables["derived"]:
        out.print(
            f"pool.tenant_tables: {table} is in a tenant schema, so it is protected anyway "
            "(listing it is redundant)",
            highlight=False,
        )


def pool_tables(loaded: Catalog) -> dict[str, list[str]]:
    """Which pool tables the catalog protects: `tenant_schemas` (every table there, but the
    `shared` ones), `listed` (pool.tenant_tables) and `derived` (those of the listed in a
    tenant schema)."""
    schema = loaded.schema
    return {
        "tenant_schemas": list(schema.tenant_schemas) if schema is not None else [],
        "shared": list(schema.shared_tables) if schema is not None else [],
        "listed": list(loaded.pool.tenant_tables),
        "derived": list(loaded.derived_tenant_tables),
    }


def names(tenant_id: str, as_json: JsonOption = False) -> None:
    """Show every physical name derived from a tenant id."""
    try:
        derived = tenant_names(tenant_id)
    except InvalidTenantIdError as error:
        fail(EXIT_INVALID, str(error), as_json, label="invalid tenant id")
    fields = {k: v for k, v in vars(derived).items()}
    if as_json:
        print(json.dumps(fields))
        return
    for key, value in fields.items():
        out.print(f"{key:16} {value}", highlight=False)


@contextmanager
def progress(
    total: int, what: str, quiet: bool, label: Callable[[Any], str] = lambda r: r.label
) -> Iterator[Callable[[Any], None]]:
    """A progress bar on stderr while tenants are provisioned or migrated (none with --json or
    when stderr is not a terminal); yields the callback each finished one calls, which names
    it by `label` (a ProvisionResult's label by default)."""
    if quiet or not err.is_terminal:
        yield lambda _result: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=total)

        def advance(result: Any) -> None:
            bar.update(task, advance=1, description=f"{what} {label(result)}")

        yield advance


def local_attacks(
    servers: LocalServers,
    store: LocalSecrets,
    db_tenants: list[Tenant],
    pool_ready: bool,
    catalog: Catalog,
) -> list[AttackResult]:
    """Every attack that applies locally: per-database logins, the pool's runtime login (its
    table attacks on every table of the catalog's tenant schemas, too) and, in a strict pool,
    the probe tenants' own logins (their local secrets)."""
    results = run_database_attacks(
        [
            (t, store.password(t.names.secret_name), servers.server_for(t).settings)
            for t in db_tenants
        ]
    )
    pool_runtime = None
    if pool_ready:
        pool_server = servers.server_for_pool()
        pool_runtime = pool_runtime_settings(pool_server, store)
        schema = catalog.schema
        results += run_pool_attacks(
            pool_runtime,
            tenant_schemas=schema.tenant_schemas if schema is not None else (),
            shared_tables=schema.shared_tables if schema is not None else (),
            logins=lambda tenant: pool_login_settings(pool_server, store, tenant),
        )
    return results + run_runtime_attacks(pool_runtime)


def leaked(verdict: dict[str, Any]) -> str:
    """How many attacks got through, as a failure's message."""
    return f"{len(verdict['leaks'])} of {verdict['attacks']} isolation attacks leaked"


def run(
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    keep_running: Annotated[
        bool, typer.Option(help="Leave the embedded server running and print how to reach it.")
    ] = False,
    as_json: JsonOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every SQL step.")] = False,
) -> None:
    """Provision the whole catalog on the embedded PostgreSQL with the provisioner's own handler,
    then attack it.

    Each database is brought to the catalog's newest migration. The attacks: every tenant
    login against every other database, and the pool's policies on every tenant table."""
    configure_logging(verbose)
    loaded = load(catalog, as_json)
    db_tenants = [t for t in loaded.tenants if t.tier in TIERS_WITH_TENANT_DATABASES]
    with session(state_dir, loaded, as_json, keep_running=keep_running) as local:
        refuse_tier_moves(local.servers, [(t.id, t.tier) for t in loaded.tenants], as_json)
        pool = list(loaded.in_tier("pool"))
        with progress(len(db_tenants) + len(pool) + 1, "provisioning", as_json) as done:
            results = provision_tenant_databases(
                db_tenants,
                local.servers.server_for,
                local.store,
                done=done,
                migrations_dir=loaded.application_migrations,
            )
            results += provision_pool(
                pool,
                local.shared,
                local.store,
                done=done,
                migrations_dir=loaded.application_migrations,
                pool_schema=loaded.schema.pool_schema if loaded.schema else PoolSchema(),
                mode=loaded.pool.mode,
            )
        results = with_schema_versions(results, loaded, local.servers)
        ready = {r.tenant_id for r in results if r.ok}
        attacks = local_attacks(
            local.servers,
            local.store,
            [t for t in db_tenants if t.id in ready],
            pool_ready=None in ready,
            catalog=loaded,
        )
        usage = [sample_host(host, settings) for host, settings in local_hosts(local.servers)]
    servers, server = local.servers, local.shared
    verdict = report(attacks)
    failed = [r.label for r in results if not r.ok]
    result: dict[str, Any] = {
        "ok": not failed and not verdict["leaks"] and verdict["complete"],
        "server": {
            "host": server.host,
            "port": server.port,
            "postgresql": servers.shared.install.version,
            "files": str(servers.shared.root),
        },
        "tenants": [
            {
                "id": r.tenant_id,
                "resource": "tenant" if r.tenant_id is not None else "pool database",
                "tier": r.tier,
                "database": r.database,
                "roles": list(r.roles),
                "secret": r.secret,
                "server": r.server,
                "status": "ready" if r.ok else "failed",
                "changes": r.changes,
                "seconds": round(r.seconds, 4),
                "error": r.error,
                "schema_version": r.schema_version,
            }
            for r in results
        ],
        "schema": schema_summary(loaded),
        "verify": verdict,
        "usage": [h.as_json() for h in usage],
    }
    if not as_json:
        print_summary(results, server.port, local.start_seconds, servers)
        print_verdict(verdict, attacks)
        print_usage(usage)
        for host in usage:
            if host.reason is not None:
                out.print(f"[red]usage[/red]: {host.host} not sampled: {host.reason}")
        if keep_running:
            out.print(
                f"server left running on 127.0.0.1:{server.port} (TLS CA: {server.ca_cert}); "
                f"stop it with: pg_ctl stop -D {servers.shared.data_dir}",
                highlight=False,
            )
    if not result["ok"]:
        problems = [f"provisioning failed: {', '.join(failed)}"] if failed else []
        problems += [leaked(verdict)] if verdict["leaks"] else []
        problems += [incomplete(verdict)] if verdict["not_run"] else []
        fail(EXIT_FAILED, "; ".join(problems), as_json, **result)
    if as_json:
        print(json.dumps(result))


def with_schema_versions(
    results: list[ProvisionResult], catalog: Catalog, servers: LocalServers
) -> list[ProvisionResult]:
    """The results with the schema version each database is at, read from its tracking table
    as `tenantctl migrate status` reads it (a pool tenant's: the pool database's). Unchanged
    without a schema: section."""
    if catalog.schema is None:
        return results
    try:
        migrations = load_migrations(catalog.migrations_directory())
    except MigrationError:
        migrations = ()  # the provisioning already failed naming the directory
    targets = [
        tenant_target(catalog.get(r.tenant_id), servers)
        for r in results
        if r.tenant_id is not None and r.tier in TIERS_WITH_TENANT_DATABASES
    ]
    if any(r.tier == "pool" for r in results):
        targets.append(pool_target(catalog, servers))
    versions = schema_versions(targets, migrations)

    def label(r: ProvisionResult) -> str:
        return POOL_TARGET if r.tier == "pool" else r.label

    return [
        dataclasses.replace(r, schema_version=versions[label(r)]) if label(r) in versions else r
        for r in results
    ]


def schema_summary(catalog: Catalog) -> dict[str, Any] | None:
    """`schema` of run's JSON: the migrations directory and its newest version (None without a
    schema: section or when the directory cannot be read)."""
    if catalog.schema is None:
        return None
    directory = catalog.migrations_directory()
    try:
        migrations = load_migrations(directory)
    except MigrationError:
        return {"directory": str(directory), "latest": None}
    return {"directory": str(directory), "latest": migrations[-1].version if migrations else None}


def verify(
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    dsn: Annotated[
        str | None,
        typer.Option(
            help="Attack this pool instead of the embedded one: a libpq connection string of "
            "the pool's runtime login (password from it or PGPASSWORD; TLS verify-full against "
            "its sslrootcert or the shipped RDS CA bundle)."
        ),
    ] = None,
    probe_dsn: Annotated[
        list[str] | None,
        typer.Option(
            "--probe-dsn",
            help="With --dsn, for a strict pool: a libpq connection string of one probe "
            "tenant's own login (tenant_tenantkit-probe-a_pool, -b_pool, -gone_pool), its "
            "password or IAM token in it. Repeat for each.",
        ),
    ] = None,
    probe_iam: Annotated[
        bool,
        typer.Option(
            "--probe-iam",
            help="With --dsn, for a strict pool: log in as each probe login not given by "
            "--probe-dsn with an IAM token minted with your AWS credentials (they need "
            "rds-db:connect to it) for --dsn's host and port, in AWS_REGION.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the isolation attacks and report them; exit 1 on any leak, 3 if some could not run.

    Locally (after `tenantctl run`): every bridge/silo login against every other tenant's
    database, and the pool attacks as the pool's runtime login (and the probe tenants' logins).

    With --dsn: the pool attacks. In a strict pool those that need a probe tenant's login run
    only with --probe-dsn or --probe-iam; any not run make the report incomplete (exit 3).

    The pool attacks run on the sample schema and on every table of the catalog's tenant
    schemas (with --dsn: on every table under the tenant policy)."""
    configure_logging(False)
    if dsn is not None:
        try:
            settings = settings_from_dsn(dsn, os.environ)
        except ValueError as error:
            fail(EXIT_INVALID, str(error), as_json, label="invalid --dsn")
        region = None
        if probe_iam:
            region = boto3.session.Session().region_name
            if region is None:
                fail(EXIT_INVALID, "--probe-iam needs AWS_REGION (or a profile's region)", as_json)
        try:
            logins = given_probe_logins(settings, probe_dsn or (), iam_region=region)
        except ValueError as error:
            fail(EXIT_INVALID, str(error), as_json, label="invalid --probe-dsn")
        try:
            attacks = run_pool_attacks(settings, logins=logins) + run_runtime_attacks(settings)
        except PoolProbesOffError as error:
            fail(EXIT_ENVIRONMENT, str(error), as_json)
        except psycopg.OperationalError as error:  # TLS refused, wrong password, unreachable
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "refused"
            fail(EXIT_ENVIRONMENT, f"cannot connect to the pool: {reason}", as_json)
    else:
        if probe_dsn or probe_iam:
            fail(
                EXIT_INVALID,
                "--probe-dsn and --probe-iam go with --dsn (locally the probe tenants log in "
                "with their local secrets)",
                as_json,
            )
        loaded = load(catalog, as_json)
        db_tenants = [t for t in loaded.tenants if t.tier in TIERS_WITH_TENANT_DATABASES]
        store = LocalSecrets(state_dir / "secrets.json")
        missing = [t.id for t in db_tenants if not store.has(t.names.secret_name)]
        if missing or not store.has(POOL.secret_name):
            fail(
                EXIT_ENVIRONMENT,
                f"nothing provisioned locally for {', '.join(missing) or 'the pool'}: "
                "run `tenantctl run` first",
                as_json,
            )
        with session(state_dir, loaded, as_json) as local:
            attacks = local_attacks(
                local.servers, local.store, db_tenants, pool_ready=True, catalog=loaded
            )
    verdict = report(attacks)
    if not as_json:
        print_verdict(verdict, attacks, every_attack=True)
    if verdict["leaks"]:
        fail(EXIT_FAILED, leaked(verdict), as_json, **verdict)
    if verdict["not_run"]:
        fail(EXIT_ENVIRONMENT, incomplete(verdict), as_json, **verdict)
    if as_json:
        print(json.dumps(verdict))


def incomplete(verdict: dict[str, Any]) -> str:
    """How many attacks could not run and what they needed, as a failure's message."""
    needs = sorted({a["detail"].removeprefix("not run: ") for a in verdict["not_run"]})
    return (
        f"incomplete: {len(verdict['not_run'])} of {verdict['attacks']} isolation attacks could "
        f"not run ({'; '.join(needs)}): give the probe logins with --probe-dsn, or --probe-iam "
        "to mint IAM tokens for them"
    )


def print_summary(
    results: list[ProvisionResult], port: int, start_seconds: float, servers: LocalServers
) -> None:
    """The provisioned tenants as a table, and where their servers are."""
    table = Table(title=f"tenants on the embedded PostgreSQL (127.0.0.1:{port})")
    for column in ("tenant", "tier", "database", "roles", "status", "schema", "changes", "time"):
        table.add_column(column, justify="right" if column in ("changes", "time") else "left")
    for r in results:
        table.add_row(
            r.label,
            r.tier,
            r.database,
            ", ".join(role.removeprefix(r.database + "_") for role in r.roles),
            "[green]ready[/green]" if r.ok else f"[red]failed[/red]: {r.error}",
            "-" if r.schema_version is None else str(r.schema_version),
            str(r.changes) if r.ok else "-",
            f"{r.seconds * 1000:.0f} ms",
        )
    out.print(table)
    out.print(
        "roles are <database>_<suffix> (tenant_acme_app), secrets tenantkit/<id>/app; pool "
        "tenants share the runtime login",
        highlight=False,
    )
    if any(r.schema_version is not None for r in results):
        out.print(
            "schema: the application's migration each database is at (a pool tenant: the pool "
            "database's)",
            highlight=False,
        )
    shared = f"127.0.0.1:{port}"
    own = [f"{r.server} ({r.label})" for r in results if r.server != shared]
    out.print(
        f"embedded PostgreSQL {servers.shared.install.version} servers up in "
        f"{start_seconds * 1000:.0f} ms: {shared} (bridge, pool)"
        + "".join(f", {server}" for server in own),
        highlight=False,
    )
    if note := servers.placement_note():
        out.print(note, highlight=False, soft_wrap=True)


def print_verdict(
    verdict: dict[str, Any], attacks: list[AttackResult], *, every_attack: bool = False
) -> None:
    """Attacks and leaks per tier in one line (each attack in a table with `every_attack`)."""
    if every_attack:
        table = Table(title="isolation attacks")
        for column in ("tier", "attack", "result", "detail"):
            table.add_column(column)
        for a in attacks:
            if not a.ran:
                result = "[yellow]not run[/yellow]"
            else:
                result = "[green]blocked[/green]" if a.blocked else "[red]LEAK[/red]"
            table.add_row(a.tier, a.attack, result, a.detail)
        out.print(table)
    tiers = sorted({a.tier for a in attacks})
    per_tier = ", ".join(
        f"{tier} {sum(a.blocked for a in attacks if a.tier == tier and a.ran)}/"
        f"{sum(1 for a in attacks if a.tier == tier)}"
        for tier in tiers
    )
    colour = "red" if verdict["leaks"] else "yellow" if verdict["not_run"] else "green"
    not_run = f", {len(verdict['not_run'])} not run" if verdict["not_run"] else ""
    out.print(
        f"[{colour}]verify[/{colour}]: {verdict['attacks']} attacks, {verdict['blocked']} "
        f"blocked, {len(verdict['leaks'])} leaks{not_run} ({per_tier})",
        highlight=False,
    )
    for leak in verdict["leaks"]:
        out.print(f"[red]leak[/red] {leak['tier']}: {leak['attack']}: {leak['detail']}")
