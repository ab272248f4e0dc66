"""WebSocket subscriptions on the real stack: bounds, TTLs, ownership, and the claim script
finding the subscribers of every status change in one command per batch."""

from __future__ import annotations

import json

import pytest
import valkey

from core import keys, queue, subscriptions
from core.auth import Principal
from core.errors import AuthError, ConflictError, NotFoundError, RateLimitedError
from core.queue import Outcome, QueuePolicy, claim_and_ack
from core.rate_limit import ReadLimit
from core.redis import RestClient
from devstack.billing import billed
from tests.core.conftest import Q

ALICE = Principal("alice", "wallet-a")
BOB = Principal("bob", "wallet-b")
LIMIT = ReadLimit("-", 100, 60)


def job_of(rest: RestClient, principal: Principal, **fields: object) -> str:
    return queue.enqueue(
        Q, {"targets": {"BTC": 1}}, client=rest, user_id=principal.user_id,
        public_key=principal.public_key, **fields,
    )  # fmt: skip


def follow(rest: RestClient, connection_id: str, job_id: str, who: Principal = ALICE) -> dict:
    subscriptions.connect(rest, who, connection_id, LIMIT)
    return subscriptions.subscribe(rest, connection_id, job_id)


def test_subscribe_answers_the_status_and_everything_expires_within_two_hours(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """The answer is the status body; the connection record and the field live ≤ 2 h."""
    job_id = job_of(rest, ALICE)
    view = follow(rest, "L0SM9cOFvHcCIhw=", job_id)
    assert (view["jobId"], view["status"], view["attempts"]) == (job_id, "queued", 0)
    assert backend.hget(keys.WS_SUBS, job_id) == "L0SM9cOFvHcCIhw="
    (field_ttl,) = backend.execute_command("HTTL", keys.WS_SUBS, "FIELDS", 1, job_id)
    assert 7100 < field_ttl <= 7200
    assert 7100 < backend.ttl(keys.ws_conn_key("L0SM9cOFvHcCIhw=")) <= 7200


def test_another_users_job_and_an_unknown_connection_are_refused(rest: RestClient) -> None:
    """Owner only (unknown and foreign ids alike); a connection must have connected first."""
    job_id = job_of(rest, ALICE)
    with pytest.raises(NotFoundError):
        follow(rest, "bobconn", job_id, who=BOB)
    with pytest.raises(NotFoundError):
        follow(rest, "aliceconn", "0" * 32)
    with pytest.raises(AuthError):
        subscriptions.subscribe(rest, "neverconnected", job_id)
    with pytest.raises(AuthError):
        subscriptions.subscribe(rest, "bad id with spaces", job_id)


def test_bounds_per_connection_and_per_job(rest: RestClient, backend: valkey.Valkey) -> None:
    """A connection follows at most 16 jobs; a job keeps its 8 newest subscribers."""
    jobs = [job_of(rest, ALICE) for _ in range(17)]
    subscriptions.connect(rest, ALICE, "c0", LIMIT)
    for job_id in jobs[:16]:
        subscriptions.subscribe(rest, "c0", job_id)
    with pytest.raises(ConflictError):
        subscriptions.subscribe(rest, "c0", jobs[16])
    subscriptions.subscribe(rest, "c0", jobs[0])  # again: not a new one
    for i in range(1, 10):
        follow(rest, f"c{i}", jobs[0])
    assert backend.hget(keys.WS_SUBS, jobs[0]).split() == [f"c{i}" for i in range(2, 10)]


def test_connect_counts_against_the_read_limit(rest: RestClient, backend: valkey.Valkey) -> None:
    """A user cannot open connections without bound; a refused one stores nothing."""
    tight = ReadLimit(ALICE.user_id, 1, 60)
    subscriptions.connect(rest, ALICE, "first", tight)
    with pytest.raises(RateLimitedError):
        subscriptions.connect(rest, ALICE, "second", tight)
    assert backend.exists(keys.ws_conn_key("second")) == 0


def test_forget_drops_the_connection_and_its_subscriptions(
    rest: RestClient, backend: valkey.Valkey
) -> None:
    """Other subscribers of the same job stay; forgetting twice is harmless."""
    job_id = job_of(rest, ALICE)
    follow(rest, "gone", job_id)
    follow(rest, "stays", job_id)
    assert subscriptions.forget(rest, "gone") == 1
    assert subscriptions.forget(rest, "gone") == 0
    assert backend.hget(keys.WS_SUBS, job_id) == "stays"
    assert backend.exists(keys.ws_conn_key("gone")) == 0
    # Without its record (expired), the job named by the failed post is cleaned all the same.
    backend.delete(keys.ws_conn_key("stays"))
    assert subscriptions.forget(rest, "stays", [job_id]) == 1
    assert backend.hexists(keys.WS_SUBS, job_id) == 0


def pushes(cycle: queue.Cycle) -> dict[str, tuple[str, str]]:
    """job id -> (connection ids, status in the record)."""
    return {i: (c, json.loads(r)["status"]) for i, c, r in cycle.pushes}


def test_claim_and_ack_name_the_changes_subscribers_wait_for(
    rest: RestClient, policy: QueuePolicy
) -> None:
    """Only followed jobs are named, with the record as the script left it."""
    followed, other = job_of(rest, ALICE), job_of(rest, BOB)
    follow(rest, "c1", followed)
    claimed = claim_and_ack(rest, Q, (), 10, policy, notify=True)
    assert {j.id for j in claimed.jobs} == {followed, other}
    assert pushes(claimed) == {followed: ("c1", "queued")}  # + the lease: processing
    acked = claim_and_ack(rest, Q, [Outcome(j, "ok") for j in claimed.jobs], 10, policy,
                          notify=True)  # fmt: skip
    assert pushes(acked) == {followed: ("c1", "succeeded")}
    silent = claim_and_ack(rest, Q, (), 10, policy)
    assert silent.pushes == []


def test_expiry_and_cancel_are_named_too(rest: RestClient, policy: QueuePolicy) -> None:
    """An expired job at its claim; a cancel through the outbox, taken by the next claim."""
    stale = job_of(rest, ALICE, now=1_000)
    with_expiry = queue.Job.from_json(  # a job whose validity ran out long ago
        rest.execute(["LINDEX", Q, 0])
    ).to_json(expires_at=2_000)
    rest.execute(["LSET", Q, 0, with_expiry])
    follow(rest, "c1", stale)
    assert pushes(claim_and_ack(rest, Q, (), 10, policy, notify=True)) == {stale: ("c1", "expired")}

    waiting = job_of(rest, ALICE)
    follow(rest, "c2", waiting)
    queue.cancel(rest, Q, ALICE.user_id, waiting, policy)
    assert queue.has_due_work(rest, Q)  # the outbox wakes the idle check
    cycle = claim_and_ack(rest, Q, (), 10, policy, notify=True)
    assert pushes(cycle) == {waiting: ("c2", "cancelled")}
    assert cycle.jobs == []
    assert not queue.has_due_work(rest, Q)  # taken once
    assert claim_and_ack(rest, Q, (), 10, policy, notify=True).pushes == []


def test_a_batch_nobody_follows_costs_one_command_more(
    rest: RestClient, backend: valkey.Valkey, policy: QueuePolicy
) -> None:
    """The subscriber lookup is one HMGET per cycle, whatever the batch size."""
    bills = {}
    for notify in (False, True, False, True):  # the first two warm the scripts and counters
        for i in range(20):  # one wallet each: none waits behind another
            job_of(rest, Principal(f"user-{i}", f"wallet-{i}"))
        with billed(backend) as bill:
            cycle = claim_and_ack(rest, Q, (), 20, policy, notify=notify)
            claim_and_ack(rest, Q, [Outcome(j, "ok") for j in cycle.jobs], 0, policy,
                          notify=notify)  # fmt: skip
        assert len(cycle.jobs) == 20 and cycle.pushes == []
        bills[notify] = bill.by_command
    extra = {
        name: bills[True].get(name, 0) - bills[False].get(name, 0)
        for name in bills[True].keys() | bills[False].keys()
    }
    assert {name: n for name, n in extra.items() if n} == {"hmget": 2}  # one per cycle
