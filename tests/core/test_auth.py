"""Authentication: HS256 with the secret, RS256/ES256 via JWKS, API Gateway authorizer claims."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from core.auth import KeySetUnavailableError, Principal, authenticate, mint_token
from core.errors import AuthError
from core.settings import Settings
from tests.support.jwks import KeyServer, jwk

JWT_SECRET = "auth-test-secret-" + "x" * 64  # long enough for HS512 too
BASE = {"upstash_redis_rest_url": "http://127.0.0.1:1", "upstash_redis_rest_token": "t"}
HS = Settings(**BASE, auth_jwt_secret=JWT_SECRET)


def hs_token(
    claims: dict[str, Any] | None = None,
    *,
    secret: str = JWT_SECRET,
    alg: str = "HS256",
    drop: tuple[str, ...] = (),
) -> str:
    payload = {"sub": "user-1", "publicKey": "pk-1", "exp": int(time.time()) + 600}
    payload.update(claims or {})
    for name in drop:
        payload.pop(name, None)
    return jwt.encode(payload, secret, algorithm=alg)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_valid_hs256_token_gives_principal() -> None:
    """A token signed with AUTH_JWT_SECRET yields the user id and public key."""
    assert authenticate(bearer(hs_token()), HS) == Principal("user-1", "pk-1")


def test_minted_token_verifies() -> None:
    """`mint_token` produces what `authenticate` accepts."""
    token = mint_token("u", "pk", JWT_SECRET, ttl_s=60)
    assert authenticate(f"bearer {token}", HS) == Principal("u", "pk")


@pytest.mark.parametrize("user_id", ["a:b:c", "*?[x]", "line\nbreak", "ü" * 1000, " spaced "])
def test_arbitrary_user_ids_are_accepted(user_id: str) -> None:
    """User ids are arbitrary strings: colons, globs, newlines, a thousand characters."""
    assert authenticate(bearer(hs_token({"sub": user_id})), HS).user_id == user_id


def _alg_none() -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"sub": "user-1", "publicKey": "pk", "exp": int(time.time()) + 600}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


BAD_HEADERS = {
    "missing": None,
    "empty": "",
    "basic scheme": "Basic dXNlcjpwYXNz",
    "bearer without token": "Bearer ",
    "two tokens": "Bearer a b",
    "garbage token": "Bearer not-a-jwt",
    "three garbage parts": "Bearer a.b.c",
    "forged signature": bearer(hs_token(secret="another-secret-that-is-long-enough-123")),
    "expired": bearer(hs_token({"exp": int(time.time()) - 5})),
    "not yet valid": bearer(hs_token({"nbf": int(time.time()) + 600})),
    "alg none": bearer(_alg_none()),
    "HS512 with the right secret": bearer(hs_token(alg="HS512")),
    "no exp": bearer(hs_token(drop=("exp",))),
    "no sub": bearer(hs_token(drop=("sub",))),
    "empty sub": bearer(hs_token({"sub": ""})),
    "no publicKey": bearer(hs_token(drop=("publicKey",))),
    "numeric publicKey": bearer(hs_token({"publicKey": 42})),
    "empty publicKey": bearer(hs_token({"publicKey": ""})),
    "lone surrogate sub": bearer(hs_token({"sub": "\ud800"})),
    "huge sub": bearer(hs_token({"sub": "x" * 5000})),
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_bad_tokens_are_refused(header: str | None) -> None:
    """Missing, malformed, forged, expired, `alg: none` and claim-less tokens are AuthError."""
    with pytest.raises(AuthError):
        authenticate(header, HS)


def test_numeric_sub_is_refused() -> None:
    """`sub` must be a string (an integer is refused, not coerced)."""
    token = jwt.encode(
        {"sub": 7, "publicKey": "pk", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256"
    )
    with pytest.raises(AuthError):
        authenticate(bearer(token), HS)


def test_issuer_and_audience_are_enforced_when_configured() -> None:
    """With AUTH_ISSUER/AUTH_AUDIENCE set, tokens must carry matching `iss` and `aud`."""
    strict = Settings(**BASE, auth_jwt_secret=JWT_SECRET, auth_issuer="iss", auth_audience="aud")
    good = hs_token({"iss": "iss", "aud": "aud"})
    assert authenticate(bearer(good), strict).user_id == "user-1"
    for claims in ({"iss": "other", "aud": "aud"}, {"iss": "iss", "aud": "other"}, {}):
        with pytest.raises(AuthError):
            authenticate(bearer(hs_token(claims)), strict)


def test_authorizer_claims_are_trusted_when_configured() -> None:
    """Behind an API Gateway JWT authorizer, the event's verified claims are the principal."""
    trusting = Settings(**BASE, auth_trust_authorizer=True)
    event = {
        "requestContext": {"authorizer": {"jwt": {"claims": {"sub": "u9", "publicKey": "pk9"}}}}
    }
    assert authenticate(None, trusting, event) == Principal("u9", "pk9")


