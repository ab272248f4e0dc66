"""`GET /api/agent/rebalance/{jobId}`: a job's status, for its owner only."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.submit import get_status
from handlers import _web

STATUS_PATH = "/api/agent/rebalance/{jobId}"


def status(call: _web.Call) -> Response:
    """Authenticate, then read the job (unknown and foreign ids are the same 404)."""
    principal = call.principal()
    job_id = call.request.path_params["jobId"]
    return JSONResponse(get_status(call.client, principal.user_id, job_id))


routes = [Route(STATUS_PATH, _web.endpoint(status), methods=["GET"], name="status")]
app = _web.create_app(routes)
handler = _web.create_handler(app)
