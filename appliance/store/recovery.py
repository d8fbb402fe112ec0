"""The saver's side of zero loss: fetching missed messages from the sources' spools.

A gap (sequence numbers skipped, a stream first met past seq 1, or the tail of a stream
that a source's spool announcement shows the saver never got) becomes a `pending` row in
`gaps`. When the source spools (it announces its fetch endpoint on `sys.spool`, see
appliance.bus.spool), the fetcher thread asks it for the range, chunk by chunk; each
chunk's messages go into the saver's next batch together with the updated gap rows, so
the database always says exactly which messages are stored, which are still being
fetched and which are lost. Rows of one gap partition its range:

- `pending`: not fetched yet; shrinks from the front as chunks arrive;
- `recovered`: fetched from the spool and stored;
- `lost`: the spool no longer holds them (rolled over, source gone, or it never spooled):
  recorded, and a `data_gap` alert raised (for channel data and for spooling sources).

A source that never announced a spool has its gaps recorded lost straight away, once the
saver has listened long enough to have heard an announcement (ANNOUNCE_WAITS heartbeats).
A spooling source that stops answering has `spool_recovery_wait_s` to come back.

Threads: the fetcher owns its DEALER sockets; everything else here runs on the saver's
thread, which owns the records.
"""

from __future__ import annotations

import collections
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import zmq

from appliance.bus.envelope import Envelope, Rejected, decode

log = logging.getLogger("rigtel.recovery")

PENDING, RECOVERED, LOST = "pending", "recovered", "lost"
CHUNK = 2000  # messages asked for at once
FETCH_TIMEOUT_S = 5.0
ANNOUNCE_WAITS = 3  # heartbeats without an announcement: the source does not spool
RECOVERED_KEPT = 100  # fetched ranges remembered per stream, to refuse a late live copy
TAIL_AFTER = 2
REORDER_S = 2.0  # a non-spooling source's gap is recorded lost this long after it showed  # announcements a stream's announced end must be old before its tail is fetched
ALERT_EVERY_S = 60.0  # at most one data-gap alert per source and topic this often
ALERT_TOPICS = ("drilling", "derived")  # losses raise an alert even from non-spooling sources
LOOPBACK = re.compile(r"^tcp://(127\.0\.0\.1|\[::1\]):\d{1,5}$")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False)
class GapRecord:
    """A row of `gaps`; mutable, written by the writer in the batch that changes it."""

    src: str
    boot: str
    topic: str
    first_seq: int
    last_seq: int
    detected_ms: int
    state: str = PENDING
    resolved_ms: int | None = None
    id: int | None = None  # set by the writer once committed
    # not stored
    deadline: float = 0.0  # monotonic; a pending gap is given up after this
    asking: bool = False  # a fetch is in flight
    recovered_row: "GapRecord | None" = None  # the recovered row being extended

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1

    @property
    def empty(self) -> bool:
        return self.first_seq > self.last_seq


@dataclass
class Outcome:
    """What one round of recovery produced, for the saver's next batch."""

    envelopes: list[Envelope]
    records: list[GapRecord]  # rows to insert, update or (when empty) delete
    alerts: list[dict[str, Any]]


