"""Shared HTTP plumbing of the API handlers: app factory, error model, auth and body helpers.

A handler module is a few sync functions and this glue:

    from handlers import _web

    def submit(call: _web.Call) -> Response:
        principal = call.principal()          # 401 unless authenticated
        body = call.json()                    # 415 / 413 / 400, any JSON value
        ...                                   # core does the rest; its errors map to HTTP

    routes = [Route("/api/agent/rebalance", _web.endpoint(submit), methods=["POST"])]
    app = _web.create_app(routes)
    handler = _web.create_handler(app)

- `endpoint(func)` turns `func(call: Call) -> Response` into a Starlette endpoint: the body is
  read on the event loop (at most `MAX_BODY_BYTES` + 1 bytes, nothing when `Content-Length`
  is already over), then `func` runs with the sync core and the sync REST client: inline
  under Mangum (a Lambda serves one request at a time, so the worker-thread hop would only
  add latency), in Starlette's threadpool under uvicorn. No event loop is ever bound to an
  HTTP client, so a warm Lambda can run any number of invocations.
- `Call.principal()` authenticates (bearer JWT or API Gateway authorizer claims, see
  `core.auth`); `Call.json()` checks `Content-Type`, size and syntax; `Call.settings`,
  `Call.client` are the process-wide settings and Redis client.
- `create_app(routes)` maps every error to `{"error": {"code", "message"}}` (table `ERRORS`;
  a `ValidationError` of the body adds `details`, one `{"loc", "msg"}` per bad field):
  `HttpError` for edge-only failures, `core.errors` for the domain, Starlette's 404/405, and
  anything unexpected to a 500 whose body never carries the exception text. It also binds a
  request id (the Lambda's, or a fresh one) to the logs and the `X-Request-Id` header.
- `create_handler(app)` is `Mangum(app, lifespan="off")`, plus JSON logs inside Lambda.
- `error_response(status, code, message, headers)` builds an error body directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import errors
from core.auth import KeySetUnavailableError, Principal, authenticate
from core.log import bind, event, get_logger
from core.redis import RedisClient, get_client
from core.settings import Settings, get_settings

log = get_logger("handlers.http")

Endpoint = Callable[["Call"], Response]


class HttpError(Exception):
    """An edge-only failure (malformed JSON, size, media type) with its HTTP answer."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# core error -> (status, code); the most specific class wins (checked in MRO order).
ERRORS: dict[type[Exception], tuple[int, str]] = {
    errors.AuthError: (401, "unauthorized"),
    errors.ForbiddenError: (403, "forbidden"),
    errors.NotFoundError: (404, "not_found"),
    errors.ConflictError: (409, "conflict"),
    errors.IdempotencyConflictError: (422, "idempotency_conflict"),
    errors.ValidationError: (422, "validation_error"),
    errors.RateLimitedError: (429, "rate_limited"),
    errors.UpstashError: (503, "service_unavailable"),
    KeySetUnavailableError: (503, "service_unavailable"),
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
}
# Client-facing messages for server-side failures: the cause goes to the log, not the body.
_SAFE_MESSAGES = {
    # A submit that got this answer may have been stored: a retry with the same
    # Idempotency-Key answers that job instead of storing a second one.
    503: "the job store is unavailable; retry later (a submit: with the same Idempotency-Key)",
}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    """The one error body: `{"error": {"code", "message", "details"?}}`."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return JSONResponse({"error": error}, status, headers=headers)


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


def endpoint(func: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint that reads the body, then runs the sync `func`: inline in a
    Lambda, in the threadpool on a server that serves many requests at once."""
    from starlette.concurrency import run_in_threadpool

    async def run(request: Request) -> Response:
        settings = get_settings()
        body, too_large = await _read_body(request, settings.max_body_bytes)
        call = Call(request=request, body=body, too_large=too_large, settings=settings)
        if "aws.event" in request.scope:
            # Under Mangum a Lambda serves one request at a time: nothing else waits on this
            # loop, so the sync core runs inline and skips the worker-thread hop.
            return func(call)
        return await run_in_threadpool(func, call)

    run.__name__ = func.__name__
    run.__doc__ = func.__doc__
    return run


