"""`rigtel fuzz-bus`: send malformed messages at a running broker, and say what should follow.

For testing a site or a build: bad JSON, wrong types, NaN and infinities, oversized and
empty messages, bad topics, wrong frame counts, values outside the catalogue's ranges,
repeated, reordered and skipped sequence numbers, and bogus spool announcements. Each
message is built so that the saver's answer is known exactly: one dead letter, or none (a
reordered message fills the gap it left; an announcement must be ignored); a skipped
number leaves exactly one gap, recorded lost. The
programs must neither crash nor restart. Everything is made from a seed, so a run can
be repeated.

    rigtel fuzz-bus --count 100000 --rate 20000

Messages go out through an XPUB socket connected to the broker's frontend (the fuzzer
forges envelopes a Publisher would refuse to make). Unlike a PUB socket it sees the
subscription the broker sends upstream, so it starts only once messages can pass: none
of them is lost to ZeroMQ's slow joiner, and the expected counts stay exact.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import orjson
import zmq

from appliance.bus.envelope import encode

T0 = 1_764_449_520_000
WEIGHTS = {"huge": 1}  # relative to 10 for every other kind: oversized messages are heavy


@dataclass
class Expected:
    """What the saver should record for the messages sent."""

    sent: Counter = field(default_factory=Counter)  # per kind
    dead_letters: int = 0
    gaps: int = 0  # gap rows (each reordering leaves one)

    def as_dict(self) -> dict:
        return {"sent": dict(self.sent), "messages": sum(self.sent.values()), "dead_letters": self.dead_letters,
                "gaps": self.gaps}


def _env(src: str, seq: int, data: object, over: dict | None = None) -> bytes:
    body = {"v": 1, "src": src, "boot": "fuzz", "seq": seq, "ts": T0 + seq, "data": data}
    body.update(over or {})
    return orjson.dumps(body)


class Fuzzer:
    """Makes malformed messages; each kind yields (parts, dead letters, gaps) it causes."""

    def __init__(self, seed: int, src: str, max_bytes: int) -> None:
        self.rng = random.Random(seed)
        self.src = src
        self.max_bytes = max_bytes
        self.seq = 0  # the valid stream used for repeats and reordering
        self.kinds: dict[str, Callable[[], list[tuple[list[bytes], int, int]]]] = {
            "bad_json": self.bad_json, "not_an_object": self.not_an_object,
            "wrong_types": self.wrong_types, "nan_inf": self.nan_inf, "huge": self.huge,
            "empty": self.empty, "bad_topic": self.bad_topic, "frame_count": self.frame_count,
            "bad_value": self.bad_value, "duplicate": self.duplicate, "reordered": self.reordered, "skipped": self.skipped,
            "bogus_announcement": self.bogus_announcement,
        }

    def messages(self, count: int) -> Iterator[tuple[str, list[bytes], int, int]]:
        """`count` messages (a kind may send two): (kind, parts, dead letters, gaps)."""
        names = sorted(self.kinds)
        weights = [WEIGHTS.get(name, 10) for name in names]
        sent = 0
        while sent < count:
            kind = self.rng.choices(names, weights)[0]
            made = self.kinds[kind]()
            if sent + len(made) > count:
                continue
            for parts, dead, gaps in made:
                sent += 1
                yield kind, parts, dead, gaps

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _topic(self) -> bytes:
        return self.rng.choice([b"drilling", b"derived", b"fuzz.custom", b"alert"])

    def bad_json(self):
        good = _env(self.src, 1, {"DMEA": 1.0})
        cut = self.rng.randrange(1, len(good) - 1)
        payload = self.rng.choice([good[:cut], good.replace(b":", b"=", 1), b"{'v': 1}", b"\xff\xfe{}",
                                   bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 64)))
                                   + b"\x00{"])
        return [([self._topic(), payload], 1, 0)]

    def not_an_object(self):
        payload = self.rng.choice([b"[]", b"1", b'"text"', b"null", b"true", b"[1,2,3]"])
        return [([self._topic(), payload], 1, 0)]

    def wrong_types(self):
        seq = self.rng.randrange(1, 1000)
        over = self.rng.choice([{"v": 2}, {"v": "1"}, {"src": 5}, {"src": ""}, {"boot": None}, {"seq": "1"},
                                {"seq": 0}, {"seq": -3}, {"seq": 2**63}, {"seq": 1.5}, {"seq": True},
                                {"ts": "now"}, {"ts": -1}, {"ts": 2**60}, {"data": [1, 2]}, {"data": "x"},
                                {"data": None}, {"batch": []}, {"batch": [1]}, {"batch": [{"ts": 1}]},
                                {"batch": {"ts": 1, "data": {}}}])
        return [([self._topic(), _env(f"{self.src}-bad", seq, {"DMEA": 1.0}, over)], 1, 0)]

    def nan_inf(self):
        literal = self.rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
        payload = _env(self.src, 1, {"DMEA": 0.0}).replace(b'"DMEA":0.0', b'"DMEA":' + literal)
        return [([b"drilling", payload], 1, 0)]

    def huge(self):
        size = self.rng.randrange(self.max_bytes + 1, self.max_bytes * 2)
        payload = _env(self.src, 1, {"note": "x" * size})
        return [([b"fuzz.custom", payload], 1, 0)]

    def empty(self):
        return [([self.rng.choice([b"drilling", b"fuzz.custom"]), b""], 1, 0)]

    def bad_topic(self):
        topic = self.rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80x"])
        return [([topic, _env(self.src, 1, {"DMEA": 1.0})], 1, 0)]

    def frame_count(self):
        parts = self.rng.choice([[b"drilling"], [b"drilling", b"{}", b"{}"],
                                 [b"x", _env(self.src, 1, {}), b"extra", b"more"]])
        return [(parts, 1, 0)]

    def bad_value(self):
        # a valid message on the saver's stream with one bad value among good ones: the
        # good ones are stored, the bad one dead-lettered
        seq = self._next()
        bad = self.rng.choice([{"SPPA": 1e9}, {"RPMA": "fast"}, {"HKLA": [1, 2]}, {"WOBA": True},
                               {"TQA": {"x": 1}}, {"ROPA": -1e6}])
        return [([b"drilling", encode(self.src, "fuzz", seq, T0 + seq, data={"DMEA": 5000.0, **bad})], 1, 0)]

    def duplicate(self):
        seq = self._next()
        payload = encode(self.src, "fuzz", seq, T0 + seq, data={"DMEA": 5000.0})
        return [([b"drilling", payload], 0, 0), ([b"drilling", payload], 1, 0)]

    def reordered(self):
        # seq n+1 then n: n+1 opens a gap (n) that n, arriving late, fills: both stored
        first, second = self._next(), self._next()
        late = encode(self.src, "fuzz", first, T0 + first, data={"DMEA": 5000.0})
        early = encode(self.src, "fuzz", second, T0 + second, data={"DMEA": 5000.0})
        return [([b"drilling", early], 0, 0), ([b"drilling", late], 0, 0)]

    def skipped(self):
        # a seq never sent: a gap, recorded lost (this source keeps no spool)
        self._next()
        seq = self._next()
        return [([b"drilling", encode(self.src, "fuzz", seq, T0 + seq, data={"DMEA": 5000.0})], 0, 1)]

    def bogus_announcement(self):
        data = self.rng.choice([{"endpoint": "tcp://10.0.0.1:5"}, {"endpoint": 5, "streams": []},
                                {"endpoint": "tcp://127.0.0.1:1", "streams": "all"},
                                {"endpoint": "ipc:///tmp/x", "streams": [[1, 2, 3, 4]]}, {}])
        return [([b"sys.spool", _env(f"{self.src}-announcer", self.rng.randrange(1, 10**6), data)], 0, 0)]


def send(endpoint: str, count: int, *, seed: int = 1, src: str = "rig-1.fuzz", max_bytes: int = 1 << 20,
         rate: float = 20_000, context: zmq.Context | None = None) -> Expected:
    """Send `count` malformed messages to a broker frontend at about `rate` per second."""
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 10_000)
    sock.setsockopt(zmq.SNDHWM, 0)  # never drop here: the counts must be exact
    sock.connect(endpoint)
    # the broker subscribes its frontend to everything: once that reaches us, we may send
    if not sock.poll(30_000):
        sock.close()
        raise RuntimeError(f"no broker answered at {endpoint} within 30 s; is `rigtel broker` running?")
    sock.recv()
    expected = Expected()
    started = time.monotonic()
    try:
        for i, (kind, parts, dead, gaps) in enumerate(Fuzzer(seed, src, max_bytes).messages(count)):
            sock.send_multipart(parts)
            expected.sent[kind] += 1
            expected.dead_letters += dead
            expected.gaps += gaps
            if i % 500 == 499:
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)  # pacing, so no subscriber's queue overflows
    finally:
        sock.close()
    return expected


def main(argv: Sequence[str]) -> int:
    from appliance.cli import load_settings, settings_parser
    from appliance.ops.runtime import tcp_endpoint

    parser = settings_parser("fuzz-bus", "Send malformed messages to the broker and print how many "
                                         "dead letters and gaps the saver should record for them.")
    parser.add_argument("--count", type=int, default=100_000, help="messages to send (default 100000)")
    parser.add_argument("--rate", type=float, default=20_000, help="messages per second (default 20000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--name", default="fuzz", help="source name used in the envelopes (default fuzz)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.rate <= 0:
        parser.error("--count and --rate must be positive")
    cfg = load_settings(args)
    endpoint = tcp_endpoint(cfg.bus_host, cfg.broker_frontend_port)
    src = f"{cfg.rig_id}.{args.name}"
    started = time.monotonic()
    try:
        expected = send(endpoint, args.count, seed=args.seed, src=src, max_bytes=cfg.bus_max_message_bytes,
                        rate=args.rate)
    except RuntimeError as e:
        print(f"rigtel fuzz-bus: {e}", file=sys.stderr)
        return 1
    seconds = time.monotonic() - started
    print(f"sent {args.count} message(s) to {endpoint} in {seconds:.1f} s as {src}")
    for kind, n in sorted(expected.sent.items()):
        print(f"  {kind:<20} {n}")
    print(f"expected in the database: {expected.dead_letters} dead letter(s) and {expected.gaps} gap(s) "
          f"from {src}; the messages must not have stopped any program")
    sys.stdout.flush()
    return 0
