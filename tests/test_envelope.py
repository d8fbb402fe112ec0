"""The envelope codec and sequence tracking: pure functions, no sockets."""

from __future__ import annotations

import math

import orjson
import pytest

from appliance.bus.envelope import Rejected, check_finite, decode, encode, peek
from appliance.bus.sequence import SequenceTracker, Verdict
from appliance.channels import BY_WITS, CATALOGUE, check_value

LIMIT = 1 << 20


def test_single_frame_round_trip():
    payload = encode("rig-1.sim", "b00t", 3, 1_764_449_520_123, data={"DMEA": 5012.5, "RPMA": 120})
    env = decode(b"drilling", payload, LIMIT)
    assert (env.topic, env.src, env.boot, env.seq, env.ts) == ("drilling", "rig-1.sim", "b00t", 3, 1_764_449_520_123)
    assert len(env.frames) == 1 and env.frames[0].data == {"DMEA": 5012.5, "RPMA": 120}
    assert env.frames[0].ts == env.ts and env.size == len(payload) + len(b"drilling")


def test_batch_round_trip_keeps_each_frame_time():
    frames = [(1000 + i, {"HKLA": 200.0 + i}) for i in range(5)]
    env = decode(b"drilling", encode("s", "b", 1, 2000, batch=frames), LIMIT)
    assert [(f.ts, f.data) for f in env.frames] == frames and env.ts == 2000


def envelope(**over):
    base = {"v": 1, "src": "s", "boot": "b", "seq": 1, "ts": 1, "data": {}}
    base.update(over)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize("payload, reason", [
    (b"", "bad JSON"),
    (b"\x00\xff", "bad JSON"),
    (b'{"v":1,"src":"s","boot":"b","seq":1,"ts":1,"data":{"x":Infinity}}', "bad JSON"),
    (b'"text"', "not an object"),
    (envelope(v=...), "unsupported envelope version None"),
    (envelope(src=""), "'src'"),
    (envelope(boot=5), "'boot'"),
    (envelope(seq=0), "'seq' must be a whole number from 1 to 2^63-1"),
    (envelope(seq=2**63), "'seq' must be a whole number from 1"),
    (envelope(ts=2**63), "'ts' must be epoch milliseconds"),
    (envelope(data=..., batch=[{"ts": 2**64 - 1, "data": {}}]), "batch[0].ts"),
    (b'{"v":1,"src":"s","boot":"b","seq":1,"ts":1,"data":{"x":' + b"[" * 100 + b"]" * 100 + b"}}",
     "nested more than 64 levels"),
    # the data's key spelt with an escape, and a look-alike '"data":{' at the deepest level:
    # every brace comes before the look-alike, so the fast path must not take it
    (b'{"v":1,"src":"s","boot":"b","seq":1,"ts":1,"\\u0064ata":' + b'{"a":' * 70
     + b'{"x\\"data":{}}' + b"}" * 70 + b"}", "nested more than 64 levels"),
    (envelope(seq=True), "'seq'"),
    (envelope(seq=1.5), "'seq'"),
    (envelope(ts=-1), "'ts' must be epoch milliseconds"),
    (envelope(data=[1]), "'data' missing or not an object"),
    (envelope(data=..., batch=[]), "'batch' must be a non-empty list"),
    (envelope(data=..., batch=[{"ts": 1, "data": 3}]), "batch[0].data"),
    (envelope(data=..., batch=[{"ts": "x", "data": {}}]), "batch[0].ts"),
    (envelope(data=..., batch=[7]), "batch[0] is not an object"),
])
def test_bad_envelopes_are_rejected_with_a_reason(payload, reason):
    with pytest.raises(Rejected) as e:
        decode(b"drilling", payload, LIMIT)
    assert reason in str(e.value)


