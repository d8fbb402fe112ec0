"""`rigtel program-alerts`: supervisord's event listener that turns a program's crash into an
alert on the bus, so operators see it on the dashboard and it is kept in the database.

supervisord sends PROCESS_STATE_* events on this program's stdin (the event listener
protocol: we write READY, it sends a header line and a payload, we answer RESULT). So
stdout belongs to the protocol; this program logs to stderr.

- a program that exits unexpectedly (EXITED with expected:0) raises `program-<name>`,
  priority medium: supervisord restarts it;
- a program that gave up restarting (FATAL) raises it with priority high;
- the program RUNNING again clears it (cleared, still to be acknowledged: ISA-18.2).

A crash is exactly when the bus may be down (the broker itself died) or the saver is not
listening (the saver died), and a fresh publisher's first messages are lost anyway (ZeroMQ's
slow joiner). So every alert event goes into this program's spool as it is published
(`Publisher(spool=True)`, appliance.bus.spool): a saver that missed it fetches it from
there, even when this listener was killed right after publishing and the event was never
seen on the bus. And an alert is not taken as delivered until the saver has stored it: the
database is read (read-only); an event still not there after `spool_recovery_wait_s` plus
`RETRY_S` (the saver has given up on the spool) is published again, with its original time.
Events of one alert are delivered in order: a later event waits until the earlier one is
stored, so the stored history and the alert's current state (its newest row) stay right.
"""

from __future__ import annotations

import logging
import os
import select
import sqlite3
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple, Sequence

log = logging.getLogger("rigtel.program-alerts")

ALERT_TOPIC = "alert"
KIND = "program_down"
RETRY_S = 3.0  # an event not stored this long after publishing is published again
MAX_PENDING = 1000  # undelivered events kept; beyond this the oldest are dropped (and logged)
EVENTS = ("PROCESS_STATE_EXITED", "PROCESS_STATE_FATAL", "PROCESS_STATE_RUNNING")


class Event(NamedTuple):
    """One supervisord event: its name, header fields and payload fields."""

    name: str
    headers: dict[str, str]
    payload: dict[str, str]