@pytest.mark.parametrize(
    "event",
    [
        None,
        {},
        {"requestContext": {}},
        {"requestContext": {"authorizer": {"jwt": {"claims": "x"}}}},
        {"requestContext": {"authorizer": {"jwt": {"claims": {}}}}},
    ],
)
def test_authorizer_mode_refuses_requests_without_claims(event: Any) -> None:
    """In authorizer mode a request without verified claims (or without `sub`) is a 401."""
    trusting = Settings(**BASE, auth_trust_authorizer=True)
    with pytest.raises(AuthError):
        authenticate(bearer(hs_token()), trusting, event)


# --- JWKS (RS256 / ES256) over a real local HTTP endpoint ---------------------------------

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    def signing(key: Any, kid: str, alg: str) -> dict[str, Any]:
        return jwk(key, kid, alg=alg, use="sig")

    server = KeyServer(
        {"keys": [signing(RSA_KEY, "rsa-1", "RS256"), signing(EC_KEY, "ec-1", "ES256")]}
    )
    yield server.url
    server.close()


def _jwks_settings(url: str) -> Settings:
    return Settings(
        **BASE,
        auth_jwks_url=url,
        auth_issuer="https://issuer",
        auth_audience="rebalance",
        auth_jwt_secret=JWT_SECRET,
    )


def _signed(key: Any, alg: str, kid: str, **claims: Any) -> str:
    payload = {
        "sub": "jwks-user",
        "publicKey": "pk",
        "iss": "https://issuer",
        "aud": "rebalance",
        "exp": int(time.time()) + 600,
        **claims,
    }
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


@pytest.mark.parametrize(
    ("key", "alg", "kid"), [(RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1")]
)
def test_jwks_tokens_verify(jwks_url: str, key: Any, alg: str, kid: str) -> None:
    """RS256 and ES256 tokens verify against the JWKS endpoint's keys."""
    principal = authenticate(bearer(_signed(key, alg, kid)), _jwks_settings(jwks_url))
    assert principal == Principal("jwks-user", "pk")


def test_jwks_mode_pins_the_algorithms(jwks_url: str) -> None:
    """With JWKS configured, an HS256 token is refused even if signed with AUTH_JWT_SECRET."""
    with pytest.raises(AuthError):
        authenticate(
            bearer(hs_token({"iss": "https://issuer", "aud": "rebalance"})),
            _jwks_settings(jwks_url),
        )


@pytest.mark.parametrize(
    "claims", [{"iss": "https://evil"}, {"aud": "other"}, {"exp": int(time.time()) - 1}]
)
def test_jwks_tokens_need_issuer_audience_and_time(jwks_url: str, claims: dict[str, Any]) -> None:
    """Wrong issuer, wrong audience or an expired token is refused."""
    with pytest.raises(AuthError):
        authenticate(bearer(_signed(RSA_KEY, "RS256", "rsa-1", **claims)), _jwks_settings(jwks_url))


def test_jwks_unknown_key_and_foreign_key_are_refused(jwks_url: str) -> None:
    """A kid the JWKS does not list, or a listed kid with another key's signature, is a 401."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (_signed(RSA_KEY, "RS256", "missing"), _signed(other, "RS256", "rsa-1")):
        with pytest.raises(AuthError):
            authenticate(bearer(token), _jwks_settings(jwks_url))


def test_unreachable_jwks_is_a_server_side_error() -> None:
    """A JWKS endpoint that cannot be reached is not the caller's fault (503, not 401)."""
    settings = _jwks_settings("http://127.0.0.1:9/jwks.json")
    with pytest.raises(KeySetUnavailableError):
        authenticate(bearer(_signed(RSA_KEY, "RS256", "rsa-1")), settings)


# --- lifetime, claim sizes, scopes, the secret's length -----------------------------------


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"iat": 1_000_000, "exp": 1_000_000 + 86_400}, False),  # expired anyway
        ({"iat": int(time.time()), "exp": int(time.time()) + 86_400}, True),
        ({"iat": int(time.time()), "exp": int(time.time()) + 86_401}, False),
        ({"iat": int(time.time()) - 3600, "exp": int(time.time()) + 86_000}, False),
        ({"exp": int(time.time()) + 86_000}, True),  # no iat: exp - now
        ({"exp": int(time.time()) + 200 * 365 * 86_400}, False),  # the 200-year token
    ],
)
def test_tokens_live_at_most_auth_max_token_ttl_s(claims: dict[str, Any], ok: bool) -> None:
    """`exp - iat` (or `exp - now` without `iat`) over AUTH_MAX_TOKEN_TTL_S is a 401."""
    token = hs_token(claims, drop=() if "iat" in claims else ("iat",))
    if ok:
        assert authenticate(bearer(token), HS).user_id == "user-1"
    else:
        with pytest.raises(AuthError):
            authenticate(bearer(token), HS)


