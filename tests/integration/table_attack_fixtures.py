"""The application schema the table-attack suites migrate a pool to (settable and strict): two
tenant tables in the tenant schema `app`, one referencing the other, and shared reference
data; and a table to break on purpose."""

from pathlib import Path

import psycopg

from lambda_src.migrations.apply import apply_migrations
from lambda_src.migrations.files import load_migrations
from lambda_src.migrations.pool import protect_new_tables
from lambda_src.tenancy import POOL
from tenantkit.embedded_pg import RunningServer

SCHEMAS = ["app"]
SHARED = ["app.countries"]
MIGRATION = """\
CREATE SCHEMA app;
CREATE TYPE app.order_status AS ENUM ('open', 'paid');
CREATE TABLE app.customers (
    tenant_id text NOT NULL,
    customer_id bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);
CREATE TABLE app.orders (
    tenant_id text NOT NULL,
    order_id bigint NOT NULL,
    customer_id bigint NOT NULL,
    placed_on date NOT NULL,
    status app.order_status NOT NULL,
    total numeric(12, 2) NOT NULL CHECK (total >= 0),
    tags text[] NOT NULL,
    reference uuid NOT NULL,
    details jsonb NOT NULL,
    paid boolean NOT NULL,
    PRIMARY KEY (tenant_id, order_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES app.customers (tenant_id, customer_id)
);
CREATE TABLE app.countries (code text PRIMARY KEY, name text NOT NULL);
INSERT INTO app.countries VALUES ('fr', 'France');
"""
"""Two tenant tables (the second of many column types, referencing the first) and reference
data, in the tenant schema `app`."""

VICTIM = (
    "CREATE TABLE app.victims (tenant_id text NOT NULL, victim_id bigint NOT NULL, "
    "note text NOT NULL, PRIMARY KEY (tenant_id, victim_id))"
)
"""A tenant table the tests protect (or not) and break, then drop."""


def migrate_pool(server: RunningServer, directory: Path) -> None:
    """Migrate `server`'s provisioned pool as the pool migration runs: as the pool's owner, new
    tables of `app` protected (in the pool's mode) inside the migration's transaction."""
    (directory / "V1__app.sql").write_text(MIGRATION)
    admin = server.admin_settings(POOL.database)
    with psycopg.connect(**admin.connect_kwargs(), autocommit=True) as conn:
        result = apply_migrations(
            conn,
            load_migrations(directory),
            role=POOL.owner_role,
            after_each=protect_new_tables(SCHEMAS, SHARED),
        )
    assert result.failed is None, result.failed
