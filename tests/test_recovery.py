"""The saver's recovery bookkeeping, without sockets: late live messages and fetched copies."""

from __future__ import annotations

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
