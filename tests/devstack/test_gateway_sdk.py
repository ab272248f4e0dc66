"""The gateway through the official `upstash-redis` SDK, sync and async, base64 and plain.

Each test runs once per encoding (`encoding` fixture), against the session's real gateway
in front of real Valkey.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

import pytest
import valkey
from upstash_redis import Redis
from upstash_redis.asyncio import Redis as AsyncRedis
from upstash_redis.errors import UpstashError

if TYPE_CHECKING:
    from conftest import Stack

LOCKING_SCRIPT = "#!lua flags=allow-key-locking\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
READ_LOCKING_SCRIPT = "#!lua flags=no-writes,allow-key-locking\nreturn redis.call('GET', KEYS[1])"


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


# -- strings and values ---------------------------------------------------------------------


def test_ping(redis: Redis) -> None:
    """PING answers PONG (a status reply the gateway must encode in base64 mode)."""
    assert redis.ping() == "PONG"
    assert redis.echo("hello") == "hello"


def test_set_get_delete(redis: Redis, backend: valkey.Valkey) -> None:
    """SET answers OK (True in the SDK), GET returns the value, DEL counts keys."""
    assert redis.set("greeting", "hello") is True
    assert redis.get("greeting") == "hello"
    assert backend.get("greeting") == "hello"
    assert redis.delete("greeting", "absent") == 1
    assert redis.get("greeting") is None


def test_set_options(redis: Redis) -> None:
    """NX, XX, GET and EX options behave like Redis."""
    assert redis.set("k", "1", nx=True) is True
    assert redis.set("k", "2", nx=True) is False
    assert redis.set("k", "3", get=True) == "1"
    assert redis.set("absent", "x", xx=True) is False
    assert redis.set("k", "4", ex=100) is True
    assert 90 < redis.ttl("k") <= 100


def test_unicode_keys_and_values(redis: Redis, backend: valkey.Valkey) -> None:
    """Non-ASCII keys and values survive the round trip byte for byte."""
    key, value = "ключ:🔑:日本", "héllo ✓ 日本語 🎉 \u0000 tail"
    redis.set(key, value)
    assert redis.get(key) == value
    assert backend.get(key) == value


@pytest.mark.parametrize(
    "value",
    ["", "OK", "T0s=", "PONG", "null", '{"a": [1, 2]}', "\r\n\t\x01\x7f", "   ", "0", "-1.5e10"],
    ids=["empty", "OK", "b64", "PONG", "null", "json", "control", "spaces", "zero", "float"],
)
def test_awkward_values(redis: Redis, value: str) -> None:
    """Values that look like protocol words, JSON or base64 come back unchanged."""
    redis.set("v", value)
    assert redis.get("v") == value


def test_large_value(redis: Redis, backend: valkey.Valkey) -> None:
    """A 1 MiB value is stored and read back whole."""
    value = ("0123456789abcdef" * 65536)[:-7] + "✓end"
    assert redis.set("big", value) is True
    assert backend.strlen("big") == len(value.encode())
    assert redis.get("big") == value


def test_integers(redis: Redis) -> None:
    """Integer replies are integers, exact beyond 2^53."""
    assert redis.incr("n") == 1
    assert redis.incrby("n", 2**62) == 2**62 + 1
    assert redis.decrby("n", 2**62) == 1
    assert redis.strlen("n") == 1
    assert redis.exists("n", "absent") == 1


def test_float_replies(redis: Redis) -> None:
    """INCRBYFLOAT answers a string the SDK turns into a float."""
    assert redis.incrbyfloat("f", 1.25) == 1.25
    assert redis.incrbyfloat("f", 0.5) == 1.75
    assert redis.get("f") == "1.75"


def test_missing_keys_are_none(redis: Redis) -> None:
    """Nil replies are null, also inside arrays."""
    redis.set("a", "1")
    assert redis.get("absent") is None
    assert redis.mget("a", "absent", "a") == ["1", None, "1"]


def test_wrong_type_is_an_error(redis: Redis) -> None:
    """A command error surfaces as UpstashError with the server's text."""
    redis.lpush("list", "x")
    with pytest.raises(UpstashError, match="WRONGTYPE"):
        redis.get("list")


