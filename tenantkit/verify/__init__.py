"""`tenantctl verify`: attack suites that prove tenant isolation against a running server."""

from .databases import run_database_attacks
from .pool import PoolProbesOffError, StrictLoginsMissingError, run_pool_attacks
from .report import AttackResult, LoginUnavailableError, report
from .runtime import run_runtime_attacks

__all__ = [
    "AttackResult",
    "LoginUnavailableError",
    "PoolProbesOffError",
    "StrictLoginsMissingError",
    "report",
    "run_database_attacks",
    "run_pool_attacks",
    "run_runtime_attacks",
]
