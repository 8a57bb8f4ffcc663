-- The sample application's schema (tenants.yaml, schema: section): the same files in every
-- bridge and silo tenant database and, once for all its tenants, in the pool database. Every
-- table leads its keys with tenant_id, so the pool can put it under the tenant policies.
CREATE TABLE customers (
    tenant_id text NOT NULL,
    customer_id bigint GENERATED ALWAYS AS IDENTITY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id),
    UNIQUE (tenant_id, name)
);
