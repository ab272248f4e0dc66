"""`rebalance token --sub ID --public-key KEY [--ttl S] [--scope S]...`: mint a dev JWT (HS256).

The secret comes from `AUTH_JWT_SECRET`, the same variable the API verifies with, so a
token minted here works against `make dev` and the tests' stack. `--scope metrics:read`
(repeatable) puts scopes in the `scope` claim: the metrics summary wants that one. The
lifetime may not exceed `AUTH_MAX_TOKEN_TTL_S` (default 1 day), which the API enforces.
Prints the token alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DEFAULT_TTL_S = 3600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sub", required=True, help="user id (the token's `sub` claim)")
    parser.add_argument(
        "--public-key",
        required=True,
        dest="public_key",
        help="wallet public key (the token's `publicKey` claim)",
    )
    parser.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_TTL_S,
        metavar="S",
        help=f"seconds until the token expires (default {DEFAULT_TTL_S})",
    )
    parser.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="S",
        help="a scope for the token's `scope` claim (repeatable), e.g. metrics:read",
    )


def run(args: argparse.Namespace) -> int:
    from core.auth import mint_token

    secret = os.environ.get("AUTH_JWT_SECRET", "")
    problem = _problem(args, secret)
    if problem:
        print(f"rebalance token: {problem}", file=sys.stderr)
        return 2
    claims: dict[str, Any] = {"scope": " ".join(args.scope)} if args.scope else {}
    print(mint_token(args.sub, args.public_key, secret, args.ttl, **claims))
    return 0


def _problem(args: argparse.Namespace, secret: str) -> str | None:
    from core.errors import ConfigError
    from core.settings import Settings, jwt_secret_problem

    if not secret:
        return "AUTH_JWT_SECRET is not set: export the secret the API verifies tokens with"
    if problem := jwt_secret_problem(secret):
        return str(ConfigError({"AUTH_JWT_SECRET": problem}))
    if not args.sub:
        return "--sub must not be empty"
    if not args.public_key:
        return "--public-key must not be empty"
    if args.ttl <= 0:
        return "--ttl must be a positive number of seconds"
    default_ttl = Settings.__dataclass_fields__["auth_max_token_ttl_s"].default
    max_ttl = os.environ.get("AUTH_MAX_TOKEN_TTL_S", "").strip() or str(default_ttl)
    if max_ttl.isdigit() and args.ttl > int(max_ttl):
        return f"--ttl must be at most AUTH_MAX_TOKEN_TTL_S ({max_ttl} s): the API refuses longer"
    if any(not scope or " " in scope for scope in args.scope):
        return "--scope must be one non-empty word (repeat --scope for several)"
    return None
