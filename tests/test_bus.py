"""The bus end to end: a real broker process, real sockets on ephemeral ports."""

from __future__ import annotations

import math
import signal
import threading
import time

import pytest
import zmq

from appliance.bus import Publisher
from appliance.bus.envelope import encode
from tests.conftest import Collector, settings_for, start_broker, start_program, wait_subscribed


def test_many_publishers_and_subscribers_receive_everything_in_order(broker):
    cfg = broker.settings()
    publishers = [Publisher(f"pub{i}", settings=cfg) for i in range(3)]
    n = 3000
    with Collector(["drilling"], cfg) as a, Collector(["drilling", "probe"], cfg) as b:
        a.topics.append("probe")  # not subscribed: proves the topic filter below
        for p in publishers:
            wait_subscribed(p, b)
        for i in range(n):
            for p in publishers:
                p.publish("drilling", {"DMEA": 1000.0 + i, "n": i})
        for c in (a, b):
            c.wait_until(lambda c=c: sum(e.topic == "drilling" for e in c.envelopes) >= 3 * n,
                         what=f"{3 * n} drilling messages")
    for c in (a, b):
        drilling = [e for e in c.envelopes if e.topic == "drilling"]
        assert len(drilling) == 3 * n
        for p in publishers:
            mine = [e for e in drilling if e.src == p.src]
            assert [e.frames[0].data["n"] for e in mine] == list(range(n))
            seqs = [e.seq for e in mine]
            assert seqs == list(range(seqs[0], seqs[0] + n))
        assert c.tracker.gaps == 0 and c.stats["rejected"] == 0
    assert "probe" not in a.topics_seen()  # `a` subscribed to drilling only
    for p in publishers:
        p.close()


def test_batch_envelopes_deliver_every_frame(broker):
    cfg = broker.settings()
    with Publisher("batcher", settings=cfg) as pub, Collector(["drilling", "probe"], cfg) as c:
        wait_subscribed(pub, c)
        frames = [(1_700_000_000_000 + i, {"DMEA": float(i)}) for i in range(250)]
        seq = pub.publish_batch("drilling", frames)
        c.wait_until(lambda: any(e.topic == "drilling" for e in c.envelopes))
        env = next(e for e in c.envelopes if e.topic == "drilling")
        assert env.seq == seq
        assert [(f.ts, f.data) for f in env.frames] == [(t, d) for t, d in frames]


def test_slow_subscriber_gap_is_detected_and_counted(tmp_path):
    # a small high-water mark at the broker, and a subscriber that stops reading
    b = start_broker(tmp_path, 0, 0, "--set", "bus_receive_hwm=50")
    try:
        cfg = b.settings(bus_receive_hwm="50")
        release = threading.Event()

        class Slow(Collector):
            def on_envelope(self, envelope):
                if envelope.topic == "drilling" and envelope.seq == 1:
                    release.wait(30)  # stall on the first data message
                super().on_envelope(envelope)

        total = 20_000
        with Publisher("fast", settings=cfg) as pub, Slow(["drilling", "probe"], cfg) as c:
            wait_subscribed(pub, c)
            # 2 KB each, 40 MB in all: more than loopback TCP buffers can hide
            for i in range(total):
                pub.publish("drilling", {"n": i, "pad": "x" * 2000})
            release.set()
            # the broker may drop anything while the subscriber is stalled, so the end
            # marker is repeated until it gets through
            deadline = time.monotonic() + 20
            while not any(e.topic == "drilling.end" for e in c.envelopes):
                assert time.monotonic() < deadline, "the subscriber never caught up"
                pub.publish("drilling.end", {"last": total})
                c.wait_change(0.1)
            drilling = [e.seq for e in c.envelopes if e.topic == "drilling"]
        assert c.tracker.gaps >= 1, "the stalled subscriber must see a gap"
        # everything is accounted for: received + counted as lost == sent, up to the last received
        assert len(drilling) + c.tracker.lost == max(drilling)
        assert len(drilling) < total
        assert sum(g.count for g in c.gaps) == c.tracker.lost
    finally:
        assert b.program.stop() == 0


