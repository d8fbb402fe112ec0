"""The source's spool: segment files, limits, torn records, and the fetch server."""

from __future__ import annotations

import os

import orjson
import pytest
import zmq

from appliance.bus import Publisher
from appliance.bus.envelope import decode, encode
from appliance.bus.spool import Spool, scan
from tests.conftest import Collector, settings_for, wait_subscribed

T0 = 1_764_449_520_000


def fill(spool: Spool, topic: str, first: int, last: int, size: int = 100) -> None:
    for seq in range(first, last + 1):
        payload = encode("rig-1.src", spool.boot, seq, T0 + seq, data={"x": seq, "pad": "p" * size})
        spool.append(topic, topic.encode(), seq, payload)


def seqs(payloads: list[bytes]) -> list[int]:
    return [orjson.loads(p)["seq"] for p in payloads]


def open_spool(folder, boot="b1", max_mb=64.0, age_s=3600.0, fsync_s=1.0) -> Spool:
    return Spool(folder, boot, max_bytes=int(max_mb * 1024 * 1024), max_age_s=age_s, fsync_s=fsync_s)


def test_read_back_in_order_across_segments_and_topics(tmp_path):
    spool = open_spool(tmp_path, max_mb=2)  # 128 kB segments
    fill(spool, "drilling", 1, 3000)
    fill(spool, "custom", 1, 10)
    assert len(spool.segments) > 3
    first, last, got = spool.read("b1", "drilling", 100, 2500, max_messages=10_000)
    assert (first, last) == (1, 3000) and seqs(got) == list(range(100, 2501))
    first, last, got = spool.read("b1", "drilling", 2990, 5000, max_messages=10_000)
    assert seqs(got) == list(range(2990, 3001))
    assert seqs(spool.read("b1", "drilling", 1, 3000, max_messages=7)[2]) == list(range(1, 8))
    assert seqs(spool.read("b1", "custom", 1, 100)[2]) == list(range(1, 11))
    assert spool.read("b1", "nothing", 1, 10) == (None, None, [])
    assert spool.read("other-boot", "drilling", 1, 10) == (None, None, [])
    assert spool.holdings() == {("b1", "drilling"): (1, 3000), ("b1", "custom"): (1, 10)}
    spool.close()


def test_the_size_limit_drops_the_oldest_segments(tmp_path):
    spool = open_spool(tmp_path, max_mb=1)  # 64 kB segments, 1 MB in all
    fill(spool, "drilling", 1, 20_000)
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert on_disk <= 1024 * 1024 + 64 * 1024 and spool.dropped_segments > 0
    first, last, got = spool.read("b1", "drilling", 1, 20_000, max_messages=100)
    assert first > 1 and last == 20_000 and seqs(got)[0] == first
    spool.close()


def test_the_age_limit_drops_old_segments(tmp_path):
    spool = open_spool(tmp_path, max_mb=1, age_s=3600)
    fill(spool, "drilling", 1, 2000)
    for seg in spool.segments[:-1]:
        seg.newest_ms -= 2 * 3600 * 1000
    spool.expire()
    assert len(spool.segments) == 1 and spool.read("b1", "drilling", 1, 10)[0] > 1
    spool.close()


def test_a_new_run_reads_earlier_runs_and_stops_at_a_torn_record(tmp_path):
    old = open_spool(tmp_path, boot="old")
    fill(old, "drilling", 1, 500)
    path = old.current.path
    old.close()
    with open(path, "ab") as f:  # a record cut short by a power loss
        f.write(b"\x50\x00\x00\x00garbage")
    topics, good = scan(path)
    assert good == path.stat().st_size - 11 and len(topics["drilling"][1]) == 500
    new = open_spool(tmp_path, boot="new")
    new.scan_old()
    fill(new, "drilling", 1, 5)
    assert new.holdings() == {("old", "drilling"): (1, 500), ("new", "drilling"): (1, 5)}
    assert seqs(new.read("old", "drilling", 498, 1000)[2]) == [498, 499, 500]
    new.close()


