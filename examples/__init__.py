"""Example applications on the tenantkit runtime (documented in the README)."""
