"""`make dev`: the whole system on one machine, behaving like production.

- Redis: the Upstash database named by `UPSTASH_REDIS_REST_URL`/`_TOKEN` when both are set;
  otherwise an embedded Valkey behind the Upstash-compatible gateway (`devstack.stack`).
- The API: every HTTP route of the Lambdas (the handlers' own `routes`, composed in one
  Starlette app with the same error model), plus `GET /healthz` and `GET /openapi.json`,
  served by uvicorn on `HOST`:`PORT` (default 127.0.0.1:8000).
- Real time: the job events WebSocket, a stand-in for API Gateway's management API that the
  drain's pushes reach, and a page at `/` that shows a job's status live (`devstack.events`).
- A ticker that runs the drain Lambda's `run_drain` every `DEV_DRAIN_INTERVAL_S` seconds, like
  EventBridge does, each invocation with that much budget (default 10; `0` = no ticker, run
  `rebalance drain` by hand). It is also the elastic drain's waker (`DRAIN_WAKE` and
  `DRAIN_MAX_PARALLEL=4` are the dev defaults, as deployed): a submit into an idle queue starts
  a drain thread at once, a backlog starts more, never more than `DRAIN_MAX_PARALLEL`.

Development defaults fill what is unset: `AUTH_JWT_SECRET` and `METRICS_SCRAPE_TOKEN` (random
per run, and printed: the dev token, which carries `METRICS_READ_SCOPE` so that the printed
metrics curl works, and the scrape token), and the simulated processor. Ctrl-C
(or SIGTERM) stops the server, waits for the ticker's invocation to end, and stops the
embedded Valkey: no process is left behind.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from core.log import refresh_secrets
from devstack.lambda_events import LambdaContext

if TYPE_CHECKING:
    from core.settings import Settings

DEV_USER = "dev-user"
DEV_PUBLIC_KEY = "dev-wallet-public-key"


def build_app() -> Any:
    """The composed API: metrics routes first, so their literal paths beat `{jobId}`."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from core.errors import UpstashError
    from core.redis import get_client
    from devstack import events
    from handlers import _web, metrics, status, submit
    from handlers.openapi import render

    def healthz(_request: Request) -> Response:
        try:
            get_client().execute(["PING"])
        except UpstashError:
            return _web.error_response(
                503, "service_unavailable", "Redis does not answer", {"Retry-After": "1"}
            )
        return JSONResponse({"status": "ok", "redis": "ok"})

    document = render()

    def openapi(_request: Request) -> Response:
        return Response(document, media_type="application/json")

    extra = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    live = events.routes(events.LocalConnections())
    return _web.create_app([*metrics.routes, *submit.routes, *status.routes, *extra, *live])


@contextmanager
def redis_stack() -> Iterator[str]:
    """Point the environment at Upstash, or at an embedded Valkey behind the gateway."""
    if os.environ.get("UPSTASH_REDIS_REST_URL") and os.environ.get("UPSTASH_REDIS_REST_TOKEN"):
        yield "Upstash at " + os.environ["UPSTASH_REDIS_REST_URL"]
        return
    from devstack.stack import local_stack

    with local_stack() as stack:
        os.environ.update(stack.env())
        refresh_secrets()  # the gateway's token is a secret: logs must mask it from now on
        yield f"embedded Valkey {stack.redis_url} behind the gateway {stack.url}"


