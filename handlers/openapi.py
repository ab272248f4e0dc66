"""The OpenAPI 3.1 document of the HTTP API: every route, its auth, bodies and errors.

`build_openapi()` returns the document; the dev server serves it at `GET /openapi.json`, and
the copy checked in at the repository root is regenerated with
`python -m handlers.openapi > openapi.json` (a test keeps the two equal). Plain data, no
imports beyond the standard library: cheap to load anywhere.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from core.jobs import JobStatus

TITLE = "agent-rebalance"
_STATUSES = tuple(str(s) for s in JobStatus)
VERSION = "0.1.0"

_ERROR_CODES = {
    "400": "The body is not valid JSON.",
    "401": "No bearer token, or an invalid, forged or expired one.",
    "404": "No such job for this user (unknown and foreign ids look the same).",
    "409": "The job is processing or has ended: too late to cancel.",
    "413": "The body is over `MAX_BODY_BYTES` (16 KiB by default).",
    "415": "The body is not `application/json`.",
    "422": "Valid JSON of the wrong shape, or an invalid parameter.",
    "429": "Over the per-user sliding-window limit; `Retry-After` says when to retry.",
    "503": "Upstash Redis cannot be reached; `Retry-After` says when to retry.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*statuses: str) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": _ERROR_CODES[status],
            "content": _json(_ref("Error")),
        }
        if status in ("429", "503"):
            response["headers"] = _RETRY_AFTER
        responses[status] = response
    return responses


def _schemas() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    millis = {"type": "number", "minimum": 0, "description": "milliseconds"}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "RebalanceRequest": {
            "type": "object",
            "description": "The rebalance request, handed to the processor as the job's payload.",
            "additionalProperties": True,
        },
        "Accepted": {
            "type": "object",
            "required": ["jobId", "status", "statusUrl"],
            "properties": {
                "jobId": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                "status": {"const": "queued"},
                "statusUrl": {"type": "string"},
            },
        },
        "JobStatus": {
            "type": "object",
            "required": ["jobId", "status", "attempts", "createdAt", "updatedAt"],
            "properties": {
                "jobId": {"type": "string"},
                "status": {"enum": list(_STATUSES)},
                "attempts": count,
                "createdAt": {"type": "string", "format": "date-time"},
                "updatedAt": {"type": "string", "format": "date-time"},
                "lastError": {"type": "string"},
                "result": {},
            },
        },
        "MetricsSummary": _metrics_summary(count, millis),
    }


def _metrics_summary(count: dict[str, Any], millis: dict[str, Any]) -> dict[str, Any]:
    counts = [
        "totalJobs",
        "failedJobs",
        "succeededJobs",
        "retriedJobs",
        "deadJobs",
        "queueDepth",
        "inFlight",
        "deadLetterDepth",
    ]
    times = ["avgExecutionTime", "p50ExecutionTime", "p95ExecutionTime", "p99ExecutionTime"]
    properties: dict[str, Any] = {name: count for name in counts}
    properties.update({name: millis for name in times})
    properties["oldestQueuedAgeSeconds"] = {"type": "number", "minimum": 0}
    properties["rateLimit"] = {
        "type": "object",
        "required": ["hits", "blocked"],
        "properties": {"hits": count, "blocked": count},
    }
    return {
        "type": "object",
        "required": [
            "totalJobs",
            "failedJobs",
            "avgExecutionTime",
            "p95ExecutionTime",
            "rateLimit",
        ],
        "properties": properties,
    }


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
                **_errors("400", "401", "413", "415", "422", "429", "503"),
            },
        }
    }


def _status() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "getRebalanceStatus",
            "summary": "A job's status (its owner only)",
            "security": [{"bearerAuth": []}],
            "description": "With `wait`, a long poll: answers once the status differs from "
            "`since` (default: the status when the request came) or is final, "
            "or when the wait is over.",
            "parameters": [
                {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}},
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
                    "schema": {"type": "string", "enum": list(_STATUSES)},
                    "description": "The status the client already knows.",
                },
            ],
            "responses": {
                "200": {"description": "The job's status.", "content": _json(_ref("JobStatus"))},
                **_errors("401", "404", "422", "503"),
            },
        },
        "delete": {
            "operationId": "cancelRebalance",
            "summary": "Cancel a queued or retrying job (its owner only)",
            "security": [{"bearerAuth": []}],
            "parameters": [
                {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": {
                    "description": "The job is cancelled (again, if it already was).",
                    "content": _json(_ref("JobStatus")),
                },
                **_errors("401", "404", "409", "503"),
            },
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
                **_errors("401", "422", "503"),
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
                **_errors("401", "503"),
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
            "follow their status. Every error is "
            '`{"error": {"code", "message"}}`.',
        },
        "paths": {
            "/api/agent/rebalance": _submit(),
            "/api/agent/rebalance/metrics": _metrics(),
            "/api/agent/rebalance/metrics/prometheus": _prometheus(),
            "/api/agent/rebalance/{jobId}": _status(),
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
