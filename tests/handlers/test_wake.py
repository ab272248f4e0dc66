"""Wake on submit: the submit handler invokes the drain function asynchronously (moto's Lambda),
once for a crowd of submits into an idle queue, never while a drain runs."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from moto import mock_aws

from core import elastic, keys
from core.elastic import Crew, ElasticOptions
from core.redis import RestClient
from devstack.lambda_events import LambdaContext, apigw_event
from tests.bodies import rebalance
from tests.handlers.helpers import TestClient, api_app, auth
from tests.support.aws import offline_aws

PATH = "/api/agent/rebalance"
DRAIN = "agent-rebalance-test-drain"


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handlers/drain.py", "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


@pytest.fixture
def invokes(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The drain function in moto's Lambda, the submit route with DRAIN_WAKE; yields the
    parameters of every Invoke call the process makes."""
    for name, value in {
        "DRAIN_WAKE": "true",
        "DRAIN_FUNCTION_NAME": DRAIN,
        "RATE_LIMIT_MAX": "1000",
    }.items():
        monkeypatch.setenv(name, value)
    offline_aws(monkeypatch)
    from core.settings import get_settings

    get_settings.cache_clear()
    with mock_aws(config={"lambda": {"use_docker": False}}):
        role = boto3.client("iam").create_role(RoleName="drain", AssumeRolePolicyDocument="{}")
        boto3.client("lambda").create_function(
            FunctionName=DRAIN,
            Runtime="python3.12",
            Role=role["Role"]["Arn"],
            Handler="handlers/drain.handler",
            Code={"ZipFile": _zip()},
        )
        elastic.lambda_client.cache_clear()
        seen: list[dict[str, Any]] = []
        elastic.lambda_client().meta.events.register(
            "provide-client-params.lambda.Invoke", lambda params, **_: seen.append(dict(params))
        )
        yield seen
        elastic.lambda_client.cache_clear()
    get_settings.cache_clear()


def test_a_submit_into_an_idle_queue_invokes_the_drain_once(
    invokes: list[dict[str, Any]], backend
) -> None:
    """The first submit invokes the drain function (Event, our wake payload); the next ones,
    inside the wake lock, do not."""
    client = TestClient(api_app())
    assert client.post(PATH, json=rebalance(n=1), headers=auth()).status_code == 202
    assert invokes == [
        {
            "FunctionName": DRAIN,
            "InvocationType": "Event",
            "Payload": json.dumps({"wake": "submit", "token": ""}).encode(),
        }
    ]
    assert elastic.role_of(json.loads(invokes[0]["Payload"]))[0] == elastic.WOKEN
    assert client.post(PATH, json=rebalance(n=2), headers=auth()).status_code == 202
    assert len(invokes) == 1
    assert backend.get(keys.awake_key(keys.REQUEST_QUEUE)) == "~wake"


def test_fifty_concurrent_submits_wake_exactly_once(invokes: list[dict[str, Any]], backend) -> None:
    """50 submits at once into an idle queue: 50 jobs, one invoke."""
    client = TestClient(api_app())

    def submit(i: int) -> int:
        return client.post(PATH, json=rebalance(i=i), headers=auth(f"user-{i}")).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(submit, range(50)))
    assert statuses == [202] * 50
    assert backend.llen(keys.REQUEST_QUEUE) == 50
    assert len(invokes) == 1 and invokes[0]["FunctionName"] == DRAIN


def test_no_invoke_while_a_drain_runs(
    invokes: list[dict[str, Any]], rest: RestClient, backend
) -> None:
    """A drain that beats keeps every submit from invoking another."""
    crew = Crew(rest, ElasticOptions(wake=True))
    assert crew.join() is None
    try:
        client = TestClient(api_app())
        for i in range(5):
            assert client.post(PATH, json=rebalance(i=i), headers=auth()).status_code == 202
    finally:
        crew.close()
    assert invokes == []


def test_the_lambda_entry_point_wakes_too(invokes: list[dict[str, Any]], backend) -> None:
    """Through Mangum, as API Gateway calls it: 202, and the drain invoked."""
    from handlers.submit import handler

    event = apigw_event("POST", PATH, body=json.dumps(rebalance()), headers=auth())
    event["headers"]["content-type"] = "application/json"
    assert handler(event, LambdaContext())["statusCode"] == 202
    assert [call["FunctionName"] for call in invokes] == [DRAIN]


def test_a_failed_invoke_still_answers_202(
    invokes: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, backend
) -> None:
    """An unknown function (or any AWS error) is logged; the job is stored and answered."""
    from core.settings import get_settings

    monkeypatch.setenv("DRAIN_FUNCTION_NAME", "no-such-function")
    get_settings.cache_clear()
    response = TestClient(api_app()).post(PATH, json=rebalance(), headers=auth())
    assert response.status_code == 202
    assert [call["FunctionName"] for call in invokes] == ["no-such-function"]
    assert backend.llen(keys.REQUEST_QUEUE) == 1
