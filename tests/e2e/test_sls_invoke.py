"""`sls invoke local` of every function against the local stack, from the events of `events/`.

Each call is a real `osls` run: serverless.yml is resolved, the function's environment
built from it and from `-e` options, and the handler imported by `python3` from the
project's virtualenv. The sample events carry an expired token, so each test mints a fresh
one and swaps it in, as docs/deploy.md tells users to.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
import valkey

from core.auth import mint_token
from tests.e2e.helpers import Invocation, Sls, for_job, load_event, with_bearer

if TYPE_CHECKING:
    from tests.conftest import Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

USER = "agent-7f3a"
PUBLIC_KEY = "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"
# A drain that returns once the queue has been idle for a moment, bounded by a short context.
DRAIN_ENV = {"DRAIN_IDLE_EXIT_MS": "300", "DRAIN_POLL_INTERVAL_MS": "50", "SIM_LATENCY_MS": "0"}
DRAIN_CONTEXT = {"timeout": 20}


def _token(stack: Stack, sub: str = USER) -> str:
    # The user is an operator too, so that the same token reads the metrics summary.
    return mint_token(sub, PUBLIC_KEY, stack.env()["AUTH_JWT_SECRET"], scope="metrics:read")


def _logged_once(answer: Invocation) -> list[str]:
    """The events of the invocation's log lines, having checked that each line was written
    once, as our JSON: not again by a second root handler (`sls invoke local`'s wrapper calls
    `logging.basicConfig()`, whose lines read `INFO:logger:event`)."""
    plain = re.findall(r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):.*$", answer.output, re.MULTILINE)
    assert not plain, answer.output
    lines = [line for line in answer.output.splitlines() if line.startswith('{"time": ')]
    assert [line for line, n in Counter(lines).items() if n > 1] == [], answer.output
    return [json.loads(line)["event"] for line in lines]


def _submit(sls: Sls, stack: Stack, event: dict[str, Any], **env: str) -> str:
    """Invoke submit; assert the whole 202 answer; return the job id."""
    answer = sls.invoke("submit", event, stack.env(**env))
    assert answer.status == 202, answer.output
    body = answer.json()
    assert body == {
        "jobId": body["jobId"],
        "status": "queued",
        "statusUrl": f"/api/agent/rebalance/{body['jobId']}",
    }
    assert answer.headers["location"] == body["statusUrl"]
    assert answer.headers["content-type"] == "application/json"
    return str(body["jobId"])


def test_submit_status_drain_status_metrics_prometheus(
    sls: Sls, stack: Stack, backend: valkey.Valkey
) -> None:
    """A job goes through every function: 202, queued, drained, succeeded, counted, exported."""
    token = _token(stack)
    job_id = _submit(sls, stack, with_bearer(load_event("submit.json"), token))

    status_event = for_job(with_bearer(load_event("status.json"), token), job_id)
    queued = sls.invoke("status", status_event, stack.env())
    assert queued.status == 200, queued.output
    assert _logged_once(queued) == ["http.request"]
    assert queued.json()["jobId"] == job_id
    assert queued.json()["status"] == "queued"
    assert queued.json()["attempts"] == 0

    drained = sls.invoke(
        "drain", load_event("drain.json"), stack.env(**DRAIN_ENV), context=DRAIN_CONTEXT
    )
    assert _logged_once(drained).count("drain.metrics") == 1
    summary = drained.result
    assert summary["claimed"] == 1
    assert summary["succeeded"] == 1
    assert summary["retried"] == summary["dead"] == 0
    assert summary["stopReason"] == "idle"

    done = sls.invoke("status", status_event, stack.env())
    assert done.status == 200, done.output
    assert done.json()["status"] == "succeeded"
    assert done.json()["attempts"] == 1

    metrics_event = with_bearer(load_event("metrics.json"), token)
    assert metrics_event["queryStringParameters"] == {"days": "3"}
    metrics = sls.invoke("metrics", metrics_event, stack.env())
    assert metrics.status == 200, metrics.output
    counts = metrics.json()
    assert (counts["totalJobs"], counts["succeededJobs"], counts["failedJobs"]) == (1, 1, 0)
    assert counts["queueDepth"] == 0

    scrape = sls.invoke(
        "metrics",
        load_event("prometheus.json"),
        stack.env(METRICS_SCRAPE_TOKEN="dev-scrape-token"),
    )
    assert scrape.status == 200, scrape.output
    assert scrape.headers["content-type"].startswith("text/plain")
    samples = dict(
        line.rsplit(" ", 1)
        for line in scrape.result["body"].splitlines()
        if line and not line.startswith("#")
    )
    assert float(samples["agent_rebalance_jobs_submitted_total"]) == 1
    assert float(samples["agent_rebalance_jobs_succeeded_total"]) == 1


def test_authorizer_claims_event_needs_no_bearer_token(
    sls: Sls, stack: Stack, backend: valkey.Valkey
) -> None:
    """Behind a JWT authorizer the verified claims identify the caller; no header is read."""
    event = load_event("submit-authorizer.json")
    assert "authorization" not in event["headers"]
    trusted = {"AUTH_TRUST_AUTHORIZER": "true"}
    job_id = _submit(sls, stack, event, **trusted)

    # The claims' `sub` owns the job: a status read with the same claims finds it.
    status_event = for_job(load_event("status.json"), job_id)
    del status_event["headers"]["authorization"]
    status_event["requestContext"]["authorizer"] = copy.deepcopy(
        event["requestContext"]["authorizer"]
    )
    answer = sls.invoke("status", status_event, stack.env(**trusted))
    assert answer.status == 200, answer.output
    assert answer.json()["status"] == "queued"


def test_sample_event_token_is_expired_and_refused(
    sls: Sls, stack: Stack, backend: valkey.Valkey
) -> None:
    """The committed token has expired: used as is, the API answers 401, never a job."""
    answer = sls.invoke("submit", load_event("submit.json"), stack.env())
    assert answer.status == 401, answer.output
    assert answer.json()["error"]["code"]
    assert backend.dbsize() == 0


def test_any_http_api_v2_event_base64_body_query_strings_path_parameters(
    sls: Sls, stack: Stack, backend: valkey.Valkey
) -> None:
    """Not only the samples: a base64 body, extra query strings and another user's job id."""
    token = _token(stack, sub="user:with:colons*and\nnewline")
    submit = with_bearer(load_event("submit.json"), token)
    body = json.dumps({"targets": {"ETH": 1}, "metadata": {"portfolioId": "pf-β"}})
    submit["body"] = base64.b64encode(body.encode()).decode()
    submit["isBase64Encoded"] = True
    submit["headers"]["content-length"] = str(len(body.encode()))
    submit["rawQueryString"] = "source=agent&dryRun=false"
    submit["queryStringParameters"] = {"source": "agent", "dryRun": "false"}
    del submit["headers"]["idempotency-key"]
    job_id = _submit(sls, stack, submit)

    # The owner, with a query string the route ignores, and a URL-encoded path segment.
    status = for_job(with_bearer(load_event("status.json"), token), job_id)
    status["rawQueryString"] = "include=result&x=%2F"
    status["queryStringParameters"] = {"include": "result", "x": "/"}
    answer = sls.invoke("status", status, stack.env())
    assert answer.status == 200, answer.output
    assert answer.json()["jobId"] == job_id

    # Someone else gets the same 404 as for an unknown id.
    stranger = for_job(with_bearer(load_event("status.json"), _token(stack, sub="other")), job_id)
    assert sls.invoke("status", stranger, stack.env()).status == 404

    # `days` out of range, read from the query string: 422, not a 500.
    metrics = with_bearer(load_event("metrics.json"), token)
    metrics["rawQueryString"] = "days=9"
    metrics["queryStringParameters"] = {"days": "9"}
    answer = sls.invoke("metrics", metrics, stack.env())
    assert answer.status == 422, answer.output
    assert answer.json()["error"]["code"]