@pytest.mark.parametrize("payload", [
    b' {"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":1}}',  # space before the brace
    b'{"v":1,"src":"a{","boot":"b","seq":1,"ts":1,"data":{"x":1}}',  # a brace in a string
    b'{"v":1,"src":"\\"data\\":{","boot":"b","seq":1,"ts":1,"data":{"x":1}}',  # look-alike first
    b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":{"y":1}}}',  # nested data
    b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":"}"}}',
    b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":1},"extra":{}}',
    b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":1},"batch":null}',
    b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":5}',
    b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":1},"batch":[{"ts":2,"data":{"y":2}}]}',
])
def test_the_fast_path_decides_as_the_full_checks(payload, monkeypatch):
    """decode's shortcut for the common envelope accepts and rejects what the full checks do."""
    from appliance.bus import envelope as module

    def outcome():
        try:
            return decode(b"drilling", payload, LIMIT)
        except Rejected as e:
            return f"rejected: {e}"

    fast = outcome()
    monkeypatch.setattr(module, "_decode_plain", lambda *args: None)
    assert fast == outcome()


@pytest.mark.parametrize("payload", [
    envelope(),
    b' {"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":1}}',
    b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":1,"y":"z"}}',
])
def test_the_common_envelope_takes_the_fast_path(payload, monkeypatch):
    """The comparison above would pass with the shortcut turned off: these must take it."""
    from appliance.bus import envelope as module

    taken = []
    plain = module._decode_plain

    def spy(*args):
        result = plain(*args)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(module, "_decode_plain", spy)
    decode(b"drilling", payload, LIMIT)
    assert taken == [True]


def read_in_full(topic: bytes, payload: bytes, limit: int = LIMIT):
    """What decode() makes of a message, in peek()'s terms."""
    env = decode(topic, payload, limit)
    return (env.topic, env.src, env.boot, env.seq, env.ts, len(env.frames), env.size)


@pytest.mark.parametrize("topic, payload", [
    (b"drilling", encode("rig-1.sim", "5f0c2a9e", 42, 1_764_449_520_123, data={"DMEA": 5012.4, "RPMA": 120})),
    (b"drilling", encode("s", "b", 2**63 - 1, 2**53 - 1, data={})),
    (b"sys.stats", encode("rig-1.brøker", "bööt", 1, 0, data={"note": "{\"data\":{", "n": None, "ok": True})),
    (b"drilling", encode("s", "b", 7, 2000, batch=[(1000, {"HKLA": 200.5})])),
    (b"drilling", encode("s", "b", 7, 2000, batch=[(1000 + i, {"HKLA": 200.0 + i, "x": "y"}) for i in range(100)])),
    (b"drilling", encode("s", "b", 7, 2000, batch=[(1, {}), (2, {})])),
])
def test_peek_reads_what_decode_reads(topic, payload):
    assert tuple(peek(topic, payload, LIMIT)) == read_in_full(topic, payload)