def test_a_corrupt_record_in_the_middle_ends_what_is_served_there(tmp_path):
    spool = open_spool(tmp_path)
    fill(spool, "drilling", 1, 100)
    path = spool.current.path
    spool.close()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit: its CRC no longer matches
    path.write_bytes(bytes(data))
    topics, _ = scan(path)
    held = len(topics["drilling"][1])
    assert 40 < held < 60


def test_one_process_per_source_folder(tmp_path):
    first = open_spool(tmp_path)
    with pytest.raises(RuntimeError, match="in use by another process"):
        open_spool(tmp_path)
    first.close()
    open_spool(tmp_path).close()  # free again


def test_a_full_disk_is_counted_not_raised(tmp_path):
    spool = open_spool(tmp_path)
    fill(spool, "drilling", 1, 5)
    os.close(spool._fd)
    spool._fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    fill(spool, "drilling", 6, 10)
    assert spool.write_errors == 5 and spool.appended == 5
    spool.close()


def test_a_spooling_publisher_announces_and_serves_what_it_sent(broker, tmp_path):
    cfg = broker.settings(data_dir=str(tmp_path), bus_heartbeat_s="0.2")
    with Collector(["probe", "sys.spool"], cfg) as c, Publisher("src", settings=cfg, spool=True) as pub:
        wait_subscribed(pub, c)
        for i in range(1, 301):
            pub.publish("drilling", {"DMEA": float(i)}, ts=T0 + i)
        c.wait_until(lambda: any(e.topic == "sys.spool" and ["drilling"] == [
            s[1] for s in e.frames[0].data["streams"] if s[1] == "drilling" and s[3] == 300] for e in c.envelopes),
            what="an announcement holding drilling 1..300")
        note = [e for e in c.envelopes if e.topic == "sys.spool"][-1]
        assert note.src == pub.src and note.frames[0].data["endpoint"] == pub.spool_endpoint
        assert pub.spool_endpoint.startswith("tcp://127.0.0.1:")
        assert (tmp_path / "spool" / "rig-1.src").is_dir()

        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(pub.spool_endpoint)
        try:
            dealer.send_multipart([b"FETCH", orjson.dumps({"boot": pub.boot, "topic": "drilling",
                                                           "first": 250, "last": 400, "max": 20})])
            assert dealer.poll(10_000)
            parts = dealer.recv_multipart()
            assert parts[0] == b"OK" and orjson.loads(parts[1]) == {"first_held": 1, "last_held": 300}
            envelopes = [decode(b"drilling", p, cfg.bus_max_message_bytes) for p in parts[2:]]
            assert [e.seq for e in envelopes] == list(range(250, 270))
            assert envelopes[0].frames[0].data == {"DMEA": 250.0} and envelopes[0].boot == pub.boot
            dealer.send_multipart([b"FETCH", b"{not json"])  # a bad request gets an error, not a crash
            assert dealer.poll(10_000) and dealer.recv_multipart()[0] == b"ERROR"
            # probes went out too; heartbeat-like sys.* topics are never spooled
            pub.publish("sys.test", {"n": 1})
            assert ("sys.test" not in {t for (_, t) in pub.spool.holdings()})
        finally:
            dealer.close()


def test_a_second_publisher_with_the_same_id_publishes_without_a_spool(tmp_path, caplog):
    cfg = settings_for(tmp_path, {"data_dir": str(tmp_path), "broker_frontend_port": "1"})
    with Publisher("twin", settings=cfg, spool=True) as first, Publisher("twin", settings=cfg, spool=True) as second:
        assert first.spool is not None and second.spool is None
        assert second.publish("drilling", {"DMEA": 1.0}) == 1  # it still publishes
    assert "publishes WITHOUT a spool" in caplog.text and "in use by another process" in caplog.text