def _fields(line: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


def parse_events(buffer: bytes) -> tuple[list[Event], bytes]:
    """Complete events at the start of `buffer`, and the bytes left for later.

    An event is a header line of `key:value` tokens ending in `len:N`, then N bytes of
    payload whose first line is again `key:value` tokens (PROCESS_STATE events have no
    body beyond it)."""
    events = []
    while True:
        end = buffer.find(b"\n")
        if end < 0:
            return events, buffer
        headers = _fields(buffer[:end].decode("utf-8", "replace"))
        size = int(headers.get("len", "0"))
        if len(buffer) < end + 1 + size:
            return events, buffer
        payload = buffer[end + 1:end + 1 + size].decode("utf-8", "replace")
        buffer = buffer[end + 1 + size:]
        first, _, _ = payload.partition("\n")
        events.append(Event(headers.get("eventname", ""), headers, _fields(first)))


def alert_for(event: Event) -> dict[str, Any] | None:
    """The alert event (data for the `alert` topic) a supervisord event means, if any."""
    name = event.payload.get("processname") or "?"
    group = event.payload.get("groupname") or name
    program = name if group == name else f"{group}:{name}"
    where = f"`supervisorctl tail {program}`"
    base = {"id": f"program-{program}", "kind": KIND, "program": program}
    if event.name == "PROCESS_STATE_FATAL":
        return {**base, "state": "active_unack", "priority": "high",
                "message": f"program {program} keeps failing and supervisord gave up restarting it "
                           f"(FATAL): see {where}, then `supervisorctl start {program}`"}
    if event.name == "PROCESS_STATE_EXITED" and event.payload.get("expected") == "0":
        pid = event.payload.get("pid", "?")
        return {**base, "state": "active_unack", "priority": "medium",
                "message": f"program {program} (pid {pid}) exited unexpectedly; supervisord is "
                           f"restarting it (see {where})"}
    if event.name == "PROCESS_STATE_RUNNING":
        return {**base, "state": "cleared_unack", "priority": "medium",
                "message": f"program {program} is running again"}
    return None


@dataclass
class Pending:
    ts: int  # the alert event's time, UTC epoch ms; kept when it is published again
    data: dict[str, Any]
    seq: int = 0  # of the latest publication; 0 while waiting for an earlier event
    sent_at: float = 0.0  # monotonic seconds
    tries: int = 0


@dataclass
class Outbox:
    """Alert events waiting to be stored, in order per alert id.

    `publish(ts, data) -> seq` and `stored(alert_id, ts, seq) -> bool` are the edges (the
    bus and the database), so the ordering and retry logic is testable without either."""

    publish: Callable[[int, dict[str, Any]], int]
    stored: Callable[[str, int, int], bool]
    retry_s: float = RETRY_S
    clock: Callable[[], float] = time.monotonic
    queues: dict[str, deque[Pending]] = field(default_factory=dict)
    raised: dict[str, bool] = field(default_factory=dict)  # alert id -> raised, as last said
    delivered: int = 0
    dropped: int = 0

    def add(self, ts: int, data: dict[str, Any]) -> bool:
        """Queue an alert event unless it repeats what was last said; True when queued."""
        alert_id = data["id"]
        raised = data["state"] == "active_unack"
        if self.raised.get(alert_id, False) == raised and not (raised and data["priority"] == "high"):
            return False  # a clear with nothing raised, or a second raise (FATAL escalates)
        self.raised[alert_id] = raised
        self.queues.setdefault(alert_id, deque()).append(Pending(ts, data))
        if sum(len(q) for q in self.queues.values()) > MAX_PENDING:
            oldest = min((q for q in self.queues.values() if q), key=lambda q: q[0].ts)
            lost = oldest.popleft()
            self.dropped += 1
            log.error("alert %s (%s) could not be stored and is dropped: the saver has not "
                      "taken an alert for too long", lost.data["id"], lost.data["state"])
        return True

    def work(self) -> None:
        """Confirm what is stored, publish what is due; call often."""
        now = self.clock()
        for alert_id, queue in list(self.queues.items()):
            while queue:
                head = queue[0]
                if head.seq and self._stored(alert_id, head):
                    queue.popleft()
                    self.delivered += 1
                    continue
                if not head.seq or now - head.sent_at >= self.retry_s:
                    if head.tries:
                        log.info("alert %s (%s) not stored yet, publishing it again (try %d)",
                                 alert_id, head.data["state"], head.tries + 1)
                    head.seq = self.publish(head.ts, head.data)
                    head.sent_at, head.tries = now, head.tries + 1
                break
            if not queue:
                del self.queues[alert_id]

    def _stored(self, alert_id: str, head: Pending) -> bool:
        try:
            return self.stored(alert_id, head.ts, head.seq)
        except sqlite3.Error as e:
            log.debug("cannot read the alerts table yet: %s", e)
            return False

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())


class AlertTable:
    """Read-only look-ups in the saver's database: is this alert event stored?"""

    def __init__(self, path: str, src: str) -> None:
        self.path, self.src = path, src
        self.db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self.db is None:
            if not os.path.exists(self.path):
                raise sqlite3.OperationalError(f"no database at {self.path} yet")
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=1)
        return self.db

    def stored(self, alert_id: str, ts: int, seq: int) -> bool:
        row = self._connect().execute(
            "SELECT 1 FROM alerts WHERE alert_id = ? AND ts = ? AND src = ? AND seq = ?",
            (alert_id, ts, self.src, seq)).fetchone()
        return row is not None

    def raised(self) -> dict[str, bool]:
        """What this source last said about each of its alerts, so a restart of this listener
        still clears an alert its previous run raised."""
        states: dict[str, bool] = {}
        try:
            for alert_id, state in self._connect().execute(
                    "SELECT alert_id, state FROM alerts WHERE src = ? AND kind = ? ORDER BY id",
                    (self.src, KIND)):
                states[alert_id] = state in ("active_unack", "active_ack")
        except sqlite3.Error:
            pass
        return states

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


