"""`sls invoke local` of the `ws` function with the WebSocket events of `events/`.

The samples carry an expired token and a placeholder job id: each test swaps in a fresh
token and a real job, as events/README.md tells users to.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import valkey

from core import keys
from core.auth import mint_token
from tests.e2e.helpers import Sls, load_event, with_bearer
from tests.e2e.test_sls_invoke import PUBLIC_KEY, USER, _submit

if TYPE_CHECKING:
    from tests.conftest import Stack

pytestmark = pytest.mark.slow


def test_connect_subscribe_disconnect(sls: Sls, stack: Stack, backend: valkey.Valkey) -> None:
    """The sample token is refused; a fresh one connects; subscribe answers the status;
    $disconnect forgets the connection."""
    refused = sls.invoke("ws", load_event("ws-connect.json"), stack.env())
    assert refused.status == 401, refused.output
    assert refused.json()["error"]["code"] == "unauthorized"

    token = mint_token(USER, PUBLIC_KEY, stack.env()["AUTH_JWT_SECRET"])
    job_id = _submit(sls, stack, with_bearer(load_event("submit.json"), token))
    connect = load_event("ws-connect.json")
    connect["queryStringParameters"] = {"token": token}
    assert sls.invoke("ws", connect, stack.env()).status == 200
    connection_id = connect["requestContext"]["connectionId"]
    assert backend.exists(keys.ws_conn_key(connection_id)) == 1

    subscribe = load_event("ws-subscribe.json")
    subscribe["body"] = json.dumps({"action": "subscribe", "jobId": job_id})
    answer = sls.invoke("ws", subscribe, stack.env())
    assert answer.status == 200, answer.output
    assert (answer.json()["jobId"], answer.json()["status"]) == (job_id, "queued")
    assert backend.hget(keys.WS_SUBS, job_id) == connection_id

    assert sls.invoke("ws", load_event("ws-disconnect.json"), stack.env()).status == 200
    assert backend.exists(keys.ws_conn_key(connection_id)) == 0
    assert backend.hexists(keys.WS_SUBS, job_id) == 0
