"""The application's schema in a tenant database: versioned SQL files (files.py) applied in
order under a per-database advisory lock, each recorded with its checksum (apply.py).

Runs inside the provisioner Lambda and in tenantctl's local mode alike: psycopg and the standard
library only (the linter, squawk, runs on the tenantkit side: tenantkit/migrate_lint.py)."""
