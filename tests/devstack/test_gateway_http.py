"""The gateway's wire protocol over raw HTTP: auth, request forms, errors, encodings, refusals.

Expectations come from UPSTASH_REST.md (Upstash's documented behaviour) and, where Upstash
is silent, from the choices documented in `devstack.gateway` and `devstack.commands`.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
import valkey

from devstack.server import GatewayServer

if TYPE_CHECKING:
    from conftest import Http, Stack

UNAUTHORIZED = {"error": "Unauthorized"}


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


# -- authentication -------------------------------------------------------------------------


def test_missing_token_is_401(http: Http) -> None:
    """No token at all: 401 with a JSON error body."""
    response = http.client.post("/", json=["PING"])
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json() == UNAUTHORIZED


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-token", "Basic dGVzdC1nYXRld2F5LXRva2Vu", "Bearer", "test-gateway-token"],
    ids=["wrong", "basic", "empty-bearer", "no-scheme"],
)
def test_bad_authorization_is_401(http: Http, header: str) -> None:
    """A wrong token or a scheme other than Bearer is refused."""
    response = http.client.post("/", json=["PING"], headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_token_query_parameter(http: Http, backend: valkey.Valkey) -> None:
    """`?_token=` authenticates a JSON body request, and is not a command argument."""
    response = http.client.post(f"/?_token={http.token}", json=["SET", "q", "v"])
    assert response.json() == {"result": "OK"}
    assert backend.get("q") == "v"
    assert http.client.post("/?_token=nope", json=["PING"]).status_code == 401


def test_auth_is_checked_before_anything_runs(http: Http, backend: valkey.Valkey) -> None:
    """An unauthenticated command never reaches the server."""
    http.client.post("/", json=["SET", "intruder", "1"], headers={"Authorization": "Bearer x"})
    http.call("/set/intruder/1?_token=x")
    assert backend.exists("intruder") == 0


# -- request forms --------------------------------------------------------------------------


def test_path_style_commands(http: Http, backend: valkey.Valkey) -> None:
    """`GET /set/foo/bar` then `GET /get/foo`, token in the query."""
    assert http.call(f"/set/foo/bar?_token={http.token}").json() == {"result": "OK"}
    assert http.call(f"/get/foo?_token={http.token}").json() == {"result": "bar"}
    assert http.call("/GET/foo", headers=http.auth()).json() == {"result": "bar"}
    assert backend.get("foo") == "bar"


def test_path_style_post_body_is_last_argument(http: Http, backend: valkey.Valkey) -> None:
    """A POST body is appended raw (not parsed as JSON) as the last argument."""
    body = b'{"json": "stays", "as": ["text"]}'
    response = http.call("/set/doc", "POST", content=body, headers=http.auth())
    assert response.json() == {"result": "OK"}
    assert backend.get("doc") == body.decode()
    quoted = http.call("/set/quoted", "POST", content=b'"test"', headers=http.auth())
    assert quoted.status_code == 200
    assert backend.get("quoted") == '"test"'


def test_path_style_query_arguments_follow_the_body(http: Http, backend: valkey.Valkey) -> None:
    """`POST /set/foo?EX=100` with a body is `SET foo <body> EX 100`."""
    response = http.call(f"/set/foo?EX=100&_token={http.token}", "POST", content=b"value")
    assert response.json() == {"result": "OK"}
    assert backend.get("foo") == "value"
    assert 90 < backend.ttl("foo") <= 100


def test_path_style_put_and_head(http: Http, backend: valkey.Valkey) -> None:
    """PUT works like POST; HEAD runs the command and answers without a body."""
    assert http.call("/set/k", "PUT", content=b"v", headers=http.auth()).status_code == 200
    assert backend.get("k") == "v"
    head = http.call("/incr/hits", "HEAD", headers=http.auth())
    assert head.status_code == 200
    assert head.content == b""
    assert backend.get("hits") == "1"


def test_path_segments_are_percent_decoded(http: Http, backend: valkey.Valkey) -> None:
    """`%2F` is a slash inside one segment; `%20` a space; UTF-8 escapes decode."""
    response = http.call("/set/a%2Fb/x%20y%20%E2%9C%93", headers=http.auth())
    assert response.json() == {"result": "OK"}
    assert backend.get("a/b") == "x y ✓"


def test_path_style_integer_reply(http: Http) -> None:
    """Path-style replies use the same JSON mapping."""
    http.call("/rpush/l/a/b/c", headers=http.auth())
    assert http.call("/llen/l", headers=http.auth()).json() == {"result": 3}
    assert http.call("/lrange/l/0/-1", headers=http.auth()).json() == {"result": ["a", "b", "c"]}


def test_any_content_type_is_accepted(http: Http) -> None:
    """JSON bodies are parsed whatever the Content-Type (curl sends form encoding)."""
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = http.auth() | ({"Content-Type": content_type} if content_type else {})
        response = http.client.post("/", content=b'["ECHO", "hi"]', headers=headers)
        assert response.json() == {"result": "hi"}


def test_json_numbers_as_arguments(http: Http, backend: valkey.Valkey) -> None:
    """Integers stay exact (beyond 2^53); floats keep their shortest form."""
    assert http.post(["SET", "big", 2**60 + 1]).json() == {"result": "OK"}
    assert backend.get("big") == str(2**60 + 1)
    assert http.post(["INCRBYFLOAT", "f", 1.5]).json() == {"result": "1.5"}
    assert http.post(["ZADD", "z", 2.25, "m"]).json() == {"result": 1}
    assert http.post(["ZSCORE", "z", "m"]).json() == {"result": "2.25"}


def test_booleans_become_true_false(http: Http, backend: valkey.Valkey) -> None:
    """JSON booleans are stored as `true`/`false`, as JavaScript clients stringify them."""
    http.post(["SET", "flag", True])
    assert backend.get("flag") == "true"


def test_trailing_slash_in_base_url(http: Http) -> None:
    """`//pipeline` (an SDK given a URL ending in `/`) still reaches the pipeline."""
    response = httpx.post(http.url + "//pipeline", json=[["PING"]], headers=http.auth())
    assert response.json() == [{"result": "PONG"}]


# -- malformed requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b'{"cmd": "GET"}',
        b"[]",
        b'["SET", "k", {"a": 1}]',
        b'["GET", null]',
        b'"PING"',
        b'[["GET", "k"]]',
    ],
    ids=["garbage", "empty", "object", "empty-array", "nested-object", "null", "string", "2d"],
)
def test_malformed_body_is_400(http: Http, body: bytes) -> None:
    """A body that is not a flat JSON array of strings and numbers is 400 + JSON error."""
    response = http.client.post("/", content=body, headers=http.auth())
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    assert response.json()["error"].startswith("ERR")


@pytest.mark.parametrize(
    "body",
    [b"{", b'["PING"]', b'[["PING"], "GET"]', b"{}"],
    ids=["garbage", "flat", "mixed", "object"],
)
def test_malformed_pipeline_is_400(http: Http, body: bytes) -> None:
    """A pipeline body must be an array of arrays."""
    for path in ("/pipeline", "/multi-exec"):
        response = http.client.post(path, content=body, headers=http.auth())
        assert response.status_code == 400
        assert "error" in response.json()


def test_unknown_command_is_400(http: Http) -> None:
    """An unknown command is 400 with the server's message and no `result`."""
    response = http.post(["NOSUCHCOMMAND", "x"])
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error"}
    assert "unknown command" in body["error"]


