"""`rebalance token`: mints a JWT the API accepts; clear errors without a secret."""

from __future__ import annotations

import argparse

import jwt
import pytest

from cli import token as token_cli
from core.auth import Principal, authenticate
from core.settings import Settings

SECRET = "cli-test-secret-that-is-long-enough-for-hs256"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rebalance token")
    token_cli.add_arguments(parser)
    return token_cli.run(parser.parse_args(argv))


def test_mints_a_token_the_api_accepts(monkeypatch, capsys) -> None:
    """The printed token verifies with AUTH_JWT_SECRET and carries sub and publicKey."""
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    assert _run(["--sub", "user:1", "--public-key", "PK1", "--ttl", "120"]) == 0
    printed = capsys.readouterr().out.strip()
    settings = Settings(
        upstash_redis_rest_url="http://x", upstash_redis_rest_token="t", auth_jwt_secret=SECRET
    )
    assert authenticate(f"Bearer {printed}", settings) == Principal("user:1", "PK1")


def test_ttl_sets_the_expiry(monkeypatch, capsys) -> None:
    """--ttl S makes the token expire S seconds after it was minted."""
    import jwt

    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    _run(["--sub", "u", "--public-key", "k", "--ttl", "42"])
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 42


@pytest.mark.parametrize(
    ("secret", "argv", "message"),
    [
        ("", ["--sub", "u", "--public-key", "k"], "AUTH_JWT_SECRET is not set"),
        ("short", ["--sub", "u", "--public-key", "k"], "at least 32 bytes"),
        (SECRET, ["--sub", "", "--public-key", "k"], "--sub"),
        (SECRET, ["--sub", "u", "--public-key", ""], "--public-key"),
        (SECRET, ["--sub", "u", "--public-key", "k", "--ttl", "0"], "--ttl"),
    ],
)
def test_clear_errors(monkeypatch, capsys, secret: str, argv: list[str], message: str) -> None:
    """Missing secret or bad arguments: exit status 2 and a message naming the problem."""
    monkeypatch.setenv("AUTH_JWT_SECRET", secret)
    assert _run(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_dispatched_by_the_console_script(monkeypatch, capsys) -> None:
    """`rebalance token ...` reaches this command."""
    from cli.main import main

    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    assert main(["token", "--sub", "u", "--public-key", "k"]) == 0
    assert capsys.readouterr().out.count(".") == 2


def test_scopes_go_into_the_scope_claim(monkeypatch, capsys) -> None:
    """`--scope` twice: both in the space-separated `scope` claim; the API reads them."""
    from core.auth import scopes_of

    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    argv = ["--sub", "op", "--public-key", "k", "--scope", "metrics:read", "--scope", "x"]
    assert _run(argv) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert claims["scope"] == "metrics:read x"
    assert scopes_of(claims) == {"metrics:read", "x"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ttl", "86401"], "AUTH_MAX_TOKEN_TTL_S"),
        (["--scope", "two words"], "--scope"),
        (["--scope", ""], "--scope"),
    ],
)
def test_tokens_the_api_would_refuse_are_not_minted(
    monkeypatch, capsys, argv: list[str], message: str
) -> None:
    """Longer than the API's maximum lifetime, or a scope that is not one word: exit 2."""
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    monkeypatch.delenv("AUTH_MAX_TOKEN_TTL_S", raising=False)
    assert _run(["--sub", "u", "--public-key", "k", *argv]) == 2
    assert message in capsys.readouterr().err
