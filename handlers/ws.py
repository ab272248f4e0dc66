"""The WebSocket API's Lambda: `handler(event, context)` for API Gateway's WebSocket routes.

- `$connect` (`wss://…?token=<JWT>`): the token is verified like the HTTP routes' bearer
  token (browsers cannot set headers on a WebSocket); a bad one refuses the connection (401).
  The connection then belongs to the token's user for at most 2 hours.
- `{"action": "subscribe", "jobId": "…"}`: the connection follows one of its user's own jobs
  and is answered the job's status body (the route's response); from then on the drain
  pushes every status change with the same shape. Unknown and foreign ids are one 404.
- `$disconnect`: the connection and its subscriptions are forgotten.

Errors answer `{"error": {"code", "message"}}` like the HTTP API. API Gateway's WebSocket APIs
have no JWT authorizer, so this function always verifies the token itself, whatever
`AUTH_TRUST_AUTHORIZER` says. No boto3 here: answers go back as the route's response.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core import errors, subscriptions
from core.auth import KeySetUnavailableError, authenticate
from core.jobs import dumps
from core.log import bind, configure, event, get_logger
from core.rate_limit import ReadLimit
from core.redis import get_client
from core.settings import get_settings
from handlers._codes import status_of

log = get_logger("handlers.ws")

# The HTTP API's mapping, but a WebSocket message that fails validation is malformed as a
# whole (there is no body of fields to point into): a 400, like unparsable JSON over HTTP.
_OVERRIDES: dict[type[Exception], tuple[int, str]] = {errors.ValidationError: (400, "bad_request")}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = get_settings()
    configure(settings.log_level)
    request = event.get("requestContext") or {}
    route = str(request.get("routeKey", ""))
    with bind(request_id=getattr(context, "aws_request_id", None), source="ws"):
        try:
            return _route(route, str(request.get("connectionId", "")), event)
        except errors.ConfigError:
            raise  # a deployment problem: the invocation fails, the alarm sees it
        except (errors.RebalanceError, KeySetUnavailableError) as exc:
            return _error(exc, route)


def _route(route: str, connection_id: str, event: dict[str, Any]) -> dict[str, Any]:
    if route == "$connect":
        _connect(connection_id, (event.get("queryStringParameters") or {}).get("token"))
        return {"statusCode": 200}
    if route == "$disconnect":
        subscriptions.forget(get_client(), connection_id)
        return {"statusCode": 200}
    if route == "subscribe":
        view = subscriptions.subscribe(get_client(), connection_id, _job_id(event.get("body")))
        return {"statusCode": 200, "body": dumps(view)}
    raise errors.ValidationError('unknown action: send {"action": "subscribe", "jobId": "…"}')


def _connect(connection_id: str, token: Any) -> None:
    settings = get_settings().replace(auth_trust_authorizer=False)
    if not isinstance(token, str) or not token:
        raise errors.AuthError("missing token: connect with ?token=<JWT>")
    principal = authenticate(f"Bearer {token}", settings)
    limit = ReadLimit.for_user(settings, principal.user_id)
    subscriptions.connect(get_client(), principal, connection_id, limit)


def _job_id(body: Any) -> str:
    """The `jobId` of a `{"action": "subscribe", "jobId": "…"}` message."""
    try:
        message = json.loads(body) if isinstance(body, str) else None
    except ValueError:
        message = None
    job_id = message.get("jobId") if isinstance(message, dict) else None
    if not isinstance(job_id, str):
        raise errors.ValidationError('send {"action": "subscribe", "jobId": "<job id>"}')
    return job_id


def _error(exc: Exception, route: str) -> dict[str, Any]:
    status, code = status_of(exc, _OVERRIDES)
    message = str(exc) if status < 500 else "the job store is unavailable; retry later"
    level = logging.WARNING if status >= 500 else logging.INFO
    event(log, "ws.refused", level, route=route, status=status, error=type(exc).__name__)
    return {"statusCode": status, "body": dumps({"error": {"code": code, "message": message}})}
