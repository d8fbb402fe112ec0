"""Subscribing to the bus.

    from appliance.bus import DataSubscriber

    class Printer(DataSubscriber):
        def on_message(self, topic, data):
            print(topic, data)

    Printer(topics=["drilling"]).start()   # blocks until stop() or SIGTERM

Caveats:
- Topics are prefix-matched by ZeroMQ: "sys" receives "sys.stats" and "sys.heartbeat".
- Messages published before the subscription reaches the broker are lost.
- When this subscriber falls behind by `bus_receive_hwm` messages the broker drops for
  it; the gap shows in the sequence numbers and is counted, never hidden.
- The socket belongs to the thread that calls start(); stop() may be called from any
  thread or a signal handler (it only sets a flag).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

import zmq

from appliance.bus.envelope import Envelope, Rejected, decode
from appliance.bus.sequence import NEXT, Gap, SequenceTracker, Verdict
from appliance.config import Config, load
from appliance.ops.runtime import release_freed_memory, tcp_endpoint

log = logging.getLogger("rigtel.bus")

POLL_MS = 100
BACKLOG_CHECK = 1000  # messages between two looks at the receive queue for a backlog
KEEP_REJECTS = 10_000
KEEP_PAYLOAD_BYTES = 4096


class Counts(dict):
    """Counts by name; a name not counted yet reads 0, as with collections.Counter.

    Not a Counter: Counter defines __delitem__, which routes every `c[name] += 1` store
    through a Python-level slot (measured: three such updates cost ~5k CPU instructions
    against ~2.5k here, and a subscriber makes them per message).
    """

    def __missing__(self, key: str) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class Reject:
    """A message that could not be used, kept for the dead-letter store."""

    received_ms: int
    topic: bytes
    payload: bytes  # all of it, or its first KEEP_PAYLOAD_BYTES when it was oversized
    size: int  # bytes received in all
    reason: str


class DataSubscriber:
    """Receives messages on `topics`, checks and decodes them, and tracks sequences.

    Override on_message(topic, data) for each frame's data; subscribers that need the
    envelope (source, seq, batch) override on_envelope instead. Statistics are in
    `self.stats`; rejected messages wait in `self.rejects` (bounded) for whoever stores them.
    """

    def __init__(self, topics: Iterable[str] | None = None, *, endpoint: str | None = None,
                 settings: Config | None = None, context: zmq.Context | None = None,
                 stop_event: threading.Event | None = None) -> None:
        cfg = settings or load()
        self.topics = [t for t in (topics or [""])]
        self.endpoint = endpoint or tcp_endpoint(cfg.bus_host, cfg.broker_backend_port)
        self.max_message_bytes = cfg.bus_max_message_bytes
        self.receive_hwm = cfg.bus_receive_hwm
        self._context = context
        self._stop = stop_event or threading.Event()
        self.tracker = SequenceTracker()
        self.rejects: collections.deque[Reject] = collections.deque(maxlen=KEEP_REJECTS)
        self.stats: dict[str, int] = Counts(messages=0, frames=0, bytes=0, rejected=0, rejects_overflowed=0)

    # -- hooks ------------------------------------------------------------------------

    def on_message(self, topic: str, data: dict[str, Any]) -> None:
        """Called once per frame with its data dict. Override me."""

    def on_envelope(self, envelope: Envelope) -> None:
        """Called once per accepted message; by default hands each frame to on_message."""
        for frame in envelope.frames:
            self.on_message(envelope.topic, frame.data)

    def on_gap(self, gap: Gap) -> None:
        """Called when sequence numbers were skipped (messages lost on the way)."""
        log.warning("gap: %d message(s) lost from %s on %r (seq %d..%d)",
                    gap.count, gap.src, gap.topic, gap.first_missing, gap.last_missing)

    def on_restart(self, envelope: Envelope) -> None:
        """Called when a source reappears with a new boot id."""
        log.info("%s restarted (boot %s) on %r", envelope.src, envelope.boot, envelope.topic)

    def on_first(self, envelope: Envelope) -> None:
        """Called for the first message seen from a stream (a source, boot and topic)."""

    def on_late(self, envelope: Envelope) -> bool:
        """Called for a message whose seq was already passed (repeated or reordered).

        Return whether to deliver it anyway; by default it is delivered.
        """
        return True

    def on_reject(self, reject: Reject) -> None:
        """Called for each unusable message; by default keeps it in self.rejects."""
        if len(self.rejects) == self.rejects.maxlen:
            self.stats["rejects_overflowed"] += 1
        self.rejects.append(reject)
        log.debug("rejected message on %r: %s", reject.topic[:40], reject.reason)

    def on_idle(self) -> None:
        """Called about every POLL_MS milliseconds while running, for periodic work."""

    # -- running ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask start() to return; safe from any thread or a signal handler."""
        self._stop.set()

    def handle(self, parts: list[bytes]) -> None:
        """Check, decode and dispatch one received multipart message."""
        stats = self.stats
        stats["messages"] += 1
        if len(parts) != 2:
            size = sum(len(p) for p in parts)
            stats["bytes"] += size
            self._reject(parts[0] if parts else b"", b"".join(parts[1:]), size,
                         f"expected 2 frames (topic, envelope), got {len(parts)}")
            return
        topic, payload = parts
        size = len(topic) + len(payload)
        stats["bytes"] += size
        try:
            env = decode(topic, payload, self.max_message_bytes)
        except Rejected as e:
            self._reject(topic, payload, size, str(e))
            return
        # unpacked in one step: four field reads by name cost ~0.7k CPU instructions more
        env_topic, src, boot, seq, _, frames, _ = env
        verdict, gap = self.tracker.observe(src, boot, env_topic, seq)
        # one test for the usual case: Enum members are dear to read
        if verdict is not NEXT and not self._sequence(verdict, gap, env):
            return
        stats["frames"] += len(frames)
        self.on_envelope(env)

    def _sequence(self, verdict: Verdict, gap: Gap | None, env: Envelope) -> bool:
        """Hand a message that is not simply the next of its stream to its hook.

        Returns whether to deliver it.
        """
        if verdict is Verdict.GAP:
            self.on_gap(gap)
        elif verdict is Verdict.RESTART:
            self.on_restart(env)
        elif verdict is Verdict.FIRST:
            self.on_first(env)
        elif verdict is Verdict.LATE:
            return self.on_late(env)
        return True

    def _reject(self, topic: bytes, payload: bytes, size: int, reason: str) -> None:
        self.stats["rejected"] += 1
        # keep the whole message when it is within the size limit, else its start
        kept = payload if size <= self.max_message_bytes else payload[:KEEP_PAYLOAD_BYTES]
        self.on_reject(Reject(time.time_ns() // 1_000_000, topic[:256], kept, size, reason))

    def start(self) -> None:
        """Connect, subscribe and dispatch messages until stop() is called."""
        context = self._context or zmq.Context.instance()
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.receive_hwm)
        # A blocking receive that gives up after POLL_MS, rather than poll() and a
        # non-blocking receive until zmq.Again: raising and catching Again costs more than
        # decoding a message, and a subscriber that keeps up paid it on every wake-up.
        sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
        sock.connect(self.endpoint)
        for topic in self.topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        recv, handle, stopping, clock = sock.recv, self.handle, self._stop.is_set, time.monotonic
        next_idle = clock()
        handled = 0  # messages since the queue was last looked at
        backlog = False
        try:
            while not stopping():
                try:
                    # Frames and .more rather than recv_multipart(), whose per-part
                    # getsockopt(RCVMORE) costs more than the receive itself
                    frame = recv(0, copy=False)
                except zmq.Again:  # nothing for POLL_MS
                    frame = None
                except zmq.ContextTerminated:
                    break
                if frame is not None:
                    parts = [frame.bytes]
                    while frame.more:  # the parts of a message arrive together
                        frame = recv(0, copy=False)
                        parts.append(frame.bytes)
                    handle(parts)
                    handled += 1
                    if handled >= BACKLOG_CHECK:
                        handled = 0
                        if sock.poll(0):
                            backlog = True
                        elif backlog:  # caught up after a long queue
                            backlog = False
                            release_freed_memory()
                elif backlog:  # caught up, and then quiet
                    backlog = False
                    release_freed_memory()
                now = clock()
                if now >= next_idle:
                    next_idle = now + POLL_MS / 1000
                    self.on_idle()
        finally:
            sock.close()
