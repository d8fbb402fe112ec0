"""The bus message format: pure encoding and decoding, no sockets.

A message is two ZeroMQ frames: the topic (UTF-8, prefix-matched by subscribers) and a
JSON envelope::

    {"v": 1, "src": "rig-1.simulator", "boot": "5f0c2a9e1b7d4c36", "seq": 42,
     "ts": 1764449520123, "data": {"DMEA": 5012.4, ...}}

`seq` counts messages per (src, boot, topic) from 1, so a subscriber can tell a gap
(a number skipped), a restart (a new boot) and a late or repeated message (a number
already seen). `ts` is UTC epoch milliseconds. A high-rate source may pack many frames
into one message with ``"batch": [{"ts": ..., "data": {...}}, ...]`` in place of
``"data"``; the envelope's `ts` is then the send time.

JSON is encoded with orjson: measured here, a 20-channel envelope round-trips about ten
times faster than with the standard library (261k against 27k per second).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, NamedTuple

import orjson

VERSION = 1
MAX_TOPIC_BYTES = 255
MAX_SEQ = 2**63 - 1  # SQLite's integers are 64-bit
MAX_TS = 2**53  # epoch ms; exact in a double, and far beyond any real date
MAX_DEPTH = 64  # nesting of custom payloads: orjson writes at most 255 levels back
CONTAINERS = {dict, list}


class Rejected(ValueError):
    """A message that cannot be accepted; str() is the reason, for the dead-letter store."""


class Frame(NamedTuple):
    ts: int  # UTC epoch milliseconds
    data: dict[str, Any]


# NamedTuples rather than frozen dataclasses: as immutable, and about three times cheaper
# to make (a subscriber makes one of each per message).
class Envelope(NamedTuple):
    topic: str
    src: str
    boot: str
    seq: int
    ts: int  # send time, UTC epoch milliseconds
    frames: tuple[Frame, ...]
    size: int  # bytes on the wire, topic and payload


FLOAT_MAX = 1.7976931348623157e308


def check_finite(value: Any, path: str = "data") -> None:
    """Raise ValueError naming the first NaN or infinity inside `value`.

    JSON has no NaN: orjson would silently write null, so publishers check first.
    """
    if value.__class__ is dict and all(
            (v.__class__ is float and -FLOAT_MAX <= v <= FLOAT_MAX) or v.__class__ is int
            for v in value.values()):
        return  # the common flat frame of numbers, checked in one pass (NaN fails <=)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value} is not a finite number (leave the channel out instead)")
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (float, dict, list, tuple)):
                check_finite(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if isinstance(v, (float, dict, list, tuple)):
                check_finite(v, f"{path}[{i}]")


def check_topic(topic: str) -> bytes:
    """The topic as bytes, or ValueError for one that cannot go on the bus."""
    if not isinstance(topic, str) or not topic:
        raise ValueError("topic must be a non-empty string")
    raw = topic.encode("utf-8")
    if len(raw) > MAX_TOPIC_BYTES or any(c.isspace() for c in topic):
        raise ValueError(f"topic {topic[:40]!r}: at most {MAX_TOPIC_BYTES} bytes, no spaces")
    return raw


def encode(src: str, boot: str, seq: int, ts: int, data: dict | None = None,
           batch: Iterable[tuple[int, dict]] | None = None) -> bytes:
    """The JSON payload of one envelope: `data` for one frame, or `batch` of (ts, data)."""
    if batch is None:
        return orjson.dumps({"v": VERSION, "src": src, "boot": boot, "seq": seq, "ts": ts, "data": data})
    return orjson.dumps({"v": VERSION, "src": src, "boot": boot, "seq": seq, "ts": ts,
                         "batch": [{"ts": t, "data": d} for t, d in batch]})


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# Topics already decoded, bytes -> text: a bus carries a handful, and a dict lookup costs a
# quarter of decoding them again for every message. Bounded in count and in size (only
# topics a publisher may send, at most MAX_TOPIC_BYTES: a flood of junk topics holds at most
# TOPIC_CACHE × 255 bytes); past the limit, topics not yet met are decoded each time.
_topic_texts: dict[bytes, str] = {}
TOPIC_CACHE = 1000


def _topic_text(topic: bytes) -> str:
    try:
        text = topic.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("topic is not UTF-8") from None
    if not text:
        raise Rejected("empty topic")
    if len(_topic_texts) < TOPIC_CACHE and type(topic) is bytes and len(topic) <= MAX_TOPIC_BYTES:
        _topic_texts[topic] = text
    return text


def decode(topic: bytes, payload: bytes, max_bytes: int) -> Envelope:
    """Decode and check one message; raise Rejected with the reason when it is unusable."""
    size = len(topic) + len(payload)
    if size > max_bytes:
        raise Rejected(f"oversized: {size} bytes, the limit is {max_bytes}")
    topic_text = _topic_texts.get(topic) if type(topic) is bytes else None
    if topic_text is None:
        topic_text = _topic_text(topic)
    try:
        env = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        # orjson refuses NaN and Infinity literals, so they land here too
        raise Rejected(f"bad JSON: {e}") from None
    if type(env) is dict:
        fast = _decode_plain(topic_text, payload, size, env)
        if fast is not None:
            return fast
    if not isinstance(env, dict):
        raise Rejected(f"envelope is a JSON {type(env).__name__}, not an object")
    if env.get("v") != VERSION:
        raise Rejected(f"unsupported envelope version {env.get('v')!r} (this reader knows {VERSION})")
    src, boot, seq, ts = env.get("src"), env.get("boot"), env.get("seq"), env.get("ts")
    if not isinstance(src, str) or not src:
        raise Rejected("'src' missing or not a non-empty string")
    if not isinstance(boot, str) or not boot:
        raise Rejected("'boot' missing or not a non-empty string")
    if not _is_int(seq) or not 1 <= seq <= MAX_SEQ:
        raise Rejected(f"'seq' must be a whole number from 1 to 2^63-1, not {str(seq)[:40]}")
    if not _is_int(ts) or not 0 <= ts < MAX_TS:
        raise Rejected(f"'ts' must be epoch milliseconds, not {str(ts)[:40]}")
    if "batch" in env:
        items = env["batch"]
        if not isinstance(items, list) or not items:
            raise Rejected("'batch' must be a non-empty list")
        frames = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise Rejected(f"batch[{i}] is not an object")
            fts, fdata = item.get("ts"), item.get("data")
            if not _is_int(fts) or not 0 <= fts < MAX_TS:
                raise Rejected(f"batch[{i}].ts must be epoch milliseconds, not {str(fts)[:40]}")
            if not isinstance(fdata, dict):
                raise Rejected(f"batch[{i}].data must be an object")
            _check_depth(fdata, f"batch[{i}].data")
            frames.append(Frame(fts, fdata))
        frames_t = tuple(frames)
    else:
        data = env.get("data")
        if not isinstance(data, dict):
            raise Rejected("'data' missing or not an object")
        _check_depth(data, "data")
        frames_t = (Frame(ts, data),)
    return Envelope(topic_text, src, boot, seq, ts, frames_t, size)


# The start of an envelope as encode() writes it, up to its data's opening brace or its
# batch's bracket. Readers that need only who sent a message, its number and how many
# frames it holds (the broker's statistics, the logger) read them here rather than parse
# the whole message: a 100-frame batch is ~30 kB of JSON, which orjson.loads takes about
# five times as long to parse as peek() takes to read and count. Anything else — escapes
# or control characters in the ids, numbers written otherwise — is decoded in full.
HEAD = re.compile(rb'\{"v":1,"src":"([^"\\\x00-\x1f]+)","boot":"([^"\\\x00-\x1f]+)",'
                  rb'"seq":([1-9]\d{0,18}),"ts":(0|[1-9]\d{0,15}),"(data":\{|batch":\[)')


class Head(NamedTuple):
    """What peek() reads of a message: its envelope's fields, and its frames counted, not read."""

    topic: str
    src: str
    boot: str
    seq: int
    ts: int
    frames: int
    size: int


