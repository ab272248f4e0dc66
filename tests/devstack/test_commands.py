"""Pure functions of `devstack.commands` and `devstack.scripts`: parsing, refusals, scripts."""

from __future__ import annotations

import hashlib

import pytest

from devstack.backend import BackendError
from devstack.commands import RequestError, path_command, refusal, to_arg
from devstack.scripts import UPSTASH_NOSCRIPT, Scripts, strip_function_flag, strip_script_flag


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (b"#!lua flags=allow-key-locking\nreturn 1", b"#!lua\nreturn 1"),
        (b"#!lua flags=no-writes,allow-key-locking\nreturn 1", b"#!lua flags=no-writes\nreturn 1"),
        (b"#!lua flags=allow-key-locking,allow-oom\r\nx", b"#!lua flags=allow-oom\r\nx"),
        (b"#!lua name=x flags=allow-key-locking\nx", b"#!lua name=x\nx"),
        (b"#!lua flags=no-writes\nreturn 1", b"#!lua flags=no-writes\nreturn 1"),
        (b"return 1 -- flags=allow-key-locking", b"return 1 -- flags=allow-key-locking"),
        (b"#!lua\nreturn 'allow-key-locking'", b"#!lua\nreturn 'allow-key-locking'"),
    ],
    ids=[
        "only",
        "with-no-writes",
        "crlf-first",
        "other-option",
        "untouched",
        "no-shebang",
        "body-only",
    ],
)
def test_strip_script_flag(script: bytes, expected: bytes) -> None:
    """Only the shebang's flag goes; the body and the line count stay."""
    assert strip_script_flag(script) == expected
    assert strip_script_flag(script).count(b"\n") == script.count(b"\n")


def test_strip_function_flag() -> None:
    """Quoted flags in register_function tables lose `allow-key-locking`, nothing else."""
    library = b"flags={'no-writes', 'allow-key-locking'} flags={\"allow-key-locking\"} 'x'"
    assert strip_function_flag(library) == b"flags={'no-writes', } flags={} 'x'"


def test_script_errors_are_reported_under_the_original_sha() -> None:
    """Servers that name the running script's SHA (Redis 7) see it replaced by the client's."""
    scripts = Scripts()
    original = b"#!lua flags=allow-key-locking\nreturn redis.call('NOSUCH')"
    prepared = scripts.prepare([b"EVAL", original, b"0"])
    server_sha = hashlib.sha1(prepared.args[1]).hexdigest()
    reply = prepared.finish(BackendError(f"ERR boom script: {server_sha}, on @user_script:2."))
    client_sha = hashlib.sha1(original).hexdigest()
    assert str(reply) == f"ERR boom script: {client_sha}, on @user_script:2."
    assert str(prepared.finish(BackendError("NOSCRIPT No matching script."))) == UPSTASH_NOSCRIPT


def test_script_flush_forgets_aliases() -> None:
    """After SCRIPT FLUSH an original SHA is no longer translated."""
    scripts = Scripts()
    original = b"#!lua flags=allow-key-locking\nreturn 1"
    sha = hashlib.sha1(original).hexdigest().encode()
    scripts.prepare([b"SCRIPT", b"LOAD", original])
    assert scripts.prepare([b"EVALSHA", sha, b"0"]).args[1] != sha
    scripts.prepare([b"SCRIPT", b"FLUSH"])
    assert scripts.prepare([b"EVALSHA", sha, b"0"]).args[1] == sha


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("é", b"\xc3\xa9"),
        (2**70, str(2**70).encode()),
        (1.5, b"1.5"),
        (1e-7, b"1e-07"),
        (True, b"true"),
        (float("inf"), b"inf"),
        (-3, b"-3"),
    ],
)
def test_to_arg(item: object, expected: bytes) -> None:
    """JSON scalars become the bytes a Redis client would send."""
    assert to_arg(item) == expected


@pytest.mark.parametrize("item", [None, {"a": 1}, [1], float("nan")])
def test_to_arg_refuses(item: object) -> None:
    """Null, objects, arrays and NaN are not arguments."""
    with pytest.raises(RequestError):
        to_arg(item)


def test_path_command() -> None:
    """Segments decoded one by one, body next, query pairs last, `_token` dropped."""
    args = path_command(b"/set/a%2Fb/", b"body", b"EX=100&_token=t&NX&k=a+b%21")
    assert args == [b"set", b"a/b", b"body", b"EX", b"100", b"NX", b"k", b"a b!"]


@pytest.mark.parametrize(
    ("command", "refused"),
    [
        ([b"XREAD", b"COUNT", b"1", b"STREAMS", b"block", b"0"], False),
        ([b"xread", b"block", b"0", b"STREAMS", b"s", b"0"], True),
        ([b"CONFIG", b"get", b"x"], False),
        ([b"config", b"rewrite"], True),
        ([b"client", b"list"], True),
        ([b"GET", b"k"], False),
    ],
)
def test_refusal(command: list[bytes], refused: bool) -> None:
    """Refusals look at the subcommand and at XREAD's options, not at key names."""
    assert (refusal(command) is not None) is refused
