"""The verify report: every attack, whether it was blocked, and the leaks."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AttackResult:
    """One attempt: which tier, what it tried, whether it was blocked, what happened."""

    tier: str
    attack: str
    blocked: bool
    detail: str


@dataclass(frozen=True)
class Outcome:
    """What an attack found: blocked as it must be, or not (with what happened)."""

    blocked: bool
    detail: str


def blocked(detail: str) -> Outcome:
    """The attack failed the way it must."""
    return Outcome(True, detail)


def leaked(detail: str) -> Outcome:
    """The attack got something it must not (or failed in an unexpected way)."""
    return Outcome(False, detail)


def report(results: list[AttackResult]) -> dict[str, Any]:
    """The `tenantctl verify --json` document: {"attacks": N, "blocked": N, "leaks": [...]}."""
    return {
        "attacks": len(results),
        "blocked": sum(r.blocked for r in results),
        "leaks": [
            {"tier": r.tier, "attack": r.attack, "detail": r.detail}
            for r in results
            if not r.blocked
        ],
    }
