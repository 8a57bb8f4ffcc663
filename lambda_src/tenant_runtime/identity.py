"""Who the tenant is: a claim of a JWT verified against the issuer's keys, never a raw field."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from ..tenancy import InvalidTenantIdError, validate_tenant_id

ACCEPTED_ALGORITHMS = ("RS256", "ES256")
"""Asymmetric only: a verifier never holds a key that could sign."""


class UnverifiedTenantError(PermissionError):
    """The token does not prove a tenant; the request must be refused."""


@dataclass(frozen=True)
class TokenVerifier:
    """Verifies a bearer token (PyJWT) against a JWKS and returns its tenant claim.

    Signature, expiry (`exp`, required), issued-at, issuer and audience are all checked; the
    tenant claim must satisfy the tenant-id rules. The JWKS is given, not fetched: functions in
    subnets without internet cannot reach the issuer, and a key set fetched per cold start is
    a dependency on the issuer's uptime.
    """

    jwks: Mapping[str, Any]
    issuer: str
    audience: str
    claim: str = "tenant_id"
    algorithms: Sequence[str] = ACCEPTED_ALGORITHMS
    leeway_s: int = 30
    _keys: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            key_set = jwt.PyJWKSet.from_dict(dict(self.jwks))
        except jwt.PyJWTError as error:
            raise ValueError(f"JWKS: {error}") from None
        keys = {key.key_id: key for key in key_set.keys if key.key_id}
        if not keys:
            raise ValueError("JWKS: no key with a key id (kid)")
        object.__setattr__(self, "_keys", keys)

    def tenant_of(self, token: str) -> str:
        """The verified tenant id of `token`; UnverifiedTenantError saying why otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise UnverifiedTenantError("the bearer token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise UnverifiedTenantError(f"token algorithm {algorithm!r} is not accepted")
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise UnverifiedTenantError("token signed with a key the issuer does not publish")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnverifiedTenantError("the token has expired") from None
        except jwt.PyJWTError as error:
            raise UnverifiedTenantError(f"the token does not verify: {error}") from None
        try:
            return validate_tenant_id(claims.get(self.claim))
        except InvalidTenantIdError as error:
            raise UnverifiedTenantError(f"claim {self.claim!r}: {error}") from None


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an `Authorization: Bearer <token>` header (any case)."""
    for name, value in headers.items():
        if name.lower() == "authorization" and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    raise UnverifiedTenantError("no bearer token in the request")
