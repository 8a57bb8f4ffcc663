"""Code that ships inside tenantkit's Lambda functions.

Nothing under this package imports aws_cdk: it runs in Lambda, in the tenantctl CLI and in tests
alike, so tenant-id rules, physical names and SQL exist exactly once.
"""
