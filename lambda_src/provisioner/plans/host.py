"""The cluster-wide SQL: what every new cluster leaves open to PUBLIC, closed once per host."""

from collections.abc import Sequence

from psycopg import sql

from ...core.steps import Step

ADMIN_DATABASES = ("postgres", "template1")
"""The databases every cluster has, which PUBLIC may connect to until the first tenant."""
PROXY_MONITOR_ROLE = "rdsproxyadmin"
"""The role RDS Proxy monitors a database's connections as: once PUBLIC's CONNECT on
`postgres` is revoked, AWS's proxy guide says it needs CONNECT there itself."""


def plan_host_hardening(
    open_databases: Sequence[str], *, proxy_monitor_lacks_connect: bool = False
) -> list[Step]:
    """Close what every new cluster leaves open: PUBLIC may connect to the admin databases.
    With `proxy_monitor_lacks_connect` (an RDS Proxy registered its role), give that one role
    back the CONNECT on `postgres` it monitors through.

    Needs the admin to own them (true of RDS's master user for postgres and template1); where it
    does not, PostgreSQL only warns and `tenantctl verify` reports the gap.
    """
    steps = [
        Step(
            f"revoke PUBLIC access to the {db} database",
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)),
        )
        for db in open_databases
    ]
    if proxy_monitor_lacks_connect:
        steps.append(
            Step(
                f"let {PROXY_MONITOR_ROLE} (RDS Proxy) connect to the postgres database",
                sql.SQL("GRANT CONNECT ON DATABASE postgres TO {}").format(
                    sql.Identifier(PROXY_MONITOR_ROLE)
                ),
            )
        )
    return steps