@pytest.mark.parametrize("topic, payload", [
    (b"d", b' {"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":1}}'),  # not encode()'s layout
    (b"d", b'{"v":1,"boot":"b","src":"a","seq":1,"ts":1,"data":{"x":1}}'),
    (b"d", b'{"v":1,"src":"a\\"b","boot":"b","seq":1,"ts":1,"data":{"x":1}}'),  # an escape
    (b"d", b'{"v":1,"src":"","boot":"b","seq":1,"ts":1,"data":{"x":1}}'),  # empty src
    (b"d", b'{"v":1,"src":"\xff","boot":"b","seq":1,"ts":1,"data":{"x":1}}'),  # not UTF-8
    (b"\xc3", envelope()),  # topic not UTF-8
    (b"d", envelope(seq=0)),
    (b"d", envelope(seq=2**63)),
    (b"d", envelope(ts=2**53)),
    (b"d", envelope()[:-1]),  # cut short
    (b"d", encode("s", "b", 1, 1, batch=[(1, {"x": 1}), (2, {"x": 2})])[:-1]),
    (b"d", encode("s", "b", 1, 1, batch=[(1, {"x": [1, 2]})])),  # a list inside a frame
    (b"d", encode("s", "b", 1, 1, batch=[(1, {"x": {"y": 1}}), (2, {})])),  # nested data
    (b"d", encode("s", "b", 1, 1, batch=[(1, {"x": "{"})])),  # a brace inside a string
    (b"d", b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"batch":[{"ts":1,"data":{}}],"data":{}}'),
    (b"d", b'{"v":2,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":1}}'),
    (b"d", b'{"v":1,"src":"a\nb","boot":"b","seq":1,"ts":1,"data":{"x":1}}'),  # a raw control character
    (b"d", b'{"v":1,"src":"a","boot":"b","seq":01,"ts":1,"data":{"x":1}}'),  # leading zeros
    (b"d", b'{"v":1,"src":"a","boot":"b","seq":1,"ts":00,"data":{"x":1}}'),
    (b"d", b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":[1]}}'),
    (b"d", b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{"x":{}}}'),
    (b"d", b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{}}}}'),  # trailing garbage
    # keys after the data: orjson keeps the last of a repeated key
    (b"d", b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{},"seq":7,"src":"evil","data":{}}'),
    (b"d", b'{"v":1,"src":"a","boot":"b","seq":1,"ts":1,"data":{},"batch":[{"ts":1,"data":{}}],"y":{}}'),
    # objects nested in frames, some shaped like frames: their braces would be miscounted
    (b"d", encode("s", "b", 1, 1, batch=[(1, {"ev": {"ts": 5, "k": 1}, "meta": {"unit": "ft"}})])),
    (b"d", encode("s", "b", 1, 1, batch=[(1, {"x": {"y": 1}}), (2, {"x": {"ts": 1}})])),
    (b"d", encode("s", "b", 1, 1, batch=[(1, {"x": {"ts": 1, "data": {}}})])),
])
def test_peek_leaves_anything_else_to_the_full_checks(topic, payload):
    assert peek(topic, payload, LIMIT) is None


def test_peek_enforces_the_size_limit():
    payload = envelope()
    assert peek(b"d", payload, len(payload) + 1) is not None
    assert peek(b"d", payload, len(payload)) is None


def test_peek_agrees_with_decode_on_mutated_messages():
    """A differential fuzz: wherever peek vouches for a message that decode accepts, they
    read the same; peek may pass a broken body (its users do not read it), never misread.
    Messages are mutated byte by byte and also put together from odd parts: numbers
    written otherwise, escapes and control characters, nested and frame-shaped data,
    keys repeated after the data (orjson keeps the last)."""
    import random

    rnd = random.Random(7)
    bases = [encode("rig-1.sim", "b1", 12, 1_764_449_520_123, data={"DMEA": 5012.4, "SPPA": 3150.0}),
             encode("s", "b", 3, 2000, batch=[(1000 + i, {"HKLA": 200.0 + i}) for i in range(5)])]
    alphabet = b'{}[]":,0123456789-.etsadbch\\ '
    numbers = [b"1", b"7", b"0", b"01", b"00", b"-1", b"1e3", b"1.0", b"9223372036854775807"]
    texts = [b'"a"', b'"b"', b'"evil"', b'""', b'"a\nb"', b'"\\u0061"']
    datas = [b"{}", b'{"x":1}', b"5", b'{"s":"{"}', b'{"a":[1]}', b'{"x":{"y":1}}', b'{"x":{"ts":1}}',
             b'{"e":{"ts":5},"m":{"u":1}}', b'{"x":{"ts":1,"data":{}}}']

    def frame() -> bytes:
        return b'{"ts":' + rnd.choice(numbers) + b',"data":' + rnd.choice(datas) + b"}"

    def body() -> bytes:
        if rnd.random() < 0.5:
            return b'"data":' + rnd.choice(datas)
        return b'"batch":[' + b",".join(frame() for _ in range(rnd.randint(1, 3))) + b"]"

    def assembled() -> bytes:
        p = (b'{"v":1,"src":' + rnd.choice(texts) + b',"boot":' + rnd.choice(texts) + b',"seq":'
             + rnd.choice(numbers) + b',"ts":' + rnd.choice(numbers) + b"," + body())
        for _ in range(rnd.choice((0, 0, 1, 2))):
            key = rnd.choice((b"src", b"seq", b"ts", b"data", b"batch", b"y"))
            value = (body()[len(key) + 3:] if key in (b"data", b"batch") else
                     rnd.choice(texts) if key == b"src" else rnd.choice(numbers + datas))
            p += b',"' + key + b'":' + value
        return p + b"}"

    def mutated() -> bytes:
        p = bytearray(rnd.choice(bases))
        for _ in range(rnd.randint(1, 3)):
            i = rnd.randrange(len(p))
            op = rnd.random()
            if op < 0.4:
                p[i] = rnd.choice(alphabet)
            elif op < 0.7:
                p.insert(i, rnd.choice(alphabet))
            else:
                del p[i]
        return bytes(p)

    vouched = compared = 0
    for i in range(60_000):
        payload = mutated() if i % 2 else assembled()
        head = peek(b"drilling", payload, LIMIT)
        if head is None:
            continue
        vouched += 1
        try:
            full = read_in_full(b"drilling", payload)
        except Rejected:
            continue
        compared += 1
        assert tuple(head) == full, payload
    assert vouched > 1000 and compared > 1000  # the fuzz reached both outcomes


