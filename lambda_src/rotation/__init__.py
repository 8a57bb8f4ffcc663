"""Single-user rotation of tenantkit's login secrets (the Secrets Manager rotation protocol)."""
