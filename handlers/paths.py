"""The HTTP routes' paths (DESIGN.md), stated once for the apps, the OpenAPI document and the
`Location` of a submit."""

from __future__ import annotations

SUBMIT_PATH = "/api/agent/rebalance"
STATUS_PATH = SUBMIT_PATH + "/{jobId}"
EVENTS_PATH = STATUS_PATH + "/events"
METRICS_PATH = SUBMIT_PATH + "/metrics"
PROMETHEUS_PATH = METRICS_PATH + "/prometheus"