class Ticker:
    """The drain's Lambda, locally: a scheduled invocation every `interval_s` (back to back
    while one runs, each with `interval_s` of budget, like EventBridge), and `wake`, the
    asynchronous invoke of the elastic drain: a drain thread at once, with `wake_budget_s`
    (the Lambda's timeout). At most `max_parallel` invocations run at once, scheduled ones
    included (the drain's reserved concurrency); a wake past that is refused, as Lambda
    throttles it. Each invocation is `run_drain` with `settings`, or, without them, the
    process's settings as they are at that moment."""

    def __init__(
        self,
        interval_s: float,
        max_parallel: int = 1,
        wake_budget_s: float = 55.0,
        settings: Settings | None = None,
    ):
        self.interval_s, self.max_parallel = interval_s, max_parallel
        self.wake_budget_s = wake_budget_s
        self.settings = settings
        self.invocations = 0
        self.wakes = 0  # drain threads started by `wake`
        self.throttled = 0  # wakes and ticks refused past `max_parallel`
        self.peak = 0  # most invocations running at once
        self._running = 0
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drain-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(self.interval_s + 15)
        for worker in list(self._workers):
            worker.join(15)

    def remaining_ms(self, context: LambdaContext) -> int:
        if self._stop.is_set():  # Ctrl-C: let the running invocation wind down now
            return 0
        return context.get_remaining_time_in_millis()

    def wake(self, event: dict[str, Any]) -> bool:
        """Start a drain thread for `event` now; False when `max_parallel` already run."""
        if not self._enter():
            return False
        worker = threading.Thread(
            target=self._invoke_and_exit, args=(event, self.wake_budget_s), daemon=True
        )
        with self._lock:
            self.wakes += 1
            self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()
        return True

    def _enter(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self._running >= self.max_parallel:
                self.throttled += 1
                return False
            self._running += 1
            self.peak = max(self.peak, self._running)
            return True

    def _exit(self) -> None:
        with self._lock:
            self._running -= 1

    def _invoke_and_exit(self, event: dict[str, Any], budget_s: float) -> None:
        try:
            self._invoke(event, budget_s)
        except Exception as exc:  # a failed woken drain is the schedule's to make up for
            print(f"woken drain failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            self._exit()

    def _invoke(self, event: dict[str, Any], budget_s: float) -> None:
        from core.settings import get_settings
        from handlers.drain import run_drain

        settings = self.settings or get_settings()
        with self._lock:
            number = self.invocations
            self.invocations += 1
        context = LambdaContext(
            int(budget_s * 1000) + settings.drain_safety_margin_ms,
            aws_request_id=f"dev-drain-{number}",
        )
        run_drain(
            settings,
            lambda: self.remaining_ms(context),
            event=event,
            request_id=context.aws_request_id,
        )

    def _run(self) -> None:
        from core.errors import RebalanceError

        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            if self._enter():
                try:
                    self._invoke(SCHEDULED_EVENT, self.interval_s)
                    failures = 0
                except Exception as exc:  # never a dead ticker: say so, back off, tick again
                    failures += 1
                    pause = min(self.interval_s * 2 ** (failures - 1), 30.0) or 0.5
                    kind = "" if isinstance(exc, RebalanceError) else f"{type(exc).__name__}: "
                    print(f"drain tick failed: {kind}{exc}", file=sys.stderr, flush=True)
                    self._stop.wait(pause)
                finally:
                    self._exit()
            # The next tick comes one interval after this one started, as EventBridge's would.
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))


SCHEDULED_EVENT = {"source": "aws.events", "detail-type": "Scheduled Event"}


def start_ticker(interval_s: float, settings: Settings | None = None) -> Ticker | None:
    """The running ticker (None when `interval_s` is 0), installed as the drains' waker: a
    submit's wake and a drain's fan-out start drain threads here, not Lambda invokes. Its
    drains run with `settings` (default: the process's, read at each invocation)."""
    from core import elastic
    from core.settings import get_settings

    if interval_s <= 0:
        elastic.use_waker(lambda _event: False)  # jobs wait for `rebalance drain`, as said
        return None
    max_parallel = (settings or get_settings()).drain_max_parallel
    ticker = Ticker(interval_s, max_parallel, settings=settings)
    elastic.use_waker(ticker.wake)
    ticker.start()
    return ticker


def _defaults() -> None:
    # Unset or exported empty: a random one (an empty secret would only fail later).
    if not os.environ.get("AUTH_JWT_SECRET", "").strip():
        os.environ["AUTH_JWT_SECRET"] = secrets.token_urlsafe(32)
    # Random per run: a fixed dev token would open the scrape route of any forgotten dev stack.
    if not os.environ.get("METRICS_SCRAPE_TOKEN", "").strip():
        os.environ["METRICS_SCRAPE_TOKEN"] = secrets.token_urlsafe(24)
    os.environ.setdefault("REBALANCE_PROCESSOR", "core.processors.simulated:process")
    # As deployed: a submit wakes a drain at once, a backlog fans out to more drains.
    os.environ.setdefault("DRAIN_WAKE", "true")
    os.environ.setdefault("DRAIN_MAX_PARALLEL", "4")
    # The drain's boto3 client signs its posts to the local management API stand-in: any
    # credentials do, and these keep it from probing for real ones.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "dev-local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "dev-local")
    refresh_secrets()  # the generated secrets are masked in logs whatever logged before


def dev_token() -> str:
    """The printed dev JWT: the dev user, for a day (the longest the API accepts by default),
    with the operator scope of the metrics summary."""
    from core.auth import mint_token
    from core.settings import get_settings

    settings = get_settings()
    ttl_s = min(24 * 3600, settings.auth_max_token_ttl_s)
    return mint_token(
        DEV_USER,
        DEV_PUBLIC_KEY,
        settings.auth_jwt_secret,
        ttl_s,
        scope=settings.metrics_read_scope,
    )


