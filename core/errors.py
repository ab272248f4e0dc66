"""The one family of errors that `core` raises; handlers map them to HTTP at the edge."""

from __future__ import annotations

from typing import Any


class RebalanceError(Exception):
    """Base of every error `core` raises on purpose."""


class ConfigError(RebalanceError):
    """The environment is invalid. The message names every bad variable at once."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = dict(problems)
        lines = "; ".join(f"{name}: {why}" for name, why in sorted(self.problems.items()))
        super().__init__(f"invalid configuration: {lines}")


class UpstashError(RebalanceError):
    """Redis could not be reached, timed out, or answered with an error.

    Callers map it to `503` with `Retry-After`: nothing the client sent caused it.
    """

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthError(RebalanceError):
    """The bearer token is missing, malformed, forged or expired (`401`)."""


class ForbiddenError(RebalanceError):
    """A valid token without the right the route needs (`403`)."""


class RateLimitedError(RebalanceError):
    """The user is over the sliding-window limit (`429`)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class NotFoundError(RebalanceError):
    """No such job for this user: unknown and foreign ids look the same (`404`)."""


class ConflictError(RebalanceError):
    """The job is in a state that forbids the request, e.g. a cancel once it runs (`409`)."""

    def __init__(self, message: str, view: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.view = view


class ValidationError(RebalanceError):
    """Well-formed input of the wrong shape (`422`).

    `details`, when the request body is at fault: `[{"loc": [...], "msg": "..."}]`, one
    entry per bad field (`loc` from the body's top).
    """

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.details = details


class IdempotencyConflictError(ValidationError):
    """An `Idempotency-Key` reused by its user with a different body (`422`)."""


class PermanentJobError(RebalanceError):
    """Raised by a processor: the job can never succeed, dead-letter it now."""
