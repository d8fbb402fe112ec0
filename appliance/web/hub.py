"""The live hub: one bus subscription per web process, fanned out to every browser.

A single DataSubscriber thread receives `drilling`, `derived` and `alert` messages and
hands each frame to every connected stream's own bounded queue. A browser that reads
slower than data arrives is skipped forward: its oldest frames are dropped (and counted
for it), so it never holds up the others or grows memory. Each stream coalesces what it
has into one Server-Sent Event per tick, at a rate the browser can draw.

The hub also keeps the latest value of every channel and the active alerts it has seen,
so a page that opens gets numbers at once instead of waiting for the next frame.
"""

from __future__ import annotations

import collections
import itertools
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from appliance.bus.envelope import Envelope
from appliance.bus.subscriber import DataSubscriber
from appliance.config import Config

log = logging.getLogger("rigtel.web.hub")

LIVE_TOPICS = ["drilling", "derived", "alert"]
PROBE_TOPIC = "sys.web.probe"  # the web program's own probe: its bus link works both ways
HEARTBEAT_TOPIC = "sys.heartbeat"
SOURCE_PROGRAMS = ("wits0", "replay", "simulator", "wits0-out")  # their statistics, for the System view
# per stream, the most its waiting frames may take (estimated by frame_bytes); beyond it the
# stream is skipped forward. ~500 frames of 20 channels: 5 s at 100 Hz, 8 min at 1 Hz; a
# browser further behind has stalled. Counted in bytes, not frames, so that 24 stalled
# streams of wide frames hold at most ~12 MB (2,000 frames each held ~2 MB)
QUEUE_BYTES = 512 * 1024


def frame_bytes(data: dict[str, Any]) -> int:
    """What a queued frame holds in memory, in bytes: its dict, a float per value (24 B),
    the (ts, data) tuple with its int (88 B) and its deque slot (8 B). An upper bound: the
    values and (for a stream of every channel) the dict are shared with other streams."""
    return sys.getsizeof(data) + 24 * len(data) + 96


@dataclass
class Stream:
    """One browser's live feed."""

    channels: frozenset[str] | None  # None: every channel
    queue: collections.deque = field(default_factory=collections.deque)  # (ts, data, bytes)
    alerts: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    queued_bytes: int = 0
    skipped: int = 0
    wake: threading.Event = field(default_factory=threading.Event)
    id: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, ts: int, data: dict[str, Any], size: int = 0) -> None:
        """Queue a frame; `size` is frame_bytes(data) when the caller knows it."""
        if self.channels is not None:
            data = {k: v for k, v in data.items() if k in self.channels}
            if not data:
                return
            size = 0
        size = size or frame_bytes(data)
        with self.lock:
            self.queue.append((ts, data, size))
            self.queued_bytes += size
            while self.queued_bytes > QUEUE_BYTES and len(self.queue) > 1:
                self.queued_bytes -= self.queue.popleft()[2]
                self.skipped += 1
        self.wake.set()

    def offer_alert(self, ts: int, data: dict[str, Any]) -> None:
        self.alerts.append((ts, data))
        self.wake.set()

    def drain(self) -> tuple[list[tuple[int, dict]], list[tuple[int, dict]]]:
        self.wake.clear()  # before emptying: whatever arrives meanwhile sets it again
        with self.lock:
            frames = [(ts, data) for ts, data, _ in self.queue]
            self.queue.clear()
            self.queued_bytes = 0
        alerts = [self.alerts.popleft() for _ in range(len(self.alerts))]
        return frames, alerts


class LiveHub(DataSubscriber):
    """Runs in its own thread (start_thread), shared by every request thread."""

    def __init__(self, cfg: Config, max_streams: int, **kwargs: Any) -> None:
        super().__init__(topics=[*LIVE_TOPICS, HEARTBEAT_TOPIC, PROBE_TOPIC], settings=cfg, **kwargs)
        self.probe_seen = threading.Event()
        self.max_streams = max_streams
        self.lock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        self.latest: dict[str, tuple[int, float]] = {}  # channel -> (ts, value)
        self.active_alerts: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, tuple[float, dict[str, Any]]] = {}  # src -> (monotonic, heartbeat)
        self.last_frame_ms = 0
        self.last_frame_monotonic = 0.0
        self.thread: threading.Thread | None = None

    def start_thread(self) -> None:
        self.thread = threading.Thread(target=self.start, name="web-live-hub", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop()
        with self.lock:
            for s in self.streams.values():
                s.wake.set()  # let waiting streams see the hub stopping
        if self.thread is not None:
            self.thread.join(5)

    # -- browsers ------------------------------------------------------------------------

    def open(self, channels: frozenset[str] | None) -> Stream | None:
        """A new stream, or None when `max_streams` are already open."""
        with self.lock:
            if len(self.streams) >= self.max_streams:
                return None
            stream = Stream(channels, id=next(self._ids))
            self.streams[stream.id] = stream
            return stream

    def close_stream(self, stream: Stream) -> None:
        with self.lock:
            self.streams.pop(stream.id, None)

    def stream_count(self) -> int:
        with self.lock:
            return len(self.streams)

    # -- the bus -------------------------------------------------------------------------

    def on_envelope(self, env: Envelope) -> None:
        if env.topic == PROBE_TOPIC:
            self.probe_seen.set()
            return
        if env.topic == HEARTBEAT_TOPIC:
            data = env.frames[-1].data
            if data.get("program") in SOURCE_PROGRAMS:
                self.sources[env.src] = (time.monotonic(), data)
            return
        if env.topic not in LIVE_TOPICS:
            return  # ZeroMQ matches prefixes: `drilling_test` is not `drilling`
        with self.lock:
            streams = list(self.streams.values())
        if env.topic == "alert":
            for frame in env.frames:
                alert_id = str(frame.data.get("id", ""))
                state = str(frame.data.get("state", ""))
                if alert_id:
                    if state in ("normal", "cleared_ack", "cleared", "shelved"):
                        self.active_alerts.pop(alert_id, None)
                    else:
                        self.active_alerts[alert_id] = {"ts": frame.ts, **frame.data}
                for s in streams:
                    s.offer_alert(frame.ts, frame.data)
            return
        for frame in env.frames:
            numbers = {k: v for k, v in frame.data.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for k, v in numbers.items():
                self.latest[k] = (frame.ts, v)
            self.last_frame_ms = max(self.last_frame_ms, frame.ts)
            self.last_frame_monotonic = time.monotonic()
            size = frame_bytes(numbers)
            for s in streams:
                s.offer(frame.ts, numbers, size)

    def wait_stopping(self, timeout: float) -> bool:
        """Wait up to `timeout` s; True when the hub is stopping."""
        return self._stop.wait(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def source_states(self) -> list[dict[str, Any]]:
        """The data sources' latest heartbeats: {src, program, heard_s_ago, stats}."""
        now = time.monotonic()
        return [{"src": src, "program": hb.get("program"), "heard_s_ago": round(now - at, 1),
                 "stats": hb.get("stats") or {}} for src, (at, hb) in sorted(self.sources.items())]

    def data_age_s(self) -> float | None:
        """Seconds since the last frame arrived here, or None if none ever did."""
        if not self.last_frame_monotonic:
            return None
        return time.monotonic() - self.last_frame_monotonic
