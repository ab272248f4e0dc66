"""The Upstash-REST-compatible gateway: a Starlette app in front of a real Redis/Valkey.

What it serves (UPSTASH_REST.md §15 is the checklist; choices where Upstash is silent):

- `POST|PUT /` with a JSON array `["CMD", ...]`; `POST /pipeline` and `POST /multi-exec`
  with an array of arrays; path style `GET|HEAD|POST|PUT /cmd/arg/...`, where a POST/PUT
  body is the last argument and query pairs (`?EX=100`) follow it. Any Content-Type.
- Auth by `Authorization: Bearer <token>` or `?_token=<token>`. A missing or wrong token is
  `401 {"error": "Unauthorized"}` (the text SDK users saw from Upstash; the docs also show
  `WRONGPASS ...`, clients only rely on 401 + `error`). An optional read-only token runs
  reads only; anything else is `400 {"error": "NOPERM ..."}` (`devstack.read_only`).
- `200 {"result": ...}`; a command error is `400 {"error": "<server text>"}`; in a
  pipeline or transaction each failed entry is `{"error": ...}` without `result`, still 200.
  A transaction that fails when queued (or holds a refused command) is one 400 error.
  Refused commands (see `devstack.commands`) are 400 and never reach the backend.
  A malformed body is 400; a body over `max_request_bytes` is
  `400 {"error": "ERR max request size exceeded"}`; methods other than GET/HEAD/POST/PUT
  are `405 {"error": "Method Not Allowed"}`. An unreachable or silent backend is
  `500 {"error": "ERR backend unavailable: ..."}` after at most `backend_timeout_s`.
- `Upstash-Encoding: base64` per `devstack.resp`; every response carries a fresh
  `Upstash-Sync-Token` (opaque; an empty request header is accepted and ignored, since a
  single server has no replica to wait for). `Upstash-Response-Format` other than `json`
  is refused with 400 (raw RESP2 output is not implemented).

Nothing is logged per request: paths and queries can carry tokens and values.
`devstack.server.GatewayServer` runs the app under uvicorn in a background thread.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from devstack.backend import Backend, BackendUnavailable, QueueError, Reply
from devstack.commands import (
    RequestError,
    parse_command,
    parse_pipeline,
    path_command,
    refusal,
)
from devstack.read_only import ReadOnlyAccess
from devstack.resp import encode_entry
from devstack.scripts import Prepared, Scripts

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "create_app"]

DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024  # Upstash Free and pay-as-you-go
_METHODS = ("GET", "HEAD", "POST", "PUT")
_BATCH_PATHS = (b"/pipeline", b"/multi-exec")
_log = logging.getLogger(__name__)


class Reject(Exception):
    """Answer the request with `{"error": message}` and this status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class Gateway:
    """Request handling; one instance per app, holding the backend pool and script SHAs."""

    def __init__(
        self,
        backend: Backend,
        token: str,
        read_only_token: str | None,
        max_request_bytes: int,
        read_only: ReadOnlyAccess,
    ) -> None:
        self.backend = backend
        self._tokens = {token.encode(): "full"}
        if read_only_token:
            self._tokens[read_only_token.encode()] = "read"
        self._max_request_bytes = max_request_bytes
        self._scripts = Scripts()
        self._read_only = read_only
        self._epoch = secrets.token_hex(4)
        self._serial = itertools.count(1)

    async def close(self) -> None:
        await self._read_only.close()
        await self.backend.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A plain ASGI endpoint, so Starlette routes every method here and the 405 is ours.
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        try:
            response = await self._dispatch(request)
        except Reject as exc:
            response = _error(exc.status, str(exc), exc.headers)
        except RequestError as exc:
            response = _error(400, str(exc))
        except BackendUnavailable as exc:
            response = _error(500, f"ERR backend unavailable: {exc}")
        except Exception:
            _log.exception("gateway: unexpected failure")  # the traceback, never the request
            response = _error(500, "ERR internal gateway error")
        response.headers["Upstash-Sync-Token"] = f"{self._epoch}-{next(self._serial)}"
        return response

    async def _dispatch(self, request: Request) -> Response:
        method = request.method
        if method not in _METHODS:
            raise Reject(405, "Method Not Allowed", {"Allow": ", ".join(_METHODS)})
        role = self._authenticate(request)
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = b"/" + raw_path.lstrip(b"/")  # "//pipeline": a base URL ending in "/"
        query = request.scope.get("query_string", b"")
        body = await self._read_body(request, len(path) + len(query))
        response_format = request.headers.get("upstash-response-format", "json").lower()
        if response_format != "json":
            raise Reject(400, f"ERR unsupported Upstash-Response-Format: {response_format}")
        base64 = request.headers.get("upstash-encoding", "").lower() == "base64"
        if path in _BATCH_PATHS:
            if method not in ("POST", "PUT"):
                raise Reject(405, "Method Not Allowed", {"Allow": "POST, PUT"})
            commands = parse_pipeline(_load_json(body))
            if path == b"/pipeline":
                return JSONResponse(await self._pipeline(commands, role, base64))
            return JSONResponse(await self._transaction(commands, role, base64))
        if path == b"/" and method in ("POST", "PUT"):
            args = parse_command(_load_json(body))
        else:
            args = path_command(path, body if method in ("POST", "PUT") else None, query)
        return await self._single(args, role, base64)

    def _authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else None
        if given is None:
            given = request.query_params.get("_token")
        if given:
            offered = given.encode()
            for token, role in self._tokens.items():
                if hmac.compare_digest(offered, token):
                    return role
        raise Reject(401, "Unauthorized")

    async def _read_body(self, request: Request, already: int) -> bytes:
        """The body, or `Reject` past the cap (read to the end, so the client sees the 400)."""
        size, chunks, over = already, [], False
        async for chunk in request.stream():
            size += len(chunk)
            over = over or size > self._max_request_bytes
            if not over:
                chunks.append(chunk)
        if over:
            raise Reject(400, "ERR max request size exceeded")
        return b"".join(chunks)

    async def _check(self, args: list[bytes], role: str) -> str | None:
        """Why `args` may not run, or None."""
        reason = refusal(args)
        if reason is None and role == "read":
            reason = await self._read_only.denial(args)
        return reason

    async def _backend(self, role: str) -> Backend:
        """The read-only token's commands run as a server user that can only read."""
        return await self._read_only.backend() if role == "read" else self.backend

    async def _single(self, args: list[bytes], role: str, base64: bool) -> Response:
        reason = await self._check(args, role)
        if reason is not None:
            raise Reject(400, reason)
        prepared = self._scripts.prepare(args)
        backend = await self._backend(role)
        entry = encode_entry(prepared.finish(await backend.execute(prepared.args)), base64)
        return JSONResponse(entry, status_code=400 if "error" in entry else 200)

    async def _pipeline(
        self, commands: Sequence[list[bytes]], role: str, base64: bool
    ) -> list[dict[str, Any]]:
        entries: list[dict[str, Any] | None] = []
        forwarded: list[tuple[int, Prepared]] = []
        for index, args in enumerate(commands):
            reason = await self._check(args, role)
            if reason is not None:
                entries.append({"error": reason})
            else:
                entries.append(None)
                forwarded.append((index, self._scripts.prepare(args)))
        if forwarded:
            backend = await self._backend(role)
            replies = await backend.pipeline([p.args for _, p in forwarded])
            for (index, prepared), reply in zip(forwarded, replies, strict=True):
                entries[index] = encode_entry(prepared.finish(reply), base64)
        return [e for e in entries if e is not None]

    async def _transaction(
        self, commands: Sequence[list[bytes]], role: str, base64: bool
    ) -> list[dict[str, Any]]:
        for args in commands:
            reason = await self._check(args, role)
            if reason is not None:
                raise Reject(400, reason)  # like a queue-time error: nothing runs
        if not commands:
            return []
        prepared = [self._scripts.prepare(args) for args in commands]
        try:
            backend = await self._backend(role)
            replies: list[Reply] = await backend.transaction([p.args for p in prepared])
        except QueueError as exc:
            raise Reject(400, str(exc)) from None
        return [encode_entry(p.finish(r), base64) for p, r in zip(prepared, replies, strict=True)]


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise RequestError("ERR failed to parse the request body as JSON") from None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    redis_url: str,
    token: str,
    *,
    read_only_token: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    backend_timeout_s: float = 10.0,
) -> Starlette:
    """The gateway for the server at `redis_url`, accepting `token` (and `read_only_token`)."""
    if not token:
        raise ValueError("the gateway needs a non-empty token")
    backend = Backend(redis_url, timeout_s=backend_timeout_s)
    read_only = ReadOnlyAccess(backend, redis_url, backend_timeout_s)
    gateway = Gateway(backend, token, read_only_token, max_request_bytes, read_only)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.close()

    app = Starlette(routes=[Route("/{path:path}", gateway)], lifespan=lifespan)
    app.state.gateway = gateway
    return app