class Protocol:
    """supervisord's side of the conversation on fds 0 and 1, never blocking for long."""

    def __init__(self, fd_in: int = 0, fd_out: int = 1) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out
        self.buffer = b""
        self.closed = False

    def ready(self) -> None:
        os.write(self.fd_out, b"READY\n")

    def events(self, timeout_s: float) -> Iterator[Event]:
        """Events that arrive within `timeout_s`; each is acknowledged (RESULT OK, then READY)
        once the caller has handled it: supervisord sends an unacknowledged event again to
        the restarted listener, so one killed mid-event loses nothing."""
        readable, _, _ = select.select([self.fd_in], [], [], timeout_s)
        if not readable:
            return
        chunk = os.read(self.fd_in, 65536)
        if not chunk:
            self.closed = True  # supervisord went away
            return
        events, self.buffer = parse_events(self.buffer + chunk)
        for event in events:
            yield event
            os.write(self.fd_out, b"RESULT 2\nOK")
            self.ready()


class Bus:
    """The spooling bus publisher, connected at the first alert event: until a program
    crashes the listener carries no ZeroMQ (about 7 MB less resident memory for a process
    that mostly waits). But when the spool already holds an earlier run's alerts it connects
    at start, so that the saver can fetch what that run published and it never stored (a
    listener killed right after publishing). A fresh publisher's first message is lost to
    ZeroMQ's slow joiner; the saver fetches it from the spool (the stream's tail)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.src = f"{cfg.rig_id}.supervisor"  # the id Publisher("supervisor") takes
        self.publisher: Any = None
        from appliance.bus.spooldir import spool_folder  # no ZeroMQ with it

        folder = spool_folder(cfg, self.src)
        if os.path.isdir(folder) and any(name.endswith(".seg") for name in os.listdir(folder)):
            self._connect()

    def _connect(self) -> None:
        from appliance.bus.publisher import Publisher

        self.publisher = Publisher("supervisor", settings=self.cfg, spool=True)

    def publish(self, ts: int, data: dict[str, Any]) -> int:
        if self.publisher is None:
            self._connect()
        return self.publisher.publish(ALERT_TOPIC, data, ts=ts)

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()


def main(argv: Sequence[str]) -> int:
    # stdout carries the event listener protocol: everything else goes to stderr
    sys.stdout = sys.stderr
    from appliance.cli import start_service

    cfg, stop = start_service(
        "program-alerts", "supervisord event listener: a program's crash becomes an alert on the bus "
                          "(run by supervisord, not by hand)", argv)
    bus = Bus(cfg)
    table = AlertTable(cfg.database_path, bus.src)
    # published once: the spool delivers it; again only after the saver gave the spool up
    outbox = Outbox(publish=bus.publish, stored=table.stored, retry_s=cfg.spool_recovery_wait_s + RETRY_S)
    outbox.raised.update(table.raised())
    protocol = Protocol()
    protocol.ready()
    log.info("ready: listening to supervisord's program events, alerts as %s on %r", bus.src, ALERT_TOPIC)
    try:
        while not stop.is_set() and not protocol.closed:
            for event in protocol.events(0.25):
                if event.name not in EVENTS:
                    continue
                data = alert_for(event)
                if data and outbox.add(time.time_ns() // 1_000_000, data):
                    outbox.work()  # published, so in the spool, before supervisord is answered
                    (log.warning if data["state"] == "active_unack" else log.info)(
                        "alert %s %s: %s", data["id"], data["state"], data["message"])
            outbox.work()
    finally:
        if outbox.pending:
            log.warning("stopping with %d alert event(s) not yet stored", outbox.pending)
        table.close()
        bus.close()
    log.info("stopped (%d alert events stored, %d dropped)", outbox.delivered, outbox.dropped)
    return 0