def test_type_and_expiry(redis: Redis) -> None:
    """TYPE's status reply, EXPIRE/PERSIST booleans and TTL integers."""
    redis.set("s", "x")
    assert redis.type("s") == "string"
    assert redis.expire("s", 50) is True
    assert 0 < redis.ttl("s") <= 50
    assert redis.persist("s") is True
    assert redis.ttl("s") == -1


# -- collections ----------------------------------------------------------------------------


def test_hashes(redis: Redis) -> None:
    """HGETALL's flat reply becomes a dict; HINCRBYFLOAT a float."""
    assert redis.hset("h", values={"name": "ünï", "n": "1"}) == 2
    assert redis.hgetall("h") == {"name": "ünï", "n": "1"}
    assert redis.hget("h", "name") == "ünï"
    assert redis.hexists("h", "n") is True
    assert redis.hincrbyfloat("h", "n", 0.5) == 1.5
    assert redis.hmget("h", "name", "nope") == ["ünï", None]
    assert redis.hgetall("absent") == {}


def test_sorted_sets_with_scores(redis: Redis) -> None:
    """Scores travel as strings and come back as floats, in order."""
    assert redis.zadd("z", {"a": 1.5, "b": -2, "c": 1e10}) == 3
    assert redis.zrange("z", 0, -1, withscores=True) == [("b", -2.0), ("a", 1.5), ("c", 1e10)]
    assert redis.zscore("z", "a") == 1.5
    assert redis.zincrby("z", 0.25, "a") == 1.75
    assert redis.zrange("z", "-inf", 2, sortby="BYSCORE") == ["b", "a"]
    assert redis.zcard("z") == 3
    assert redis.zscore("z", "absent") is None


def test_lists_and_sets(redis: Redis) -> None:
    """LPUSH/RPOP keep FIFO order; set membership answers booleans."""
    assert redis.lpush("q", "1", "2", "3") == 3
    assert redis.rpop("q") == "1"
    assert redis.lrange("q", 0, -1) == ["3", "2"]
    assert redis.sadd("s", "x", "y") == 2
    assert sorted(redis.smembers("s")) == ["x", "y"]
    assert redis.sismember("s", "x") is True
    assert redis.sismember("s", "z") is False


# -- pipelines and transactions ---------------------------------------------------------------


def test_pipeline(redis: Redis, stack: Stack) -> None:
    """A pipeline is one HTTP request and returns every result in order."""
    stack.server.reset_count()
    pipe = redis.pipeline()
    pipe.set("p", "1")
    pipe.incr("p")
    pipe.get("p")
    pipe.hset("ph", values={"f": "v"})
    pipe.hgetall("ph")
    assert pipe.exec() == [True, 2, "2", 1, {"f": "v"}]
    assert stack.server.request_count == 1


def test_pipeline_error_raises_first_error(redis: Redis, backend: valkey.Valkey) -> None:
    """The SDK raises the first failing entry's error; the other commands still ran."""
    redis.set("text", "abc")
    pipe = redis.pipeline()
    pipe.set("before", "1")
    pipe.incr("text")
    pipe.set("after", "2")
    with pytest.raises(UpstashError, match="not an integer"):
        pipe.exec()
    assert backend.get("before") == "1"
    assert backend.get("after") == "2"


def test_transaction(redis: Redis, stack: Stack) -> None:
    """A transaction runs its commands atomically in one request."""
    stack.server.reset_count()
    tx = redis.multi()
    tx.set("t", "1")
    tx.incrby("t", 41)
    tx.get("t")
    tx.zadd("tz", {"m": 2.5})
    tx.zscore("tz", "m")
    assert tx.exec() == [True, 42, "42", 1, 2.5]
    assert stack.server.request_count == 1


def test_transaction_run_time_error(redis: Redis, backend: valkey.Valkey) -> None:
    """A command failing at run time does not roll back the others."""
    redis.set("text", "abc")
    tx = redis.multi()
    tx.set("x", "1")
    tx.incr("text")
    with pytest.raises(UpstashError, match="not an integer"):
        tx.exec()
    assert backend.get("x") == "1"


# -- scripts --------------------------------------------------------------------------------


def test_eval_and_evalsha(redis: Redis) -> None:
    """EVAL caches the script, so EVALSHA by its SHA1 works afterwards."""
    script = "return {KEYS[1], ARGV[1], 7, redis.call('SET', KEYS[1], ARGV[1])}"
    assert redis.eval(script, keys=["ek"], args=["ev"]) == ["ek", "ev", 7, "OK"]
    assert redis.evalsha(sha1(script), keys=["ek2"], args=["ev2"]) == ["ek2", "ev2", 7, "OK"]
    assert redis.get("ek2") == "ev2"


