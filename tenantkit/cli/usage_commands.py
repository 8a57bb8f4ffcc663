"""tenantctl usage: per-tenant storage, rows, connections and activity of every host, a table per
tier (README: Metering and monitoring)."""

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lambda_src.core.connection import ssl_root_cert_from_env
from lambda_src.core.errors import TenantkitError
from lambda_src.metering import TenantUsage
from lambda_src.tenancy import TIERS

from ..fleet import CONNECT_TIMEOUT_S, fleet_hosts, secrets_manager
from ..usage import HostUsage, local_hosts, parse_since, sample_deployed, sample_host
from .options import (
    CatalogOption,
    ConnectTimeoutOption,
    JsonOption,
    RegionOption,
    RegistrySource,
    RegistrySourceOption,
    StateDirOption,
)
from .output import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_INVALID,
    checked_id,
    configure_logging,
    fail,
    load,
    out,
    session,
)


def usage(
    tenant_id: Annotated[str | None, typer.Argument(help="Only this tenant.")] = None,
    catalog: CatalogOption = Path("tenants.yaml"),
    state_dir: StateDirOption = Path(".tenantkit"),
    provision: RegistrySourceOption = RegistrySource.local,
    since: Annotated[
        str | None,
        typer.Option(
            help="Peak connections and activity over the recorded samples since then: an ISO "
            "8601 time (UTC unless it says) or an age (30m, 12h, 7d). Default: since the "
            "previous sample."
        ),
    ] = None,
    plot_png: Annotated[
        Path | None, typer.Option("--plot", help="Also draw storage by tenant as a PNG.")
    ] = None,
    region: RegionOption = None,
    connect_timeout: ConnectTimeoutOption = CONNECT_TIMEOUT_S,
    as_json: JsonOption = False,
) -> None:
    """Each tenant's storage, rows, connections and activity, sampled now on every host and
    recorded in its usage record.

    Pool rows are estimated from statistics (± their bound); n/a: what a tier cannot
    attribute. A host that cannot be sampled is named, and the exit code is 1."""
    configure_logging(False)
    if tenant_id is not None:
        tenant_id = checked_id(tenant_id, as_json)
    try:
        window = parse_since(since) if since is not None else None
    except ValueError as error:
        fail(EXIT_INVALID, str(error), as_json)
    loaded = load(catalog, as_json)
    if provision is RegistrySource.aws:
        try:
            ssl_root_cert = ssl_root_cert_from_env(os.environ)
            secrets = secrets_manager(region)
        except TenantkitError as error:
            fail(EXIT_ENVIRONMENT, str(error), as_json, provision="aws")
        hosts = sample_deployed(
            fleet_hosts(loaded),
            secrets,
            ssl_root_cert=ssl_root_cert,
            connect_timeout_s=connect_timeout,
            tenant_id=tenant_id,
            since=window,
        )
    else:
        if not (state_dir / "pg").is_dir():
            fail(
                EXIT_ENVIRONMENT, "nothing provisioned locally: run `tenantctl run` first", as_json
            )
        with session(state_dir, loaded, as_json) as local:
            hosts = [
                sample_host(host, settings, tenant_id=tenant_id, since=window)
                for host, settings in local_hosts(local.servers)
            ]
    report(hosts, as_json, tenant_id=tenant_id, plot_png=plot_png)


def report(
    hosts: Sequence[HostUsage],
    as_json: bool,
    *,
    tenant_id: str | None = None,
    plot_png: Path | None = None,
) -> None:
    """Print the tables (or the JSON), draw the plot, then exit 1 naming each host that could
    not be sampled (2 if the one tenant asked about is on no host that was)."""
    down = [h for h in hosts if h.reason is not None]
    tenants = [u for h in hosts for u in h.usages]
    if plot_png is not None and tenants:
        try:
            plot_storage(tenants, plot_png)
        except ImportError:
            fail(EXIT_ENVIRONMENT, "--plot needs matplotlib (requirements-dev.txt)", as_json)
    document: dict[str, Any] = {
        "ok": not down,
        "hosts": [h.as_json() for h in hosts if h.reason is None],
        "unreachable": [{"host": h.host, "tier": h.tier, "reason": h.reason} for h in down],
    }
    if not as_json:
        print_usage(hosts)
        if plot_png is not None and tenants:
            out.print(f"wrote {plot_png}", highlight=False)
    if down:
        message = f"{len(down)} of {len(hosts)} host(s) could not be sampled: " + "; ".join(
            f"{h.host}: {h.reason}" for h in down
        )
        fail(EXIT_FAILED, message, as_json, label="unreachable", **document)
    if tenant_id is not None and not tenants:
        fail(EXIT_INVALID, f"no host's registry holds tenant {tenant_id}", as_json, **document)
    if as_json:
        print(json.dumps(document))


def _bytes(value: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value = value / 1024  # type: ignore[assignment]
    return f"{value} B"  # pragma: no cover


def _na(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _connections(u: TenantUsage) -> str:
    if u.connections is None:
        return "n/a"
    text = str(u.connections)
    if u.peak_connections is not None:
        text += f" (peak {u.peak_connections})"
    return text + (f" / {u.connection_limit}" if u.connection_limit is not None else "")


def print_usage(hosts: Sequence[HostUsage]) -> None:
    """A table per tier, then what that tier cannot attribute."""
    for tier in TIERS:
        usages = [u for h in hosts if h.tier == tier for u in h.usages]
        if not usages:
            continue
        table = Table(title=f"{tier} usage")
        for column in (
            "tenant",
            "storage",
            "rows",
            "connections",
            "longest stmt",
            "transactions",
            "rows written",
        ):
            table.add_column(column, justify="left" if column == "tenant" else "right")
        for u in usages:
            rows = f"{u.rows:,}" + (f" ± {u.rows_error_bound:,}" if u.rows_error_bound else "")
            table.add_row(
                u.tenant_id,
                _bytes(u.storage_bytes),
                rows,
                _connections(u),
                "n/a" if u.longest_statement_s is None else f"{u.longest_statement_s:.1f} s",
                _na(u.transactions),
                _na(u.rows_written),
            )
        out.print(table)
        for note in sorted({n for u in usages for n in u.notes}):
            out.print(f"  n/a: {note}", highlight=False)
    if any(h.tier == "pool" and h.usages for h in hosts):
        out.print(
            "  pool: rows estimated from statistics, ± their bound (rows changed since "
            "the last ANALYZE); storage: the row share",
            highlight=False,
        )


def plot_storage(usages: Sequence[TenantUsage], path: Path) -> None:
    """A horizontal bar per tenant: its storage, coloured by tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(usages, key=lambda u: u.storage_bytes)
    colours = {"silo": "tab:red", "bridge": "tab:blue", "pool": "tab:green"}
    fig, axis = plt.subplots(figsize=(8, max(2.5, 0.35 * len(ordered) + 1)))
    axis.barh(
        [u.tenant_id for u in ordered],
        [u.storage_bytes / 2**20 for u in ordered],
        color=[colours.get(u.tier, "grey") for u in ordered],
    )
    for tier, colour in colours.items():
        axis.bar(0, 0, color=colour, label=tier)
    axis.set_xlabel("storage (MiB; pool: the tenant's row share of the shared tables)")
    when = max(u.sampled_at for u in ordered)
    axis.set_title(f"storage by tenant, sampled {when.astimezone().strftime('%Y-%m-%d %H:%M')}")
    axis.legend(loc="lower right")
    axis.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
