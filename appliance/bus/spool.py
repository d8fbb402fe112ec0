"""A source's durable spool: what it published, kept on disk so lost messages can be fetched.

A publisher that opts in (`Publisher(name, spool=True)`) appends every message it sends
(except `sys.*`) to segment files in `spool_dir/<src>/`, and serves them back on request:
the ZMQ Guide's clone pattern, with the saver as the client that catches up. The spool is
bounded by size (`spool_max_mb`) and age (`spool_max_age_h`); the oldest segment goes first.

On disk: segments named `<created ms>-<boot>-<n>.seg`, each a run of records::

    <u32 length of the rest> <u32 crc32 of the rest> <i64 seq> <u16 topic length> topic payload

`payload` is the envelope exactly as sent, so a fetched message decodes like a live one. A
record torn by a crash or a power loss fails its length or CRC check and ends the segment
when it is read back.

Durability: each record is handed to the kernel with one write() as it is sent, so a
killed program loses nothing of its spool. The kernel's copy reaches the disk when the
server thread calls fdatasync(), every `spool_fsync_s` seconds (0: after every record,
at a heavy cost per message); a power loss can take at most that much of the spool.

The server thread owns a ROUTER socket bound on loopback (an ephemeral port) and a PUB
socket of its own, on which it announces, every `bus_heartbeat_s` on `sys.spool`, its
endpoint and the range of sequence numbers it holds for every (boot, topic). Requests are
`[b"FETCH", json {"boot", "topic", "first", "last", "max"}]`; the reply is
`[b"OK", json {"first_held", "last_held"}, payload, payload, ...]` with the held messages
from `first` on, at most `max` of them and about FETCH_MAX_BYTES.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import re
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import zmq

from appliance.bus.envelope import encode

log = logging.getLogger("rigtel.spool")

HEADER = struct.Struct("<IIqH")  # length of the rest, crc32 of the rest, seq, topic length
SEQ_TOPIC = struct.Struct("<qH")
ANNOUNCE_TOPIC = "sys.spool"
FETCH_MAX_BYTES = 8 * 1024 * 1024
FETCH_MAX_MESSAGES = 5000
MAX_ANNOUNCED = 200  # (boot, topic) ranges in one announcement, newest first
SEGMENT_NAME = re.compile(r"^(\d{13})-([A-Za-z0-9]+)-(\d{6})\.seg$")
MB = 1024 * 1024


@dataclass
class Segment:
    path: Path
    boot: str
    created_ms: int
    size: int = 0
    newest_ms: int = 0  # wall time of the newest record written, for the age limit
    # topic -> (first seq, offsets of its consecutive records in this file)
    topics: dict[str, tuple[int, array.array]] = field(default_factory=dict)

    def holds(self, topic: str) -> tuple[int, int] | None:
        entry = self.topics.get(topic)
        if entry is None or not entry[1]:
            return None
        return entry[0], entry[0] + len(entry[1]) - 1


def scan(path: Path) -> tuple[dict[str, tuple[int, array.array]], int]:
    """Index a segment file: per topic its first seq and record offsets; and the size of
    its good part (a torn or corrupt record and everything after it are ignored)."""
    topics: dict[str, tuple[int, array.array]] = {}
    with open(path, "rb") as f:
        data = f.read()
    offset, end = 0, len(data)
    while offset + HEADER.size <= end:
        length, crc, seq, topic_len = HEADER.unpack_from(data, offset)
        rest_end = offset + 8 + length
        if length < SEQ_TOPIC.size or rest_end > end or zlib.crc32(data[offset + 8:rest_end]) != crc:
            break
        topic = data[offset + HEADER.size:offset + HEADER.size + topic_len].decode("utf-8", "replace")
        entry = topics.get(topic)
        if entry is None:
            topics[topic] = (seq, array.array("Q", [offset]))
        elif seq == entry[0] + len(entry[1]):
            entry[1].append(offset)
        # else: a sequence break inside one boot's topic cannot come from Publisher; ignore
        offset = rest_end
    return topics, offset


class Spool:
    """The segment files of one source (all its boots), appended by one publisher thread
    and read by the server thread; `lock` guards the index and the segment list."""

    def __init__(self, folder: str | Path, boot: str, *, max_bytes: int, max_age_s: float,
                 fsync_s: float) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.boot = boot
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.fsync_s = fsync_s
        self.segment_bytes = max(64 * 1024, min(32 * MB, max_bytes // 16))
        self.lock = threading.Lock()
        # one process per source folder: a second one would interleave files it cannot see
        self._lock_fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"the spool {self.folder} is in use by another process: two publishers "
                               f"with one source id; give each a name of its own") from None
        self.segments: list[Segment] = []
        for path in sorted(self.folder.glob("*.seg")):
            m = SEGMENT_NAME.match(path.name)
            if m:
                self.segments.append(Segment(path, m[2], int(m[1]), path.stat().st_size,
                                             int(path.stat().st_mtime * 1000)))
        self._scanned = False  # old segments are indexed lazily, by the server thread
        self.current: Segment | None = None
        self._fd = -1
        self._dirty = False
        self._n = 0
        self.appended = 0
        self.dropped_segments = 0
        self.write_errors = 0

    # -- writing (the publisher's thread) ------------------------------------------------

    def _open_segment(self) -> None:
        now = time.time_ns() // 1_000_000
        self._n += 1
        path = self.folder / f"{now:013d}-{self.boot}-{self._n:06d}.seg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        with self.lock:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = fd
            self.current = Segment(path, self.boot, now, 0, now)
            self.segments.append(self.current)
            self._enforce_limits()

    def append(self, topic: str, raw_topic: bytes, seq: int, payload: bytes) -> None:
        """Write one sent message; never raises (a full disk must not stop the publisher:
        the message went out on the bus anyway, and a failed write is counted)."""
        seg = self.current
        if seg is None or seg.size >= self.segment_bytes:
            try:
                self._open_segment()
            except OSError as e:
                self._write_failed(e)
                return
            seg = self.current
        rest = SEQ_TOPIC.pack(seq, len(raw_topic))
        crc = zlib.crc32(payload, zlib.crc32(raw_topic, zlib.crc32(rest)))
        head = HEADER.pack(len(rest) + len(raw_topic) + len(payload), crc, seq, len(raw_topic))
        try:
            written = os.writev(self._fd, (head, raw_topic, payload))
        except OSError as e:
            self._write_failed(e)
            return
        if written != len(head) + len(raw_topic) + len(payload):
            # a short write (disk full mid-record): the torn record ends this segment on
            # reading, so start a new one for what follows
            self._write_failed(OSError("short write"))
            self.current = None
            return
        offset = seg.size
        seg.size += written
        entry = seg.topics.get(topic)
        if entry is None:
            with self.lock:
                seg.topics[topic] = (seq, array.array("Q", [offset]))
        elif seq == entry[0] + len(entry[1]):
            entry[1].append(offset)  # GIL-atomic; the reader takes a length first
        self._dirty = True
        self.appended += 1
        if self.fsync_s == 0:
            self.sync()

    def _write_failed(self, e: OSError) -> None:
        self.write_errors += 1
        if self.write_errors in (1, 10, 100) or self.write_errors % 1000 == 0:
            log.error("cannot write the spool in %s (%s; %d failure(s) so far): messages still go out "
                      "on the bus but cannot be fetched again if lost", self.folder, e, self.write_errors)

    def sync(self) -> None:
        """Push what was written to the disk (fdatasync), if anything was."""
        with self.lock:
            if self._dirty and self._fd >= 0:
                self._dirty = False
                try:
                    os.fdatasync(self._fd)
                except OSError as e:
                    self._write_failed(e)
                if self.current is not None:
                    self.current.newest_ms = time.time_ns() // 1_000_000

    def _enforce_limits(self) -> None:
        """Drop the oldest segments beyond the size or age limit (never the one being written)."""
        total = sum(s.size for s in self.segments)
        horizon = time.time_ns() // 1_000_000 - int(self.max_age_s * 1000)
        while len(self.segments) > 1 and (total > self.max_bytes or self.segments[0].newest_ms < horizon):
            old = self.segments.pop(0)
            total -= old.size
            self.dropped_segments += 1
            try:
                old.path.unlink()
            except FileNotFoundError:
                pass

    def expire(self) -> None:
        with self.lock:
            self._enforce_limits()

    # -- reading (the server thread) -----------------------------------------------------

    def scan_old(self) -> None:
        """Index the segments of earlier runs (once; may take a second for a full spool)."""
        if self._scanned:
            return
        self._scanned = True
        with self.lock:
            old = [s for s in self.segments if s is not self.current and not s.topics]
        for seg in old:
            try:
                topics, good = scan(seg.path)
            except OSError:
                continue
            with self.lock:
                seg.topics, seg.size = topics, good

    def holdings(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(boot, topic) -> (first, last) seq held, over every segment."""
        out: dict[tuple[str, str], tuple[int, int]] = {}
        with self.lock:
            segments = list(self.segments)
        for seg in segments:
            for topic in list(seg.topics):
                span = seg.holds(topic)
                if span is None:
                    continue
                key = (seg.boot, topic)
                have = out.get(key)
                out[key] = span if have is None else (min(have[0], span[0]), max(have[1], span[1]))
        return out

    def read(self, boot: str, topic: str, first: int, last: int, max_messages: int = FETCH_MAX_MESSAGES,
             max_bytes: int = FETCH_MAX_BYTES) -> tuple[int | None, int | None, list[bytes]]:
        """The payloads held for `boot`/`topic` from seq `first` to `last` (at most
        `max_messages`, about `max_bytes`), in order from the first held at or after
        `first`; with the first and last seq held for that stream (None, None: nothing)."""
        with self.lock:
            spans = [(seg, seg.holds(topic), seg.topics.get(topic)) for seg in self.segments if seg.boot == boot]
        spans = [(seg, span, entry) for seg, span, entry in spans if span is not None]
        if not spans:
            return None, None, []
        first_held = min(s[1][0] for s in spans)
        last_held = max(s[1][1] for s in spans)
        out: list[bytes] = []
        size = 0
        want = max(first, first_held)
        for seg, (lo, hi), (seg_first, offsets) in sorted(spans, key=lambda s: s[1][0]):
            if hi < want or lo > last:
                continue
            if lo > want:  # a hole between segments (a torn record): stop there
                break
            try:
                f = open(seg.path, "rb")
            except FileNotFoundError:  # dropped by the size limit meanwhile
                break
            with f:
                for seq in range(want, min(hi, last) + 1):
                    f.seek(offsets[seq - seg_first])
                    head = f.read(HEADER.size)
                    if len(head) < HEADER.size:
                        break
                    length, crc, got_seq, topic_len = HEADER.unpack(head)
                    body = f.read(length - SEQ_TOPIC.size)
                    if got_seq != seq or len(body) != length - SEQ_TOPIC.size:
                        break
                    out.append(body[topic_len:])
                    size += len(body)
                    want = seq + 1
                    if len(out) >= max_messages or size >= max_bytes:
                        return first_held, last_held, out
            if want > last:
                break
        return first_held, last_held, out

    def close(self) -> None:
        self.sync()
        with self.lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self.current = None
        os.close(self._lock_fd)


