"""Stacks compose tenant_constructs; one stack per tier or per silo tenant."""

from .bridge import BridgeStack
from .silo import SiloTenantStack

__all__ = ["BridgeStack", "SiloTenantStack"]
