"""The OpenAPI 3.1 document of the HTTP API: every route, its auth, bodies and errors.

`build_openapi()` returns the document; the dev server serves it at `GET /openapi.json`, and
the copy checked in at the repository root is regenerated with `make openapi` (that is,
`python -m handlers.openapi > openapi.json`; a test keeps the two equal). The schemas are
generated from the pydantic models of `core.models`, the same ones that validate requests,
so the document cannot drift from what the API accepts and answers; this module only lays
out the routes, their parameters and which model each status answers.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from core import __version__
from core.models import JOB_ID_PATTERN, SCHEMA_MODELS, STATUSES
from handlers.paths import METRICS_PATH, PROMETHEUS_PATH, STATUS_PATH, SUBMIT_PATH

TITLE = "agent-rebalance"
VERSION = __version__

_ERROR_CODES = {
    "400": "The body is not valid JSON.",
    "401": "No bearer token, or an invalid, forged or expired one.",
    "403": "A valid token without `METRICS_READ_SCOPE` (code `forbidden`).",
    "404": "No such job for this user (unknown and foreign ids look the same).",
    "409": "The job is processing or finished: it can no longer be cancelled (code `conflict`).",
    "413": "The body is over `MAX_BODY_BYTES` (16 KiB by default).",
    "415": "The body is not `application/json`.",
    "422": "Valid JSON of the wrong shape (`details` names each bad field), or an invalid "
    "parameter.",
    "429": "Over the per-user sliding-window limit; `Retry-After` says when to retry.",
    "503": "Upstash Redis (or the JWKS endpoint) cannot be reached; `Retry-After` says when "
    "to retry.",
}
# What API Gateway answers by itself, before any function runs: `{"message": ...}`.
_GATEWAY = {
    "401": "API Gateway's JWT authorizer refused the token (AUTH_TRUST_AUTHORIZER mode).",
    "403": "API Gateway's JWT authorizer refused the token's scopes.",
    "404": "API Gateway knows no such route (e.g. a job id with a slash).",
    "429": "API Gateway throttled the request (stage or account limits).",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait before retrying (absent on API Gateway's own "
        "throttling answer).",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_JOB_ID = {
    "name": "jobId",
    "in": "path",
    "required": True,
    "description": "32 lowercase hex digits; anything else is a 404.",
    "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*statuses: str, gateway: tuple[str, ...] = ()) -> dict[str, Any]:
    """Error responses: ours (`ErrorResponse`), or API Gateway's too where it can answer."""
    return {
        status: _error(status, status in statuses, status in gateway)
        for status in sorted({*statuses, *gateway})
    }


def _error(status: str, ours: bool, gateway: bool) -> dict[str, Any]:
    schemas, texts = [], []
    if ours:
        schemas.append(_ref("ErrorResponse"))
        texts.append(_ERROR_CODES[status])
    if gateway:
        schemas.append(_ref("GatewayMessage"))
        texts.append(_GATEWAY[status])
    response: dict[str, Any] = {
        "description": " ".join(texts),
        "content": _json(schemas[0] if len(schemas) == 1 else {"anyOf": schemas}),
    }
    if status in ("429", "503"):
        response["headers"] = _RETRY_AFTER
    return response


def _schemas() -> dict[str, Any]:
    """The component schemas, generated from `core.models`."""
    from pydantic.json_schema import models_json_schema

    _, document = models_json_schema(
        [(model, "validation") for model in SCHEMA_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    return dict(sorted(document["$defs"].items()))


def _submit() -> dict[str, Any]:
    return {
        "post": {
            "operationId": "submitRebalance",
            "summary": "Queue a rebalance request",
            "security": [{"bearerAuth": []}],
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "The same key and body from the same user within 24 h returns "
                    "the original job; the key with another body is a 422.",
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 255,
                        "pattern": "^[ -~]*[!-~][ -~]*$",
                    },
                }
            ],
            "requestBody": {"required": True, "content": _json(_ref("RebalanceRequest"))},
            "responses": {
                "202": {
                    "description": "Queued.",
                    "headers": {
                        "Location": {
                            "description": "The job's status URL.",
                            "schema": {"type": "string"},
                        }
                    },
                    "content": _json(_ref("Accepted")),
                },
                **_errors("400", "401", "413", "415", "422", "429", "503", gateway=("401", "429")),
            },
        }
    }


def _job() -> dict[str, Any]:
    return {"get": _status(), "delete": _cancel()}


def _status() -> dict[str, Any]:
    return {
        "operationId": "getRebalanceStatus",
        "summary": "A job's status (its owner only)",
        "security": [{"bearerAuth": []}],
        "description": "With `wait`, a long poll: answers once the status differs from "
        "`since` (default: the status when the request came) or is final, "
        "or when the wait is over.",
        "parameters": [
            _JOB_ID,
            {
                "name": "wait",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 0, "maximum": 5, "default": 0},
                "description": "Seconds to wait for a change of status.",
            },
            {
                "name": "since",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(STATUSES)},
                "description": "The status the client already knows.",
            },
        ],
        "responses": {
            "200": {
                "description": "The job's status.",
                "content": _json(_ref("JobStatusView")),
            },
            **_errors("401", "404", "422", "429", "503", gateway=("401", "404", "429")),
        },
    }


def _cancel() -> dict[str, Any]:
    return {
        "operationId": "cancelRebalance",
        "summary": "Cancel a job that has not started (its owner only)",
        "security": [{"bearerAuth": []}],
        "description": "A `queued` or `retrying` job is cancelled and never starts; "
        "cancelling a cancelled job answers 200 again.",
        "parameters": [_JOB_ID],
        "responses": {
            "200": {
                "description": "The job's status, `cancelled`.",
                "content": _json(_ref("JobStatusView")),
            },
            **_errors("401", "404", "409", "503", gateway=("401", "404", "429")),
        },
    }


def _metrics() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "getRebalanceMetrics",
            "summary": "Metrics summary over the last `days` UTC days",
            "security": [{"bearerAuth": []}],
            "parameters": [
                {
                    "name": "days",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 7, "default": 7},
                }
            ],
            "responses": {
                "200": {"description": "The summary.", "content": _json(_ref("MetricsSummary"))},
                **_errors("401", "403", "422", "429", "503", gateway=("401", "403", "429")),
            },
        }
    }


def _prometheus() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "getRebalancePrometheus",
            "summary": "All-time counters, gauges and the execution-time histogram",
            "security": [{"scrapeToken": []}],
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors("401", "503", gateway=("429",)),
            },
        }
    }


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document for every HTTP route of the service."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Queue portfolio rebalance requests for trading agents and "
            "follow their status. Every error of the API is "
            '`{"error": {"code", "message", "details"?}}`; API Gateway\'s own refusals '
            '(throttling, authorizer, unknown route) are `{"message"}`.',
        },
        "paths": {
            SUBMIT_PATH: _submit(),
            METRICS_PATH: _metrics(),
            PROMETHEUS_PATH: _prometheus(),
            STATUS_PATH: _job(),
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`sub` = user id, `publicKey` = wallet public key.",
                },
                "scrapeToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`METRICS_SCRAPE_TOKEN`, for Prometheus.",
                },
            },
            "schemas": _schemas(),
        },
    }


def render() -> str:
    """The document as the checked-in `openapi.json` holds it."""
    return json.dumps(build_openapi(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