def test_broker_restart_mid_stream_both_sides_reconnect_and_report_the_gap(tmp_path):
    b = start_broker(tmp_path)
    cfg = b.settings()
    stop = threading.Event()
    errors: list[BaseException] = []
    sent = []

    def publish_forever(pub: Publisher) -> None:
        try:
            while not stop.is_set():
                sent.append(pub.publish("drilling", {"t": time.time()}))
                stop.wait(0.001)
        except BaseException as e:  # the test fails on any publisher error
            errors.append(e)

    pub = Publisher("steady", settings=cfg)
    with Collector(["drilling", "probe"], cfg) as c:
        wait_subscribed(pub, c)
        t = threading.Thread(target=publish_forever, args=(pub,), name="steady")
        t.start()
        try:
            c.wait_until(lambda: sum(e.topic == "drilling" for e in c.envelopes) > 100)
            assert b.program.stop(signal.SIGKILL) == -signal.SIGKILL
            seen_before = len(c.envelopes)
            # same ports: publishers and subscribers reconnect by themselves
            b2 = start_broker(tmp_path, b.frontend_port, b.backend_port)
            try:
                c.wait_until(lambda: c.tracker.gaps >= 1 and len(c.envelopes) > seen_before + 100,
                             timeout=30, what="traffic after the broker restart, with a gap")
            finally:
                stop.set()
                t.join(5)
                assert b2.program.stop() == 0
        finally:
            stop.set()
            pub.close()
    assert not errors
    gap = c.gaps[0]
    assert gap.src == pub.src and gap.topic == "drilling" and gap.count >= 1
    seqs = [e.seq for e in c.envelopes if e.topic == "drilling"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_malformed_and_oversized_messages_are_counted_and_nothing_crashes(broker):
    cfg = broker.settings(bus_max_message_bytes="4096")
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(broker.frontend)
    good = encode("rig-1.raw", "b1", 1, 1, data={"x": 1.0})
    bad = [
        [b"drilling"],  # one frame only
        [b"drilling", good, b"extra"],  # three frames
        [b"drilling", b"{not json"],
        [b"drilling", b'{"v":1,"src":"s","boot":"b","seq":1,"ts":1,"data":{"x":NaN}}'],
        [b"drilling", b'{"v":1,"src":"s","boot":"b","seq":"one","ts":1,"data":{}}'],
        [b"drilling", b'{"v":2,"src":"s","boot":"b","seq":1,"ts":1,"data":{}}'],
        [b"drilling", b"[1,2,3]"],
        [b"\xff\xfe", good],  # topic not UTF-8
        [b"drilling", b"x" * 10_000],  # over bus_max_message_bytes (4096 here)
    ]
    with Collector([""], cfg) as c, Publisher("probe", settings=cfg) as probe:
        wait_subscribed(probe, c)
        wait_raw_connected(raw, c)
        for parts in bad:
            raw.send_multipart(parts)
        c.wait_until(lambda: c.stats["rejected"] >= len(bad), what=f"{len(bad)} rejections")
        reasons = [r.reason for r in c.rejects]
        # the bus still carries good traffic afterwards
        seq = probe.publish("drilling", {"DMEA": 1.0})
        c.wait_until(lambda: any(e.topic == "drilling" and e.seq == seq for e in c.envelopes))
    raw.close()
    expected = ["expected 2 frames", "expected 2 frames", "bad JSON", "bad JSON", "'seq' must be",
                "unsupported envelope version", "not an object", "not UTF-8", "oversized"]
    assert len(reasons) == len(expected)
    for want, got in zip(expected, reasons):
        assert want in got, (want, got)
    assert broker.program.proc.poll() is None


def test_publisher_refuses_what_the_bus_cannot_carry(tmp_path):
    from tests.conftest import settings_for
    cfg = settings_for(tmp_path, {"broker_frontend_port": "1", "bus_max_message_bytes": "2048"})
    with Publisher("strict", settings=cfg) as pub:
        with pytest.raises(ValueError, match="not a finite number"):
            pub.publish("drilling", {"SPPA": math.nan})
        with pytest.raises(ValueError, match="not a finite number"):
            pub.publish_batch("drilling", [(1, {"SPPA": 1.0}), (2, {"nested": [math.inf]})])
        with pytest.raises(ValueError, match="exceeds bus_max_message_bytes"):
            pub.publish("custom_topic", {"blob": "x" * 5000})
        with pytest.raises(ValueError, match="topic"):
            pub.publish("has space", {})
        with pytest.raises(ValueError, match="dict"):
            pub.publish("drilling", [1, 2])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="whole epoch milliseconds"):
            pub.publish_batch("drilling", [(1_764_449_520_000.5, {"SPPA": 1.0})])
        with pytest.raises(ValueError, match="whole epoch milliseconds"):
            pub.publish("drilling", {"SPPA": 1.0}, ts=-1)
        with pytest.raises(ValueError, match="frame 1: data must be a dict, not list"):
            pub.publish_batch("drilling", [(1, {"SPPA": 1.0}), (2, [1.0])])  # type: ignore[list-item]
        for bad_ts in (True, -1, 2**53, "1"):
            with pytest.raises(ValueError, match="frame 1: ts must be whole epoch milliseconds"):
                pub.publish_batch("drilling", [(1, {}), (bad_ts, {})])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="frame 0: data must be a dict"):
            pub.publish_batch("drilling", [(1, "x"), 5])  # type: ignore[list-item]
        # what the quick check does not vouch for, the careful one still accepts
        import collections
        import enum
        Ms = enum.IntEnum("Ms", {"T": 1_764_449_520_000})
        assert pub.publish_batch("other", [(Ms.T, collections.OrderedDict(SPPA=1.0))]) == 1
        # nothing was sent, so the sequence did not advance
        assert pub.publish("drilling", {"SPPA": 1.0}) == 1