def test_the_maximum_lifetime_is_a_setting() -> None:
    """A one-hour maximum refuses a two-hour token, in authorizer mode too (claims as text)."""
    now = int(time.time())
    short = Settings(**BASE, auth_jwt_secret=JWT_SECRET, auth_max_token_ttl_s=3600)
    with pytest.raises(AuthError, match="lives longer"):
        authenticate(bearer(hs_token({"iat": now, "exp": now + 7200})), short)
    trusting = Settings(**BASE, auth_trust_authorizer=True, auth_max_token_ttl_s=3600)
    claims = {"sub": "u", "publicKey": "p", "iat": str(now), "exp": str(now + 7200)}
    event = {"requestContext": {"authorizer": {"jwt": {"claims": claims}}}}
    with pytest.raises(AuthError):
        authenticate(None, trusting, event)


@pytest.mark.parametrize("name", ["sub", "publicKey"])
def test_claims_are_bounded_in_utf8_bytes(name: str) -> None:
    """4096 bytes pass; 1025 four-byte characters (4100 bytes, 1025 chars) are a 401."""
    assert authenticate(bearer(hs_token({name: "a" * 4096})), HS)
    assert authenticate(bearer(hs_token({name: "😀" * 1024})), HS)
    with pytest.raises(AuthError, match="4096 bytes"):
        authenticate(bearer(hs_token({name: "😀" * 1025})), HS)


@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        ({"scope": "metrics:read other"}, {"metrics:read", "other"}),
        ({"scp": ["metrics:read", 7, "x"]}, {"metrics:read", "x"}),
        ({"scp": "[metrics:read other]"}, {"metrics:read", "other"}),  # API Gateway's form
        ({"scope": 5}, set()),
        ({}, set()),
    ],
)
def test_scopes_come_from_scope_or_scp(claims: dict[str, Any], scopes: set[str]) -> None:
    assert authenticate(bearer(hs_token(claims)), HS).scopes == scopes


def test_require_scope_is_a_403() -> None:
    from core.auth import require_scope
    from core.errors import ForbiddenError

    require_scope(Principal("u", "p", frozenset({"metrics:read"})), "metrics:read")
    with pytest.raises(ForbiddenError, match="metrics:read"):
        require_scope(Principal("u", "p", frozenset({"metrics:readx"})), "metrics:read")


def test_a_short_secret_is_refused_even_in_settings_built_in_code() -> None:
    """Settings made without `from_env` still cannot verify with a 12-byte secret."""
    from core.errors import ConfigError

    weak = Settings(**BASE, auth_jwt_secret="twelve-bytes")
    with pytest.raises(ConfigError, match="AUTH_JWT_SECRET: must be at least 32 bytes"):
        authenticate(bearer(hs_token()), weak)


def test_a_verified_token_is_not_trusted_past_its_exp_nor_under_another_secret() -> None:
    """A process remembers recent verifications (one per token, not per request), but never
    past the token's `exp`, never before its `nbf`, and only for the same secret."""
    soon = hs_token({"exp": int(time.time()) + 1})
    assert authenticate(bearer(soon), HS).user_id == "user-1"
    assert authenticate(bearer(soon), HS).user_id == "user-1"  # remembered
    other = Settings(**BASE, auth_jwt_secret="another-secret-" + "y" * 40)
    with pytest.raises(AuthError):
        authenticate(bearer(soon), other)
    time.sleep(1.1)
    with pytest.raises(AuthError, match="expired"):
        authenticate(bearer(soon), HS)
    later = hs_token({"nbf": int(time.time()) + 30})
    for _ in range(2):
        with pytest.raises(AuthError):
            authenticate(bearer(later), HS)