def test_command_error_is_400_with_server_text(http: Http) -> None:
    """Errors keep their full text, prefix included."""
    http.post(["LPUSH", "l", "x"])
    response = http.post(["GET", "l"])
    assert response.status_code == 400
    assert response.json()["error"].startswith("WRONGTYPE Operation against a key")
    arity = http.post(["GET"])
    assert arity.json() == {"error": "ERR wrong number of arguments for 'get' command"}


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(http: Http, method: str) -> None:
    """Only GET, HEAD, POST and PUT are served; the 405 carries a JSON error and `Allow`."""
    response = http.call("/get/k", method, headers=http.auth())
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}
    assert "POST" in response.headers["allow"]


def test_pipeline_needs_post(http: Http) -> None:
    """`GET /pipeline` is not a command called `pipeline`."""
    response = http.call("/pipeline", headers=http.auth())
    assert response.status_code == 405


def test_resp2_response_format_is_refused(http: Http) -> None:
    """`Upstash-Response-Format: resp2` is not implemented and says so."""
    response = http.post(["PING"], **{"Upstash-Response-Format": "resp2"})
    assert response.status_code == 400
    assert "Upstash-Response-Format" in response.json()["error"]


# -- pipelines and transactions -------------------------------------------------------------


def test_pipeline_with_one_failing_command(http: Http, backend: valkey.Valkey) -> None:
    """200; the failing entry has `error` and no `result`; the others ran, in order."""
    backend.set("text", "abc")
    response = http.post(
        [["SET", "a", "1"], ["INCR", "text"], ["INCR", "a"], ["NOPE"], ["GET", "a"]],
        path="/pipeline",
    )
    assert response.status_code == 200
    entries = response.json()
    assert entries[0] == {"result": "OK"}
    assert set(entries[1]) == {"error"}
    assert "not an integer" in entries[1]["error"]
    assert entries[2] == {"result": 2}
    assert set(entries[3]) == {"error"}
    assert entries[4] == {"result": "2"}


