"""RESP2 replies to Upstash REST JSON, in plain or `Upstash-Encoding: base64` form.

Mapping (UPSTASH_REST.md §2.1, §6):

| RESP2 reply | plain | base64 |
|---|---|---|
| integer | JSON integer | JSON integer |
| nil bulk / nil array | `null` | `null` |
| bulk or status string | UTF-8 text, invalid bytes as U+FFFD | standard base64 with padding |
| status `OK` at the top of an entry | `"OK"` | `"OK"` (never encoded) |
| array | JSON array, recursively | same, every element encoded |
| error at the top of an entry | `{"error": text}` | the same, never encoded |
| error nested inside an array | its text as a string | its text, encoded |

Floats never appear as JSON numbers: RESP2 carries scores and `INCRBYFLOAT` results as
bulk strings, and the SDK refuses a JSON float in base64 mode.
"""

from __future__ import annotations

from base64 import b64encode
from typing import Any

from devstack.backend import BackendError, Reply, Status

JSONValue = Any


def encode_value(reply: Reply, base64: bool) -> JSONValue:
    """One reply (not an error at top level) as the JSON `result` value."""
    if isinstance(reply, Status) and reply == b"OK":
        return "OK"
    return _encode(reply, base64)


def _encode(reply: Reply, base64: bool) -> JSONValue:
    if reply is None or isinstance(reply, int):
        return reply
    if isinstance(reply, list):
        return [_encode(item, base64) for item in reply]
    if isinstance(reply, BackendError):
        reply = str(reply).encode()
    if base64:
        return b64encode(reply).decode("ascii")
    return reply.decode("utf-8", errors="replace")


def encode_entry(reply: Reply, base64: bool) -> dict[str, JSONValue]:
    """`{"result": ...}`, or `{"error": ...}` (no `result` key) for an error reply."""
    if isinstance(reply, BackendError):
        return {"error": str(reply)}
    return {"result": encode_value(reply, base64)}