def test_script_load_and_exists(redis: Redis) -> None:
    """SCRIPT LOAD answers the SHA1 of the text; SCRIPT EXISTS sees it."""
    script = "return ARGV[1] .. '!'"
    sha = redis.script_load(script)
    assert sha == sha1(script)
    assert redis.script_exists(sha, "0" * 40) == [True, False]
    assert redis.evalsha(sha, args=["hi"]) == "hi!"


def test_allow_key_locking_script(redis: Redis, backend: valkey.Valkey) -> None:
    """The Upstash-only shebang flag is accepted; the SHA stays that of the original text."""
    sha = redis.script_load(LOCKING_SCRIPT)
    assert sha == sha1(LOCKING_SCRIPT)
    assert redis.script_exists(sha) == [True]
    assert redis.evalsha(sha, keys=["counter"], args=["5"]) == 5
    assert redis.eval(LOCKING_SCRIPT, keys=["counter"], args=["2"]) == 7
    assert backend.get("counter") == "7"


def test_allow_key_locking_with_other_flags(redis: Redis) -> None:
    """`no-writes,allow-key-locking` keeps `no-writes`: reads work through EVALSHA_RO."""
    redis.set("ro", "value")
    assert redis.eval_ro(READ_LOCKING_SCRIPT, keys=["ro"]) == "value"
    assert redis.evalsha_ro(sha1(READ_LOCKING_SCRIPT), keys=["ro"]) == "value"
    write = "#!lua flags=no-writes,allow-key-locking\nreturn redis.call('SET', KEYS[1], 'x')"
    with pytest.raises(UpstashError, match="Write commands are not allowed"):
        redis.eval(write, keys=["ro"])


DYNAMIC_KEY_ERROR = (
    "ERR Dynamic keys are not allowed in Lua scripts when 'allow-key-locking' flag is set. "
    "Key was: {key}"
)
# Writes both declared keys, then touches one it did not declare.
DYNAMIC_SCRIPT = (
    "#!lua flags=allow-key-locking\n"
    "redis.call('SET', KEYS[1], 'changed')\n"
    "redis.call('INCR', KEYS[2])\n"
    "return redis.call('GET', ARGV[1])"
)


def test_key_locking_refuses_undeclared_keys(redis: Redis, backend: valkey.Valkey) -> None:
    """A flagged script touching a key outside KEYS fails with Upstash's text, changing nothing."""
    backend.set("declared", "original", ex=100)
    backend.set("undeclared", "x")
    with pytest.raises(UpstashError) as raised:
        redis.eval(DYNAMIC_SCRIPT, keys=["declared", "counter"], args=["undeclared"])
    assert str(raised.value) == DYNAMIC_KEY_ERROR.format(key="undeclared")
    assert backend.get("declared") == "original"
    assert 90 < backend.ttl("declared") <= 100
    assert backend.exists("counter") == 0


def test_key_locking_through_evalsha_and_in_batches(redis: Redis, backend: valkey.Valkey) -> None:
    """EVALSHA of a flagged script is guarded too, also inside pipelines and transactions."""
    sha = redis.script_load(DYNAMIC_SCRIPT)
    assert sha == sha1(DYNAMIC_SCRIPT)
    with pytest.raises(UpstashError, match="Key was: elsewhere"):
        redis.evalsha(sha, keys=["a", "b"], args=["elsewhere"])
    pipe = redis.pipeline()
    pipe.evalsha(sha, keys=["a", "b"], args=["a"])  # only declared keys: runs
    assert pipe.exec() == ["changed"]
    tx = redis.multi()
    tx.evalsha(sha, keys=["a", "b"], args=["elsewhere"])
    with pytest.raises(UpstashError, match="Dynamic keys are not allowed"):
        tx.exec()
    assert backend.get("b") == "1"