async def _read_body(request: Request, limit: int) -> tuple[bytes, bool]:
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


async def _on_core_error(request: Request, exc: Exception) -> Response:
    status, code = _core_status(exc)
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if status in (429, 503) and retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if status >= 500:
        event(log, "http.server_error", logging.WARNING, error=type(exc).__name__, detail=str(exc))
        message = _SAFE_MESSAGES.get(status, "internal error")
    else:
        message = str(exc)
    return error_response(status, code, message, headers, getattr(exc, "details", None))


def _core_status(exc: Exception) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return 500, "internal_error"


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _on_starlette_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # ConfigError lands here too: a deployment problem, logged with the variables it names.
    event(log, "http.error", logging.ERROR, error=type(exc).__name__, detail=str(exc))
    return error_response(500, "internal_error", "internal error")


class RequestContext:
    """ASGI middleware: bind a request id to the logs, echo it, log one line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        with bind(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                # Endpoints put the job they touched in `request.state`, for this line.
                job = {"job_id": job_id} if (job_id := scope.get("state", {}).get("job_id")) else {}
                event(
                    log,
                    "http.request",
                    method=scope.get("method"),
                    path=scope.get("path"),
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 2),
                    **job,
                )


def request_id_of(scope: Scope) -> str:
    """The Lambda request id under Mangum, API Gateway's id, or a fresh one locally."""
    context = scope.get("aws.context")
    rid = getattr(context, "aws_request_id", None)
    if isinstance(rid, str) and rid:
        return rid
    aws_event = scope.get("aws.event")
    if isinstance(aws_event, dict):
        rid = (aws_event.get("requestContext") or {}).get("requestId")
        if isinstance(rid, str) and rid:
            return rid
    return uuid.uuid4().hex


def create_app(routes: Sequence[BaseRoute]) -> Starlette:
    """A Starlette app over `routes` with the project's error model and request ids."""
    from starlette.middleware import Middleware

    app = Starlette(
        routes=list(routes),
        middleware=[Middleware(RequestContext)],
        exception_handlers={
            errors.RebalanceError: _on_core_error,
            HttpError: _on_http_error,
            HTTPException: _on_starlette_error,
            Exception: _on_unexpected,
        },
    )
    # A path with a trailing slash is a 404 in the error model, not a bodiless 307 that a
    # client would follow with its POST (and that API Gateway never sends anyway).
    app.router.redirect_slashes = False
    return app


def create_handler(app: Starlette) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda entry point for `app`; lifespan off (Mangum would run it per invocation).

    Inside Lambda (`AWS_LAMBDA_FUNCTION_NAME` set) the first invocation switches the logs to
    JSON lines; elsewhere (tests, the dev server) logging belongs to the entry point.
    """
    from mangum import Mangum

    _ensure_event_loop()  # Mangum's constructor would make one of its own, unreferenced
    mangum = Mangum(app, lifespan="off")

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        _configure_logging_once()
        _ensure_event_loop()
        return mangum(event, context)

    handler.mangum = mangum  # type: ignore[attr-defined]
    return handler


_loops = threading.local()


def _ensure_event_loop() -> None:
    """Mangum runs each invocation on `asyncio.get_event_loop()`: set the thread's own loop.

    Anything in the process that used `asyncio.run()` unsets the current loop when it ends;
    the next invocation would fail with "no current event loop". The loop is kept here, so
    one that is unset is set again, not collected with its sockets open.
    """
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)


_logging_ready = False


def _configure_logging_once() -> None:
    global _logging_ready
    if _logging_ready:
        return
    _logging_ready = True
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        from core.log import configure

        configure(get_settings().log_level)