def peek(topic: bytes, payload: bytes, max_bytes: int) -> Head | None:
    """The head of a message as encode() writes it, without reading its frames.

    None for anything peek cannot vouch for from the text alone — another layout, a topic
    not in UTF-8, numbers out of range, frame data holding objects or lists, anything after
    the data or the batch, a message cut short or over `max_bytes` — which decode() then
    checks in full. The values inside a frame are not checked: whether they are usable is
    for the program that uses them to judge (the saver rejects and stores what is not).
    """
    size = len(topic) + len(payload)
    if size > max_bytes:
        return None
    m = HEAD.match(payload)
    if m is None:
        return None
    seq, ts = int(m[3]), int(m[4])
    if not (seq <= MAX_SEQ and ts < MAX_TS):
        return None
    body = m.end()
    if payload.find(b"[", body) >= 0:
        return None  # a list inside the frame data (or the batch's items)
    if m[5] == b'data":{':
        # one frame of plain values: the first '}' after its brace closes it and is followed
        # only by the envelope's (no nested object, no key after the data)
        if payload.find(b"}", body) != len(payload) - 2 or not payload.endswith(b"}"):
            return None
        frames = 1
    else:
        # '[{"ts":..,"data":{..}},{"ts":..}]}': '},{"ts":' can stand only between two items
        # (a quote inside a string is escaped, and there is no other list), and with two
        # braces per item and one for the envelope, no item holds a nested object
        if not payload.endswith(b"}}]}"):
            return None
        frames = payload.count(b'},{"ts":') + 1
        if payload.count(b"{") != 1 + 2 * frames:
            return None
    text = _topic_texts.get(topic)
    if text is None:
        try:
            text = _topic_text(topic)
        except Rejected:
            return None
    try:
        return _new(Head, (text, m[1].decode("utf-8"), m[2].decode("utf-8"), seq, ts, frames, size))
    except UnicodeDecodeError:
        return None


