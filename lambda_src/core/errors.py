"""Errors tenantkit's functions report (their text becomes a CloudFormation failure reason, a
rotation failure or a log line): safe to show, never holding a secret."""


class TenantkitError(RuntimeError):
    """An operation could not be carried out. The message is safe to show: it holds no secret."""


class InvalidRequestError(TenantkitError):
    """The event, its resource properties or a setting are malformed; nothing was run."""
