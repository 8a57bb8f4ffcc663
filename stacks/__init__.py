"""Stacks compose tenant_constructs: a stack per shared cluster and per bridge or silo tenant."""

from .bridge import BridgeClusterStack, BridgeTenantStack
from .pool import PoolStack
from .silo import SiloMonitoringStack, SiloTenantStack

__all__ = [
    "BridgeClusterStack",
    "BridgeTenantStack",
    "PoolStack",
    "SiloMonitoringStack",
    "SiloTenantStack",
]
