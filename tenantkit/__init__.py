"""tenantkit's local side: the tenant catalog, the embedded PostgreSQL and the tenantctl CLI."""
