"""What every tenantkit function shares: the TENANTKIT_* environment (environment), errors safe
to report (errors), connections to PostgreSQL (connection), the SQL step runner (steps) and the
Secrets Manager calls (secrets). The provisioner, the rotator and the runtime library build on
it; it imports none of them."""
