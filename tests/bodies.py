"""Valid rebalance request bodies for tests that are about something else than validation."""

from __future__ import annotations

from typing import Any

TARGETS = {"BTC": 0.6, "ETH": 0.4}


def rebalance(**metadata: Any) -> dict[str, Any]:
    """A valid request; `metadata` makes bodies distinct (and travels to the processor)."""
    body: dict[str, Any] = {"targets": dict(TARGETS)}
    if metadata:
        body["metadata"] = metadata
    return body


def stored(body: dict[str, Any]) -> dict[str, Any]:
    """What a valid `body` becomes as the job's payload: every field in its wire name."""
    payload = {
        "targets": {asset: float(weight) for asset, weight in body["targets"].items()},
        "slippageBps": body.get("slippageBps"),
        "dryRun": body.get("dryRun", False),
        "metadata": body.get("metadata", {}),
    }
    if "validForSeconds" in body:
        payload["validForSeconds"] = body["validForSeconds"]
    return payload
