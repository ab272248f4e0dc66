"""Helpers for HTTP handler tests: a TestClient, tokens, the JSON body of a Mangum response.

API Gateway events and the Lambda context come from `devstack.lambda_events`.
"""

from __future__ import annotations

import base64
import json
import os
import warnings
from typing import Any

from starlette.applications import Starlette

from core.auth import mint_token

with warnings.catch_warnings():
    # Starlette 1.x prefers `httpx2` for its test client; the `httpx` it finds works the same.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

__all__ = ["TestClient", "api_app", "auth", "body_of", "token"]


def token(sub: str = "alice", public_key: str = "pk-alice", ttl_s: int = 600, **claims: Any) -> str:
    """A valid HS256 token for the stack's AUTH_JWT_SECRET (read from the patched env)."""
    return mint_token(sub, public_key, os.environ["AUTH_JWT_SECRET"], ttl_s, **claims)


def auth(sub: str = "alice", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, **claims)}"}


def api_app() -> Starlette:
    """The submit and status routes composed into one app, as the dev server does."""
    from handlers import _web, status, submit

    return _web.create_app([*submit.routes, *status.routes])


def body_of(response: dict[str, Any]) -> Any:
    """The JSON body of a Mangum response."""
    raw = response["body"]
    if response.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    return json.loads(raw)