class SpoolServer:
    """The thread that answers fetches, announces the spool, syncs and expires segments."""

    def __init__(self, spool: Spool, src: str, boot: str, bus_endpoint: str, context: zmq.Context,
                 announce_s: float) -> None:
        self.spool = spool
        self.src = src
        self.boot = boot
        self.bus_endpoint = bus_endpoint
        self.context = context
        self.announce_s = announce_s
        self.endpoint = ""  # tcp://127.0.0.1:PORT once ready
        self.ready = threading.Event()
        self.pipe = f"inproc://rigtel-spool-{id(self):x}"
        self.served = 0
        self._wake = context.socket(zmq.PAIR)  # created and bound in the owner's thread
        self._wake.setsockopt(zmq.LINGER, 0)
        self._wake.bind(self.pipe)
        self.thread = threading.Thread(target=self._run, name="spool-server", daemon=True)

    def start(self) -> "SpoolServer":
        self.thread.start()
        self.ready.wait(10)
        return self

    def stop(self) -> None:
        try:
            self._wake.send(b"STOP")
        except zmq.ZMQError:
            pass
        self.thread.join(5)
        self._wake.close()

    def _run(self) -> None:
        ctx = self.context
        router = ctx.socket(zmq.ROUTER)
        pub = ctx.socket(zmq.PUB)
        pipe = ctx.socket(zmq.PAIR)
        for s in (router, pub, pipe):
            s.setsockopt(zmq.LINGER, 0)
        try:
            router.setsockopt(zmq.SNDHWM, 16)
            router.bind("tcp://127.0.0.1:0")  # loopback only: the spool is never on the network
            self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            pub.connect(self.bus_endpoint)
            pipe.connect(self.pipe)
        finally:
            self.ready.set()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(pipe, zmq.POLLIN)
        seq = 0
        next_announce = time.monotonic()
        fsync_s = self.spool.fsync_s if self.spool.fsync_s > 0 else 3600.0
        next_sync = time.monotonic() + fsync_s
        try:
            self.spool.scan_old()
            while True:
                now = time.monotonic()
                timeout = max(0.0, min(next_announce, next_sync) - now)
                events = dict(poller.poll(int(timeout * 1000) + 1))
                if pipe in events:
                    break
                if router in events:
                    for _ in range(100):
                        try:
                            request = router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        router.send_multipart([request[0], *self._answer(request[1:])])
                now = time.monotonic()
                if now >= next_sync:
                    next_sync = now + fsync_s
                    self.spool.sync()
                if now >= next_announce:
                    next_announce = now + self.announce_s
                    self.spool.expire()
                    seq += 1
                    pub.send_multipart([ANNOUNCE_TOPIC.encode(), encode(
                        self.src, self.boot, seq, time.time_ns() // 1_000_000, data=self.announcement())])
        except zmq.ContextTerminated:
            pass
        finally:
            router.close()
            pub.close()
            pipe.close()

    def announcement(self) -> dict[str, Any]:
        held = sorted(self.spool.holdings().items(), key=lambda kv: kv[0][0] != self.boot)[:MAX_ANNOUNCED]
        return {"endpoint": self.endpoint, "boot": self.boot,
                "streams": [[boot, topic, lo, hi] for (boot, topic), (lo, hi) in held]}

    def _answer(self, parts: list[bytes]) -> list[bytes]:
        try:
            if len(parts) != 2 or parts[0] != b"FETCH":
                raise ValueError("expected [FETCH, json]")
            req = orjson.loads(parts[1])
            boot, topic, first, last = req["boot"], req["topic"], int(req["first"]), int(req["last"])
            limit = max(1, min(int(req.get("max", FETCH_MAX_MESSAGES)), FETCH_MAX_MESSAGES))
            if not isinstance(boot, str) or not isinstance(topic, str):
                raise ValueError("boot and topic must be strings")
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as e:
            return [b"ERROR", orjson.dumps({"error": str(e)[:200]})]
        first_held, last_held, payloads = self.spool.read(boot, topic, first, last, limit)
        self.served += len(payloads)
        return [b"OK", orjson.dumps({"first_held": first_held, "last_held": last_held}), *payloads]