def test_key_locking_applies_to_every_key_of_a_command(redis: Redis) -> None:
    """Multi-key commands are checked key by key, with the server's own key specs."""
    script = "#!lua flags=allow-key-locking\nreturn redis.call('MSET', KEYS[1], 'v', ARGV[1], 'w')"
    assert redis.eval(script, keys=["m1"], args=["m1"]) == "OK"
    with pytest.raises(UpstashError, match=r"Key was: m2$"):
        redis.eval(script, keys=["m1"], args=["m2"])
    assert redis.eval("return redis.call('GET', 'm2')") is None


def test_scripts_without_the_flag_may_touch_any_key(redis: Redis) -> None:
    """Only flagged scripts are restricted."""
    redis.set("free", "yes")
    assert redis.eval("return redis.call('GET', 'free')") == "yes"


def test_evalsha_unknown_script(redis: Redis) -> None:
    """An unknown SHA gets Upstash's NOSCRIPT text."""
    with pytest.raises(UpstashError, match=r"^NOSCRIPT No matching script\. Please use EVAL\.$"):
        redis.evalsha("f" * 40)


def test_script_error(redis: Redis) -> None:
    """A script's error reply surfaces as UpstashError."""
    with pytest.raises(UpstashError, match="boom"):
        redis.eval("return redis.error_reply('boom')")


def test_scripts_in_a_pipeline(redis: Redis) -> None:
    """Scripts with the flag work inside pipelines and transactions too."""
    pipe = redis.pipeline()
    pipe.eval(LOCKING_SCRIPT, keys=["c"], args=["1"])
    pipe.evalsha(sha1(LOCKING_SCRIPT), keys=["c"], args=["1"])
    assert pipe.exec() == [1, 2]
    tx = redis.multi()
    tx.evalsha(sha1(LOCKING_SCRIPT), keys=["c"], args=["10"])
    tx.get("c")
    assert tx.exec() == [12, "12"]


# -- read-your-writes -----------------------------------------------------------------------


def test_sync_token_changes(redis: Redis) -> None:
    """Every write, pipeline, transaction and script call yields a new sync token."""
    seen = []
    redis.set("a", "1")
    seen.append(redis._sync_token)
    pipe = redis.pipeline()
    pipe.set("b", "2")
    pipe.exec()
    seen.append(redis._sync_token)
    tx = redis.multi()
    tx.set("c", "3")
    tx.exec()
    seen.append(redis._sync_token)
    redis.eval("return 1")
    seen.append(redis._sync_token)
    assert all(seen)
    assert len(set(seen)) == 4


# -- async client ---------------------------------------------------------------------------


async def test_async_basics(aredis: AsyncRedis) -> None:
    """The async client: PING, SET/GET, unicode, hashes."""
    assert await aredis.ping() == "PONG"
    assert await aredis.set("k", "välue") is True
    assert await aredis.get("k") == "välue"
    await aredis.hset("h", values={"a": "1"})
    assert await aredis.hgetall("h") == {"a": "1"}


async def test_async_pipeline_and_transaction(aredis: AsyncRedis) -> None:
    """Async pipelines and transactions return every result."""
    pipe = aredis.pipeline()
    pipe.set("x", "1")
    pipe.incr("x")
    assert await pipe.exec() == [True, 2]
    tx = aredis.multi()
    tx.incr("x")
    tx.zadd("z", {"m": 0.5})
    tx.zrange("z", 0, -1, withscores=True)
    assert await tx.exec() == [3, 1, [("m", 0.5)]]


async def test_async_scripts(aredis: AsyncRedis) -> None:
    """Async SCRIPT LOAD/EVALSHA with the allow-key-locking flag."""
    sha = await aredis.script_load(LOCKING_SCRIPT)
    assert sha == sha1(LOCKING_SCRIPT)
    assert await aredis.evalsha(sha, keys=["n"], args=["3"]) == 3


async def test_async_concurrent_requests(aredis: AsyncRedis, backend: valkey.Valkey) -> None:
    """Many concurrent requests share the pool without losing or mixing replies."""
    results = await asyncio.gather(*(aredis.incr("counter") for _ in range(60)))
    assert sorted(results) == list(range(1, 61))
    echoes = await asyncio.gather(*(aredis.echo(f"e{i}") for i in range(40)))
    assert echoes == [f"e{i}" for i in range(40)]
    assert backend.get("counter") == "60"


async def test_async_large_value(aredis: AsyncRedis) -> None:
    """A 1 MiB value through the async client."""
    value = "ä" * (512 * 1024)
    await aredis.set("big", value)
    assert await aredis.get("big") == value