class Fetcher:
    """A thread with one DEALER socket per source endpoint and one request in flight each."""

    def __init__(self, context: zmq.Context, timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self.context = context
        self.timeout_s = timeout_s
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="saver-recovery", daemon=True)
        self.thread.start()

    def ask(self, record: GapRecord, endpoint: str, first: int, last: int) -> None:
        self.inbox.put((record, endpoint, first, last))

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)

    def _run(self) -> None:
        sockets: dict[str, zmq.Socket] = {}
        busy: dict[str, tuple[Any, float]] = {}  # endpoint -> (request, deadline)
        waiting: collections.deque = collections.deque()
        poller = zmq.Poller()

        def drop(endpoint: str) -> None:  # a late reply must not answer the next request
            sock = sockets.pop(endpoint)
            poller.unregister(sock)
            sock.close()

        try:
            while not self._stop.is_set():
                while True:
                    try:
                        waiting.append(self.inbox.get_nowait())
                    except queue.Empty:
                        break
                for _ in range(len(waiting)):
                    request = waiting.popleft()
                    record, endpoint, first, last = request
                    if endpoint in busy:
                        waiting.append(request)
                        continue
                    sock = sockets.get(endpoint)
                    if sock is None:
                        sock = sockets[endpoint] = self.context.socket(zmq.DEALER)
                        sock.setsockopt(zmq.LINGER, 0)
                        sock.connect(endpoint)
                        poller.register(sock, zmq.POLLIN)
                    sock.send_multipart([b"FETCH", orjson.dumps({
                        "boot": record.boot, "topic": record.topic, "first": first, "last": last, "max": CHUNK})])
                    busy[endpoint] = (request, time.monotonic() + self.timeout_s)
                events = dict(poller.poll(50))
                for endpoint, sock in list(sockets.items()):
                    if sock in events:
                        parts = sock.recv_multipart()
                        request, _ = busy.pop(endpoint, (None, 0))
                        if request is not None:
                            self.outbox.put((request, parts))
                now = time.monotonic()
                for endpoint, (request, deadline) in list(busy.items()):
                    if now > deadline:
                        del busy[endpoint]
                        drop(endpoint)
                        self.outbox.put((request, None))
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in sockets.values():
                sock.close()


