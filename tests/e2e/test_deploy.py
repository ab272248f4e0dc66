"""The package of `make package STAGE=prod`, deployed into moto in process, holds what it must.

Secrets live in (moto's) SSM with realistic values, and are also in the shell that built the
package: none may appear in the template, the state file, the zip or any bucket object; each
function's role may read exactly the parameters its environment names, and those resolve, at
its cold start, to the values. See moto_deploy.py for the deploy and the replay of what
moto's CloudFormation skips.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from core.settings import Settings
from tests.e2e.helpers import PARAMETERS, SECRETS, Build
from tests.e2e.moto_deploy import NOT_REPLAYED, SKIPPED, STACK, Deployed, deploy
from tests.support.aws import offline_aws

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

FUNCTIONS = {  # name: (handler, memory MB, timeout s)
    "submit": ("handlers/submit.handler", 512, 10),
    "status": ("handlers/status.handler", 256, 10),
    "metrics": ("handlers/metrics.handler", 256, 10),
    "drain": ("handlers/drain.handler", 256, 55),
}
UPSTASH = {"UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"}
READS = {
    "submit": UPSTASH | {"AUTH_JWT_SECRET"},
    "status": UPSTASH | {"AUTH_JWT_SECRET"},
    "metrics": UPSTASH | {"AUTH_JWT_SECRET", "METRICS_SCRAPE_TOKEN"},
    "drain": UPSTASH | {"REBALANCE_WEBHOOK_SECRET"},
}
ROUTES = {
    "POST /api/agent/rebalance": "submit",
    "GET /api/agent/rebalance/{jobId}": "status",
    "DELETE /api/agent/rebalance/{jobId}": "status",
    "GET /api/agent/rebalance/metrics": "metrics",
    "GET /api/agent/rebalance/metrics/prometheus": "metrics",
}
# Actions on data whose resource must be named, never "*".
DATA_PREFIXES = ("ssm:", "sqs:", "logs:", "kms:", "s3:", "sns:")


@pytest.fixture(scope="module")
def deployed(build: Build, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Deployed]:
    """The stack in an in-process moto, with the secrets stored as SecureString parameters."""
    with mock_aws():
        ssm = _client("ssm")
        for variable, name in PARAMETERS.items():
            ssm.put_parameter(Name=name, Value=SECRETS[variable], Type="SecureString")
        yield deploy(build.folder)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    """Dummy credentials and no endpoint override: moto answers everything in process."""
    with pytest.MonkeyPatch.context() as patch:
        offline_aws(patch)
        yield patch


def _client(service: str) -> Any:
    import boto3

    return boto3.client(service, region_name="us-east-1")


def _config(name: str) -> dict[str, Any]:
    return _client("lambda").get_function_configuration(FunctionName=f"{STACK}-{name}")


def _policies(role_arn: str) -> list[dict[str, Any]]:
    """The statements of a role's inline policies, as IAM answers them."""
    iam = _client("iam")
    role = role_arn.rsplit("/", 1)[-1]
    statements = []
    for policy in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=policy)["PolicyDocument"]
        if isinstance(document, str):  # moto's CloudFormation stored the dict's repr
            document = ast.literal_eval(document)
        # An Fn::If that chose AWS::NoValue is dropped by CloudFormation, kept as None by moto.
        statements += [statement for statement in document["Statement"] if statement]
    return statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_moto_skipped_exactly_what_the_replay_creates(deployed: Deployed) -> None:
    """Were moto to learn a type, or the template to grow one it lacks, this says so."""
    assert deployed.skipped == SKIPPED
    replayed = {
        logical
        for logical, resource in deployed.template["Resources"].items()
        if resource["Type"] in SKIPPED - NOT_REPLAYED
    }
    assert replayed and all(deployed.physical[logical] for logical in replayed)


def test_every_function_runtime_architecture_handler_memory_and_timeout(
    deployed: Deployed,
) -> None:
    """As deployed: python3.12 on arm64, each its own handler, memory and timeout."""
    resources = deployed.template["Resources"]
    for name, (handler, memory, timeout) in FUNCTIONS.items():
        config = _config(name)
        assert config["Runtime"] == "python3.12"
        # Moto's Lambda cannot take an architecture from CloudFormation: the template's.
        props = resources[f"{name.capitalize()}LambdaFunction"]["Properties"]
        assert props["Architectures"] == ["arm64"]
        assert (config["Handler"], config["MemorySize"], config["Timeout"]) == (
            handler,
            memory,
            timeout,
        )
    logging = deployed.template["Resources"]["DrainLambdaFunction"]["Properties"]["LoggingConfig"]
    assert logging == {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "WARN"}


