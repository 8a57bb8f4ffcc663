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
    ran: bool = True
    """False: the attack could not run (`detail` says what it needed); never counted as
    blocked, and a report with one is incomplete."""


class LoginUnavailableError(Exception):
    """An attack needs a login this run has no way to log in as (its message says which, and
    how to give it); the attack is reported as not run."""


def not_run(tier: str, attack: str, reason: str) -> AttackResult:
    """An attack that could not run, and why."""
    return AttackResult(tier, attack, False, reason, ran=False)


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
    """The `tenantctl verify --json` document: {"attacks": N, "blocked": N, "leaks": [...],
    "not_run": [...], "complete": bool}; every attack is blocked, a leak, or not run."""
    return {
        "attacks": len(results),
        "blocked": sum(r.blocked for r in results if r.ran),
        "leaks": [
            {"tier": r.tier, "attack": r.attack, "detail": r.detail}
            for r in results
            if r.ran and not r.blocked
        ],
        "not_run": [
            {"tier": r.tier, "attack": r.attack, "detail": r.detail} for r in results if not r.ran
        ],
        "complete": all(r.ran for r in results),
    }