def test_size_and_topic_checks():
    with pytest.raises(Rejected, match="oversized: 1033 bytes, the limit is 1024"):
        decode(b"t", b"x" * 1032, 1024)
    with pytest.raises(Rejected, match="empty topic"):
        decode(b"", envelope(), LIMIT)
    with pytest.raises(Rejected, match="not UTF-8"):
        decode(b"\xc3", envelope(), LIMIT)


def test_only_topics_a_publisher_may_send_are_remembered():
    """Decoded topics are cached, but a foreign publisher's long topics (up to the message
    limit, 1 MiB) must not pile up in every subscriber: only those of at most 255 bytes."""
    from appliance.bus import envelope as codec
    long = b"x" * (codec.MAX_TOPIC_BYTES + 1)
    assert decode(long, envelope(), LIMIT).topic == long.decode()
    assert decode(bytearray(b"drilling"), envelope(), LIMIT).topic == "drilling"
    assert long not in codec._topic_texts and b"drilling" in codec._topic_texts


def test_check_finite_finds_nested_nan():
    check_finite({"a": 1.0, "b": [1, 2, {"c": 3.0}], "s": "nan"})
    with pytest.raises(ValueError, match=r"data.b\[2\].c: nan"):
        check_finite({"a": 1.0, "b": [1, 2, {"c": math.nan}]})


def test_sequence_verdicts():
    t = SequenceTracker()
    assert t.observe("s", "b1", "drilling", 1) == (Verdict.FIRST, None)
    assert t.observe("s", "b1", "drilling", 2) == (Verdict.NEXT, None)
    verdict, gap = t.observe("s", "b1", "drilling", 6)
    assert verdict is Verdict.GAP and (gap.first_missing, gap.last_missing, gap.count) == (3, 5, 3)
    assert t.observe("s", "b1", "drilling", 4) == (Verdict.LATE, None)
    assert t.observe("s", "b1", "drilling", 6) == (Verdict.LATE, None)
    assert t.observe("s", "b1", "alert", 1) == (Verdict.FIRST, None)  # topics count separately
    assert t.observe("s", "b2", "drilling", 1) == (Verdict.RESTART, None)
    assert t.observe("s", "b2", "drilling", 2) == (Verdict.NEXT, None)
    assert (t.gaps, t.lost, t.late, t.restarts) == (1, 3, 2, 1)
    assert ("s", "b1", "drilling") not in t.last  # the replaced boot is forgotten