def test_empty_pipeline_and_transaction(http: Http) -> None:
    """An empty batch is an empty answer."""
    assert http.post([], path="/pipeline").json() == []
    assert http.post([], path="/multi-exec").json() == []


def test_multi_exec(http: Http, backend: valkey.Valkey) -> None:
    """A transaction answers one entry per command."""
    response = http.post(
        [["SET", "t", "1"], ["INCR", "t"], ["HSET", "h", "f", "v"], ["HGETALL", "h"]],
        path="/multi-exec",
    )
    assert response.status_code == 200
    assert response.json() == [
        {"result": "OK"},
        {"result": 2},
        {"result": 1},
        {"result": ["f", "v"]},
    ]


def test_multi_exec_run_time_error_is_per_entry(http: Http, backend: valkey.Valkey) -> None:
    """A run-time failure is that entry's error; the rest of the transaction still ran."""
    backend.set("text", "abc")
    response = http.post(
        [["SET", "x", "1"], ["INCR", "text"], ["SET", "y", "2"]], path="/multi-exec"
    )
    assert response.status_code == 200
    entries = response.json()
    assert entries[0] == {"result": "OK"}
    assert set(entries[1]) == {"error"}
    assert entries[2] == {"result": "OK"}
    assert backend.mget("x", "y") == ["1", "2"]


def test_multi_exec_queue_time_error_discards_everything(
    http: Http, backend: valkey.Valkey
) -> None:
    """A command rejected when queued: one 400 error object, and nothing ran."""
    response = http.post(
        [["SET", "x", "1"], ["NOSUCHCOMMAND"], ["SET", "y", "2"]], path="/multi-exec"
    )
    assert response.status_code == 400
    body = response.json()
    assert isinstance(body, dict)
    assert "unknown command" in body["error"]
    assert backend.exists("x", "y") == 0
    arity = http.post([["SET", "x", "1"], ["GET"]], path="/multi-exec")
    assert arity.status_code == 400
    assert backend.exists("x") == 0


def test_multi_exec_with_refused_command_runs_nothing(http: Http, backend: valkey.Valkey) -> None:
    """A refused command inside a transaction discards it before anything is sent."""
    response = http.post([["SET", "x", "1"], ["BLPOP", "q", "0"]], path="/multi-exec")
    assert response.status_code == 400
    assert "BLPOP" in response.json()["error"]
    assert backend.exists("x") == 0


def test_multi_exec_is_atomic(http: Http, backend: valkey.Valkey, stack: Stack) -> None:
    """Concurrent transactions never interleave: each sees its own two INCRs back to back."""
    results: list[list[int]] = []

    def run() -> None:
        with httpx.Client(base_url=stack.url, headers=http.auth()) as client:
            for _ in range(10):
                body = client.post("/multi-exec", json=[["INCR", "n"], ["INCR", "n"]]).json()
                results.append([entry["result"] for entry in body])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 40
    assert all(second == first + 1 for first, second in results)
    assert backend.get("n") == "80"


