"""Authentication: who is calling, from a bearer JWT or from API Gateway's verified claims.

Three modes, chosen by the configuration and never by the token:

- `AUTH_TRUST_AUTHORIZER=true`: an API Gateway JWT authorizer already verified the token;
  its claims are read from the event (`requestContext.authorizer.jwt.claims`). A request
  without those claims is refused (it did not come through the authorizer).
- `AUTH_JWKS_URL`: RS256 or ES256, keys from the JWKS endpoint (`core.jwks`: cached for a
  bounded time, each key pinned to its one algorithm), `AUTH_ISSUER` and `AUTH_AUDIENCE`
  enforced when set (the deploy guard requires both).
- `AUTH_JWT_SECRET`: HS256 with the shared secret, at least 32 bytes (development, tests,
  `rebalance token`).

The algorithm list is pinned by the mode (and in JWKS mode by the key), so `alg: none`, an
HS256 token signed with a public key or an ES256 header on an RSA `kid` never verifies:
every malformed, mismatched or forged token is a 401. `exp` is required and enforced, `nbf`
enforced when present, and a token may live at most `AUTH_MAX_TOKEN_TTL_S` (`exp - iat`, or
`exp - now` without `iat`). The claims that make a principal: `sub` (the user id) and
`publicKey` (the wallet key the job runs for), non-empty strings of at most 4096 bytes of
UTF-8; a token without `publicKey` is a 401, as the job could not run without it. `scope`
(space-separated) or `scp` (a list) carry the caller's scopes (`require_scope`).
PyJWT (and the `cryptography` it loads) is imported on first use, off the cold-import path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from core.errors import AuthError, ConfigError, ForbiddenError
from core.jwks import KeySet, KeySetUnavailableError
from core.settings import Settings, jwt_secret_problem

HS_ALGORITHMS = ("HS256",)
PUBLIC_KEY_CLAIM = "publicKey"
MAX_CLAIM_BYTES = 4096  # far above any wallet key or user id; bounds key and log sizes
_MAX_KID_CHARS = 256
_NO_AUTH = "is required (or AUTH_JWKS_URL, or AUTH_TRUST_AUTHORIZER=true)"

__all__ = ["KeySetUnavailableError", "Principal", "authenticate", "require_scope"]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: the user id (`sub`), the wallet public key, its scopes."""

    user_id: str
    public_key: str
    scopes: frozenset[str] = frozenset()


def authenticate(
    authorization: str | None, settings: Settings, event: Mapping[str, Any] | None = None
) -> Principal:
    """The principal of a request, from its `Authorization` header or its Lambda event."""
    claims = _verified_claims(authorization, settings, event)
    _check_lifetime(claims, settings.auth_max_token_ttl_s)
    return principal_from_claims(claims)


def _verified_claims(
    authorization: str | None, settings: Settings, event: Mapping[str, Any] | None
) -> Mapping[str, Any]:
    if settings.auth_trust_authorizer:
        return _authorizer_claims(event)
    token = bearer_token(authorization)
    if settings.auth_jwks_url:
        return _decode_jwks(token, settings)
    if settings.auth_jwt_secret:
        problem = jwt_secret_problem(settings.auth_jwt_secret)
        if problem:  # settings built in code skip `from_env`'s check: refuse here too
            raise ConfigError({"AUTH_JWT_SECRET": problem})
        return _decode_hs256(token, settings)
    raise ConfigError({"AUTH_JWT_SECRET": _NO_AUTH})


def require_scope(principal: Principal, scope: str) -> None:
    """`ForbiddenError` (403) unless the principal's token carries `scope`."""
    if scope not in principal.scopes:
        raise ForbiddenError(f"this route needs a token with the '{scope}' scope")


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
        scopes=scopes_of(claims),
    )