def test_broker_publishes_statistics_and_heartbeats(broker):
    cfg = broker.settings()
    with Publisher("stats-test", settings=cfg) as pub, Collector(["sys", "probe"], cfg) as c:
        wait_subscribed(pub, c)
        for i in range(50):
            pub.publish("custom_topic", {"i": i})

        def counted() -> int:
            return sum(e.frames[0].data["topics"].get("custom_topic", {}).get("messages", 0)
                       for e in c.envelopes if e.topic == "sys.stats")

        # all 50 are counted, in one stats window or spread over several
        c.wait_until(lambda: counted() >= 50, what="sys.stats counting custom_topic")
        c.wait_until(lambda: any(e.topic == "sys.heartbeat" for e in c.envelopes), what="a heartbeat")
        assert counted() == 50
    stats = [e.frames[0].data for e in c.envelopes if e.topic == "sys.stats"]
    assert any(pub.src in s["sources"] for s in stats)
    beat = next(e for e in c.envelopes if e.topic == "sys.heartbeat").frames[0].data
    assert beat["program"] == "broker" and beat["uptime_s"] >= 0


def test_broker_reports_a_busy_port_and_exits_non_zero(broker, tmp_path):
    second = start_program(["broker", *broker.port_args()], tmp_path)
    assert second.proc.wait(20) == 1
    assert "cannot bind the bus ports" in second.output and "ss -ltnp" in second.output


def test_logger_summarises_traffic_and_reports_gaps_and_alerts_in_full(broker, tmp_path):
    logger = start_program(["logger", *broker.port_args(), "--set", "logger_summary_s=0.5"], tmp_path)
    logger.wait_for("ready: listening")
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 1000)
    raw.connect(broker.frontend)
    # the logger's subscription must reach the broker before the test's messages count:
    # send probes until the logger's summary mentions them
    deadline = time.monotonic() + 20
    seq = 0
    while True:
        seq += 1
        raw.send_multipart([b"probe", encode("rig-1.t", "boot1", seq, 1, data={})])
        try:
            logger.wait_for("probe: ", timeout=0.2)
            break
        except AssertionError:
            assert time.monotonic() < deadline, logger.output
    for s in (1, 2, 5):  # 3 and 4 go missing
        raw.send_multipart([b"drilling", encode("rig-1.t", "boot1", s, 1, data={"DMEA": 1.0})])
    raw.send_multipart([b"alert", encode("rig-1.t", "boot1", 1, 1, data={"kind": "kick", "state": "active"})])
    raw.send_multipart([b"drilling", b"garbage"])
    logger.wait_for(r"GAP: 2 message\(s\) lost from rig-1.t on 'drilling' \(seq 3..4\)")
    logger.wait_for(r"alert from rig-1.t: .*\"kind\":\"kick\"")
    logger.wait_for(r"REJECTED 15-byte message on 'drilling': bad JSON")
    logger.wait_for(r"drilling: [\d.]+ msg/s")
    raw.close()
    assert logger.stop() == 0
    assert "stopped" in logger.output


