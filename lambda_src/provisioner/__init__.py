"""The SQL provisioner: a custom-resource handler for aws_cdk.custom_resources.Provider.

handler.py parses the event (events.py) and dispatches to a resource kind (kinds/: TenantDatabase,
PoolDatabase, PoolTenants), which reads what exists (postgres.py), plans the SQL (plans/, pure
functions) and runs it (lambda_src.core.steps). config.py reads the Lambda's environment.
"""
