"""Bus statistics from a sample of the traffic, with exact message counts.

The broker's statistics thread must not cost the data path a core at high rates, so it
reads only what its small capture queue holds each period and libzmq drops the rest.
Message counts stay exact anyway: every envelope carries its stream's sequence number,
so the number of messages a stream sent between two samples is the difference of their
`seq`. Bytes are estimated from the sampled messages' mean size. Pure bookkeeping: the
broker feeds it messages and asks for a summary each interval.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import orjson

FORGET_AFTER = 12  # intervals a stream may stay silent before it is forgotten
MAX_SEQ = 2**63 - 1
# More messages than this between two samples of a stream is a forged or corrupt seq (a
# stream would need millions per second), counted as one rather than trusted: the totals
# must stay within 64 bits for the statistics message to be written at all.
MAX_JUMP = 10_000_000
# The start of an envelope as appliance.bus.envelope.encode writes it: read the stream's
# ids there instead of parsing the whole message (a 100-frame batch is ~40 kB of JSON).
# Anything else, escaped strings included, is parsed in full.
ENVELOPE_HEAD = re.compile(rb'\{"v":1,"src":"([^"\\]*)","boot":"([^"\\]*)","seq":(\d+)[,}]')


class Tally:
    def __init__(self) -> None:
        # (src, boot, topic) -> [last seq counted, intervals since last seen]
        self.streams: dict[tuple[str, str, str], list[int]] = {}
        self.messages: Counter[str] = Counter()  # per topic, this interval
        self.sampled: Counter[str] = Counter()
        self.sampled_bytes: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()
        self.subscriptions = 0
        self.malformed = 0
        self.total_messages = 0
        self.total_bytes = 0.0

    def add(self, parts: list[bytes]) -> None:
        """Count one captured message (a list of frames)."""
        if len(parts) == 1 and parts[0][:1] in (b"\x00", b"\x01"):
            self.subscriptions += 1  # a (un)subscription travelling upstream
            return
        if len(parts) != 2:
            self.malformed += 1
            return
        topic = parts[0][:64].decode("utf-8", "replace")
        head = ENVELOPE_HEAD.match(parts[1])
        if head is not None:
            src, boot = head[1].decode("utf-8", "replace"), head[2].decode("utf-8", "replace")
            seq = int(head[3])
        else:
            try:
                env = orjson.loads(parts[1])
                src, boot, seq = env["src"], env["boot"], env["seq"]
                if not (isinstance(src, str) and isinstance(boot, str) and isinstance(seq, int)):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.malformed += 1
                return
        if not 1 <= seq <= MAX_SEQ:
            self.malformed += 1
            return
        size = len(parts[0]) + len(parts[1])
        self.sampled[topic] += 1
        self.sampled_bytes[topic] += size
        key = (src, boot, topic)
        stream = self.streams.get(key)
        if stream is None:
            self.streams[key] = [seq, 0]
            count = 1
        else:
            count = max(seq - stream[0], 0)  # 0 for a repeated or late message
            if count > MAX_JUMP:
                count = 1
            if seq > stream[0]:
                stream[0] = seq
            stream[1] = 0
        self.messages[topic] += count
        self.sources[src] += count

    def summary(self, interval_s: float) -> dict[str, Any]:
        """This interval's figures; starts the next interval."""
        topics = {}
        for topic, n in self.messages.most_common(100):
            mean = self.sampled_bytes[topic] / self.sampled[topic] if self.sampled[topic] else 0
            topics[topic] = {"messages": n, "bytes": round(n * mean), "per_s": round(n / interval_s, 2)}
            self.total_bytes += n * mean
        self.total_messages += sum(self.messages.values())
        counted = sum(self.messages.values())
        body = {
            "topics": topics,
            "sources": dict(self.sources.most_common(100)),
            "publishers_seen": len(self.sources),
            "sampled_fraction": round(sum(self.sampled.values()) / counted, 4) if counted else 1.0,
            "total_messages": self.total_messages,
            "total_bytes": round(self.total_bytes),
            "subscriptions": self.subscriptions,
            "malformed": self.malformed,
        }
        for key in [k for k, s in self.streams.items() if s[1] >= FORGET_AFTER]:
            del self.streams[key]
        for s in self.streams.values():
            s[1] += 1
        self.messages.clear()
        self.sampled.clear()
        self.sampled_bytes.clear()
        self.sources.clear()
        return body
