"""`rebalance token --sub ID --public-key KEY [--ttl S]`: mint a development JWT (HS256).

The secret comes from `AUTH_JWT_SECRET`, the same variable the API verifies with, so a
token minted here works against `make dev` and the tests' stack. Prints the token alone.
"""

from __future__ import annotations

import argparse
import os
import sys

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


def run(args: argparse.Namespace) -> int:
    from core.auth import mint_token

    secret = os.environ.get("AUTH_JWT_SECRET", "")
    problem = _problem(args, secret)
    if problem:
        print(f"rebalance token: {problem}", file=sys.stderr)
        return 2
    print(mint_token(args.sub, args.public_key, secret, args.ttl))
    return 0


def _problem(args: argparse.Namespace, secret: str) -> str | None:
    if not secret:
        return "AUTH_JWT_SECRET is not set: export the secret the API verifies tokens with"
    if len(secret.encode()) < 32:
        return "AUTH_JWT_SECRET must be at least 32 bytes for HS256"
    if not args.sub:
        return "--sub must not be empty"
    if not args.public_key:
        return "--public-key must not be empty"
    if args.ttl <= 0:
        return "--ttl must be a positive number of seconds"
    return None
