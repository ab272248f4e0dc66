"""A fault-injecting HTTP proxy between the project and the gateway: a misbehaving network.

Real sockets, real bytes: the project's REST client talks to this proxy exactly as to
Upstash, and the proxy forwards to the real gateway or misbehaves on purpose. Each request
gets at most one fault: at random with probability `rate` (the kinds taking turns), or as
`plan` says:

| kind | what the client sees | did the command run? |
|---|---|---|
| `drop` | the connection closes with no answer | yes |
| `truncate` | half of the real answer, then the connection closes | yes |
| `late` | nothing until its timeout; the request reaches the server afterwards | yes, later |
| `reset` | a TCP reset before anything was forwarded | no |
| `html502` | `502` with an HTML page | no |
| `error503` | `503` with Upstash's `{"error": ...}` | no |
| `message503` | `503` with `{"message": ...}` (an API gateway's shape) | no |
| `null503` | `503` with the body `null` | no |
| `list502` | `502` with a JSON list | no |

`down = True` resets every connection (the gateway is unreachable) until set back. Every
answer closes its connection, so no fault leaks into the next request.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlparse

RAN = ("drop", "truncate", "late")
REFUSED = ("reset", "html502", "error503", "message503", "null503", "list502")
KINDS = RAN + REFUSED

_CANNED = {
    "html502": (502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "error503": (503, "application/json", b'{"error":"ERR service is overloaded"}'),
    "message503": (503, "application/json", b'{"message":"Service Unavailable"}'),
    "null503": (503, "application/json", b"null"),
    "list502": (502, "application/json", b'[1,"two",null]'),
}

Plan = Callable[[int, bytes], str | None]


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        kinds: tuple[str, ...] = KINDS,
        seed: int = 0,
        hold_s: float = 1.5,
        plan: Plan | None = None,
    ) -> None:
        target = urlparse(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.rate, self.kinds, self.hold_s, self.plan = rate, kinds, hold_s, plan
        self.down = False
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self.url = ""

    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        # A connection accepted just before the close starts its task on a later turn of the
        # loop: sweep until no task and no client transport is left.
        for sweep in range(10):
            for transport in list(self._transports):
                transport.abort()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            if sweep and not pending and not self._transports:
                break
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.sleep(0.01)  # the aborted transports release their sockets

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0)
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def _choose(self, body: bytes) -> str | None:
        with self._lock:
            index = self.requests
            self.requests += 1
            if self.down:
                kind: str | None = "reset"
            elif self.plan is not None:
                kind = self.plan(index, body)
            elif self._rng.random() < self.rate:  # kinds in turn: every one comes up
                kind = self.kinds[sum(self.faults.values()) % len(self.kinds)]
            else:
                kind = None
            if kind:
                self.faults[kind] += 1
            return kind

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._transports.add(writer.transport)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(head)
            body = await reader.readexactly(length) if length else b""
            await self._answer(head, body, self._choose(body), writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        finally:
            writer.close()
            self._transports.discard(writer.transport)

    async def _answer(
        self, head: bytes, body: bytes, kind: str | None, writer: asyncio.StreamWriter
    ) -> None:
        if kind == "reset":
            _reset(writer)
        elif kind in _CANNED:
            status, media, payload = _CANNED[kind]
            writer.write(_response(status, media, payload))
            await writer.drain()
        elif kind == "late":
            await asyncio.sleep(self.hold_s)  # the client gave up; the request goes on
            await self._forward(head, body)
        else:
            answer = await self._forward(head, body)
            if kind == "truncate":
                writer.write(answer[: len(answer) // 2])
            elif kind != "drop":
                writer.write(answer)
            await writer.drain()

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*self.upstream)
        try:  # cancelled by stop() too: the upstream connection is closed either way
            writer.write(_closing(head) + body)
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _closing(head: bytes) -> bytes:
    """The request head with `Connection: close`, so the upstream answer ends at EOF."""
    lines = [
        line for line in head.rstrip(b"\r\n").split(b"\r\n")
        if not line.lower().startswith(b"connection:")
    ]  # fmt: skip
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


def _response(status: int, media: str, payload: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} Fault\r\nContent-Type: {media}\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:  # linger 0: close sends RST, not FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
