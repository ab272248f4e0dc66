"""Structured JSON logs, one object per line, carrying the request id and job id in context.

`event(logger, "job.acked", job_id=..., ms=...)` writes `{"time", "level", "logger", "event",
...}` plus whatever `bind()` put in context (the request id of the invocation, the job id).

Secrets never reach a line. Three nets, applied to the whole rendered line:
- fields (at any depth) named like a credential (`token`, `secret`, `authorization`, ...)
  are masked;
- bearer tokens, JWT-shaped strings, URL passwords and credential-named query parameters
  (`?api_key=...`) are masked wherever they appear, free text included;
- the values of the secret settings (`UPSTASH_REDIS_REST_TOKEN`, `AUTH_JWT_SECRET`,
  `METRICS_SCRAPE_TOKEN`, `REBALANCE_WEBHOOK_SECRET`, the password in `REDIS_URL`) and any
  value given to `register_secrets` are replaced. The environment is read once, at the first
  line (like the settings, once per process): re-reading it at every line cost ten times a
  bare `json.dumps`. Whoever changes those variables later calls `refresh_secrets()` (tests
  do, through `tests.support.caches.reset_caches`).

Inside AWS Lambda every line also carries `function_name`, `cold_start` (true for the lines of
the process's first invocation and of its init), `request_id` (bound by the handler, or set on
the record by the runtime's own log filter) and, when Lambda passes one (X-Ray tracing),
`trace_id`: what CloudWatch Logs Insights needs to group a cold start or follow a trace.

Inside AWS Lambda the runtime has already installed a handler on the root logger, which
writes to CloudWatch with its own framing; under `sls invoke local` (`IS_LOCAL=true`) the
wrapper that imports the handler has called `logging.basicConfig()`. Either way `configure`
gives the host's handler our formatter instead of adding a second one, so every record is
written once.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlparse

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context")
_SECRET_WORDS = (
    "token",
    "secret",
    "password",
    "authorization",
    "signature",
    "api_key",
    "apikey",
    "cookie",
    "credential",
)
# Variables whose values are secrets (the `repr=False` fields of `core.settings.Settings`).
SECRET_VARIABLES = (
    "UPSTASH_REDIS_REST_TOKEN",
    "AUTH_JWT_SECRET",
    "METRICS_SCRAPE_TOKEN",
    "REBALANCE_WEBHOOK_SECRET",
)
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20)[A-Za-z0-9._~+/=-]{12,}")
# Credentials inside URLs, which error texts quote: the password of `scheme://user:pw@host`,
# and query parameters named like a credential (`?api_key=...`, `&token=...`, `&sig=...`).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_URL_PARAM = re.compile(
    r"(?i)([?&;][\w.-]*(?:key|token|secret|password|passwd|signature|sig|auth|credential)"
    r"[\w.-]*=)[^&#\s\"']+"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_MIN_SECRET = 4  # shorter values would mask ordinary words
MASK = "***"
_secrets: set[str] = set()
# What `redact` replaces: each known secret with its JSON-escaped form ("" when the same),
# longest first so that a secret containing another is masked whole. None: build it again.
_known: tuple[tuple[str, str], ...] | None = None
# Held while `_known` is rebuilt or dropped, so that a value registered during a rebuild is
# never lost to the rebuild's older snapshot.
_known_lock = threading.Lock()
# The first request id this process logged: its lines (and the init's) are the cold start.
_first_request: list[str] = []


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def register_secrets(*values: str) -> None:
    """Values that must never appear in a log line (tokens, signing secrets)."""
    global _known
    with _known_lock:
        _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET)
        _known = None


def refresh_secrets() -> None:
    """Read the secret variables from the environment again, at the next line."""
    global _known
    with _known_lock:
        _known = None


def _known_secrets() -> tuple[tuple[str, str], ...]:
    global _known
    known = _known
    if known is not None:
        return known
    with _known_lock:
        if _known is None:
            found = sorted(_secrets | _environment_secrets(), key=len, reverse=True)
            _known = tuple((s, _escaped(s)) for s in found)
        return _known


def _escaped(secret: str) -> str:
    """`secret` as it appears inside a JSON string, or "" when that is the same text."""
    escaped = json.dumps(secret, ensure_ascii=False)[1:-1]
    return "" if escaped == secret else escaped


def _environment_secrets() -> set[str]:
    found = {os.environ.get(name, "") for name in SECRET_VARIABLES}
    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url:
        found |= {redis_url, urlparse(redis_url).password or ""}
    return {s for s in found if len(s) >= _MIN_SECRET}


def redact(text: str) -> str:
    """`text` with every known secret, bearer token and JWT replaced by `***`."""
    for secret, escaped in _known_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
        if escaped and escaped in text:
            text = text.replace(escaped, MASK)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _URL_PARAM.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _JWT.sub(MASK, text)


def mask(value: Any) -> Any:
    """Mask credential-named fields in nested dicts and lists."""
    if isinstance(value, Mapping):
        return {k: MASK if _is_secret_name(k) else mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


def _is_secret_name(key: Any) -> bool:
    lowered = str(key).lower()
    return any(word in lowered for word in _SECRET_WORDS)


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add `fields` to every log line written inside the block."""
    token = _context.set({**_context.get({}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log the event `name` with structured `fields`."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per record, redacted as a whole."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            **_lambda_fields(record),
            **_context.get({}),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(mask(data), default=str, ensure_ascii=False))


def _lambda_fields(record: logging.LogRecord) -> dict[str, Any]:
    """function_name, cold_start, request_id and trace_id of the invocation, in Lambda only."""
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    if not function:
        return {}
    # The runtime's LambdaLoggerFilter sets `aws_request_id` on records of its own handler.
    request_id = str(_context.get({}).get("request_id") or getattr(record, "aws_request_id", ""))
    fields: dict[str, Any] = {"function_name": function, "cold_start": _is_cold(request_id)}
    if request_id:
        fields["request_id"] = request_id
    trace_id = _trace_id(os.environ.get("_X_AMZN_TRACE_ID", ""))
    if trace_id:
        fields["trace_id"] = trace_id
    return fields


def _is_cold(request_id: str) -> bool:
    if not request_id:
        return not _first_request  # before any invocation: the init
    if not _first_request:
        _first_request.append(request_id)
    return _first_request[0] == request_id


def _trace_id(header: str) -> str:
    """`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=…;Sampled=1` -> the Root."""
    for part in header.split(";"):
        key, _, value = part.partition("=")
        if key.strip() == "Root":
            return value.strip()
    return ""


def _hosted() -> bool:
    """A Lambda function whose host owns the root logger: the runtime (`AWS_LAMBDA_RUNTIME_API`)
    or `sls invoke local` (`IS_LOCAL`). Tests and `make dev` set neither: their handlers stay."""
    if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return False
    return bool(os.environ.get("AWS_LAMBDA_RUNTIME_API")) or os.environ.get("IS_LOCAL") == "true"


def configure(level: str = "INFO", *, stream: IO[str] | None = None) -> None:
    """JSON lines on stderr (or `stream`); idempotent; called by entry points, never at import.

    In Lambda and under `sls invoke local`, the host's root handler is reused (reformatted),
    never doubled.
    """
    root = logging.getLogger()
    root.setLevel(level)
    # A line per Upstash request would drown the job events; their failures surface as ours.
    # Mangum's "GET /path 200" repeats our `http.request` line, which has the request id.
    for chatty in ("httpx", "httpcore", "mangum.http"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    if _hosted() and root.handlers:
        for host_handler in root.handlers:
            host_handler.setFormatter(JsonFormatter())
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
