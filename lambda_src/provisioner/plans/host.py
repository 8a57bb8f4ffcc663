"""The cluster-wide SQL: what every new cluster leaves open to PUBLIC, closed once per host."""

from collections.abc import Sequence

from psycopg import sql

from ...core.steps import Step

ADMIN_DATABASES = ("postgres", "template1")
"""The databases every cluster has, which PUBLIC may connect to until the first tenant."""


def plan_host_hardening(open_databases: Sequence[str]) -> list[Step]:
    """Close what every new cluster leaves open: PUBLIC may connect to the admin databases.

    Needs the admin to own them (true of RDS's master user for postgres and template1); where it
    does not, PostgreSQL only warns and `tenantctl verify` reports the gap.
    """
    return [
        Step(
            f"revoke PUBLIC access to the {db} database",
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)),
        )
        for db in open_databases
    ]
