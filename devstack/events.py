"""`make dev`'s real-time routes: the job events WebSocket, the management API stand-in, the page.

- `GET /api/agent/rebalance/{jobId}/events?token=<JWT>` (WebSocket): the production flow on
  one socket. The socket gets a connection id and goes through `core.subscriptions` exactly
  as API Gateway's `$connect` and `subscribe` do: the first message is the subscribe answer
  (the current status), then one message per change, pushed by the drain. Closes: 1000 after
  a final status, 4401 bad token, 4404 unknown or another user's job, 4429 over the read
  limit, 4409 too many subscriptions, 1011 Redis unreachable.
- `POST /dev/ws-management/@connections/{connectionId}`: a stand-in for API Gateway's
  management API. `make dev`'s drains have it as their `WS_API_ENDPOINT`, so their boto3
  `post_to_connection` (`core.push`) delivers here, and a closed socket answers 410
  `GoneException` like AWS does. Connection ids are random: only the drain learns them.
- `GET /`: a page that submits a sample rebalance with a token and shows its status live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from core import errors, subscriptions
from core.auth import KeySetUnavailableError, Principal, authenticate
from core.rate_limit import ReadLimit
from core.redis import get_client
from core.settings import get_settings
from core.submit import TERMINAL
from handlers.paths import EVENTS_PATH

MANAGEMENT_PATH = "/dev/ws-management"
POST_PATH = MANAGEMENT_PATH + "/@connections/{connectionId}"
PAGE = Path(__file__).with_name("page.html")

# Close codes of the events route (4000-4999 are the application's own).
CLOSE_CODES: dict[type[Exception], int] = {
    errors.AuthError: 4401,
    errors.NotFoundError: 4404,
    errors.ConflictError: 4409,
    errors.RateLimitedError: 4429,
}


class LocalConnections:
    """The open sockets of this server by connection id: what API Gateway keeps in AWS."""

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[bytes]] = {}

    def open(self) -> tuple[str, asyncio.Queue[bytes]]:
        connection_id = uuid.uuid4().hex
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=256)
        self._queues[connection_id] = queue
        return connection_id, queue

    def close(self, connection_id: str) -> None:
        self._queues.pop(connection_id, None)

    def post(self, connection_id: str, data: bytes) -> bool:
        """Hand `data` to the socket; False when it is gone (or too far behind)."""
        queue = self._queues.get(connection_id)
        if queue is None or queue.full():
            return False
        queue.put_nowait(data)
        return True


def routes(connections: LocalConnections) -> list[BaseRoute]:
    async def post_to_connection(request: Request) -> Response:
        if connections.post(request.path_params["connectionId"], await request.body()):
            return Response(status_code=200)
        # What AWS answers for a closed connection; boto3 raises GoneException from it.
        return JSONResponse({"message": "Gone"}, 410, headers={"x-amzn-ErrorType": "GoneException"})

    async def events(websocket: WebSocket) -> None:
        await websocket.accept()
        await _serve_events(websocket, connections)

    async def page(_request: Request) -> Response:
        return HTMLResponse(PAGE.read_text())

    return [
        Route(POST_PATH, post_to_connection, methods=["POST"]),
        WebSocketRoute(EVENTS_PATH, events),
        Route("/", page, methods=["GET"]),
    ]


async def _serve_events(websocket: WebSocket, connections: LocalConnections) -> None:
    connection_id, queue = connections.open()
    try:
        first = await _subscribe(websocket, connection_id)
        if first is not None:
            await _stream(websocket, first, queue)
    finally:
        connections.close(connection_id)
        await run_in_threadpool(_forget, connection_id)


async def _subscribe(websocket: WebSocket, connection_id: str) -> dict[str, Any] | None:
    """`$connect` then `subscribe`, as API Gateway runs them; the status, or None once closed."""
    job_id = websocket.path_params["jobId"]
    token = websocket.query_params.get("token")
    try:
        principal = _authenticate(token)
        return await run_in_threadpool(_connect_and_subscribe, principal, connection_id, job_id)
    except (errors.RebalanceError, KeySetUnavailableError) as exc:
        code = next((c for cls, c in CLOSE_CODES.items() if isinstance(exc, cls)), 1011)
        await websocket.close(code, str(exc)[:120] if code != 1011 else "unavailable")
        return None


def _authenticate(token: str | None) -> Principal:
    # The token is verified here whatever AUTH_TRUST_AUTHORIZER says, as in the `ws` function.
    settings = get_settings().replace(auth_trust_authorizer=False)
    if not token:
        raise errors.AuthError("missing token")
    return authenticate(f"Bearer {token}", settings)


def _connect_and_subscribe(principal: Principal, connection_id: str, job_id: str) -> Any:
    client, settings = get_client(), get_settings()
    subscriptions.connect(
        client, principal, connection_id, ReadLimit.for_user(settings, principal.user_id)
    )
    return subscriptions.subscribe(client, connection_id, job_id)


def _forget(connection_id: str) -> None:
    # On failure the subscriptions expire within 2 h, and a post to it would forget it too.
    with contextlib.suppress(errors.UpstashError):
        subscriptions.forget(get_client(), connection_id)


async def _stream(websocket: WebSocket, first: dict[str, Any], queue: asyncio.Queue[bytes]) -> None:
    """Send the first status, then each pushed change once; close 1000 after a final one."""
    last = json.dumps(first, sort_keys=True)
    await websocket.send_text(json.dumps(first))
    status = first["status"]
    closed = asyncio.ensure_future(_until_disconnect(websocket))
    try:
        while status not in TERMINAL:
            data = await _next(queue, closed)
            if data is None:
                return
            message = json.loads(data)
            # The subscribe answer and the push of the same change can both arrive: one message.
            if json.dumps(message, sort_keys=True) == last:
                continue
            last, status = json.dumps(message, sort_keys=True), message["status"]
            await websocket.send_text(data.decode())
        await websocket.close(1000)
    finally:
        closed.cancel()


async def _next(queue: asyncio.Queue[bytes], closed: asyncio.Future[None]) -> bytes | None:
    """The next pushed message, or None when the client went away first."""
    getter = asyncio.ensure_future(queue.get())
    waiting: set[asyncio.Future[Any]] = {getter, closed}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    return None


async def _until_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends until it disconnects."""
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    except (WebSocketDisconnect, RuntimeError):
        pass
