"""`core.errors` classes -> (HTTP status, error code), for the HTTP apps and the WebSocket
Lambda alike. No Starlette here: the WebSocket Lambda imports it without the web stack."""

from __future__ import annotations

from collections.abc import Mapping

from core import errors
from core.auth import KeySetUnavailableError

# The most specific class wins (looked up in MRO order).
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


def status_of(
    exc: Exception, overrides: Mapping[type[Exception], tuple[int, str]] | None = None
) -> tuple[int, str]:
    """(status, code) of `exc`: its nearest class in `overrides`, then in `ERRORS`; else 500."""
    table = {**ERRORS, **(overrides or {})}
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return 500, "internal_error"