def test_catalogue_is_consistent():
    mnemonics = [c.mnemonic for c in CATALOGUE]
    assert len(set(mnemonics)) == len(mnemonics)
    assert BY_WITS["0108"].mnemonic == "DBTM" and BY_WITS["0110"].mnemonic == "DMEA"
    assert {"0121", "0126", "0129", "0130", "0140"} <= set(BY_WITS)
    for c in CATALOGUE:
        assert c.low < c.high and c.unit and c.wits and len(c.wits) == 4
    assert check_value("SPPA", 3000.0) is None
    assert "outside the plausible range" in check_value("SPPA", -5.0)
    assert "not finite" in check_value("SPPA", math.nan)
    assert "not a number" in check_value("SPPA", "3000")
    assert "not a number" in check_value("X", True)
    assert check_value("CUSTOM", 1e12) is None  # unknown channels only need to be finite


def test_tally_counts_exactly_from_a_sample():
    from appliance.bus.tally import FORGET_AFTER, Tally

    t = Tally()
    msgs = {seq: [b"drilling", encode("rig-1.sim", "b1", seq, 1, data={"DMEA": 1.0})] for seq in range(1, 1001)}
    for seq in (1, 2, 10, 500, 1000):  # a sample: the other 995 were dropped by the tap queue
        t.add(msgs[seq])
    t.add([b"\x01drilling"])
    t.add([b"drilling", b"not json"])
    t.add(msgs[500])  # a repeat adds nothing
    body = t.summary(10.0)
    drilling = body["topics"]["drilling"]
    assert drilling["messages"] == 1000 and drilling["per_s"] == 100.0
    # bytes are estimated from the sampled sizes (which differ by the digits of seq)
    assert drilling["bytes"] == pytest.approx(1000 * (len(b"drilling") + len(msgs[500][1])), rel=0.03)
    assert body["sources"] == {"rig-1.sim": 1000} and body["publishers_seen"] == 1
    assert (body["subscriptions"], body["malformed"]) == (1, 1)
    assert body["sampled_fraction"] == 0.006
    t.add([b"drilling", encode("rig-1.sim", "b1", 1200, 1, data={})])  # the next interval continues
    assert t.summary(10.0)["topics"]["drilling"]["messages"] == 200
    for _ in range(FORGET_AFTER + 1):
        t.summary(10.0)
    assert not t.streams  # a silent stream is forgotten


def test_a_rare_stream_is_not_forgotten_while_a_flood_hides_it():
    """In a flood the tap reads a small fraction of the messages, so a rare topic can go
    unsampled for many intervals; its age grows by the sampled fraction, so it is kept (and
    its count continues from its seq) instead of being forgotten and counted from one."""
    from appliance.bus.tally import FORGET_AFTER, Tally

    t = Tally()
    t.add([b"sys.rare", encode("rig-1.x", "b1", 1, 1, data={})])
    t.summary(5.0)
    flood = 0
    for _ in range(3 * FORGET_AFTER):  # each interval: 1,000 flood messages counted, 50 sampled
        for _ in range(50):
            flood += 20
            t.add([b"drilling", encode("rig-1.sim", "b1", flood, 1, data={})])
        assert t.summary(5.0)["sampled_fraction"] == pytest.approx(0.05, abs=0.002)
    t.add([b"sys.rare", encode("rig-1.x", "b1", 40, 1, data={})])
    assert t.summary(5.0)["topics"]["sys.rare"]["messages"] == 39  # not 1
    for _ in range(FORGET_AFTER + 1):
        t.summary(5.0)
    assert not t.streams  # silent with the tap reading everything: forgotten as before


def test_the_stream_table_is_bounded():
    from appliance.bus import tally as module

    t = module.Tally()
    for i in range(module.MAX_STREAMS + 500):
        t.add([b"x", encode(f"forged-{i}", "b", 1, 1, data={})])
    t.summary(5.0)
    assert len(t.streams) == module.MAX_STREAMS
