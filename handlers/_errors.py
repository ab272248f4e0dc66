"""The HTTP error model: every failure answers `{"error": {"code", "message", "details"?}}`.

- `HttpError`: an edge-only failure (malformed JSON, size, media type) carrying its answer.
- `core.errors` classes answer the status and code of `handlers._codes.ERRORS` (the most
  specific class wins). A `ValidationError` of the body adds `details`, one `{"loc", "msg"}`
  per bad field; 429 and 503 carry `Retry-After`, 401 a `WWW-Authenticate`.
- `EXCEPTION_HANDLERS`: what `create_app` gives Starlette: the domain errors, `HttpError`,
  Starlette's own 404/405, and anything unexpected as a 500 whose body never carries the
  exception text (the text goes to the log).
- `error_response(status, code, message, headers, details)` builds an error body directly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core import errors
from core.log import event, get_logger
from handlers._codes import status_of

log = get_logger("handlers.http")


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


async def _on_core_error(request: Request, exc: Exception) -> Response:
    status, code = status_of(exc)
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


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

# Starlette picks the handler of the nearest class in the exception's MRO.
EXCEPTION_HANDLERS: dict[Any, ExceptionHandler] = {
    errors.RebalanceError: _on_core_error,
    HttpError: _on_http_error,
    HTTPException: _on_starlette_error,
    Exception: _on_unexpected,
}