def _string_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise AuthError(f"the token's '{name}' claim must be a non-empty string")
    try:
        encoded = value.encode("utf-8")  # a lone surrogate would break every key built from it
    except UnicodeEncodeError:
        raise AuthError(f"the token's '{name}' claim is not valid text") from None
    if len(encoded) > MAX_CLAIM_BYTES:
        raise AuthError(f"the token's '{name}' claim is over {MAX_CLAIM_BYTES} bytes")
    return value


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes of `scope` (space-separated) and `scp` (a list; API Gateway's authorizer
    hands it over as the text `[a b]`)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.strip("[]").replace(",", " ").split())
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str))
    return frozenset(found)


def _check_lifetime(claims: Mapping[str, Any], max_ttl_s: int) -> None:
    """A token may live at most `max_ttl_s`: `exp - iat`, or `exp - now` without `iat`."""
    exp = _number(claims.get("exp"))
    if exp is None:
        return  # only an authorizer's claims can lack it, and the authorizer checked it
    iat = _number(claims.get("iat"))
    lifetime = exp - (iat if iat is not None else time.time())
    if lifetime > max_ttl_s:
        raise AuthError("the token lives longer than this service accepts")


def _number(value: Any) -> float | None:
    """A numeric claim; API Gateway's authorizer passes numbers as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


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
    """Verified claims; a token verified in the last minute by this process is not verified
    again (an agent sends many requests with one token: the check costs ~50 us) while it is
    still inside its `exp` and `nbf`. HS256 only: its secret is fixed for the process, where a
    JWKS key may be rotated out."""
    now = time.time()
    # Keyed by what verification depends on too: settings built in code (tests) may differ.
    key = (token, settings.auth_jwt_secret, settings.auth_issuer, settings.auth_audience)
    cached = _VERIFIED.get(key)
    if cached is not None and cached[0] > now and cached[1] <= now:
        return cached[2]
    import jwt

    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.auth_jwt_secret,
            algorithms=list(HS_ALGORITHMS),
            **_decode_options(settings),
        )
    except jwt.PyJWTError as exc:
        raise AuthError(_reason(exc)) from exc
    until = min(now + _VERIFIED_FOR_S, _number(claims.get("exp")) or now)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.pop(next(iter(_VERIFIED)))  # the oldest entry
    _VERIFIED[key] = (until, _number(claims.get("nbf")) or 0.0, claims)
    return claims


# (token, secret, issuer, audience) -> (valid until, not before, claims), per process;
# bounded, oldest dropped first
_VERIFIED: dict[tuple[str, str, str, str], tuple[float, float, dict[str, Any]]] = {}
_VERIFIED_FOR_S = 60.0
_VERIFIED_MAX = 256


def _decode_jwks(token: str, settings: Settings) -> dict[str, Any]:
    import jwt

    signing_key = key_set(settings.auth_jwks_url, settings.auth_jwks_cache_s).get(_kid(token))
    if signing_key is None:
        raise AuthError("no matching signing key for the token")
    try:
        # Only the key's own algorithm: an ES256 header on an RSA key is refused here.
        return jwt.decode(
            token,
            signing_key.key,
            algorithms=[signing_key.algorithm],
            **_decode_options(settings),
        )
    except jwt.PyJWTError as exc:
        raise AuthError(_reason(exc)) from exc
    except (TypeError, ValueError, KeyError) as exc:  # PyJWT lets a few oddities through raw
        raise AuthError("the token is invalid") from exc


def _kid(token: str) -> str:
    """The `kid` of the token's header: a short string, or the token is a 401."""
    import jwt

    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except (jwt.PyJWTError, TypeError, ValueError, AttributeError) as exc:
        raise AuthError("the token is malformed") from exc
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_CHARS:
        raise AuthError("the token names no signing key")
    return kid


@lru_cache(maxsize=4)
def key_set(url: str, lifespan_s: int) -> KeySet:
    """One key set per URL and process, kept warm across invocations (see `core.jwks`)."""
    return KeySet(url, lifespan_s=lifespan_s)


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
