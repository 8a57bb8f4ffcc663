"""Errors the provisioner reports back to CloudFormation (their text becomes the failure reason)."""


class ProvisioningError(RuntimeError):
    """A request could not be carried out. The message is safe to show: it holds no secret."""


class InvalidRequestError(ProvisioningError):
    """The event or its resource properties are malformed; nothing was run."""
