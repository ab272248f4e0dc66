"""What Lambda hands a handler, built locally: an API Gateway HTTP API (payload v2.0) event,
and a context whose remaining time runs down with the real clock.

For the tests and `make bench`, which invoke the handlers as Lambda does without Lambda.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LambdaContext:
    """A Lambda context whose remaining time runs down from `budget_ms` with the real clock:
    what Mangum, our handlers and the drain read of it."""

    budget_ms: int = 10_000
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    function_name: str = "test"

    def __post_init__(self) -> None:
        self._ends = time.monotonic() + self.budget_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - time.monotonic()) * 1000))


def apigw_event(
    method: str,
    path: str,
    *,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    claims: dict[str, str] | None = None,
    query: str = "",
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload v2.0) event, as Lambda receives it."""
    raw = body.encode() if isinstance(body, str) else body
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {k.lower(): v for k, v in (headers or {}).items()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.1",
                "userAgent": "test",
            },
            "requestId": "apigw-" + uuid.uuid4().hex[:8],
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": raw is not None,
    }
    if raw is not None:
        event["body"] = base64.b64encode(raw).decode()
        event["headers"].setdefault("content-length", str(len(raw)))
    if claims is not None:
        event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return event
