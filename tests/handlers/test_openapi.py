"""The OpenAPI document: checked-in copy is current, every route is described, it loads."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.routing import Route

from handlers import metrics, status, submit
from handlers.openapi import build_openapi, render

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_document_is_current() -> None:
    """`openapi.json` at the repository root equals what `build_openapi()` produces."""
    checked_in = (ROOT / "openapi.json").read_text()
    assert json.loads(checked_in) == build_openapi(), (
        "openapi.json is stale: run `python -m handlers.openapi > openapi.json`"
    )
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


def test_every_operation_documents_auth_and_error_bodies() -> None:
    """Operations declare a security scheme, and every 4xx/5xx answers the error schema."""
    doc = build_openapi()
    schemes = doc["components"]["securitySchemes"]
    for item in doc["paths"].values():
        for operation in item.values():
            assert operation["security"] and all(
                name in schemes for req in operation["security"] for name in req
            )
            for code, response in operation["responses"].items():
                if code[0] in "45":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/Error"
                if code in ("429", "503"):
                    assert "Retry-After" in response["headers"]


def test_document_loads_as_openapi_3_1() -> None:
    """Schemathesis accepts the document and finds all four operations."""
    import schemathesis

    schema = schemathesis.openapi.from_dict(build_openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 5
    assert build_openapi()["openapi"].startswith("3.1")