def test_the_schedule_targets_only_the_drain(deployed: Deployed) -> None:
    """One rule, every minute, with the drain as its only target."""
    events = _client("events")
    rules = [r for r in events.list_rules()["Rules"] if r["Name"].startswith(STACK)]
    assert [r["ScheduleExpression"] for r in rules] == ["rate(1 minute)"]
    targets = events.list_targets_by_rule(Rule=rules[0]["Name"])["Targets"]
    assert [t["Arn"].rsplit(":", 1)[-1] for t in targets] == [f"{STACK}-drain"]


def test_routes_map_to_their_functions(deployed: Deployed) -> None:
    """Each route of the contract reaches its function through its integration."""
    api = _client("apigatewayv2")
    api_id = deployed.physical["HttpApi"]
    integrations = {
        i["IntegrationId"]: i["IntegrationUri"].rsplit(":", 1)[-1]
        for i in api.get_integrations(ApiId=api_id)["Items"]
    }
    routes = {
        r["RouteKey"]: integrations[r["Target"].split("/", 1)[1]]
        for r in api.get_routes(ApiId=api_id)["Items"]
    }
    assert routes == {key: f"{STACK}-{name}" for key, name in ROUTES.items()}


def test_each_secret_parameter_is_readable_only_by_the_functions_that_need_it(
    deployed: Deployed,
) -> None:
    """A role per function; its SSM grant lists exactly the parameters that function names."""
    roles = set()
    for name, variables in READS.items():
        config = _config(name)
        roles.add(config["Role"])
        env = config["Environment"]["Variables"]
        named = {
            k.removesuffix("_SSM_PARAMETER"): v
            for k, v in env.items()
            if k.endswith("_SSM_PARAMETER")
        }
        assert named == {variable: PARAMETERS[variable] for variable in variables}
        granted = {
            resource.split(":parameter", 1)[1]
            for statement in _policies(config["Role"])
            if any(action.startswith("ssm:") for action in _as_list(statement["Action"]))
            for resource in _as_list(statement["Resource"])
        }
        assert granted == set(named.values()), name
    assert len(roles) == len(READS)


def test_deployed_functions_resolve_their_secrets_at_cold_start(deployed: Deployed) -> None:
    """A function's own environment, read like Lambda's, gives the stored values."""
    env = _config("metrics")["Environment"]["Variables"]
    settings = Settings.from_env(env)
    assert settings.upstash_redis_rest_token == SECRETS["UPSTASH_REDIS_REST_TOKEN"]
    assert settings.metrics_scrape_token == SECRETS["METRICS_SCRAPE_TOKEN"]
    assert settings.auth_jwt_secret == SECRETS["AUTH_JWT_SECRET"]


def test_no_secret_value_in_template_state_file_zip_or_bucket(
    deployed: Deployed, build: Build
) -> None:
    """Every artifact of the build and every version of every object in the bucket."""
    texts = {path.name: path.read_bytes() for path in build.folder.iterdir() if path.is_file()}
    assert {"serverless-state.json", "cloudformation-template-update-stack.json"} <= set(texts)
    s3 = _client("s3")
    versions = s3.list_object_versions(Bucket=deployed.bucket).get("Versions", [])
    assert len(versions) == 3
    for version in versions:
        body = s3.get_object(
            Bucket=deployed.bucket, Key=version["Key"], VersionId=version["VersionId"]
        )["Body"].read()
        texts[f"s3://{version['Key']}"] = body
    texts["get_template"] = json.dumps(
        _client("cloudformation").get_template(StackName=STACK)["TemplateBody"]
    ).encode()
    for where, data in texts.items():
        for secret in SECRETS.values():
            assert secret.encode() not in data, f"a secret value is in {where}"


def test_iam_has_no_wildcard_actions_or_data_resources(deployed: Deployed) -> None:
    """No `*` in an action; every action on data (SSM, SQS, logs…) names its resources."""
    for name in FUNCTIONS:
        for statement in _policies(_config(name)["Role"]):
            actions = _as_list(statement["Action"])
            assert not [a for a in actions if "*" in a], (name, actions)
            if any(a.startswith(DATA_PREFIXES) for a in actions):
                assert "*" not in _as_list(statement["Resource"]), (name, statement)


