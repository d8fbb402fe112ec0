"""WITS0: the parser (with a hypothesis fuzz), the mapping file, and the real programs —
`rigtel wits0` against a recorder stand-in written here (TCP in both directions, serial
through a pty pair) into the real bus and saver, and `rigtel wits0-out` to a TCP client."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from appliance.channels import BY_WITS
from appliance.sources import wits0
from appliance.sources.wits0 import Frame, Wits0Parser, decode_frame, encode_frame, parse_site_map
from tests.conftest import Collector, start_program
from tests.test_saver import rows, start_saver, wait_rows
from tests.test_files import close

REPO = Path(__file__).resolve().parents[1]

# a metric recorder's site mapping, as a rig would write it
METRIC_MAP = """\
# test rig: metric recorder
0101  -                 # well id
0108  DBTM  m
0110  DMEA  m
0114  HKLA  kN
0121  SPPA  kPa
0130  MFIA  L/min
0133  MTOA  degC
"""


def frame(**items: str) -> bytes:
    return b"&&\r\n" + b"".join(f"{code[1:]}{value}\r\n".encode() for code, value in items.items()) + b"!!\r\n"


# --- the parser -------------------------------------------------------------------------


def test_parser_is_liberal_in_framing():
    p = Wits0Parser()
    frames, bad = p.feed(b"&&\n0108 1500.5\n  0110   1600  \r\n!!\n&&\r0121200\r!!\r")
    assert frames == [Frame([(b"0108", b"1500.5"), (b"0110", b"1600")], True), Frame([(b"0121", b"200")], True)]
    assert bad == []
    # a frame whose !! never came is closed by the next && and, at the end, by end()
    frames, _ = p.feed(b"&&\r\n01081\r\n&&\r\n01082\r\n")
    assert frames == [Frame([(b"0108", b"1")], False)]
    frames, _ = p.end()
    assert frames == [Frame([(b"0108", b"2")], False)]
    assert p.frames == 4 and p.frames_without_footer == 2


def test_parser_reports_every_bad_line_and_keeps_going():
    p = Wits0Parser()
    frames, bad = p.feed(b"0110123\r\n!!\r\nhello\r\n\x00\xff\xfe\r\n&&\r\n0108 5\r\n!!\r\n" + b"\x07" * 300)
    assert [f.items for f in frames] == [[(b"0108", b"5")]]
    assert [b.reason for b in bad] == ["data line outside a frame (no && before it)", "!! without a frame",
                                       "not a WITS0 line", "not a WITS0 line",
                                       "line too long: not WITS0 (noise or binary data?)"]
    # the rest of the noise up to its line end is the same bad line, not another
    frames, bad = p.feed(b"\x07" * 50 + b"0110 99\r\n&&\r\n0110 7\r\n!!\r\n")
    assert bad == [] and [f.items for f in frames] == [[(b"0110", b"7")]]
    assert p.bad_lines == 5


def test_parser_splits_anywhere():
    data = frame(_0108="1500.5", _0110="1600") * 3
    for size in (1, 2, 3, 7):
        p = Wits0Parser()
        got = []
        for i in range(0, len(data), size):
            got += p.feed(data[i:i + size])[0]
        assert [f.items for f in got] == [[(b"0108", b"1500.5"), (b"0110", b"1600")]] * 3


junk_line = st.binary(min_size=1, max_size=wits0.MAX_LINE).filter(
    lambda b: b"\r" not in b and b"\n" not in b and b.strip() not in (b"", b"&&", b"!!"))
good_frame = st.lists(st.tuples(st.sampled_from(["0108", "0110", "0121", "0199"]),
                                st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: f"{v:.3f}")),
                      min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(good_frame, junk_line), max_size=30), st.lists(st.integers(1, 40), min_size=1))
def test_fuzz_frames_and_junk_every_bad_line_counted(segments, cuts):
    data = b""
    want_frames, want_bad = [], 0
    for seg in segments:
        if isinstance(seg, bytes):
            data += seg + b"\r\n"
            want_bad += 1
        else:
            data += b"&&\r\n" + b"".join(f"{c}{v}\r\n".encode() for c, v in seg) + b"!!\r\n"
            want_frames.append([(c.encode(), v.encode()) for c, v in seg])
    p = Wits0Parser()
    frames, bad, i, k = [], [], 0, 0
    while i < len(data):
        n = cuts[k % len(cuts)]
        f, b = p.feed(data[i:i + n])
        frames += f
        bad += b
        i += n
        k += 1
    f, b = p.end()
    frames += f
    bad += b
    assert [fr.items for fr in frames] == want_frames
    assert len(bad) == want_bad == p.bad_lines


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_fuzz_any_bytes_never_crash_and_every_line_is_accounted_for(data, size):
    p = Wits0Parser()
    site = parse_site_map(METRIC_MAP)
    seen_items = seen_bad = 0
    for i in range(0, len(data), size):
        frames, bad = p.feed(data[i:i + size])
        seen_bad += len(bad)
        for fr in frames:
            seen_items += len(fr.items)
            decoded = decode_frame(fr, site)  # never raises either
            assert all(isinstance(v, float) for v in decoded.values.values())
            assert len(decoded.values) + len(decoded.bad) + len(decoded.unmapped) <= len(fr.items)
    frames, bad = p.end()
    seen_bad += len(bad)
    seen_items += sum(len(fr.items) for fr in frames)
    assert seen_bad == p.bad_lines
    assert p.lines == seen_items + p.markers + seen_bad  # every line accounted for
    nonblank = sum(1 for line in data.replace(b"\r", b"\n").split(b"\n") if line.strip())
    assert p.lines <= nonblank  # a run of noise longer than a line counts once


# --- the mapping file and values ----------------------------------------------------


def test_shipped_mapping_files_cover_the_catalogue():
    site = wits0.load_site_map(str(REPO / "etc/wits0-map.txt"))
    assert {e.code: e.channel for e in site.channels()} == {code: ch.mnemonic for code, ch in BY_WITS.items()}
    out = wits0.load_site_map(str(REPO / "etc/wits0-out-map.txt"))
    assert {e.channel for e in out.channels()} == {ch.mnemonic for ch in BY_WITS.values()}


@pytest.mark.parametrize("text, message", [
    ("108 DBTM ft", "not a WITS0 code"),
    ("0008 DBTM ft", "not a WITS0 code"),
    ("0108 DBTM psi", "is a pressure, not a length"),
    ("0108 DBTM ft\n0108 DMEA ft", ":2: code 0108 is mapped twice"),
    ("0108 DBTM ft 2 extra", "expected 'CODE CHANNEL"),
    ("0108 DBTM ft x", "DECIMALS"),
    ("0101 -", "maps no code to a channel"),
])
def test_bad_mapping_files_name_the_line(text, message):
    with pytest.raises(wits0.MappingError, match=re.escape(message)):
        parse_site_map(text, "site.txt")


def test_decode_converts_and_refuses_what_it_cannot_use():
    site = parse_site_map(METRIC_MAP)
    f = Frame([(b"0101", b"F-4"), (b"0108", b"1000"), (b"0121", b"20000"), (b"0133", b"60"), (b"0110", b"abc"),
               (b"0114", b"-5"), (b"0199", b"1"), (b"0130", b"nan")], True)
    d = decode_frame(f, site)
    assert close(d.values["DBTM"], 3280.839895) and close(d.values["SPPA"], 2900.754755, 1e-8)
    assert close(d.values["MTOA"], 140.0)
    assert set(d.values) == {"DBTM", "SPPA", "MTOA"}
    assert [b.reason for b in d.bad] == [
        "0110 (DMEA): value is not a number",
        "0114 (HKLA: -1.12404 klbf outside the plausible range 0..2500)",
        "0130 (MFIA: not finite (nan))"]
    assert d.unmapped == [(b"0199", b"1")]


def test_encode_then_decode_is_the_identity_within_the_decimals():
    site = parse_site_map("0110 DMEA m 3\n0121 SPPA kPa 1\n0140 GASA % 2\n")
    data = encode_frame({"DMEA": 5012.4, "SPPA": 2640.1, "HKLA": 150.0}, site)
    assert data.startswith(b"&&\r\n") and data.endswith(b"!!\r\n")
    frames, bad = Wits0Parser().feed(data)
    assert not bad
    back = decode_frame(frames[0], site).values
    assert set(back) == {"DMEA", "SPPA"}
    assert abs(back["DMEA"] - 5012.4) < 0.0005 / 0.3048 and abs(back["SPPA"] - 2640.1) < 0.05 * 0.146
    assert encode_frame({}, site) == b""


def test_unescape():
    assert wits0.unescape(r"&&\r\n0111-9999\r\n!!\r\n") == b"&&\r\n0111-9999\r\n!!\r\n"


# --- the recorder stand-in and the ingest program ----------------------------------


class Recorder:
    """A rig recorder's WITS0 TCP server: accepts the appliance, sends what the test says."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = b""
        self.connections = 0
        self.conn: socket.socket | None = None
        self.connected = threading.Event()

    def accept(self, timeout: float = 30) -> socket.socket:
        self.server.settimeout(timeout)
        conn, _ = self.server.accept()
        self.connections += 1
        self.conn = conn
        threading.Thread(target=self._read, args=(conn,), daemon=True).start()
        return conn

    def _read(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(4096):
                self.received += data
        except OSError:
            pass

    def close(self) -> None:
        if self.conn:
            self.conn.close()
        self.server.close()


def write_map(tmp: Path) -> Path:
    path = tmp / "site-map.txt"
    path.write_text(METRIC_MAP)
    return path


def drilling_values(c: Collector, src: str) -> list[dict]:
    return [f.data for e in list(c.envelopes) if e.topic == "drilling" and e.src == src for f in e.frames]


def heartbeat_stats(c: Collector, program: str) -> dict:
    beats = [f.data for e in list(c.envelopes) if e.topic == "sys.heartbeat" for f in e.frames
             if f.data.get("program") == program]
    return beats[-1]["stats"] if beats else {}


def test_wits0_client_against_a_recorder_into_the_saver(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    saver = start_saver(broker, tmp_path, db)
    recorder = Recorder()
    with Collector(["drilling", "sys.heartbeat"], broker.settings()) as c:
        program = start_program(["wits0", *broker.port_args(), "--set", f"data_dir={tmp_path}", "--set", "wits0_mode=client",
                                 "--set", f"wits0_port={recorder.port}", "--set", f"wits0_map={write_map(tmp_path)}",
                                 "--set", "wits0_keepalive_s=0.3", "--set", "wits0_reconnect_max_s=0.5",
                                 "--set", "bus_heartbeat_s=0.2"], tmp_path)
        program.wait_for("ready: wits0 client")
        conn = recorder.accept()
        program.wait_for("connected: 127.0.0.1")
        c.wait_until(lambda: heartbeat_stats(c, "wits0").get("connected"), what="the wits0 heartbeat")
        # the ingest's publisher is connected and subscribed once its heartbeat arrives; send
        conn.sendall(frame(_0108="1000.0", _0110="1500.25", _0114="800", _0121="20000", _0130="2000", _0133="60"))
        conn.sendall(b"\x00\x01\x02garbage\xff\r\nhello recorder\r\n")          # noise: 2 bad lines
        conn.sendall(frame(_0108="1001.0", _0110="1501", _0199="42", _0121="999999999"))  # unmapped + absurd
        conn.sendall(b"&&\r\n0108 1002.0\r\n0110 1502\r\n")                     # no footer: at disconnect
        c.wait_until(lambda: len(drilling_values(c, "rig-1.wits0")) >= 2, what="two frames")
        conn.close()  # the recorder drops the line; the footerless frame is taken
        program.wait_for("disconnected: 127.0.0.1")
        conn = recorder.accept()  # and the ingest comes back
        program.wait_for(re.compile(r"connected: 127\.0\.0\.1.*\n(?:.*\n)*.*connected: 127\.0\.0\.1|"
                                    r"connected: 127\.0\.0\.1"))
        c.wait_until(lambda: heartbeat_stats(c, "wits0").get("reconnects", 0) >= 1, what="a reconnect")
        conn.sendall(frame(_0108="1003.0", _0110="1503"))
        c.wait_until(lambda: len(drilling_values(c, "rig-1.wits0")) >= 4, what="frames after the reconnect")
        values = drilling_values(c, "rig-1.wits0")
        assert close(values[0]["DBTM"], 1000 / 0.3048) and close(values[0]["DMEA"], 1500.25 / 0.3048)
        assert close(values[0]["HKLA"], 800 / 4.4482216152605) and close(values[0]["SPPA"], 20000 / 6.894757293168361)
        assert close(values[0]["MFIA"], 2000 / 3.785411784) and close(values[0]["MTOA"], 140.0)
        assert set(values[1]) == {"DBTM", "DMEA"}  # the absurd SPPA and the unmapped 0199 are not data
        assert close(values[2]["DBTM"], 1002 / 0.3048) and close(values[3]["DBTM"], 1003 / 0.3048)
        c.wait_until(lambda: b"0111-9999" in recorder.received, what="a keep-alive")
        stats = heartbeat_stats(c, "wits0")
        assert stats["unmapped_codes"] == {"0199": 1}
        assert stats["bad_by_reason"] == {"not a WITS0 line": 2, "implausible value": 1}
        assert stats["frames_without_footer"] == 1
    # in the database: the values, and every bad line, absurd value and unmapped code as dead letters
    ids = dict(rows(db, "SELECT name, id FROM channels"))
    wait_rows(db, f"SELECT count(c{ids['DBTM']}) FROM samples", [(4,)])
    dead = wait_rows(db, "SELECT count(*) FROM dead_letters WHERE topic = 'reject' AND src = 'rig-1.wits0'", [(4,)])
    assert dead
    reasons = [r for (r,) in rows(db, "SELECT reason FROM dead_letters WHERE topic = 'reject' ORDER BY id")]
    assert sum(r == "WITS0 not a WITS0 line" for r in reasons) == 2
    assert any(r.startswith("WITS0 0121 (SPPA:") and "plausible" in r for r in reasons)
    assert any(r.startswith("WITS0 code 0199 is not in the mapping file") for r in reasons)
    payloads = [p for (p,) in rows(db, "SELECT payload FROM dead_letters WHERE topic = 'reject'")]
    assert b"\x00\x01\x02garbage\xff" in payloads  # the very bytes, kept
    assert program.stop() == 0
    assert saver.stop() == 0
    recorder.close()


def test_wits0_server_takes_the_recorder_and_a_replacement_connection(broker, tmp_path):
    with Collector(["drilling"], broker.settings()) as c:
        program = start_program(["wits0", *broker.port_args(), "--set", f"data_dir={tmp_path}", "--set", "wits0_mode=server", "--set", "wits0_port=0",
                                 "--set", f"wits0_map={write_map(tmp_path)}"], tmp_path)
        port = int(program.wait_for(r"ready: wits0 server listening on 127\.0\.0\.1:(\d+)").group(1))
        first = socket.create_connection(("127.0.0.1", port))
        program.wait_for("connected: 127.0.0.1")
        deadline = time.monotonic() + 30
        while not drilling_values(c, "rig-1.wits0"):  # the ingest's slow joiner: repeat until one arrives
            first.sendall(frame(_0110="100"))
            c.wait_change(0.2)
            assert time.monotonic() < deadline, program.output
        second = socket.create_connection(("127.0.0.1", port))  # the recorder reconnects; the old link is dead
        program.wait_for("replaced by a new connection")
        second.sendall(frame(_0110="200"))
        c.wait_until(lambda: any(close(v.get("DMEA", 0), 200 / 0.3048) for v in drilling_values(c, "rig-1.wits0")),
                     what="a frame from the second connection")
        first.close()
        second.close()
    assert program.stop() == 0


def test_wits0_server_refuses_to_listen_beyond_loopback_without_an_allow_list(tmp_path):
    program = start_program(["wits0", "--set", f"data_dir={tmp_path}", "--set", "wits0_mode=server", "--set", "wits0_host=0.0.0.0",
                             "--set", "wits0_port=0"], tmp_path)
    assert program.proc.wait(30) == 2
    assert "beyond loopback" in program.output and "wits0_allow" in program.output


def test_wits0_serial_through_a_pty(broker, tmp_path):
    master, slave = os.openpty()
    device = os.ttyname(slave)
    try:
        with Collector(["drilling"], broker.settings()) as c:
            program = start_program(["wits0", *broker.port_args(), "--set", f"data_dir={tmp_path}", "--set", "wits0_mode=serial",
                                     "--set", f"wits0_serial_device={device}", "--set", "wits0_serial_baud=9600",
                                     "--set", f"wits0_map={write_map(tmp_path)}", "--set", "wits0_keepalive_s=0.2"],
                                    tmp_path)
            program.wait_for("ready: wits0 serial")
            program.wait_for(f"connected: {device} 9600 8N1")
            deadline = time.monotonic() + 30
            while not drilling_values(c, "rig-1.wits0"):
                os.write(master, frame(_0108="10", _0121="100"))
                c.wait_change(0.2)
                assert time.monotonic() < deadline, program.output
            v = drilling_values(c, "rig-1.wits0")[0]
            assert close(v["DBTM"], 10 / 0.3048) and close(v["SPPA"], 100 / 6.894757293168361)
            # and the keep-alive goes out on the serial line
            got = b""
            deadline = time.monotonic() + 10
            while b"0111-9999" not in got and time.monotonic() < deadline:
                got += os.read(master, 1024)
            assert b"0111-9999" in got
        assert program.stop() == 0
    finally:
        os.close(master)
        os.close(slave)


# --- wits0-out -----------------------------------------------------------------------


def read_frames(sock: socket.socket, parser: Wits0Parser, wait_s: float) -> list[Frame]:
    """The frames that arrive within `wait_s` (maybe none)."""
    sock.settimeout(wait_s)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return []
    assert data, "wits0-out closed the connection"
    frames, bad = parser.feed(data)
    assert not bad
    return frames


def test_wits0_out_serves_live_and_derived_channels_in_its_units(broker, tmp_path):
    from appliance.bus import Publisher

    out_map = tmp_path / "out-map.txt"
    out_map.write_text("0110 DMEA m 3\n0121 SPPA kPa 0\n0901 MSE psi 1   # derived, not in the catalogue\n")
    program = start_program(["wits0-out", *broker.port_args(), "--set", "wits0_out_enabled=true",
                             "--set", "wits0_out_port=0", "--set", f"wits0_out_map={out_map}",
                             "--set", "wits0_out_interval_s=0.2"], tmp_path)
    port = int(program.wait_for(r"ready: wits0-out serving 3 channels on 127\.0\.0\.1:(\d+)").group(1))
    parser = Wits0Parser()
    with socket.create_connection(("127.0.0.1", port)) as client, \
            Publisher("rig", settings=broker.settings()) as pub:
        program.wait_for("client connected")
        deadline = time.monotonic() + 30
        frames: list[Frame] = []
        # publish until a frame with all three arrives: the first publishes may meet no
        # subscription yet (ZeroMQ's slow joiner)
        while not frames or len(frames[-1].items) < 3:
            assert time.monotonic() < deadline, program.output
            pub.publish("drilling", {"DMEA": 5000.0, "SPPA": 2900.754755, "HKLA": 200.0})
            pub.publish("derived", {"MSE": 12345.6})
            frames += read_frames(client, parser, 0.3)
        items = dict(frames[-1].items)
        assert items == {b"0110": b"1524.000", b"0121": b"20000", b"0901": b"12345.6"}
        client.sendall(b"&&\r\n0111-9999\r\n!!\r\n")  # a consumer's keep-alive is read and ignored
        more: list[Frame] = []
        while not more:
            assert time.monotonic() < deadline, program.output
            pub.publish("drilling", {"DMEA": 5000.0})
            more += read_frames(client, parser, 0.3)
    assert program.stop() == 0


def test_wits0_out_is_idle_when_off_and_refuses_exposure_without_an_allow_list(tmp_path):
    program = start_program(["wits0-out"], tmp_path)
    program.wait_for("wits0-out is off")
    assert program.stop() == 0
    program = start_program(["wits0-out", "--set", "wits0_out_enabled=true", "--set", "wits0_out_host=0.0.0.0",
                             "--set", "wits0_out_port=0"], tmp_path)
    assert program.proc.wait(30) == 2
    assert "beyond loopback" in program.output


def test_source_program_runs_wits0_when_configured_and_keeps_trying_an_absent_recorder(tmp_path):
    gone = socket.create_server(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()  # nothing listens there now
    program = start_program(["source", "--set", f"data_dir={tmp_path}", "--set", "data_source=wits0", "--set", f"wits0_port={port}",
                             "--set", "wits0_reconnect_max_s=0.5"], tmp_path)
    program.wait_for(f"ready: wits0 client reading the recorder at 127.0.0.1:{port}")
    program.wait_for(r"cannot reach the recorder at .*: Connection refused; trying again in 0\.5 s")
    deadline = time.monotonic() + 30
    while program.output.count("cannot reach the recorder") < 3:  # and keeps trying, never exits
        assert time.monotonic() < deadline and program.proc.poll() is None, program.output
        try:
            program._new.get(timeout=1)
        except Exception:
            pass
    assert program.stop() == 0
    assert "stopped (SIGTERM)" in program.output


class RecordingPublisher:
    """Stands in for the bus: keeps what the ingest publishes."""

    src = "rig-1.wits0"

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def publish(self, topic, data, ts=None):
        self.sent.append((topic, data))

    def publish_batch(self, topic, frames):
        self.sent.append((topic, list(frames)))


def test_a_flood_of_garbage_is_all_counted_and_kept_at_the_rate_limit(tmp_path):
    from appliance.ops.runtime import StopSignal
    from appliance.sources.wits0_ingest import REJECTS_PER_S, Ingest
    from tests.conftest import settings_for

    cfg = settings_for(tmp_path, {"wits0_mode": "client"})
    pub = RecordingPublisher()
    ingest = Ingest(cfg, parse_site_map(METRIC_MAP), pub, StopSignal())
    frames, bad = ingest.parser.feed(b"garbage line\r\n" * 500 + frame(_0110="100"))
    ingest.handle(frames, bad)
    ingest.flush_rejects()
    kept = [f for topic, batch in pub.sent if topic == "reject" for f in batch]
    assert len(kept) == REJECTS_PER_S
    stats = ingest.stats()
    assert stats["bad_lines"] == 500 and stats["rejects_kept"] == REJECTS_PER_S
    assert stats["rejects_not_kept"] == 500 - REJECTS_PER_S
    assert [data for topic, data in pub.sent if topic == "drilling"] == [{"DMEA": 100 / 0.3048}]
