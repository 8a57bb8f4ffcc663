"""Stacks compose tenant_constructs; one stack per tier or per silo tenant."""

from .bridge import BridgeStack
from .pool import PoolStack
from .silo import SiloTenantStack

__all__ = ["BridgeStack", "PoolStack", "SiloTenantStack"]
