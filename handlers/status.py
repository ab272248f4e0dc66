"""`GET /api/agent/rebalance/{jobId}[?wait=N&since=STATUS]`: a job's status, owner only;
`DELETE` on the same path cancels it (a `queued` or `retrying` job never starts).

Without `wait` it is one read. With `wait` (1..5 s) it is a long poll for clients that watch
a job live: the answer comes as soon as the status differs from `since` (default: the
status at the first read) or is final, or when the wait is over. API Gateway cannot stream
a Lambda's answer, so watching is a loop of long polls. Every Redis read, each round trip
of a long poll included, counts against the caller's read limit (429 past it).
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.keys import REQUEST_QUEUE
from core.queue import QueuePolicy, cancel
from core.rate_limit import ReadLimit
from core.submit import parse_watch, public_view, watch_status
from handlers import _web
from handlers.paths import STATUS_PATH


def status(call: _web.Call) -> Response:
    """Authenticate, then read the job (unknown and foreign ids are the same 404)."""
    principal = call.principal()
    job_id = call.request.path_params["jobId"]
    call.request.state.job_id = job_id[:64]  # for the request's log line; bounded, it is input
    query = call.request.query_params
    wait_s, since = parse_watch(query.get("wait"), query.get("since"))
    limit = ReadLimit.for_user(call.settings, principal.user_id)
    view = watch_status(call.client, principal.user_id, job_id, wait_s, since, limit=limit)
    return JSONResponse(view)


def cancel_job(call: _web.Call) -> Response:
    """Authenticate, then cancel in one round trip: 200 with the status body, 404, or 409."""
    principal = call.principal()
    job_id = call.request.path_params["jobId"]
    call.request.state.job_id = job_id[:64]
    policy = QueuePolicy.from_settings(call.settings)
    view = cancel(call.client, REQUEST_QUEUE, principal.user_id, job_id, policy)
    return JSONResponse(public_view(view))  # a retrying job's lastError: redacted here too


routes = [
    Route(STATUS_PATH, _web.endpoint(status), methods=["GET"], name="status"),
    Route(STATUS_PATH, _web.endpoint(cancel_job), methods=["DELETE"], name="cancel"),
]
app = _web.create_app(routes)
handler = _web.create_handler(app)
