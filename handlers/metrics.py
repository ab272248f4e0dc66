"""Lambda: the metrics routes.

- `GET /api/agent/rebalance/metrics?days=N`: the JSON summary (`core.metrics`), for
  operators: a JWT whose `scope`/`scp` holds `METRICS_READ_SCOPE` (403 otherwise); `days` an
  integer 1..7 (default 7) or 422; counted against the caller's read limit (429 past it).
- `GET /api/agent/rebalance/metrics/prometheus`: the Prometheus text format, for a scraper
  holding `METRICS_SCRAPE_TOKEN` as its bearer token (401 otherwise, or when it is unset).

Each answers in one Redis round trip. `routes` are literal paths: compose them before
`/api/agent/rebalance/{jobId}` so that they win.
"""

from __future__ import annotations

import hmac

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core import metrics, prometheus
from core.auth import bearer_token, require_scope
from core.errors import AuthError, ValidationError
from core.rate_limit import ReadLimit
from handlers import _web
from handlers.paths import METRICS_PATH, PROMETHEUS_PATH


def get_summary(call: _web.Call) -> Response:
    """The metrics summary over the last `days` UTC days (operators only)."""
    principal = call.principal()
    require_scope(principal, call.settings.metrics_read_scope)
    days = _days(call.request.query_params.get("days"))
    limit = ReadLimit.for_user(call.settings, principal.user_id)
    return JSONResponse(metrics.get_metrics_summary(days, client=call.client, limit=limit))


def get_prometheus(call: _web.Call) -> Response:
    """All-time counters, gauges and the execution-time histogram for Prometheus."""
    expected = call.settings.metrics_scrape_token
    token = bearer_token(call.request.headers.get("authorization"))
    # Constant-time comparison; an unset token closes the route rather than opening it.
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise AuthError("invalid scrape token")
    body = prometheus.render_prometheus(metrics.get_prometheus_snapshot(client=call.client))
    return Response(body, media_type=prometheus.CONTENT_TYPE)


def _days(raw: str | None) -> int:
    if raw is None:
        return metrics.MAX_DAYS
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3):
        raise ValidationError(f"days must be an integer from 1 to {metrics.MAX_DAYS}")
    return int(raw)  # the range is checked by core.metrics


routes = [
    Route(METRICS_PATH, _web.endpoint(get_summary), methods=["GET"]),
    Route(PROMETHEUS_PATH, _web.endpoint(get_prometheus), methods=["GET"]),
]
app = _web.create_app(routes)
handler = _web.create_handler(app)