def _banner(url: str, redis: str, ticker_s: float) -> str:
    from core.settings import get_settings

    token = dev_token()
    drain = f"every {ticker_s:g} s" if ticker_s else "off (run `.venv/bin/rebalance drain`)"
    settings = get_settings()
    if ticker_s and settings.drain_wake:
        drain += f", woken by submits, up to {settings.drain_max_parallel} at once"
    return f"""
agent-rebalance dev stack
  API:       {url}   (GET {url}/healthz, {url}/openapi.json)
  Page:      {url}/#token={token}
  Redis:     {redis}
  Drain:     {drain}
  Dev token: {token}
  Scrape token: {os.environ["METRICS_SCRAPE_TOKEN"]}

Try it:
  TOKEN={token}
  curl -s -X POST {url}/api/agent/rebalance -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"targets": {{"BTC": 0.6, "ETH": 0.4}}}}'
  curl -s {url}/api/agent/rebalance/<jobId> -H "Authorization: Bearer $TOKEN"
  curl -s {url}/api/agent/rebalance/metrics?days=1 -H "Authorization: Bearer $TOKEN"
  curl -s {url}/api/agent/rebalance/metrics/prometheus \\
       -H "Authorization: Bearer {os.environ["METRICS_SCRAPE_TOKEN"]}"
Ctrl-C stops everything.
""".rstrip()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # uvicorn re-raises the signal that stopped it; as a KeyboardInterrupt, SIGTERM too
    # unwinds the `finally` blocks that stop the ticker, the gateway and the Valkey server.
    signal.signal(signal.SIGTERM, _interrupt)
    from core.errors import ConfigError, UpstashError

    try:
        return _serve()
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0
    except (DevError, ConfigError) as exc:  # something to set right: one line, no traceback
        print(f"make dev: {exc}", file=sys.stderr, flush=True)
        return 2
    except UpstashError as exc:
        print(f"make dev: {exc}", file=sys.stderr, flush=True)
        return 1


class DevError(Exception):
    """A `make dev` variable or resource problem, told in one line naming the variable."""


def _dev_options() -> tuple[str, int, float]:
    """HOST, PORT and DEV_DRAIN_INTERVAL_S, checked: a DevError names a bad one."""
    host = os.environ.get("HOST", "127.0.0.1")
    raw_port = os.environ.get("PORT", "8000")
    if not raw_port.isdigit() or int(raw_port) > 65535:
        raise DevError(f"PORT must be a port number (0-65535), got {raw_port!r}")
    raw_interval = os.environ.get("DEV_DRAIN_INTERVAL_S", "10")
    try:
        interval = float(raw_interval)
    except ValueError:
        interval = -1.0
    if not interval >= 0:  # also refuses nan
        raise DevError(
            "DEV_DRAIN_INTERVAL_S must be a number of seconds (0 = no ticker), "
            f"got {raw_interval!r}"
        )
    return host, int(raw_port), interval


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DevError(
            f"cannot listen on {host}:{port} ({exc.strerror}): another `make dev`? "
            "Set PORT (or HOST) to a free one"
        ) from None
    return sock


def _check_reachable() -> None:
    """Fail at start, not on the first request, when the configured Redis does not answer."""
    from core.errors import UpstashError
    from core.redis import get_client

    try:
        get_client().execute(["PING"])
    except UpstashError as exc:
        url = os.environ.get("UPSTASH_REDIS_REST_URL", "")
        raise UpstashError(f"UPSTASH_REDIS_REST_URL={url} does not answer: {exc}") from None


def _serve() -> int:
    import uvicorn

    host, port, ticker_s = _dev_options()
    _defaults()
    sock = _bind(host, port)  # before the stack starts: a taken port costs nothing
    with redis_stack() as redis:
        from core import elastic
        from core.log import configure
        from core.settings import get_settings
        from devstack.events import MANAGEMENT_PATH

        url = f"http://{host}:{sock.getsockname()[1]}"
        configure(get_settings().log_level)
        _check_reachable()
        server = uvicorn.Server(uvicorn.Config(build_app(), log_level="warning", access_log=False))
        # The drains push WebSocket messages to this server's management API stand-in.
        drains = get_settings().replace(ws_api_endpoint=url + MANAGEMENT_PATH)
        print(_banner(url, redis, ticker_s), flush=True)  # before the first tick's log line
        ticker = start_ticker(ticker_s, drains)
        try:
            server.run(sockets=[sock])  # returns on SIGINT/SIGTERM
        finally:
            if ticker:
                ticker.stop()
            elastic.use_waker(None)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
