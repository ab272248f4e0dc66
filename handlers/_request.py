"""The request as an endpoint sees it: `Call`, its bounded body and strict JSON.

- `read_body(request, limit)` reads at most `limit` + 1 bytes, nothing when `Content-Length`
  is already over, and says whether there was more.
- `Call.principal()` authenticates (bearer JWT or API Gateway authorizer claims, see
  `core.auth`); `Call.json()` checks `Content-Type`, size and syntax (415 / 413 / 400);
  `Call.settings`, `Call.client` are the process-wide settings and Redis client.
- `parse_json(body)`: UTF-8, no NaN/Infinity, no overflowing numbers, no lone surrogates,
  bounded nesting; anything else is a 400 `HttpError`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from core.auth import Principal, authenticate
from core.redis import RedisClient, get_client
from core.settings import Settings
from handlers._errors import HttpError


@dataclass
class Call:
    """One request as an endpoint sees it: the Starlette request plus its bounded body."""

    request: Request
    body: bytes
    too_large: bool
    settings: Settings
    _client: RedisClient | None = field(default=None, repr=False)

    @property
    def client(self) -> RedisClient:
        """The process-wide Redis client (built on first use)."""
        if self._client is None:
            self._client = get_client()
        return self._client

    def principal(self) -> Principal:
        """The authenticated caller, or `AuthError` (401)."""
        return authenticate(
            self.request.headers.get("authorization"),
            self.settings,
            self.request.scope.get("aws.event"),
        )

    def json(self) -> Any:
        """The body as a JSON value: 415 unless JSON, 413 when too large, 400 when malformed."""
        if not _is_json(self.request.headers.get("content-type", "")):
            raise HttpError(415, "unsupported_media_type", "Content-Type must be application/json")
        if self.too_large:
            limit = self.settings.max_body_bytes
            raise HttpError(413, "payload_too_large", f"the body is over {limit} bytes")
        return parse_json(self.body)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999 parses as inf, which no JSON reader can take back
        raise ValueError(f"{text} overflows a double")
    return value


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no lone surrogates, bounded nesting (else 400)."""
    try:
        value = json.loads(
            body.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
        # Lone surrogate escapes parse but cannot be stored as UTF-8; refuse them here.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        raise HttpError(400, "invalid_json", "the body is not valid JSON") from None
    return value


async def read_body(request: Request, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the body, and whether there was more (checked both ways)."""
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
    return b"".join(chunks), False
