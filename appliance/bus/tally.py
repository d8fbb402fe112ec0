"""Bus statistics from a sample of the traffic, with exact message counts.

The broker's statistics thread must not cost the data path a core at high rates, so it
reads only what its small capture queue holds each period and libzmq drops the rest.
Message counts stay exact anyway: every envelope carries its stream's sequence number,
so the number of messages a stream sent between two samples is the difference of their
`seq`. Bytes are estimated from the sampled messages' mean size. Pure bookkeeping: the
broker feeds it messages and asks for a summary each interval. A sampled message costs a
regular expression on its first bytes and a few dict updates (measured: ~22k CPU
instructions before, when every sample was decoded and counted in four Counters).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from appliance.bus.envelope import HEAD, MAX_SEQ

# Intervals a stream may go unseen before it is forgotten, each counted at the interval's
# sampled fraction: when the tap read every message, unseen is silent; when it read one in
# fifteen (a flood), a rare topic goes unsampled for minutes, and forgetting it would
# restart its count at one. MAX_STREAMS bounds the table all the same (forged ids).
FORGET_AFTER = 12
MAX_STREAMS = 10_000
# More messages than this between two samples of a stream is a forged or corrupt seq (a
# stream would need millions per second), counted as one rather than trusted: the totals
# must stay within 64 bits for the statistics message to be written at all.
MAX_JUMP = 10_000_000


class Tally:
    """Counts of one statistics interval, and the streams' last sequence numbers.

    Keys are the bytes as received (topic, and the envelope's src and boot): they are
    decoded once per interval for the summary rather than once per sampled message.
    """

    def __init__(self) -> None:
        # (src, boot, topic) -> [last seq counted, intervals since last seen (weighted, above)]
        self.streams: dict[tuple[bytes, bytes, bytes], list] = {}
        # topic -> [messages counted, messages sampled, bytes sampled], this interval
        self.topics: dict[bytes, list[int]] = {}
        self.sources: dict[bytes, int] = {}  # messages counted per source, this interval
        self.subscriptions = 0
        self.malformed = 0
        self.total_messages = 0
        self.total_bytes = 0.0

    def add(self, parts: list[bytes]) -> None:
        """Count one captured message (a list of frames)."""
        if len(parts) != 2:
            if len(parts) == 1 and parts[0][:1] in (b"\x00", b"\x01"):
                self.subscriptions += 1  # a (un)subscription travelling upstream
            else:
                self.malformed += 1
            return
        topic, payload = parts
        head = HEAD.match(payload)  # the stream's ids without parsing the whole message
        if head is not None:
            src, boot, seq = head[1], head[2], int(head[3])
        else:
            try:
                env = orjson.loads(payload)
                src, boot, seq = env["src"], env["boot"], env["seq"]
                if not (isinstance(src, str) and isinstance(boot, str) and isinstance(seq, int)):
                    raise TypeError
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.malformed += 1
                return
            src, boot = src.encode("utf-8", "surrogatepass"), boot.encode("utf-8", "surrogatepass")
        if not 1 <= seq <= MAX_SEQ:
            self.malformed += 1
            return
        per_topic = self.topics.get(topic)
        if per_topic is None:
            per_topic = self.topics[topic] = [0, 0, 0]
        per_topic[1] += 1
        per_topic[2] += len(topic) + len(payload)
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
        per_topic[0] += count
        self.sources[src] = self.sources.get(src, 0) + count

    def summary(self, interval_s: float) -> dict[str, Any]:
        """This interval's figures; starts the next interval."""
        messages: Counter[str] = Counter()
        sampled: Counter[str] = Counter()
        sampled_bytes: Counter[str] = Counter()
        for raw, (n, k, size) in self.topics.items():
            name = _text(raw[:64])
            messages[name] += n
            sampled[name] += k
            sampled_bytes[name] += size
        sources: Counter[str] = Counter()
        for raw, n in self.sources.items():
            sources[_text(raw)] += n
        topics = {}
        for topic, n in messages.most_common(100):
            mean = sampled_bytes[topic] / sampled[topic] if sampled[topic] else 0
            topics[topic] = {"messages": n, "bytes": round(n * mean), "per_s": round(n / interval_s, 2)}
            self.total_bytes += n * mean
        counted = sum(messages.values())
        fraction = min(1.0, sum(sampled.values()) / counted) if counted else 1.0
        self.total_messages += counted
        body = {
            "topics": topics,
            "sources": dict(sources.most_common(100)),
            "publishers_seen": len(sources),
            "sampled_fraction": round(fraction, 4),
            "total_messages": self.total_messages,
            "total_bytes": round(self.total_bytes),
            "subscriptions": self.subscriptions,
            "malformed": self.malformed,
        }
        streams = self.streams
        for key in [k for k, s in streams.items() if s[1] >= FORGET_AFTER]:
            del streams[key]
        if len(streams) > MAX_STREAMS:  # the longest unseen first
            for key in sorted(streams, key=lambda k: streams[k][1])[MAX_STREAMS:]:
                del streams[key]
        for s in streams.values():
            s[1] += fraction
        self.topics.clear()
        self.sources.clear()
        return body


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")
