"""JWKS mode against a real local key server: rotation, bounded caching, hostile headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from core.auth import Principal, authenticate, key_set
from core.errors import AuthError
from core.jwks import KeySet, KeySetUnavailableError, parse_keys
from core.settings import Settings
from tests.support.jwks import KeyServer, jwk

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_NEXT = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_384 = ec.generate_private_key(ec.SECP384R1())
BASE = {"upstash_redis_rest_url": "http://127.0.0.1:1", "upstash_redis_rest_token": "t"}


def serving_both_keys() -> KeyServer:
    """A key server with the RSA key `rsa-1` and the EC key `ec-1`."""
    return KeyServer({"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")]})


@pytest.fixture
def keys_server() -> Iterator[KeyServer]:
    server = serving_both_keys()
    yield server
    server.close()


def settings_for(url: str, **overrides: Any) -> Settings:
    return Settings(
        **BASE,
        auth_jwks_url=url,
        auth_issuer="https://issuer",
        auth_audience="rebalance",
        **overrides,
    )


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "jwks-user",
        "publicKey": "pk",
        "iss": "https://issuer",
        "aud": "rebalance",
        "iat": now,
        "exp": now + 600,
        **extra,
    }


def signed(key: Any, alg: str, kid: str, **extra: Any) -> str:
    return jwt.encode(claims(**extra), key, algorithm=alg, headers={"kid": kid})


def bearer(token: str) -> str:
    return f"Bearer {token}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the key set: bounded lifetime, rate-limited refetch, pinned algorithms -----------------


def test_a_removed_key_stops_verifying_once_the_set_is_refetched(keys_server: KeyServer) -> None:
    """Rotation: the new kid triggers a refetch; from then on the old key is unknown."""
    clock = Clock()
    keys = KeySet(keys_server.url, lifespan_s=300, refetch_interval_s=10, clock=clock)
    assert keys.get("rsa-1") is not None
    keys_server.document = {"keys": [jwk(RSA_NEXT, "rsa-2")]}
    clock.now += 10
    assert keys.get("rsa-2") is not None  # unknown kid, interval passed: fetched again
    assert keys.get("rsa-1") is None  # within one refetch, the rotated-out key is gone
    assert keys_server.fetches == 2


def test_the_whole_set_expires_after_its_lifespan(keys_server: KeyServer) -> None:
    """Even a kid that is still cached is looked up again once the lifespan is over."""
    clock = Clock()
    keys = KeySet(keys_server.url, lifespan_s=300, refetch_interval_s=10, clock=clock)
    assert keys.get("rsa-1") is not None
    keys_server.document = {"keys": []}
    clock.now += 299
    assert keys.get("rsa-1") is not None and keys_server.fetches == 1
    clock.now += 1
    assert keys.get("rsa-1") is None and keys_server.fetches == 2


def test_unknown_kids_refetch_at_most_once_per_interval(keys_server: KeyServer) -> None:
    """A flood of made-up kids costs one fetch per interval, not one per token."""
    clock = Clock()
    keys = KeySet(keys_server.url, lifespan_s=300, refetch_interval_s=10, clock=clock)
    for i in range(50):
        assert keys.get(f"made-up-{i}") is None
        clock.now += 0.1
    assert keys_server.fetches == 1
    clock.now += 10
    keys.get("made-up-again")
    assert keys_server.fetches == 2


@pytest.mark.parametrize("status", [500, 404, 302])
def test_a_failing_endpoint_is_unavailable_not_unauthorized(
    keys_server: KeyServer, status: int
) -> None:
    """A non-2xx answer is a 503 (KeySetUnavailableError), and the stale set is not used."""
    clock = Clock()
    keys = KeySet(keys_server.url, lifespan_s=300, clock=clock)
    keys.get("rsa-1")
    keys_server.status = status
    clock.now += 300
    with pytest.raises(KeySetUnavailableError):
        keys.get("rsa-1")
    with pytest.raises(KeySetUnavailableError):
        keys.get("rsa-1")  # nothing left to fall back on: still a 503, never the old key


@pytest.mark.parametrize("document", [[], {"keys": "x"}, "text", None, {"no": "keys"}])
def test_a_document_that_is_no_key_set_is_unavailable(document: Any) -> None:
    with pytest.raises(KeySetUnavailableError):
        parse_keys(document)


def test_only_keys_usable_for_rs256_or_es256_are_kept() -> None:
    """Other curves, encryption keys, mislabelled algorithms and garbage are skipped."""
    kept = parse_keys(
        {
            "keys": [
                jwk(RSA_KEY, "rsa"),
                jwk(EC_KEY, "ec", alg="ES256"),
                jwk(EC_384, "p384"),
                jwk(RSA_KEY, "enc", use="enc"),
                jwk(RSA_KEY, "ps", alg="PS256"),
                jwk(EC_KEY, "labelled-rsa", alg="RS256"),
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
                "not a key",
            ]
        }
    )
    assert {kid: key.algorithm for kid, key in kept.items()} == {"rsa": "RS256", "ec": "ES256"}


# --- authenticate in JWKS mode ------------------------------------------------------------


def test_rotation_through_authenticate(keys_server: KeyServer) -> None:
    """A rotated-out key is refused within one refetch in a warm process."""
    settings = settings_for(keys_server.url)
    assert authenticate(bearer(signed(RSA_KEY, "RS256", "rsa-1")), settings).user_id
    keys_server.document = {"keys": [jwk(RSA_NEXT, "rsa-2")]}
    key_set(settings.auth_jwks_url, settings.auth_jwks_cache_s).refetch_interval_s = 0
    assert authenticate(bearer(signed(RSA_NEXT, "RS256", "rsa-2")), settings).user_id
    with pytest.raises(AuthError):
        authenticate(bearer(signed(RSA_KEY, "RS256", "rsa-1")), settings)


def test_an_es256_header_on_an_rsa_kid_is_a_401(keys_server: KeyServer) -> None:
    """The case that used to raise TypeError (a 500): the key decides the algorithm."""
    settings = settings_for(keys_server.url)
    for key, alg, kid in [(EC_KEY, "ES256", "rsa-1"), (RSA_KEY, "RS256", "ec-1")]:
        with pytest.raises(AuthError):
            authenticate(bearer(signed(key, alg, kid)), settings)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rsa_public_pem() -> bytes:
    return RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _signature(signer: str, signing_input: bytes) -> bytes:
    if signer == "rsa":
        return RSA_KEY.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if signer == "ec":
        der = EC_KEY.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        return jwt.utils.der_to_raw_signature(der, EC_KEY.curve)
    if signer == "hmac-public-key":  # the classic algorithm confusion
        return hmac.new(_rsa_public_pem(), signing_input, hashlib.sha256).digest()
    return b"\x00" * 64 if signer == "zeros" else b""


ALGS = ["RS256", "ES256", "HS256", "none", "PS256", "RS512", "ES384", "", None, 1, ["RS256"]]
KIDS = ["rsa-1", "ec-1", "missing", "", None, 7, ["rsa-1"], {"k": 1}, "x" * 300]
TYPS = ["JWT", None, 1]
SIGNERS = ["rsa", "ec", "hmac-public-key", "zeros", "none"]


def _token(alg: Any, kid: Any, typ: Any, signer: str) -> str:
    header = {name: v for name, v in (("alg", alg), ("kid", kid), ("typ", typ)) if v is not None}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims()).encode())}"
    return f"{signing_input}.{_b64(_signature(signer, signing_input.encode()))}"


def _consistent(alg: Any, kid: Any, signer: str) -> bool:
    return (alg, kid, signer) in [("RS256", "rsa-1", "rsa"), ("ES256", "ec-1", "ec")]


def test_fuzzed_headers_are_401_unless_consistent(keys_server: KeyServer) -> None:
    """Every alg x kid x typ x signature: a principal only for a matching key and algorithm,
    an AuthError otherwise, and never any other exception (which would be a 500)."""
    settings = settings_for(keys_server.url)
    accepted = 0
    for alg, kid, typ, signer in itertools.product(ALGS, KIDS, TYPS, SIGNERS):
        token = _token(alg, kid, typ, signer)
        if _consistent(alg, kid, signer):
            assert authenticate(bearer(token), settings) == Principal("jwks-user", "pk")
            accepted += 1
            continue
        with pytest.raises(AuthError):
            authenticate(bearer(token), settings)
    assert accepted == 2 * len(TYPS)
    assert keys_server.fetches <= 2  # made-up kids do not hammer the endpoint


@pytest.mark.parametrize(
    "raw",
    [
        "e30.e30.",
        "bm90IGpzb24.e30.c2ln",
        "W10.e30.c2ln",  # header is a JSON array
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.bm90IGpzb24.c2ln",  # claims not JSON
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.W10.c2ln",  # claims a JSON array
        "a.b",
        "....",
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIn0.e30.!!!",
    ],
)
def test_malformed_tokens_are_401(keys_server: KeyServer, raw: str) -> None:
    with pytest.raises(AuthError):
        authenticate(bearer(raw), settings_for(keys_server.url))


def test_an_unreachable_key_server_stays_a_503() -> None:
    settings = settings_for("http://127.0.0.1:9/unreachable-jwks.json")
    with pytest.raises(KeySetUnavailableError):
        authenticate(bearer(signed(RSA_KEY, "RS256", "rsa-1")), settings)
