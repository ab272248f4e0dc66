"""Where Valkey differs from Upstash, the gateway answers like Upstash (through the real SDK).

Each expectation is Upstash's behaviour as the official SDK's own suite states it; see
`devstack.emulation` for the rules.
"""

from __future__ import annotations

import time

import pytest
from upstash_redis import Redis
from upstash_redis.errors import UpstashError

# -- streams --------------------------------------------------------------------------------


def _stream(redis: Redis, key: str, entries: int) -> list[str]:
    pipe = redis.pipeline()
    for i in range(entries):
        pipe.xadd(key, "*", {"i": str(i)})
    return pipe.exec()


def test_xtrim_approximate_leaves_exactly_maxlen(redis: Redis) -> None:
    """`XTRIM s MAXLEN ~ 5` on 130 entries leaves exactly 5, the newest."""
    ids = _stream(redis, "s", 130)
    assert redis.xtrim("s", maxlen=5, approximate=True) == 125
    assert [entry_id for entry_id, _ in redis.xrange("s", "-", "+")] == ids[-5:]


def test_xtrim_approximate_keeps_a_small_excess(redis: Redis) -> None:
    """Below a node's worth of excess (120 entries, `~ 30`) nothing is trimmed."""
    _stream(redis, "s", 120)
    assert redis.xtrim("s", maxlen=30, approximate=True) == 0
    assert redis.xlen("s") == 120


def test_xtrim_approximate_respects_limit(redis: Redis) -> None:
    """LIMIT caps what one approximate trim removes."""
    _stream(redis, "s", 230)
    assert redis.xtrim("s", maxlen=5, approximate=True, limit=50) == 50
    assert redis.xlen("s") == 180


def test_xinfo_consumers_of_a_missing_group_is_empty(redis: Redis) -> None:
    """XINFO CONSUMERS on a group that does not exist answers [] (Valkey: NOGROUP)."""
    redis.xadd("s", "*", {"f": "v"})
    assert redis.xinfo_consumers("s", "nonexistent-group") == []
    redis.xgroup_create("s", "g", "0")
    redis.xreadgroup("g", "c", {"s": ">"})
    assert len(redis.xinfo_consumers("s", "g")) == 1


def test_xdelex(redis: Redis) -> None:
    """XDELEX deletes per id: 1 deleted, -1 absent; ACKED keeps entries a group still needs."""
    first, second, third = _stream(redis, "s", 3)
    assert redis.xdelex("s", first, "9999999999999-0") == [1, -1]
    redis.xgroup_create("s", "g", "0")
    redis.xreadgroup("g", "c", {"s": ">"}, count=1)  # second is pending, third undelivered
    assert redis.xdelex("s", second, third, option="ACKED") == [2, 2]
    redis.xack("s", "g", second)
    assert redis.xdelex("s", second, option="ACKED") == [1]
    assert [entry_id for entry_id, _ in redis.xrange("s", "-", "+")] == [third]


def test_xdelex_delref_drops_pending_references(redis: Redis) -> None:
    """DELREF removes the entry from every group's pending list too; KEEPREF does not."""
    first, second = _stream(redis, "s", 2)
    redis.xgroup_create("s", "g", "0")
    redis.xreadgroup("g", "c", {"s": ">"})
    assert redis.xdelex("s", first, option="KEEPREF") == [1]
    assert redis.xdelex("s", second, option="DELREF") == [1]
    pending = redis.xpending("s", "g", "-", "+", 10)
    assert [entry[0] for entry in pending] == [first]


def test_xackdel(redis: Redis) -> None:
    """XACKDEL acknowledges in the group and deletes, per id; a missing id is -1."""
    first, second, third = _stream(redis, "s", 3)
    redis.xgroup_create("s", "g", "0")
    redis.xreadgroup("g", "c", {"s": ">"})
    assert redis.xackdel("s", "g", first, second, "9999999999999-0") == [1, 1, -1]
    assert redis.xpending("s", "g", "-", "+", 10)[0][0] == third
    assert redis.xlen("s") == 1


def test_xackdel_acked_waits_for_other_groups(redis: Redis) -> None:
    """With ACKED an entry another group has not acknowledged stays (2)."""
    (only,) = _stream(redis, "s", 1)
    redis.xgroup_create("s", "g1", "0")
    redis.xgroup_create("s", "g2", "0")
    redis.xreadgroup("g1", "c", {"s": ">"})
    assert redis.xackdel("s", "g1", only, option="ACKED") == [2]
    redis.xreadgroup("g2", "c", {"s": ">"})
    assert redis.xackdel("s", "g2", only, option="ACKED") == [1]
    assert redis.xlen("s") == 0


# -- sorted sets ----------------------------------------------------------------------------


def test_zrangestore_limit_by_rank(redis: Redis) -> None:
    """ZRANGESTORE dst z 0 2 LIMIT 1 1 stores the second of the first three."""
    redis.zadd("z", {"m1": 1, "m2": 2, "m3": 3, "m4": 4})
    assert redis.zrangestore("dst", "z", 0, 2, offset=1, count=1) == 1
    assert redis.zrange("dst", 0, -1, withscores=True) == [("m2", 2.0)]


