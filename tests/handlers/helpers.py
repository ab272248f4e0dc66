"""Helpers for HTTP handler tests: a TestClient, tokens, API Gateway v2 events."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
import warnings
from typing import Any

from starlette.applications import Starlette

from core.auth import mint_token

with warnings.catch_warnings():
    # Starlette 1.x prefers `httpx2` for its test client; the `httpx` it finds works the same.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

__all__ = ["TestClient", "api_app", "apigw_event", "auth", "token"]


def token(sub: str = "alice", public_key: str = "pk-alice", ttl_s: int = 600, **claims: Any) -> str:
    """A valid HS256 token for the stack's AUTH_JWT_SECRET (read from the patched env)."""
    return mint_token(sub, public_key, os.environ["AUTH_JWT_SECRET"], ttl_s, **claims)


def auth(sub: str = "alice", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, **claims)}"}


def api_app() -> Starlette:
    """The submit and status routes composed into one app, as the dev server does."""
    from handlers import _web, status, submit

    return _web.create_app([*submit.routes, *status.routes])


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


def body_of(response: dict[str, Any]) -> Any:
    """The JSON body of a Mangum response."""
    raw = response["body"]
    if response.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    return json.loads(raw)
