"""The opt-in contract run against a real Upstash database (see this package's conftest)."""

from __future__ import annotations

import pytest
from upstash_redis import Redis

from tests.devstack.conftest import CONTRACT, CONTRACT_TOKEN, CONTRACT_URL


def test_contract_database_answers() -> None:
    """With UPSTASH_CONTRACT_URL/_TOKEN set, the SDK tests also ran against that database."""
    if not CONTRACT:
        pytest.skip(
            "UPSTASH_CONTRACT_URL/UPSTASH_CONTRACT_TOKEN unset: the SDK tests ran against the "
            "local gateway only, not against a real Upstash database"
        )
    client = Redis(CONTRACT_URL, CONTRACT_TOKEN, rest_retries=0, allow_telemetry=False)
    try:
        assert client.ping() == "PONG"
    finally:
        client.close()