# -- refused commands -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["BLPOP", "q", "0"],
        ["BRPOP", "q", "0"],
        ["BRPOPLPUSH", "a", "b", "0"],
        ["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"],
        ["BLMPOP", "0", "1", "q", "LEFT"],
        ["BZPOPMIN", "z", "0"],
        ["BZPOPMAX", "z", "0"],
        ["BZMPOP", "0", "1", "z", "MIN"],
        ["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
        ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"],
        ["WAIT", "1", "0"],
        ["WAITAOF", "1", "0", "0"],
        ["blpop", "q", "0"],
    ],
    ids=lambda c: " ".join(c[:2]) if c[0].startswith("X") else c[0],
)
def test_blocking_commands_are_refused(
    http: Http, backend: valkey.Valkey, command: list[str]
) -> None:
    """Blocking commands get 400 at once and never reach the server."""
    backend.config_resetstat()
    started = time.monotonic()
    response = http.post(command)
    assert response.status_code == 400
    assert "not available over REST" in response.json()["error"]
    assert time.monotonic() - started < 2
    assert f"cmdstat_{command[0].lower()}" not in backend.info("commandstats")


def test_pool_is_healthy_after_refusals(http: Http, backend: valkey.Valkey, stack: Stack) -> None:
    """After a burst of refused BLPOPs no backend connection is blocked; GET still works."""
    for _ in range(100):
        assert http.post(["BLPOP", "q", "0"]).status_code == 400
    backend.set("k", "v")
    assert http.post(["GET", "k"]).json() == {"result": "v"}
    assert backend.info("clients")["blocked_clients"] == 0
    clients = backend.client_list()
    assert not [c for c in clients if c["cmd"] in ("blpop", "multi", "select", "subscribe")]


def test_non_blocking_stream_reads_are_allowed(http: Http) -> None:
    """XREAD without BLOCK works, even when a stream is named `block`."""
    http.post(["XADD", "block", "1-1", "f", "v"])
    response = http.post(["XREAD", "COUNT", "1", "STREAMS", "block", "0"])
    assert response.json() == {"result": [["block", [["1-1", ["f", "v"]]]]]}


def test_select_is_refused_and_database_unchanged(http: Http, stack: Stack) -> None:
    """SELECT is refused; the next commands still land in database 0."""
    assert http.post(["SELECT", "1"]).status_code == 400
    pipeline = http.post([["SELECT", "2"], ["SET", "where", "here"]], path="/pipeline").json()
    assert "error" in pipeline[0]
    assert pipeline[1] == {"result": "OK"}
    db0 = valkey.Valkey.from_url(stack.redis_url, db=0, decode_responses=True)
    db2 = valkey.Valkey.from_url(stack.redis_url, db=2, decode_responses=True)
    try:
        assert db0.get("where") == "here"
        assert db2.dbsize() == 0
    finally:
        db0.close()
        db2.close()


def test_bare_multi_is_refused_and_connection_not_left_queuing(
    http: Http, backend: valkey.Valkey
) -> None:
    """MULTI is refused, so the following SET runs now instead of being queued."""
    response = http.post(["MULTI"])
    assert response.status_code == 400
    assert "/multi-exec" in response.json()["error"]
    for _ in range(5):
        assert http.post(["SET", "now", "1"]).json() == {"result": "OK"}
    assert backend.get("now") == "1"


