"""Structured JSON logs, one object per line, carrying the request id and job id in context.

`event(logger, "job.acked", job_id=..., ms=...)` writes `{"level", "logger", "event", ...}`
plus whatever `bind()` put in context (the request id of the invocation, the job id). Values
that look like secrets are never written: keys named like tokens or secrets are masked, and
so is any value equal to a configured secret (see `core.log.redact`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context")
_SECRET_WORDS = ("token", "secret", "password", "authorization", "signature")
_secrets: set[str] = set()


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def register_secrets(*values: str) -> None:
    """Values that must never appear in a log line (tokens, signing secrets)."""
    _secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add `fields` to every log line written inside the block."""
    token = _context.set({**_context.get({}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            **_context.get({}),
        }
        for key, value in getattr(record, "fields", {}).items():
            lowered = key.lower()
            data[key] = "***" if any(w in lowered for w in _SECRET_WORDS) else value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(data, default=str, ensure_ascii=False))


def configure(level: str = "INFO") -> None:
    """Send JSON lines to stderr; idempotent, called by entry points, never at import."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers = [h for h in root.handlers if not isinstance(h, logging.StreamHandler)]
    root.addHandler(handler)
    root.setLevel(level)
