"""What a cold start loads: nothing of AWS's SDK, the tests or the local stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = (
    "boto3",
    "botocore",
    "valkey",
    "redis",
    "devstack",
    "cli",
    "schemathesis",
    "prometheus_client",
)


@pytest.mark.parametrize(
    "module",
    ["handlers.submit", "handlers.status", "handlers.metrics", "handlers.drain", "handlers.ws"],
)
def test_a_handler_cold_import_stays_lean(module: str) -> None:
    """boto3 never on the request path; prometheus_client only when a scrape renders."""
    probe = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        json.loads(
            subprocess.run(
                [sys.executable, "-c", probe], capture_output=True, text=True, check=True
            ).stdout
        )
    )
    assert not loaded & set(FORBIDDEN)
    if module in ("handlers.drain", "handlers.ws"):  # plain Lambdas: no web stack to load
        assert not loaded & {"starlette", "mangum"}


def test_the_request_models_load_on_first_use_not_at_cold_import() -> None:
    """Building the pydantic validators costs tens of ms: the first request pays, not import."""
    probe = (
        "import json, sys; import handlers.submit, handlers.status, handlers.metrics; "
        "print(json.dumps('core.models' in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) is False
