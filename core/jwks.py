"""The JWKS key set of `AUTH_JWKS_URL`: fetched, cached for a bounded time, refetched on need.

- The set is kept `lifespan_s` (`AUTH_JWKS_CACHE_S`, default 300 s); the first token after
  that fetches it again, so a key removed from the set stops verifying within that time in
  every warm process. (PyJWT's `PyJWKClient` keeps the keys it has seen with no expiry.)
- A token whose `kid` is not in the set fetches it again, at most once per
  `refetch_interval_s` (10 s): a newly published key works at once, and a stream of made-up
  `kid`s costs one fetch per interval, not one per request.
- Only keys that can sign what the mode accepts are kept, each pinned to its one algorithm:
  RSA -> RS256, EC P-256 -> ES256. A key whose `alg` or `use` says otherwise is ignored.
- A failed fetch, an HTTP error or a document that is not a key set is
  `KeySetUnavailableError` (503): the caller did nothing wrong. The stale set is not used
  past its lifespan, since a removed key must stop verifying.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from core.errors import RebalanceError

DEFAULT_LIFESPAN_S = 300
REFETCH_INTERVAL_S = 10.0
TIMEOUT_S = 3.0
_MAX_KEYS = 100  # a key set is a handful of keys; bound what a hostile document can cost


class KeySetUnavailableError(RebalanceError):
    """The JWKS endpoint could not be reached: a server-side outage (`503`), not a bad token."""

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class SigningKey:
    """A public key and the one algorithm it verifies."""

    key: Any
    algorithm: str


def fetch(url: str, timeout_s: float = TIMEOUT_S) -> Any:
    """The JSON document at `url` (`KeySetUnavailableError` on any failure)."""
    try:
        response = httpx.get(url, timeout=timeout_s, follow_redirects=False)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise KeySetUnavailableError(f"the JWKS endpoint failed: {type(exc).__name__}") from exc


def parse_keys(document: Any) -> dict[str, SigningKey]:
    """`kid` -> key for every usable key of a JWKS document; not a key set at all: 503."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        raise KeySetUnavailableError("the JWKS endpoint did not answer a key set")
    keys: dict[str, SigningKey] = {}
    for entry in entries[:_MAX_KEYS]:
        parsed = _signing_key(entry)
        if parsed is not None:
            keys[entry["kid"]] = parsed
    return keys


def _signing_key(entry: Any) -> SigningKey | None:
    import jwt

    if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str):
        return None
    algorithm = _algorithm_of(entry)
    if algorithm is None or entry.get("use", "sig") != "sig":
        return None
    try:
        return SigningKey(jwt.PyJWK(dict(entry), algorithm=algorithm).key, algorithm)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None  # a malformed key is skipped; the others still verify


def _algorithm_of(entry: Mapping[str, Any]) -> str | None:
    if entry.get("kty") == "RSA":
        algorithm = "RS256"
    elif entry.get("kty") == "EC" and entry.get("crv") == "P-256":
        algorithm = "ES256"
    else:
        return None
    return algorithm if entry.get("alg", algorithm) == algorithm else None


class KeySet:
    """The keys of one JWKS URL, refreshed as the module docstring says. Thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        lifespan_s: float = DEFAULT_LIFESPAN_S,
        refetch_interval_s: float = REFETCH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        fetcher: Callable[[str], Any] = fetch,
    ) -> None:
        self.url = url
        self.lifespan_s = lifespan_s
        self.refetch_interval_s = refetch_interval_s
        self.fetches = 0
        self._clock = clock
        self._fetch = fetcher
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def get(self, kid: str) -> SigningKey | None:
        """The key of `kid`, or None when the (fresh enough) set has no such key."""
        with self._lock:
            now = self._clock()
            if self._stale(now) or (kid not in self._keys and self._may_refetch(now)):
                self._refresh(now)
            return self._keys.get(kid)

    def _stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self.lifespan_s

    def _may_refetch(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at >= self.refetch_interval_s

    def _refresh(self, now: float) -> None:
        self.fetches += 1
        try:
            keys = parse_keys(self._fetch(self.url))
        except KeySetUnavailableError:
            if self._stale(now):
                self._keys, self._fetched_at = {}, None  # never verify past the lifespan
            raise
        self._keys, self._fetched_at = keys, now
