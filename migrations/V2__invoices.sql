-- An invoice belongs to a customer of the same tenant: the foreign key leads with tenant_id
-- (in the pool, a key check that compared across tenants could reveal another tenant's row).
CREATE TABLE invoices (
    tenant_id text NOT NULL,
    invoice_id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    issued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, invoice_id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id)
);
