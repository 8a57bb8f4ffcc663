"""The SQL provisioner: a custom-resource handler for aws_cdk.custom_resources.Provider.

handler.py parses and dispatches, kinds.py maps resource kinds to plans, plan.py holds the SQL as
pure functions, postgres.py is the one module that talks to PostgreSQL and secrets.py the one
that talks to AWS.
"""