def test_log_groups_are_retained_with_a_retention(deployed: Deployed) -> None:
    """Functions' and API's log groups: 14 days, and kept when the stack is removed."""
    groups = {
        g["logGroupName"]: g.get("retentionInDays")
        for g in _client("logs").describe_log_groups()["logGroups"]
    }
    expected = {f"/aws/lambda/{STACK}-{name}" for name in FUNCTIONS} | {f"/aws/http-api/{STACK}"}
    assert {name: groups.get(name) for name in expected} == dict.fromkeys(expected, 14)
    for resource in deployed.template["Resources"].values():
        if resource["Type"] == "AWS::Logs::LogGroup":
            assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"


def test_alarms_watch_every_function_dead_letters_age_and_failures(deployed: Deployed) -> None:
    """Errors and Throttles per function, and the queue-level alarms, all to the topic."""
    alarms = _client("cloudwatch").describe_alarms()["MetricAlarms"]
    watched = {(a["Namespace"], a["MetricName"], a["Dimensions"][0]["Value"]) for a in alarms}
    for name in FUNCTIONS:
        assert ("AWS/Lambda", "Errors", f"{STACK}-{name}") in watched
        assert ("AWS/Lambda", "Throttles", f"{STACK}-{name}") in watched
    drain = f"{STACK}-drain"
    for metric in ("Dead", "Expired", "OldestJobAge"):
        assert ("AgentRebalance", metric, drain) in watched
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", f"{STACK}-drain-failures") in watched
    topic = deployed.physical["AlarmTopic"]
    assert all(a["AlarmActions"] == [topic] for a in alarms)


def test_drain_async_settings_and_failure_destination(deployed: Deployed) -> None:
    """No retry of a missed tick, and failed async invocations kept 14 days in SQS."""
    config = _client("lambda").get_function_event_invoke_config(FunctionName=f"{STACK}-drain")
    assert (config["MaximumRetryAttempts"], config["MaximumEventAgeInSeconds"]) == (0, 60)
    destination = config["DestinationConfig"]["OnFailure"]["Destination"]
    assert destination == f"arn:aws:sqs:us-east-1:123456789012:{STACK}-drain-failures"
    attributes = _client("sqs").get_queue_attributes(
        QueueUrl=deployed.physical["DrainFailureQueue"], AttributeNames=["All"]
    )["Attributes"]
    assert attributes["MessageRetentionPeriod"] == "1209600"
    sends = [
        statement
        for statement in _policies(_config("drain")["Role"])
        if "sqs:SendMessage" in _as_list(statement["Action"])
    ]
    assert [s["Resource"] for s in sends] == [destination]


def test_stage_has_json_access_logs_and_throttling(deployed: Deployed) -> None:
    """Access logs (request id, route, status, latency, integration error) and throttling."""
    stage = _client("apigatewayv2").get_stage(
        ApiId=deployed.physical["HttpApi"], StageName="$default"
    )
    logs = stage["AccessLogSettings"]
    assert logs["DestinationArn"].startswith(
        f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/http-api/{STACK}"
    )
    fields = json.loads(logs["Format"])
    assert fields["requestId"] == "$context.requestId"
    assert fields["routeKey"] == "$context.routeKey" and fields["status"] == "$context.status"
    assert fields["responseLatency"] == "$context.responseLatency"
    assert fields["integrationError"] == "$context.integrationErrorMessage"
    throttling = stage["DefaultRouteSettings"]
    assert (throttling["ThrottlingRateLimit"], throttling["ThrottlingBurstLimit"]) == (100, 200)


def test_deployment_bucket_blocks_public_access_and_is_versioned_and_encrypted(
    deployed: Deployed,
) -> None:
    """The bucket that holds templates and state files."""
    s3 = _client("s3")
    block = s3.get_public_access_block(Bucket=deployed.bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    assert s3.get_bucket_versioning(Bucket=deployed.bucket)["Status"] == "Enabled"
    (rule,) = s3.get_bucket_encryption(Bucket=deployed.bucket)["ServerSideEncryptionConfiguration"][
        "Rules"
    ]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (policy,) = [
        r["Properties"]["PolicyDocument"]["Statement"]
        for r in deployed.template["Resources"].values()
        if r["Type"] == "AWS::S3::BucketPolicy"
    ]
    assert policy[0]["Effect"] == "Deny"
    assert policy[0]["Condition"] == {"Bool": {"aws:SecureTransport": False}}
