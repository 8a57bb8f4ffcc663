"""The provisioner's SQL as pure functions: observed state in, ordered core.steps.Step lists out.

tenant_database (a bridge or silo tenant), pool (the pool database and its tenants), pool_rls
(the tenant policy and the procedures that apply it), pool_probes (the verify probes), lifecycle
(every host's tenant registry), host (once per cluster), access (role, login and PUBLIC steps the
others share). Nothing here touches a connection.
"""
