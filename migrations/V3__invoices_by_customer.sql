-- tenantkit: no-transaction
-- CREATE INDEX CONCURRENTLY cannot run in a transaction, so this file runs outside one and
-- holds only this statement. The engine sets lock_timeout and statement_timeout before it
-- (squawk's require-timeout rules count them); a build that fails leaves an INVALID index,
-- which the failure names (drop it with DROP INDEX CONCURRENTLY before the next apply).
CREATE INDEX CONCURRENTLY invoices_by_customer ON invoices (tenant_id, customer_id);