@pytest.mark.parametrize(
    "command",
    [
        ["SUBSCRIBE", "c"],
        ["PSUBSCRIBE", "c*"],
        ["MONITOR"],
        ["CLIENT", "REPLY", "OFF"],
        ["CLIENT", "SETNAME", "x"],
        ["QUIT"],
        ["HELLO", "3"],
        ["RESET"],
        ["AUTH", "x"],
        ["EXEC"],
        ["WATCH", "k"],
        ["DISCARD"],
        ["DEBUG", "SLEEP", "5"],
        ["SHUTDOWN"],
        ["CONFIG", "SET", "maxmemory", "1"],
        ["REPLICAOF", "127.0.0.1", "1"],
        ["SWAPDB", "0", "1"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_connection_state_and_admin_commands_are_refused(
    http: Http, backend: valkey.Valkey, command: list[str]
) -> None:
    """Commands that would change a shared connection or the server are 400."""
    response = http.post(command)
    assert response.status_code == 400
    assert command[0] in response.json()["error"]
    assert http.post(["PING"]).json() == {"result": "PONG"}
    assert backend.ping() is True


def test_config_get_is_allowed(http: Http) -> None:
    """CONFIG GET reads only, so it is forwarded."""
    response = http.post(["CONFIG", "GET", "maxmemory"])
    assert response.status_code == 200
    assert response.json()["result"][0] == "maxmemory"


def test_publish_works(http: Http, stack: Stack) -> None:
    """PUBLISH is an ordinary command; a subscriber on the server receives the message."""
    subscriber = valkey.Valkey.from_url(stack.redis_url, decode_responses=True).pubsub()
    try:
        subscriber.subscribe("news")
        subscriber.get_message(timeout=2)
        assert http.post(["PUBLISH", "news", "héllo"]).json() == {"result": 1}
        message = subscriber.get_message(timeout=2)
        assert message is not None
        assert message["data"] == "héllo"
    finally:
        subscriber.close()


# -- response mapping and encodings ---------------------------------------------------------


def test_plain_reply_shapes(http: Http) -> None:
    """Integers as integers, nil as null, flat arrays, floats as strings."""
    http.post(["HSET", "h", "a", "1", "b", "2"])
    http.post(["ZADD", "z", "1.5", "m"])
    assert http.post(["HGETALL", "h"]).json() == {"result": ["a", "1", "b", "2"]}
    assert http.post(["ZRANGE", "z", "0", "-1", "WITHSCORES"]).json() == {"result": ["m", "1.5"]}
    assert http.post(["GET", "absent"]).json() == {"result": None}
    assert http.post(["EXISTS", "h"]).json() == {"result": 1}
    assert http.post(["SET", "k", "v"]).json() == {"result": "OK"}
    assert http.post(["TYPE", "h"]).json() == {"result": "hash"}


def test_invalid_utf8_becomes_replacement_character(http: Http, raw_backend: valkey.Valkey) -> None:
    """Without base64, bytes that are not UTF-8 arrive as U+FFFD."""
    raw_backend.set("bin", b"\xff\xfeok\xc3")
    raw_backend.rpush("binlist", b"\x80")
    assert http.post(["GET", "bin"]).json() == {"result": "\ufffd\ufffdok\ufffd"}
    assert http.post(["LRANGE", "binlist", "0", "-1"]).json() == {"result": ["\ufffd"]}


def test_base64_encodes_every_string(http: Http, raw_backend: valkey.Valkey) -> None:
    """Base64 mode: bulk and status strings encoded; integers and null not."""
    raw_backend.set("k", "välue")
    raw_backend.set("bin", b"\xff\x00\xfe")
    assert http.base64(["GET", "k"]).json() == {"result": b64("välue")}
    assert http.base64(["GET", "bin"]).json() == {"result": b64(b"\xff\x00\xfe")}
    assert http.base64(["PING"]).json() == {"result": b64("PONG")}
    assert http.base64(["TYPE", "k"]).json() == {"result": b64("string")}
    assert http.base64(["STRLEN", "k"]).json() == {"result": 6}
    assert http.base64(["GET", "absent"]).json() == {"result": None}


def test_base64_leaves_ok_status_unencoded(http: Http) -> None:
    """The `OK` status reply is never encoded; a stored value "OK" is (it is data)."""
    assert http.base64(["SET", "k", "OK"]).json() == {"result": "OK"}
    assert http.base64(["GET", "k"]).json() == {"result": b64("OK")}


def test_base64_arrays_are_encoded_recursively(http: Http) -> None:
    """Nested arrays: every string encoded, integers and nils kept."""
    script = "return {'a', 1, {'b', false}, {}}"
    assert http.base64(["EVAL", script, "0"]).json() == {
        "result": [b64("a"), 1, [b64("b"), None], []]
    }
    http.post(["HSET", "h", "f", "v"])
    assert http.base64(["HGETALL", "h"]).json() == {"result": [b64("f"), b64("v")]}


def test_base64_errors_are_never_encoded(http: Http) -> None:
    """Errors stay plain text, alone and inside pipelines."""
    assert http.base64(["NOPE"]).json()["error"].startswith("ERR unknown command")
    entries = http.base64([["SET", "k", "v"], ["NOPE"], ["GET", "k"]], path="/pipeline").json()
    assert entries[0] == {"result": "OK"}
    assert entries[1]["error"].startswith("ERR unknown command")
    assert entries[2] == {"result": b64("v")}


def test_base64_in_transactions(http: Http) -> None:
    """Each transaction entry is encoded on its own."""
    entries = http.base64([["SET", "k", "v"], ["GET", "k"], ["INCR", "n"]], path="/multi-exec")
    assert entries.json() == [{"result": "OK"}, {"result": b64("v")}, {"result": 1}]


# -- read-your-writes token -----------------------------------------------------------------


def test_sync_token_header_changes_every_response(http: Http) -> None:
    """Every response, errors included, carries a new `Upstash-Sync-Token`."""
    tokens = [
        http.post(["SET", "k", "v"]).headers["upstash-sync-token"],
        http.post(["GET", "k"], **{"Upstash-Sync-Token": ""}).headers["upstash-sync-token"],
        http.post(["NOPE"]).headers["upstash-sync-token"],
        http.post([["PING"]], path="/pipeline").headers["upstash-sync-token"],
        http.client.post("/", json=["PING"]).headers["upstash-sync-token"],
    ]
    assert all(tokens)
    assert len(set(tokens)) == len(tokens)


def test_stale_sync_token_is_accepted(http: Http) -> None:
    """Sending back any earlier token is fine: a single server has nothing to wait for."""
    first = http.post(["SET", "k", "v"]).headers["upstash-sync-token"]
    response = http.post(["GET", "k"], **{"Upstash-Sync-Token": first})
    assert response.json() == {"result": "v"}


# -- scripts over raw HTTP ------------------------------------------------------------------


def test_script_load_returns_sha_of_original_text(http: Http) -> None:
    """SCRIPT LOAD with the flag answers SHA1(original); EVALSHA by it runs the script."""
    script = "#!lua flags=allow-key-locking\nreturn KEYS[1]"
    sha = hashlib.sha1(script.encode()).hexdigest()
    assert http.post(["SCRIPT", "LOAD", script]).json() == {"result": sha}
    assert http.post(["EVALSHA", sha, "1", "key"]).json() == {"result": "key"}
    assert http.post(["EVALSHA", sha.upper(), "1", "key"]).json() == {"result": "key"}
    assert http.post(["SCRIPT", "EXISTS", sha]).json() == {"result": [1]}


def test_evalsha_unknown_sha_has_upstash_text(http: Http) -> None:
    """NOSCRIPT carries Upstash's wording, alone and in a pipeline."""
    expected = "NOSCRIPT No matching script. Please use EVAL."
    assert http.post(["EVALSHA", "a" * 40, "0"]).json() == {"error": expected}
    entries = http.post([["EVALSHA", "b" * 40, "0"]], path="/pipeline").json()
    assert entries == [{"error": expected}]


def test_stripping_the_flag_keeps_line_numbers(http: Http) -> None:
    """Lua errors in a flagged script point at the line the client wrote."""
    script = "#!lua flags=allow-key-locking\n\nreturn no_such_global"
    error = http.post(["EVAL", script, "0"]).json()["error"]
    assert error.startswith("ERR user_script:3: Script attempted to access nonexistent global")
    assert "@user_script:3" in error


def test_failing_calls_in_a_flagged_script_name_its_first_line(http: Http) -> None:
    """A failing redis.call is reported on the first code line: the key guard made the call."""
    script = "#!lua flags=allow-key-locking\nlocal x = 1\nreturn redis.call('NOSUCH')"
    error = http.post(["EVAL", script, "0"]).json()["error"]
    assert error.startswith("ERR Unknown command called from script")
    assert "@user_script:2" in error


def test_function_load_with_allow_key_locking(http: Http) -> None:
    """FUNCTION LOAD accepts the per-function flag; FCALL runs the function."""
    library = (
        "#!lua name=gwlib\n"
        "redis.register_function{function_name='gw_get', callback=function(keys, args)\n"
        "  return redis.call('GET', keys[1]) end, flags={'no-writes', 'allow-key-locking'}}\n"
        "redis.register_function{function_name='gw_set', callback=function(keys, args)\n"
        "  return redis.call('SET', keys[1], args[1]) end, flags={\"allow-key-locking\"}}\n"
    )
    assert http.post(["FUNCTION", "LOAD", "REPLACE", library]).json() == {"result": "gwlib"}
    assert http.post(["FCALL", "gw_set", "1", "fk", "fv"]).json() == {"result": "OK"}
    assert http.post(["FCALL_RO", "gw_get", "1", "fk"]).json() == {"result": "fv"}
    assert http.post(["FUNCTION", "DELETE", "gwlib"]).json() == {"result": "OK"}


# -- request size cap -----------------------------------------------------------------------


def test_request_size_cap(small: Http, backend: valkey.Valkey) -> None:
    """Past the cap: 400 `ERR max request size exceeded`, and nothing runs."""
    response = small.post(["SET", "big", "x" * 5000])
    assert response.status_code == 400
    assert response.json() == {"error": "ERR max request size exceeded"}
    assert backend.exists("big") == 0
    assert small.post(["SET", "small", "x" * 1000]).json() == {"result": "OK"}


def test_request_size_cap_applies_to_batches_and_paths(small: Http) -> None:
    """The cap covers a whole pipeline and a path-style body."""
    rows = [["SET", f"k{i}", "x" * 100] for i in range(50)]
    for path in ("/pipeline", "/multi-exec"):
        response = small.post(rows, path=path)
        assert response.status_code == 400
        assert response.json() == {"error": "ERR max request size exceeded"}
    body = small.call("/set/k", "POST", content=b"y" * 5000, headers=small.auth())
    assert body.json() == {"error": "ERR max request size exceeded"}


def test_default_cap_admits_large_values(http: Http, backend: valkey.Valkey) -> None:
    """The default 10 MB cap lets a 2 MB value through."""
    assert http.post(["SET", "big", "x" * 2_000_000]).json() == {"result": "OK"}
    assert backend.strlen("big") == 2_000_000


# -- read-only token ------------------------------------------------------------------------


def test_read_only_token_reads(read_only: Http, backend: valkey.Valkey) -> None:
    """Reads, PING and read-only scripts run with the read-only token."""
    backend.set("k", "v")
    assert read_only.post(["GET", "k"]).json() == {"result": "v"}
    assert read_only.post(["PING"]).json() == {"result": "PONG"}
    assert read_only.post(["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "k"]).json() == {
        "result": "v"
    }


@pytest.mark.parametrize(
    "command",
    [
        ["SET", "k", "x"],
        ["DEL", "k"],
        ["KEYS", "*"],
        ["SCAN", "0"],
        ["FLUSHALL"],
        ["EVAL", "return 1", "0"],
        ["PUBLISH", "c", "m"],
        ["CONFIG", "GET", "maxmemory"],
    ],
    ids=lambda c: c[0],
)
def test_read_only_token_refuses_writes(
    read_only: Http, backend: valkey.Valkey, command: list[str]
) -> None:
    """Writes, scripts that may write, KEYS and SCAN: 400 NOPERM, nothing changed."""
    backend.set("k", "v")
    response = read_only.post(command)
    assert response.status_code == 400
    assert response.json()["error"].startswith("NOPERM this user has no permissions to run the")
    assert backend.get("k") == "v"


def test_read_only_token_in_batches(read_only: Http, backend: valkey.Valkey) -> None:
    """A pipeline answers NOPERM per entry; a transaction with a write is refused whole."""
    backend.set("k", "v")
    entries = read_only.post([["GET", "k"], ["SET", "k", "x"]], path="/pipeline").json()
    assert entries[0] == {"result": "v"}
    assert entries[1]["error"].startswith("NOPERM")
    tx = read_only.post([["GET", "k"], ["INCR", "n"]], path="/multi-exec")
    assert tx.status_code == 400
    assert backend.get("k") == "v"
    assert backend.exists("n") == 0


@pytest.mark.parametrize(
    "command",
    [
        ["EVAL_RO", "return redis.call('KEYS', '*')", "0"],
        ["EVAL_RO", "return redis.pcall('SCAN', '0')", "0"],
        ["EVAL_RO", "return redis.call('SET', 'k', 'x')", "0"],
        ["FCALL_RO", "list_keys", "0"],
    ],
    ids=["EVAL_RO-KEYS", "EVAL_RO-pcall-SCAN", "EVAL_RO-SET", "FCALL_RO-KEYS"],
)
def test_read_only_token_cannot_reach_forbidden_commands_from_scripts(
    read_only: Http, small: Http, backend: valkey.Valkey, command: list[str]
) -> None:
    """KEYS, SCAN and writes stay out of reach from inside read-only scripts and functions."""
    library = (
        "#!lua name=ro_test\nredis.register_function{function_name='list_keys', "
        "callback=function() return redis.call('KEYS', '*') end, flags={'no-writes'}}"
    )
    assert small.post(["FUNCTION", "LOAD", "REPLACE", library]).status_code == 200
    backend.set("k", "v")
    response = read_only.post(command)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "no permissions to run the" in error or "Write commands are not allowed" in error
    assert "k" not in str(response.json().get("result"))
    assert backend.get("k") == "v"
    # The full token's scripts keep every command.
    assert small.post(["EVAL_RO", "return redis.call('KEYS', '*')", "0"]).json() == {
        "result": ["k"]
    }


def test_read_only_scripts_get_upstash_noperm_text(read_only: Http, backend: valkey.Valkey) -> None:
    """A refused call inside a script reads like Upstash's NOPERM, naming the command."""
    response = read_only.post(["EVAL_RO", "return redis.call('KEYS', '*')", "0"])
    assert response.json() == {
        "error": "NOPERM this user has no permissions to run the 'keys' command or its subcommand"
    }


def test_full_token_still_writes_on_the_read_only_gateway(small: Http) -> None:
    """Configuring a read-only token does not restrict the main token."""
    assert small.post(["SET", "k", "v"]).json() == {"result": "OK"}


# -- backend failures -----------------------------------------------------------------------


@pytest.fixture
def silent_backend() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a stalled Redis)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_unreachable_backend_is_500_json(stack: Stack) -> None:
    """Nothing listening: a prompt 500 with a JSON error, not a hang."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead_url = f"redis://127.0.0.1:{probe.getsockname()[1]}"
    probe.close()
    with GatewayServer(dead_url, "t", port=0) as server:
        started = time.monotonic()
        response = httpx.post(server.url, json=["PING"], headers={"Authorization": "Bearer t"})
        assert response.status_code == 500
        assert response.json()["error"].startswith("ERR backend unavailable")
        assert time.monotonic() - started < 5


def test_stalled_backend_times_out_with_500(silent_backend: str) -> None:
    """A backend that never answers is cut at the gateway's deadline."""
    with GatewayServer(silent_backend, "t", port=0, backend_timeout_s=0.5) as server:
        started = time.monotonic()
        response = httpx.post(
            server.url, json=["GET", "k"], headers={"Authorization": "Bearer t"}, timeout=10
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 500
        assert "backend unavailable" in response.json()["error"]
        assert 0.4 < elapsed < 5


def test_request_count(http: Http, stack: Stack) -> None:
    """`request_count` counts every HTTP request, refused ones included."""
    stack.server.reset_count()
    http.post(["PING"])
    http.post([["PING"], ["PING"]], path="/pipeline")
    http.client.post("/", json=["PING"])
    assert stack.server.request_count == 3