# NamedTuple's generated __new__ is a Python function; the fast path below builds the
# tuples directly, which halves their cost (they are made per message).
_new = tuple.__new__


def _decode_plain(topic: str, payload: bytes, size: int, env: dict) -> Envelope | None:
    """The common envelope, accepted with a few cheap tests; None sends it to the full checks.

    It accepts only what the full checks would accept: the same fields and bounds, and
    frames whose data holds no object or list (the payload has no brace or bracket besides
    the envelope's, its batch's and each frame's), so the depth check has nothing to do.
    Single bytes are looked for as ints (`91 in payload`): with a bytes needle, `in`
    raises and swallows a TypeError inside CPython, and find() parses its arguments.
    """
    try:
        v, src, boot, seq, ts = env["v"], env["src"], env["boot"], env["seq"], env["ts"]
    except KeyError:
        return None
    if not (v == VERSION and type(src) is str and src and type(boot) is str and boot
            and type(seq) is int and 1 <= seq <= MAX_SEQ and type(ts) is int and 0 <= ts < MAX_TS):
        return None
    data = env.get("data")
    if type(data) is dict and "batch" not in env:
        # Nothing nested in the data: no bracket anywhere, and exactly two braces — the
        # envelope's, the only one before the first '"data":{', and that one's, with none
        # after it. A look-alike inside a string, or the data's key spelt otherwise
        # ('"\u0064ata"', '"data" :{'), leaves another brace somewhere and takes the full
        # checks, which enforce MAX_DEPTH. Single bytes are ints: `91 in payload` is a
        # memchr, and count(123) on the short head costs less than find(b"{", 1), which
        # parses its arguments. (orjson writes no spaces: a standard-library `json`
        # envelope, '"data": {', always takes the full checks; slower, not wrong.)
        if 91 not in payload:  # '['
            head, found, rest = payload.partition(b'"data":{')
            if found and 123 not in rest and head.count(123) == 1:  # '{'
                return _new(Envelope, (topic, src, boot, seq, ts, (_new(Frame, (ts, data)),), size))
        return None
    items = env.get("batch")
    if items is None:
        return None
    # one bracket (the batch's): two memchr-speed finds, where count() walks a 40 kB batch
    # byte by byte (~140k instructions); the braces have no such shortcut
    if type(items) is not list or not items or payload.find(b"[", payload.find(b"[") + 1) >= 0 \
            or payload.count(b"{") != 1 + 2 * len(items):
        return None
    try:
        frames = tuple([_new(Frame, (fts, fdata)) for item in items
                        if type(fts := item["ts"]) is int and 0 <= fts < MAX_TS
                        and type(fdata := item["data"]) is dict])
    except (TypeError, KeyError):
        return None
    return _new(Envelope, (topic, src, boot, seq, ts, frames, size)) if len(frames) == len(items) else None


def _check_depth(data: dict, where: str) -> None:
    """Reject payloads nested deeper than MAX_DEPTH (they could not be written back out)."""
    if not CONTAINERS & set(map(type, data.values())):
        return  # the usual frame of plain values, checked at C speed
    stack = [(v, 1) for v in data.values() if isinstance(v, (dict, list))]
    while stack:
        value, depth = stack.pop()
        if depth >= MAX_DEPTH:
            raise Rejected(f"{where} is nested more than {MAX_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
