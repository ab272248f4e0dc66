"""The Lambda glue of the API handlers: endpoint adapter, app factory, request ids, Mangum.

A handler module is a few sync functions and this glue:

    from handlers import _web

    def submit(call: _web.Call) -> Response:
        principal = call.principal()          # 401 unless authenticated
        body = call.json()                    # 415 / 413 / 400, any JSON value
        ...                                   # core does the rest; its errors map to HTTP

    routes = [Route("/api/agent/rebalance", _web.endpoint(submit), methods=["POST"])]
    app = _web.create_app(routes)
    handler = _web.create_handler(app)

Its two neighbours hold the rest: `handlers._request` the request (`Call`, bounded body,
strict JSON), `handlers._errors` the error model (`HttpError`, `error_response`), with the
status table in `handlers._codes`, which the WebSocket Lambda shares.
`Call` and `error_response` are importable from here too.

- `endpoint(func)` turns `func(call: Call) -> Response` into a Starlette endpoint: the body is
  read on the event loop (at most `MAX_BODY_BYTES` + 1 bytes, nothing when `Content-Length`
  is already over), then `func` runs with the sync core and the sync REST client: inline
  under Mangum (a Lambda serves one request at a time, so the worker-thread hop would only
  add latency), in Starlette's threadpool under uvicorn. No event loop is ever bound to an
  HTTP client, so a warm Lambda can run any number of invocations.
- `create_app(routes)` gives the routes the error model and binds a request id (the
  Lambda's, or a fresh one) to the logs and the `X-Request-Id` header.
- `create_handler(app)` is `Mangum(app, lifespan="off")`, plus JSON logs inside Lambda.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.log import bind, event, get_logger
from core.settings import get_settings
from handlers._errors import EXCEPTION_HANDLERS, error_response
from handlers._request import Call, read_body

__all__ = ["Call", "create_app", "create_handler", "endpoint", "error_response"]

log = get_logger("handlers.http")

Endpoint = Callable[[Call], Response]


def endpoint(func: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint that reads the body, then runs the sync `func`: inline in a
    Lambda, in the threadpool on a server that serves many requests at once."""
    from starlette.concurrency import run_in_threadpool

    async def run(request: Request) -> Response:
        settings = get_settings()
        body, too_large = await read_body(request, settings.max_body_bytes)
        call = Call(request=request, body=body, too_large=too_large, settings=settings)
        if "aws.event" in request.scope:
            # Under Mangum a Lambda serves one request at a time: nothing else waits on this
            # loop, so the sync core runs inline and skips the worker-thread hop.
            return func(call)
        return await run_in_threadpool(func, call)

    run.__name__ = func.__name__
    run.__doc__ = func.__doc__
    return run


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
        exception_handlers=EXCEPTION_HANDLERS,
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


class _ThreadLoop:
    """A thread's own event loop, closed when the thread ends and its locals go."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        if not self.loop.is_closed():
            self.loop.close()


_loops = threading.local()


def _ensure_event_loop() -> None:
    """Mangum runs each invocation on `asyncio.get_event_loop()`: set the thread's own loop.

    Anything in the process that used `asyncio.run()` unsets the current loop when it ends;
    the next invocation would fail with "no current event loop". The loop is kept here, so
    one that is unset is set again, not collected with its sockets open.
    """
    held: _ThreadLoop | None = getattr(_loops, "held", None)
    if held is None or held.loop.is_closed():
        held = _loops.held = _ThreadLoop()
    asyncio.set_event_loop(held.loop)


_logging_ready = False


def _configure_logging_once() -> None:
    global _logging_ready
    if _logging_ready:
        return
    _logging_ready = True
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        from core.log import configure

        configure(get_settings().log_level)
