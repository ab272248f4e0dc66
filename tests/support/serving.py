"""The `make dev` app served by uvicorn in a thread, on a socket the caller bound."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def serving_dev_app(sock: socket.socket) -> Iterator[None]:
    """Serve `devstack.dev.build_app()` on `sock` until the block ends; the socket is closed."""
    import uvicorn

    from devstack.dev import build_app

    config = uvicorn.Config(build_app(), log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
