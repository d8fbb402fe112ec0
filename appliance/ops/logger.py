"""`rigtel logger`: the bus, in lines a person can read.

At high rates one line per message is useless, so data topics are summarised every
`logger_summary_s` seconds: messages and frames per second, sources, the last sequence
number. Alerts, gaps, restarts and rejected messages are logged in full as they happen.

The logger must keep up with any burst the bus carries, or it would queue the burst in
memory and report gaps that are its own. So it reads only each data message's head —
source, boot, sequence number, frames counted in the text (`envelope.peek`) — and decodes
in full only the messages it prints (alerts, labels) and those peek cannot vouch for,
which the full checks then accept or reject and log. A message with a well-formed head
and a broken body is counted here, and rejected and stored by the saver, whose stream
then shows the gap the logger does not. Reading the head of a 100-frame batch (~30 kB)
takes a fifth of the time of decoding it, of a single frame half.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import orjson

from appliance.bus.envelope import Envelope, peek
from appliance.bus.heartbeat import Heartbeat
from appliance.bus.publisher import Publisher
from appliance.bus.sequence import NEXT, Gap
from appliance.bus.subscriber import Counts, DataSubscriber, Reject
from appliance.config import Config

log = logging.getLogger("rigtel.logger")

# topics logged message by message rather than summarised
IN_FULL = ("alert", "sim.label")
IN_FULL_PREFIXES = tuple(t + "." for t in IN_FULL)


class BusLogger(DataSubscriber):
    def __init__(self, cfg: Config, publisher: Publisher | None = None, **kwargs) -> None:
        super().__init__(topics=[""], settings=cfg, **kwargs)
        self.summary_s = cfg.logger_summary_s
        self.heartbeat = Heartbeat(publisher, "logger", cfg.bus_heartbeat_s,
                                   stats=lambda: dict(self.stats)) if publisher else None
        self.messages: dict[str, int] = Counts()  # per topic, this summary window
        self.frames: dict[str, int] = Counts()
        self.sources: dict[str, set[str]] = {}
        self.last_seq: dict[str, int] = {}
        self.window_start = time.monotonic()

    def handle(self, parts: list[bytes]) -> None:
        head = peek(parts[0], parts[1], self.max_message_bytes) if len(parts) == 2 else None
        if head is None or head.topic in IN_FULL or head.topic.startswith(IN_FULL_PREFIXES):
            super().handle(parts)  # decoded and checked in full
            return
        topic, src, boot, seq, ts, frames, size = head
        stats = self.stats
        stats["messages"] += 1
        stats["bytes"] += size
        verdict, gap = self.tracker.observe(src, boot, topic, seq)
        if verdict is not NEXT and not self._sequence(verdict, gap, Envelope(topic, src, boot, seq, ts, (), size)):
            return
        stats["frames"] += frames
        self.count(topic, src, seq, frames)

    def on_envelope(self, env: Envelope) -> None:
        topic = env.topic
        if topic in IN_FULL or topic.startswith(IN_FULL_PREFIXES):
            for frame in env.frames:
                log.warning("%s from %s: %s", topic, env.src, orjson.dumps(frame.data).decode())
        self.count(topic, env.src, env.seq, len(env.frames))

    def count(self, topic: str, src: str, seq: int, frames: int) -> None:
        self.messages[topic] += 1
        self.frames[topic] += frames
        sources = self.sources.get(topic)
        if sources is None:
            sources = self.sources[topic] = set()
        sources.add(src)
        self.last_seq[topic] = seq

    def on_gap(self, gap: Gap) -> None:
        log.warning("GAP: %d message(s) lost from %s on %r (seq %d..%d)",
                    gap.count, gap.src, gap.topic, gap.first_missing, gap.last_missing)

    def on_restart(self, env: Envelope) -> None:
        log.warning("RESTART: %s came back with boot %s on %r (seq %d)",
                    env.src, env.boot, env.topic, env.seq)

    def on_reject(self, reject: Reject) -> None:
        super().on_reject(reject)
        log.warning("REJECTED %d-byte message on %r: %s",
                    reject.size, reject.topic[:64].decode("utf-8", "replace"), reject.reason)

    def on_idle(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.tick()
        now = time.monotonic()
        elapsed = now - self.window_start
        if elapsed < self.summary_s:
            return
        self.window_start = now
        if not self.messages:
            log.info("no messages in the last %.0f s", elapsed)
            return
        parts = []
        for topic in sorted(self.messages):
            parts.append(f"{topic}: {self.messages[topic] / elapsed:.1f} msg/s "
                         f"{self.frames[topic] / elapsed:.1f} frames/s "
                         f"from {', '.join(sorted(self.sources[topic]))} (seq {self.last_seq[topic]})")
        t = self.tracker
        log.info("%s | gaps %d (lost %d), restarts %d, late %d, rejected %d",
                 "; ".join(parts), t.gaps, t.lost, t.restarts, t.late, self.stats["rejected"])
        self.messages.clear()
        self.frames.clear()
        self.sources.clear()


def main(argv: Sequence[str]) -> int:
    from appliance.cli import start_service

    cfg, stop = start_service("logger", "Log the bus traffic: a per-topic summary every few "
                                       "seconds, and every alert, gap and rejected message.", argv)
    with Publisher("logger", settings=cfg) as pub:
        subscriber = BusLogger(cfg, pub, stop_event=stop.event)
        log.info("ready: listening on %s", subscriber.endpoint)
        subscriber.start()
    log.info("stopped")
    return 0
