"""A real JWKS endpoint on a local port, for the JWKS-mode tests of `core.auth` and
`core.jwks`: the test sets the document and the status it answers, and reads the fetches."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


def jwk(private_key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    """The public JWK of `private_key` (RSA or EC) with `kid` and any extra members."""
    rsa_key = isinstance(private_key, rsa.RSAPrivateKey)
    algo = jwt.algorithms.RSAAlgorithm if rsa_key else jwt.algorithms.ECAlgorithm
    return {**json.loads(algo.to_jwk(private_key.public_key())), "kid": kid, **extra}


class KeyServer:
    """A JWKS endpoint whose document the test changes; counts the fetches it answers."""

    def __init__(self, document: Any) -> None:
        self.document = document
        self.status = 200
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps(owner.document).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A path of its own per server: key sets are cached by URL.
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks-{id(self)}.json"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
