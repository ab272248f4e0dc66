"""Authentication: who is calling, from a bearer JWT or from API Gateway's verified claims.

Three modes, chosen by the configuration and never by the token:

- `AUTH_TRUST_AUTHORIZER=true`: an API Gateway JWT authorizer already verified the token;
  its claims are read from the event (`requestContext.authorizer.jwt.claims`). A request
  without those claims is refused (it did not come through the authorizer).
- `AUTH_JWKS_URL`: RS256 or ES256, keys from the JWKS endpoint (cached), `AUTH_ISSUER` and
  `AUTH_AUDIENCE` enforced when set.
- `AUTH_JWT_SECRET`: HS256 with the shared secret (development, tests, `rebalance token`).

The algorithm list is pinned by the mode, so `alg: none` or an HS256 token signed with a
public key never verifies. `exp` is required and enforced, `nbf` enforced when present. The
claims that make a principal: `sub` (non-empty string, the user id) and `publicKey`
(non-empty string, the wallet key the job runs for). A token without `publicKey` is a 401:
the job could not be processed without it, so it is refused at the door.
PyJWT (and the `cryptography` it loads) is imported on first use, off the cold-import path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from core.errors import AuthError, ConfigError, RebalanceError
from core.settings import Settings

HS_ALGORITHMS = ("HS256",)
JWKS_ALGORITHMS = ("RS256", "ES256")
PUBLIC_KEY_CLAIM = "publicKey"
_MAX_CLAIM_CHARS = 4096  # far above any wallet key or user id; bounds key and log sizes
_JWKS_TIMEOUT_S = 3.0
_NO_AUTH = "is required (or AUTH_JWKS_URL, or AUTH_TRUST_AUTHORIZER=true)"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: the user id (`sub`) and the wallet public key."""

    user_id: str
    public_key: str


class KeySetUnavailableError(RebalanceError):
    """The JWKS endpoint could not be reached: a server-side outage (`503`), not a bad token."""

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def authenticate(
    authorization: str | None, settings: Settings, event: Mapping[str, Any] | None = None
) -> Principal:
    """The principal of a request, from its `Authorization` header or its Lambda event."""
    if settings.auth_trust_authorizer:
        return principal_from_claims(_authorizer_claims(event))
    token = bearer_token(authorization)
    if settings.auth_jwks_url:
        return principal_from_claims(_decode_jwks(token, settings))
    if settings.auth_jwt_secret:
        return principal_from_claims(_decode_hs256(token, settings))
    raise ConfigError({"AUTH_JWT_SECRET": _NO_AUTH})


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        raise AuthError("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    return token


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Check `sub` and `publicKey` and build the principal."""
    return Principal(
        user_id=_string_claim(claims, "sub"),
        public_key=_string_claim(claims, PUBLIC_KEY_CLAIM),
    )


def _string_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise AuthError(f"the token's '{name}' claim must be a non-empty string")
    if len(value) > _MAX_CLAIM_CHARS:
        raise AuthError(f"the token's '{name}' claim is too long")
    try:
        value.encode("utf-8")  # a lone surrogate escape would break every key built from it
    except UnicodeEncodeError:
        raise AuthError(f"the token's '{name}' claim is not valid text") from None
    return value


def _authorizer_claims(event: Mapping[str, Any] | None) -> Mapping[str, Any]:
    try:
        claims = event["requestContext"]["authorizer"]["jwt"]["claims"]  # type: ignore[index]
    except (KeyError, TypeError):
        raise AuthError("no verified claims from the API Gateway authorizer") from None
    if not isinstance(claims, Mapping):
        raise AuthError("no verified claims from the API Gateway authorizer")
    return claims


def _decode_options(settings: Settings) -> dict[str, Any]:
    required = ["exp", "sub"]
    kwargs: dict[str, Any] = {}
    if settings.auth_issuer:
        kwargs["issuer"] = settings.auth_issuer
        required.append("iss")
    if settings.auth_audience:
        kwargs["audience"] = settings.auth_audience
        required.append("aud")
    kwargs["options"] = {"require": required, "verify_aud": bool(settings.auth_audience)}
    return kwargs


def _decode_hs256(token: str, settings: Settings) -> dict[str, Any]:
    import jwt

    try:
        return jwt.decode(
            token,
            settings.auth_jwt_secret,
            algorithms=list(HS_ALGORITHMS),
            **_decode_options(settings),
        )
    except jwt.PyJWTError as exc:
        raise AuthError(_reason(exc)) from exc


def _decode_jwks(token: str, settings: Settings) -> dict[str, Any]:
    import jwt

    client = _jwks_client(settings.auth_jwks_url)
    try:
        signing_key = client.get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError as exc:
        raise KeySetUnavailableError("the JWKS endpoint is unreachable") from exc
    except jwt.PyJWTError as exc:  # unknown kid, malformed header, unusable key set
        raise AuthError("no matching signing key for the token") from exc
    try:
        return jwt.decode(
            token,
            signing_key.key,
            algorithms=list(JWKS_ALGORITHMS),
            **_decode_options(settings),
        )
    except jwt.PyJWTError as exc:
        raise AuthError(_reason(exc)) from exc


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> Any:
    """One JWKS client per URL and process: keys are fetched once per warm Lambda."""
    import jwt

    return jwt.PyJWKClient(url, cache_keys=True, lifespan=600, timeout=_JWKS_TIMEOUT_S)


def _reason(exc: Exception) -> str:
    """A client-safe reason: the class of failure, never the token or a key."""
    import jwt

    reasons = [
        (jwt.ExpiredSignatureError, "the token has expired"),
        (jwt.ImmatureSignatureError, "the token is not valid yet"),
        (jwt.InvalidAudienceError, "the token's audience is not accepted"),
        (jwt.InvalidIssuerError, "the token's issuer is not accepted"),
        (jwt.MissingRequiredClaimError, "the token lacks a required claim"),
        (jwt.InvalidAlgorithmError, "the token's algorithm is not accepted"),
        (jwt.InvalidSignatureError, "the token's signature does not verify"),
    ]
    for cls, text in reasons:
        if isinstance(exc, cls):
            return text
    return "the token is invalid"


def mint_token(
    sub: str,
    public_key: str,
    secret: str,
    ttl_s: int = 3600,
    *,
    now: float | None = None,
    **claims: Any,
) -> str:
    """An HS256 token for `sub` and `public_key`, valid for `ttl_s` seconds (dev and tests)."""
    import jwt

    issued = int(time.time() if now is None else now)
    payload = {"sub": sub, PUBLIC_KEY_CLAIM: public_key, "iat": issued, "exp": issued + ttl_s}
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")