def test_the_logger_counts_from_each_head_what_a_full_decode_counts(tmp_path, monkeypatch):
    """The logger reads only data messages' heads (it must keep up with any burst); its
    counts, gaps, restarts and rejections are those of decoding every message in full."""
    from appliance.ops import logger as module
    from appliance.ops.logger import BusLogger

    messages = [[b"probe", encode("rig-1.t", "boot1", 1, 1, data={})]]
    for seq in (1, 2, 5, 6, 4):  # a gap of two, then 4 late
        messages.append([b"drilling", encode("rig-1.t", "boot1", seq, 10 * seq, data={"DMEA": 1.0 * seq})])
    messages.append([b"drilling", encode("rig-1.t", "boot2", 1, 70, batch=[(i, {"HKLA": 1.5}) for i in range(100)])])
    messages.append([b"drilling", encode("rig-2.w", "b", 3, 80, batch=[(1, {"x": {"nested": 1}}), (2, {})])])
    messages.append([b"drilling", b"garbage"])
    messages.append([b"alert", encode("rig-1.t", "boot1", 1, 1, data={"kind": "kick"})])

    def counted(**patch):
        for name, value in patch.items():
            monkeypatch.setattr(module, name, value)
        seen: list[str] = []
        bus_logger = BusLogger(settings_for(tmp_path, {}))
        bus_logger.on_gap = lambda gap: seen.append(f"gap {gap.first_missing}..{gap.last_missing}")
        bus_logger.on_restart = lambda env: seen.append(f"restart {env.boot}")
        for parts in messages:
            bus_logger.handle(parts)
        t = bus_logger.tracker
        return (dict(bus_logger.stats), dict(bus_logger.messages), dict(bus_logger.frames),
                {k: sorted(v) for k, v in bus_logger.sources.items()}, dict(bus_logger.last_seq),
                (t.gaps, t.lost, t.restarts, t.late), seen)

    heads = []
    real_peek = module.peek
    by_heads = counted(peek=lambda *a: heads.append(real_peek(*a)) or heads[-1])
    assert sum(h is not None for h in heads) == 8  # all but the nested batch and the garbage
    in_full = counted(peek=lambda *a: None)
    assert by_heads == in_full
    assert in_full[2] == {"probe": 1, "drilling": 5 + 100 + 2, "alert": 1}
    assert in_full[5][:2] == (1, 2) and in_full[6] == ["gap 3..4", "restart boot2"]


def wait_raw_connected(raw: zmq.Socket, collector: Collector, timeout: float = 20) -> None:
    """Send valid probes from a raw socket until the collector sees one."""
    deadline = time.monotonic() + timeout
    seq = 0
    while not any(e.src == "rig-1.raw" for e in collector.envelopes):
        assert time.monotonic() < deadline, "the raw socket never got through"
        seq += 1
        raw.send_multipart([b"probe", encode("rig-1.raw", "raw", seq, 1, data={})])
        collector.wait_change(0.05)


def test_tally_survives_forged_sequence_numbers():
    """Found by the bus fuzzer: a forged seq near 2^63 once pushed the broker's totals past
    64 bits, the statistics message could not be written, and the statistics thread died."""
    import orjson

    from appliance.bus.envelope import encode
    from appliance.bus.tally import Tally

    tally = Tally()
    tally.add([b"drilling", encode("rig-1.s", "b", 1, 1, data={})])
    tally.add([b"drilling", encode("rig-1.s", "b", 2**63 - 1, 1, data={})])
    tally.add([b"drilling", b'{"v":1,"src":"rig-1.s","boot":"b","seq":9223372036854775808,"ts":1,"data":{}}'])
    for _ in range(3):
        body = tally.summary(1.0)
        assert orjson.loads(orjson.dumps(body))["total_messages"] == 2
    assert body["malformed"] == 1
