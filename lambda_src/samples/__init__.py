"""Sample tenant functions: one per access pattern, each reading its tenant's rows."""
