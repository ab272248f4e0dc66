"""`POST /api/agent/rebalance`: accept a rebalance request, answer `202` with its job id.

With `DRAIN_WAKE`, the submit script also says whether a drain is running; when none is,
this request wakes one (one asynchronous invoke; boto3 is loaded by that first wake only).
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.elastic import ElasticOptions, wake, wake_event
from core.submit import submit_job
from handlers import _web
from handlers.paths import STATUS_PATH, SUBMIT_PATH


def submit(call: _web.Call) -> Response:
    """Authenticate, then let core rate-limit, enqueue and record the job in one round trip."""
    principal = call.principal()
    submission = submit_job(
        call.client,
        call.settings,
        principal,
        call.json(),
        idempotency_key=call.request.headers.get("idempotency-key"),
    )
    call.request.state.job_id = submission.job_id
    if submission.wake:
        wake(ElasticOptions.from_settings(call.settings), wake_event("submit"))
    status_url = STATUS_PATH.format(jobId=submission.job_id)
    return JSONResponse(
        {"jobId": submission.job_id, "status": "queued", "statusUrl": status_url},
        status_code=202,
        headers={"Location": status_url},
    )


routes = [Route(SUBMIT_PATH, _web.endpoint(submit), methods=["POST"], name="submit")]
app = _web.create_app(routes)
handler = _web.create_handler(app)