def test_zrange_limit_by_rank(redis: Redis) -> None:
    """ZRANGE by rank with LIMIT (and REV, WITHSCORES) slices the rank range."""
    redis.zadd("z", {"m1": 1, "m2": 2, "m3": 3, "m4": 4})
    assert redis.zrange("z", 0, -1, offset=1, count=2) == ["m2", "m3"]
    assert redis.zrange("z", 0, -1, rev=True, offset=0, count=1, withscores=True) == [("m4", 4.0)]
    assert redis.zrange("z", 0, 1, offset=5, count=1) == []
    assert redis.zrangestore("dst", "z", 0, 1, offset=5, count=1) == 0
    assert redis.exists("dst") == 0


# -- hash field expiry ----------------------------------------------------------------------


def test_httl_and_hexpiretime_truncate(redis: Redis) -> None:
    """Seconds are truncated, not rounded: 1.7 s left is 1, an expiry in .x s is the floor."""
    redis.hset("h", values={"f": "v", "g": "w"})
    redis.hpexpire("h", "f", 1700)
    assert redis.httl("h", ["f", "g", "absent"]) == [1, -1, -2]
    expires_ms = redis.hpexpiretime("h", ["f"])[0]
    assert redis.hexpiretime("h", ["f"]) == [expires_ms // 1000]
    assert expires_ms // 1000 <= int(time.time()) + 2


# -- SCAN -----------------------------------------------------------------------------------


def _keyspace(redis: Redis, count: int = 40) -> None:
    pipe = redis.pipeline()
    for i in range(count):
        pipe.set(f"key:{i}", "v")
    pipe.hset("hash", values={"f": "v"})
    pipe.exec()


def test_scan_match_finds_the_key_in_one_call(redis: Redis) -> None:
    """SCAN 0 MATCH hash answers (0, ["hash"]) however the server's buckets fall."""
    _keyspace(redis)
    assert redis.scan(0, match="hash") == (0, ["hash"])
    assert redis.scan(0, type="hash") == (0, ["hash"])


def test_scan_count_is_met_exactly(redis: Redis) -> None:
    """COUNT 1 returns one key and a non-zero cursor; following the cursor visits every key."""
    _keyspace(redis)
    cursor, keys = redis.scan(0, count=1)
    assert cursor != 0
    assert len(keys) == 1
    seen = list(keys)
    while cursor != 0:
        cursor, keys = redis.scan(cursor, count=7)
        assert len(keys) == 7 or cursor == 0
        seen += keys
    assert sorted(seen) == sorted([f"key:{i}" for i in range(40)] + ["hash"])


def test_scan_of_an_empty_database(redis: Redis) -> None:
    """An empty keyspace ends at once."""
    assert redis.scan(0, match="*", count=5) == (0, [])


# -- Redis 8.2 BITOP operations -------------------------------------------------------------


@pytest.fixture
def bits(redis: Redis) -> Redis:
    """key1 has bits 0,1,2 set; key2 1,2,3; key3 2,3,4."""
    for key, offsets in {"key1": (0, 1, 2), "key2": (1, 2, 3), "key3": (2, 3, 4)}.items():
        for offset in offsets:
            redis.setbit(key, offset, 1)
    return redis


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("DIFF", [1, 0, 0, 0, 0]),
        ("DIFF1", [0, 0, 0, 1, 1]),
        ("ANDOR", [0, 1, 1, 0, 0]),
        ("ONE", [1, 0, 0, 0, 1]),
    ],
)
def test_bitop_redis_82_operations(bits: Redis, operation: str, expected: list[int]) -> None:
    """DIFF, DIFF1, ANDOR and ONE combine the first key with the others as Redis 8.2 does."""
    assert bits.bitop(operation, "dest", "key1", "key2", "key3") == 1
    assert [bits.getbit("dest", offset) for offset in range(5)] == expected


@pytest.mark.parametrize("operation", ["DIFF", "DIFF1", "ANDOR"])
def test_bitop_needs_two_sources(bits: Redis, operation: str) -> None:
    """DIFF, DIFF1 and ANDOR with one source key fail with Redis 8.2's text."""
    with pytest.raises(UpstashError, match=f"BITOP {operation} must be called with at least two"):
        bits.bitop(operation, "dest", "key1")


def test_bitop_one_of_missing_keys_deletes_the_destination(redis: Redis) -> None:
    """Only missing sources: an empty result, so the destination is removed (length 0)."""
    redis.set("dest", "old")
    assert redis.bitop("ONE", "dest", "absent1", "absent2") == 0
    assert redis.exists("dest") == 0


# -- JSON -----------------------------------------------------------------------------------


@pytest.mark.gateway_only
def test_json_commands_name_the_missing_module(redis: Redis) -> None:
    """JSON.* fails with an error that says a JSON module is missing, not a bare unknown command."""
    with pytest.raises(UpstashError, match=r"^ERR JSON\.SET needs a JSON module"):
        redis.json.set("doc", "$", {"a": 1})
