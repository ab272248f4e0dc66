"""`sls deploy` and `sls remove` end to end, against a moto server on the loopback.

osls talks to AWS through SDK v3, which honours `AWS_ENDPOINT_URL`: the very CLI a user runs
creates the stack, uploads the artifacts and removes it all again, offline, with no account.
The server runs in this process (a thread), so that its template validation can be told to
fail on cfn-lint *errors* only, as CloudFormation does: moto otherwise refuses the first
finding, a framework warning included (see test_cfn_lint.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.cloudformation import models as cloudformation_models
from moto.server import ThreadedMotoServer

from tests.e2e.helpers import SECRETS, Build, run_sls, sls_environ

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    # Moto's CloudFormation warns of each type it skips (API Gateway v2, alarms, ...; the
    # in-process deploy test replays and asserts them): not this test's subject.
    pytest.mark.filterwarnings("ignore:Tried to parse .* not supported by moto:UserWarning"),
]

STACK = "agent-rebalance-prod"


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server on a kernel-chosen loopback port, validating like CloudFormation."""
    lint = cloudformation_models.validate_template_cfn_lint

    def errors_only(template: str) -> list[Any]:
        return [m for m in lint(template) if m.rule.id.startswith("E")]

    monkeypatch.setattr(cloudformation_models, "validate_template_cfn_lint", errors_only)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _sls(build: Build, endpoint: str, home: Any, *args: str) -> str:
    env = {**sls_environ(home), "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1"}
    run = run_sls(build.tree, env, *args, "--stage", "prod", timeout=240)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"sls {' '.join(args)} failed ({run.returncode}):\n{output}"
    return output


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_sls_deploy_then_remove_against_moto(
    build: Build, endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Deploy the package: a tagged stack, four functions, artifacts without a secret value;
    remove it: the stack and bucket go, the log groups stay."""
    home = tmp_path_factory.mktemp("sls-moto-home")
    _sls(build, endpoint, home, "deploy", "--package", str(build.folder))
    cfn = _client("cloudformation", endpoint)
    (stack,) = cfn.describe_stacks(StackName=STACK)["Stacks"]
    assert stack["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    tags = {t["Key"]: t["Value"] for t in stack["Tags"]}
    assert {"service": tags.get("service"), "stage": tags.get("stage")} == {
        "service": "agent-rebalance",
        "stage": "prod",
    }
    functions = {
        f["FunctionName"] for f in _client("lambda", endpoint).list_functions()["Functions"]
    }
    assert functions == {
        f"{STACK}-{name}" for name in ("submit", "status", "metrics", "drain", "ws")
    }
    bucket = cfn.describe_stack_resource(
        StackName=STACK, LogicalResourceId="ServerlessDeploymentBucket"
    )["StackResourceDetail"]["PhysicalResourceId"]
    s3 = _client("s3", endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.endswith("/agent-rebalance.zip") for k in keys)
    assert any(k.endswith("/serverless-state.json") for k in keys)
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert not [name for name, value in SECRETS.items() if value.encode() in body], key

    _sls(build, endpoint, home, "remove")
    assert STACK not in {
        s["StackName"]
        for s in cfn.list_stacks()["StackSummaries"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    }
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    groups = {
        g["logGroupName"] for g in _client("logs", endpoint).describe_log_groups()["logGroups"]
    }
    assert f"/aws/lambda/{STACK}-drain" in groups and f"/aws/http-api/{STACK}" in groups
