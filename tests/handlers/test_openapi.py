"""The OpenAPI document: generated from the models, current, every route described, it loads."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.routing import Route

from core.models import JOB_ID_PATTERN, STATUSES, RebalanceRequest
from handlers import metrics, status, submit
from handlers.openapi import build_openapi, render

ROOT = Path(__file__).resolve().parents[2]
ERROR = "#/components/schemas/ErrorResponse"
GATEWAY = "#/components/schemas/GatewayMessage"


def test_checked_in_document_is_current() -> None:
    """`openapi.json` at the repository root equals what `build_openapi()` produces."""
    checked_in = (ROOT / "openapi.json").read_text()
    assert json.loads(checked_in) == build_openapi(), "openapi.json is stale: run `make openapi`"
    assert checked_in == render()


def test_every_route_is_documented_and_nothing_else() -> None:
    """Each (method, path) of the handler modules appears in the document, and vice versa."""
    served = set()
    for module in (submit, status, metrics):
        for route in module.routes:
            assert isinstance(route, Route)
            served |= {(m.lower(), route.path) for m in route.methods or () if m != "HEAD"}
    documented = {
        (method, path) for path, item in build_openapi()["paths"].items() for method in item
    }
    assert served == documented


def test_schemas_are_the_models_json_schemas() -> None:
    """The request schema is pydantic's, so the document and the validation cannot drift."""
    schemas = build_openapi()["components"]["schemas"]
    request = schemas["RebalanceRequest"]
    assert request["additionalProperties"] is False and request["required"] == ["targets"]
    assert request == {
        **RebalanceRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
    }
    assert schemas["RebalanceRequest"]["properties"]["targets"]["propertyNames"]["pattern"]
    assert schemas["JobStatusView"]["properties"]["status"]["enum"] == list(STATUSES)
    for name in ("JobStatusView", "Accepted"):
        assert schemas[name]["properties"]["jobId"]["pattern"] == JOB_ID_PATTERN
    assert {"cancelled", "expired"} <= set(STATUSES)


def test_the_summary_schema_declares_every_field_it_returns(env, backend) -> None:
    """Every key of a real summary is a declared property, and every required one is there."""
    from core.metrics import get_metrics_summary

    summary = get_metrics_summary(1)
    schema = build_openapi()["components"]["schemas"]["MetricsSummary"]
    assert set(summary) == set(schema["properties"]) == set(schema["required"])


def test_every_operation_documents_auth_and_error_bodies() -> None:
    """Operations declare a security scheme; every 4xx/5xx answers our error schema, API
    Gateway's, or either; 429 and 503 say when to retry."""
    doc = build_openapi()
    schemes = doc["components"]["securitySchemes"]
    for path, item in doc["paths"].items():
        for operation in item.values():
            assert operation["security"] and all(
                name in schemes for req in operation["security"] for name in req
            )
            if "{jobId}" in path:
                (param,) = [p for p in operation["parameters"] if p["name"] == "jobId"]
                assert param["schema"]["pattern"] == JOB_ID_PATTERN
            for code, response in operation["responses"].items():
                if code[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    refs = [s["$ref"] for s in schema.get("anyOf", [schema])]
                    assert refs in ([ERROR], [GATEWAY], [ERROR, GATEWAY]), (path, code)
                if code in ("429", "503"):
                    assert "Retry-After" in response["headers"]
            assert "429" in operation["responses"]  # API Gateway throttles every route


def test_document_loads_as_openapi_3_1() -> None:
    """Schemathesis accepts the document and finds all five operations."""
    import schemathesis

    schema = schemathesis.openapi.from_dict(build_openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 5
    assert build_openapi()["openapi"].startswith("3.1")


def test_the_document_carries_the_release_that_pyproject_reads() -> None:
    """The version is stated once (`core.__version__`); the installed metadata and the
    OpenAPI document both follow it."""
    import importlib.metadata

    import core

    assert importlib.metadata.version("agent-rebalance") == core.__version__
    checked_in = json.loads((Path(__file__).parents[2] / "openapi.json").read_text())
    assert checked_in["info"]["version"] == core.__version__