class Recovery:
    """Pending gaps, the sources' spool endpoints, and the fetches between them."""

    def __init__(self, *, wait_s: float, announce_s: float, max_message_bytes: int,
                 context: zmq.Context | None = None, known: dict | None = None,
                 pending: list[GapRecord] | None = None) -> None:
        self.wait_s = wait_s
        self.announce_grace_s = ANNOUNCE_WAITS * announce_s + 2.0
        self.max_message_bytes = max_message_bytes
        self.context = context
        self.fetcher: Fetcher | None = None
        self.started = time.monotonic()
        self.endpoints: dict[str, str] = {}  # src -> fetch endpoint
        self.first_seen: dict[str, float] = {}  # src -> monotonic time first heard
        # src -> the ends of its last TAIL_AFTER announcements, oldest first
        self.previous: dict[str, collections.deque] = {}
        # (src, boot, topic) -> highest seq stored, fetched, or handed to a gap
        self.known: dict[tuple[str, str, str], int] = dict(known or {})
        self.pending: list[GapRecord] = []
        # (src, boot, topic, first seq) -> the pending gap starting there
        self.fronts: dict[tuple[str, str, str, int], GapRecord] = {}
        # streams with gaps being fetched or fetched lately, and the ranges fetched (newest
        # RECOVERED_KEPT), so a live message that comes after its copy was fetched is not stored twice
        self.active: set[tuple[str, str, str]] = set()
        self.recovered_seqs: dict[tuple[str, str, str], collections.deque] = {}
        self.alert_due: dict[tuple[str, str], list] = {}  # (src, topic) -> [next allowed, lost, ranges]
        self.stats = collections.Counter(recovered=0, lost=0, fetches=0, timeouts=0, duplicates=0)
        self.held_at: float | None = None  # monotonic; fetching paused (the saver cannot commit)
        self.shed_records: dict[tuple[str, str, str], GapRecord] = {}  # the newest shed range per stream
        for record in pending or []:
            record.deadline = self.started + wait_s
            self._track(record)

    def close(self) -> None:
        if self.fetcher is not None:
            self.fetcher.stop()

    # -- learning about sources ----------------------------------------------------------

    def heard(self, src: str) -> None:
        if src not in self.first_seen:
            self.first_seen[src] = time.monotonic()

    def covered(self, key: tuple[str, str, str], *also: int) -> int:
        return max(self.known.get(key, 0), *also) if also else self.known.get(key, 0)

    def on_announcement(self, env: Envelope, last_seen) -> list[GapRecord]:
        """A source's `sys.spool` message: note its endpoint; a stream that the announcement
        of two heartbeats ago showed further along than anything stored has a missing tail
        (what was in flight then has arrived by now, even through a busy broker).

        last_seen(key) is the saver's highest seq for a stream (0: never seen)."""
        data = env.frames[0].data
        endpoint, streams = data.get("endpoint"), data.get("streams")
        if not isinstance(endpoint, str) or not LOOPBACK.match(endpoint) or not isinstance(streams, list):
            return []  # not an announcement this saver can use (only loopback is fetched from)
        self.heard(env.src)
        self.endpoints[env.src] = endpoint
        ends: dict[tuple[str, str], int] = {}
        for item in streams[:1000]:
            if (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str) and isinstance(item[1], str)
                    and all(type(x) is int and x >= 1 for x in item[2:])):
                ends[(item[0], item[1])] = item[3]
        history = self.previous.setdefault(env.src, collections.deque(maxlen=TAIL_AFTER))
        made = []
        if len(history) == TAIL_AFTER:
            for (boot, topic), last in history[0].items():
                if topic.startswith("sys."):
                    continue
                key = (env.src, boot, topic)
                have = self.covered(key, last_seen(key))
                if have < last:
                    made.append(self.add_gap(env.src, boot, topic, have + 1, last, now_ms(), "the tail of the stream"))
        history.append(ends)
        return made

    # -- gaps ----------------------------------------------------------------------------

    def add_gap(self, src: str, boot: str, topic: str, first: int, last: int, detected_ms: int,
                what: str = "") -> GapRecord:
        """A new pending gap (clipped to what is not already covered)."""
        self.heard(src)  # a gap comes with a message of the source: it has been heard from
        key = (src, boot, topic)
        first = max(first, self.known.get(key, 0) + 1)
        self.known[key] = max(self.known.get(key, 0), last)
        record = GapRecord(src, boot, topic, first, last, detected_ms, deadline=time.monotonic() + self.wait_s)
        if not record.empty:
            log.info("%s on %r: %d message(s) missing (seq %d..%d%s); fetching them from its spool",
                     src, topic, record.count, first, last, f", {what}" if what else "")
            self._track(record)
        return record

    def _track(self, record: GapRecord) -> None:
        self.active.add((record.src, record.boot, record.topic))
        self.pending.append(record)
        self.fronts[(record.src, record.boot, record.topic, record.first_seq)] = record

    # -- the saver cannot commit: shed, and hold the fetching -------------------------------

    def shed(self, src: str, boot: str, topic: str, seq: int, detected_ms: int) -> GapRecord:
        """A live message the saver has no room for: it becomes (or extends) a pending gap,
        to be fetched from the source's spool once commits work again (recorded lost, as any
        gap, if the source keeps no spool). Never clipped to `known`: a message filling a
        pending gap (claim) may be shed too."""
        key = (src, boot, topic)
        self.known[key] = max(self.known.get(key, 0), seq)
        record = self.shed_records.get(key)
        if (record is not None and record.state == PENDING and not record.asking
                and record.last_seq == seq - 1 and not record.empty):
            record.last_seq = seq
            return record
        record = GapRecord(src, boot, topic, seq, seq, detected_ms, deadline=time.monotonic() + self.wait_s)
        self._track(record)
        self.shed_records[key] = record
        return record

    def hold(self) -> None:
        """Pause fetching (nothing fetched could be stored) and the clocks that give gaps up."""
        if self.held_at is None:
            self.held_at = time.monotonic()

    def release(self) -> None:
        """Resume: every pending gap gets back the time it spent held."""
        if self.held_at is None:
            return
        held = time.monotonic() - self.held_at
        for record in self.pending:
            record.deadline += held
        self.held_at = None
        self.shed_records.clear()

    def claim(self, src: str, boot: str, topic: str, seq: int) -> tuple[str, list[GapRecord]] | None:
        """A live message of a stream with recovery going on. Live messages can come late,
        behind a gap already being fetched (a publisher's queue flushed after a broker
        restart): one inside a pending gap is stored and cut out of the gap ("filled", with
        the changed records); one already fetched is a duplicate ("duplicate"); None when
        recovery has nothing to do with it."""
        key = (src, boot, topic)
        if key not in self.active:
            return None
        for a, b in self.recovered_seqs.get(key, ()):
            if a <= seq <= b:
                self.stats["duplicates"] += 1
                return "duplicate", []
        record = self.fronts.get((*key, seq))
        if record is None:
            record = next((r for r in self.pending if (r.src, r.boot, r.topic) == key
                           and r.state == PENDING and r.first_seq <= seq <= r.last_seq), None)
        if record is None or record.state != PENDING:
            return None
        if seq == record.first_seq:
            self._advance(record, seq + 1)
            return "filled", [record]
        # inside: the record keeps what is before, a new one takes what is after
        after = GapRecord(src, boot, topic, seq + 1, record.last_seq, record.detected_ms,
                          deadline=record.deadline)
        record.last_seq = seq - 1
        changed = [record]
        if not after.empty:
            self._track(after)
            changed.append(after)
        return "filled", changed

    def is_pending(self, src: str, boot: str, topic: str, seq: int) -> bool:
        key = (src, boot, topic)
        return key in self.active and any(
            (r.src, r.boot, r.topic) == key and r.state == PENDING and r.first_seq <= seq <= r.last_seq
            for r in self.pending)

    def _advance(self, record: GapRecord, first: int) -> None:
        """Move a pending gap's front (what is before it is stored or recorded lost)."""
        key = (record.src, record.boot, record.topic)
        if self.fronts.get((*key, record.first_seq)) is record:
            del self.fronts[(*key, record.first_seq)]
        record.first_seq = first
        if not record.empty:
            self.fronts[(*key, first)] = record

    def _spools(self, src: str, now: float) -> bool | None:
        """Whether `src` spools: True (announced), False (has had time to and did not), None (too soon to say)."""
        if src in self.endpoints:
            return True
        since = max(self.started, self.first_seen.get(src, now))
        return False if now - since > self.announce_grace_s else None

    def _lose(self, record: GapRecord, first: int, last: int, reason: str, out: Outcome) -> None:
        """Record first..last of `record`'s range lost: the record itself when that is all
        that is left of it, else a row of its own."""
        if first == record.first_seq and last == record.last_seq:
            record.state, record.resolved_ms = LOST, now_ms()
            out.records.append(record)
        else:
            out.records.append(GapRecord(record.src, record.boot, record.topic, first, last,
                                         record.detected_ms, LOST, now_ms()))
            self._advance(record, last + 1)
        self.stats["lost"] += last - first + 1
        log.error("%d message(s) from %s on %r (seq %d..%d of boot %s) are lost: %s",
                  last - first + 1, record.src, record.topic, first, last, record.boot, reason)
        if record.topic in ALERT_TOPICS or record.src in self.endpoints:
            due = self.alert_due.setdefault((record.src, record.topic), [0.0, 0, []])
            due[1] += last - first + 1
            due[2].append((record.boot, first, last, reason))

    def poll(self) -> Outcome:
        """Take the fetcher's replies, ask for what is next, give up what waited too long.
        Nothing while held: replies in flight wait in the fetcher's outbox."""
        out = Outcome([], [], [])
        if self.held_at is not None:
            return out
        now = time.monotonic()
        if self.fetcher is not None:
            while True:
                try:
                    request, parts = self.fetcher.outbox.get_nowait()
                except queue.Empty:
                    break
                self._take(request, parts, out)
        for record in self.pending:
            if record.asking or record.empty or record.state != PENDING:
                continue
            spools = self._spools(record.src, now)
            if spools is False and now - (record.deadline - self.wait_s) >= REORDER_S:
                why = "the source keeps no spool"
            elif now > record.deadline:
                why = f"its spool did not answer within spool_recovery_wait_s ({self.wait_s:g} s)"
            else:
                if spools:
                    self._ask(record)
                continue  # (a non-spooling source's gap waits REORDER_S for late messages)
            self._lose(record, record.first_seq, record.last_seq, why, out)
        if any(r.state != PENDING or r.empty for r in self.pending):
            self.pending = [r for r in self.pending if r.state == PENDING and not r.empty]
            self.fronts = {(r.src, r.boot, r.topic, r.first_seq): r for r in self.pending}
        for key, due in self.alert_due.items():
            if due[1] and now >= due[0]:
                out.alerts.append(self._alert(key, due))
                due[:] = [now + ALERT_EVERY_S, 0, []]
        return out

    def _ask(self, record: GapRecord) -> None:
        if self.fetcher is None:
            self.fetcher = Fetcher(self.context or zmq.Context.instance())
        record.asking = True
        self.stats["fetches"] += 1
        self.fetcher.ask(record, self.endpoints[record.src], record.first_seq, record.last_seq)

    def _take(self, request: tuple, parts: list[bytes] | None, out: Outcome) -> None:
        record: GapRecord = request[0]
        record.asking = False
        if parts is None:
            self.stats["timeouts"] += 1
            log.warning("the spool of %s at %s did not answer; asking again", record.src, request[1])
            return
        if len(parts) < 2 or parts[0] != b"OK":
            log.error("the spool of %s refused a fetch: %r", record.src, parts[:2])
            record.deadline = 0.0  # give up: asking again would get the same answer
            return
        try:
            meta = orjson.loads(parts[1])
            first_held, last_held = meta["first_held"], meta["last_held"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            record.deadline = 0.0
            return
        record.deadline = time.monotonic() + self.wait_s  # it answers: give it time for the rest
        topic = record.topic.encode()
        taken = 0
        for payload in parts[2:]:
            try:
                env = decode(topic, payload, self.max_message_bytes)
            except Rejected as e:
                log.error("a message fetched from the spool of %s is unusable (%s)", record.src, e)
                continue
            if (env.src, env.boot) != (record.src, record.boot) or env.seq < record.first_seq:
                continue
            if env.seq > record.last_seq:
                break
            if env.seq > record.first_seq:
                self._lose(record, record.first_seq, env.seq - 1,
                           f"its spool no longer holds them (it starts at seq {first_held})"
                           if env.seq == first_held else "missing from its spool (a damaged record)", out)
                record.recovered_row = None
            self._recovered(record, env.seq, out)
            out.envelopes.append(env)
            taken += 1
        if not taken and not record.empty:
            if first_held is None:
                why = "its spool holds nothing of that run"
            elif type(last_held) is int and last_held < record.first_seq:
                why = f"its spool ends at seq {last_held} (it stopped before spooling them)"
            else:
                why = f"its spool no longer holds them (it starts at seq {first_held})"
            self._lose(record, record.first_seq, record.last_seq, why, out)
        if taken:
            self.stats["recovered"] += taken
        out.records.append(record)

    def _recovered(self, record: GapRecord, seq: int, out: Outcome) -> None:
        row = record.recovered_row
        if row is None or row.last_seq != seq - 1:
            row = record.recovered_row = GapRecord(record.src, record.boot, record.topic, seq, seq,
                                                   record.detected_ms, RECOVERED, now_ms())
        else:
            row.last_seq = seq
            row.resolved_ms = now_ms()
        if row not in out.records:
            out.records.append(row)
        ranges = self.recovered_seqs.setdefault((record.src, record.boot, record.topic),
                                                collections.deque(maxlen=RECOVERED_KEPT))
        if ranges and ranges[-1][1] == seq - 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
        self._advance(record, seq + 1)

    def _alert(self, key: tuple[str, str], due: list) -> dict[str, Any]:
        src, topic = key
        ranges = due[2]
        shown = "; ".join(f"seq {a}..{b} of boot {boot}: {reason}" for boot, a, b, reason in ranges[:5])
        more = f" and {len(ranges) - 5} more range(s)" if len(ranges) > 5 else ""
        # an event, not a standing condition: it has cleared, and waits for an acknowledgement
        return {"id": f"data-gap:{src}:{topic}", "kind": "data_gap", "state": "cleared_unack",
                "priority": "high",
                "message": f"{due[1]} message(s) from {src} on {topic!r} could not be recovered and are "
                           f"missing from the database ({shown}{more}). See the gaps table.",
                "source": src, "topic": topic, "lost": due[1]}