def test_make_invoke_runs_a_function_from_a_plain_shell(
    stack: Stack, backend: valkey.Valkey
) -> None:
    """The README's line works as pasted: no virtualenv on PATH, no VIRTUAL_ENV exported."""
    import os
    import subprocess
    from pathlib import Path

    from core import keys, queue
    from core.redis import RestClient

    repo = Path(__file__).resolve().parents[2]
    client = RestClient(stack.url, stack.token)
    job_id = queue.enqueue(keys.REQUEST_QUEUE, {"n": 1}, client=client)
    client.close()
    plain_path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(repo))
    )
    env = {
        name: value for name, value in os.environ.items()
        if name not in ("VIRTUAL_ENV", "PYTHONPATH") and not name.startswith(("AWS_", "UPSTASH_"))
    }  # fmt: skip
    env.update(
        PATH=plain_path, UPSTASH_REDIS_REST_URL=stack.url, UPSTASH_REDIS_REST_TOKEN=stack.token,
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1",
    )  # fmt: skip
    done = subprocess.run(
        # -o: the suite's own install is current; the test is about the shell, not pip
        ["make", "-s", "-o", ".venv/.installed", "-o", "node_modules/.installed", "invoke",
         "FN=drain", "EVENT=events/drain.json",
         "ARGS=-e DRAIN_IDLE_EXIT_MS=300 -e DRAIN_SAFETY_MARGIN_MS=0"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"succeeded": 1' in done.stdout, done.stdout[-2000:]
    assert json.loads(backend.get(keys.job_key(job_id)))["status"] == "succeeded"
