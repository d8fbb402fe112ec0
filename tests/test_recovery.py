"""The saver's recovery bookkeeping, without sockets: late live messages and fetched copies."""

from __future__ import annotations

import queue
import time

from appliance.bus.envelope import encode
from appliance.store.recovery import PENDING, RECOVERED, Outcome, Recovery

KEY = ("rig-1.sim", "b1", "drilling")


def recovery() -> Recovery:
    return Recovery(wait_s=60, announce_s=1, max_message_bytes=1 << 20)


def test_a_late_live_message_inside_a_pending_gap_is_cut_out_of_it():
    """Found by `make chaos`: a publisher's queue flushed after a broker restart delivered
    messages after their gap was already being fetched, and they were stored twice."""
    r = recovery()
    gap = r.add_gap(*KEY, 10, 20, 0)
    verdict, changed = r.claim(*KEY, 15)
    assert verdict == "filled" and (gap.first_seq, gap.last_seq) == (10, 14)
    assert [(c.first_seq, c.last_seq, c.state) for c in changed] == [(10, 14, PENDING), (16, 20, PENDING)]
    assert r.claim(*KEY, 10)[0] == "filled" and gap.first_seq == 11
    assert r.claim(*KEY, 30) is None and r.claim("other", "b", "t", 12) is None
    assert r.is_pending(*KEY, 17) and not r.is_pending(*KEY, 15)


def test_a_live_copy_of_a_fetched_message_is_a_duplicate_not_stored_twice():
    r = recovery()
    gap = r.add_gap(*KEY, 5, 7, 0)
    r.endpoints[KEY[0]] = "tcp://127.0.0.1:1"
    payloads = [encode(KEY[0], KEY[1], seq, seq, data={"DMEA": 1.0}) for seq in (5, 6, 7)]
    result = Outcome([], [], [])  # a reply handed over as the fetcher thread would
    gap.asking = True
    r._take((gap, "tcp://127.0.0.1:1", 5, 7), [b"OK", b'{"first_held": 1, "last_held": 9}', *payloads], result)
    assert [e.seq for e in result.envelopes] == [5, 6, 7] and gap.empty
    assert [(c.first_seq, c.last_seq, c.state) for c in result.records if c.state == RECOVERED] == [(5, 7, RECOVERED)]
    assert r.claim(*KEY, 6) == ("duplicate", []) and r.stats["duplicates"] == 1


def test_shed_messages_make_one_pending_gap_per_run_and_wait_while_held():
    """The saver at its bound (a full disk): shed messages extend one pending gap per
    stream; while held nothing is fetched or given up, and the wait starts over on release."""
    r = recovery()
    r.endpoints[KEY[0]] = "tcp://127.0.0.1:1"
    r.hold()
    first = r.shed(*KEY, 10, 0)
    assert r.shed(*KEY, 11, 0) is first and r.shed(*KEY, 12, 0) is first
    assert (first.first_seq, first.last_seq, first.state) == (10, 12, PENDING)
    other = r.shed(*KEY, 14, 0)  # 13 was stored: a new range
    assert other is not first and (other.first_seq, other.last_seq) == (14, 14)
    assert r.known[KEY] == 14 and r.add_gap(*KEY, 12, 14, 0).empty  # nothing fetched twice
    r.held_at -= 1000  # held for 1,000 s, since just after the messages were shed
    for record in r.pending:
        record.deadline -= 1000  # long past: without the hold they would be given up now
    assert r.poll() == Outcome([], [], []) and r.stats["fetches"] == 0 and r.stats["lost"] == 0
    r.release()
    assert all(rec.deadline > time.monotonic() for rec in r.pending) and not r.shed_records
    r.fetcher = NoFetcher()
    r.poll()
    assert r.stats["fetches"] == 2 and r.stats["lost"] == 0  # both ranges asked for, none given up


class NoFetcher:
    """Takes requests and never answers (the fetcher thread, without sockets)."""

    def __init__(self) -> None:
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.asked: list = []

    def ask(self, *request) -> None:
        self.asked.append(request)
