"""Publishing your own data: Publisher.wait_connected() against a real broker, and the
README's publishing example run word for word against a real broker and saver."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.bus import Publisher
from appliance.bus.publisher import PROBE_TOPIC
from tests.conftest import REPO, Collector, clean_env, settings_for, start_broker, wait_subscribed
from tests.test_saver import rows, start_saver, wait_saver_subscribed
from tests.test_supervised import free_ports


def readme_example() -> str:
    """The first Python block of the README's "Publishing your own data" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Publishing your own data\n"):]
    section = section[:section.index("\n## ", 1)]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no python block in the README's publishing section"
    return m.group(1)


def test_readme_publishing_example_runs_as_written_and_its_data_is_stored(broker, tmp_path):
    db = tmp_path / "rigtel.db"
    saver = start_saver(broker, tmp_path, db)
    try:
        with Publisher("helper", settings=broker.settings()) as helper:
            wait_saver_subscribed(helper, db)  # the saver's subscription is at the broker
        script = tmp_path / "example.py"
        script.write_text(readme_example())
        env = clean_env(tmp_path)  # RIGTEL_CONFIG: an empty ini; the ports from the environment
        env["RIGTEL_BROKER_FRONTEND_PORT"] = str(broker.frontend_port)
        env["RIGTEL_BROKER_BACKEND_PORT"] = str(broker.backend_port)
        started = time.time_ns() // 1_000_000
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

        def stored():
            try:
                return rows(db, "SELECT name, topic FROM channels WHERE name IN "
                                "('custom_topic.shaker_load', 'custom_topic.shaker_screens', 'GASA') ORDER BY name")
            except Exception:
                return []

        deadline = time.monotonic() + 30
        while len(stored()) < 3:
            assert time.monotonic() < deadline, f"the example's channels were not stored: {stored()}"
            time.sleep(0.05)
        assert stored() == [("GASA", "drilling"), ("custom_topic.shaker_load", "custom_topic"),
                            ("custom_topic.shaker_screens", "custom_topic")]
        # the numbers, at the example's own times, from the example's source
        (load_col, screens_col, gas_col) = [f"c{cid}" for (cid,) in (
            rows(db, "SELECT id FROM channels WHERE name = ?", n)[0] for n in
            ("custom_topic.shaker_load", "custom_topic.shaker_screens", "GASA"))]
        custom = rows(db, f"SELECT ts, {load_col}, {screens_col} FROM samples WHERE {load_col} IS NOT NULL")
        assert len(custom) == 1 and custom[0][1:] == (0.7, 4.0) and custom[0][0] >= started
        gas = rows(db, f"SELECT ts, {gas_col} FROM samples WHERE {gas_col} IS NOT NULL ORDER BY ts")
        assert [v for _, v in gas] == [1.2, 1.3] and gas[1][0] - gas[0][0] == 100 and gas[0][0] >= started
        assert rows(db, "SELECT topic, last_seq FROM streams WHERE src = 'rig-1.mud-logger' ORDER BY topic") == [
            ("custom_topic", 1), ("drilling", 1)]
        assert rows(db, "SELECT count(*) FROM events")[0][0] == 0
        assert rows(db, "SELECT count(*) FROM streams WHERE topic LIKE 'sys.%'")[0][0] == 0  # probes not kept
    finally:
        assert saver.stop() == 0, saver.output


def test_messages_published_right_after_wait_connected_all_arrive(broker, tmp_path):
    cfg = broker.settings()
    with Collector(["script", "probe"], cfg) as c:
        with Publisher("helper", settings=cfg) as helper:
            wait_subscribed(helper, c)  # the collector's subscription is at the broker
        publishers = [Publisher(f"script-{i}", settings=cfg) for i in range(10)]
        try:
            for p in publishers:  # a fresh connection each, published on the instant it is confirmed
                assert p.wait_connected(20) is True
                for n in range(3):
                    p.publish("script", {"n": n})
        finally:
            for p in publishers:
                p.close()
        c.wait_until(lambda: sum(e.topic == "script" for e in c.envelopes) >= 30, what="30 messages")
        for p in publishers:
            seqs = [e.seq for e in c.envelopes if e.topic == "script" and e.src == p.src]
            assert seqs == [1, 2, 3], (p.src, seqs)
        assert not c.gaps


def test_wait_connected_is_false_after_its_timeout_without_a_broker(tmp_path):
    front, back = free_ports(2)
    cfg = settings_for(tmp_path, {"broker_frontend_port": str(front), "broker_backend_port": str(back)})
    with Publisher("lonely", settings=cfg) as pub:
        t0 = time.monotonic()
        assert pub.wait_connected(1.0) is False
        took = time.monotonic() - t0
        assert 1.0 <= took < 3.0, took
        assert pub.wait_connected(0) is False
    # close() after a False did not wait: nothing had been confirmed


def test_wait_connected_waits_for_a_broker_that_starts_later(tmp_path):
    front, back = free_ports(2)
    cfg = settings_for(tmp_path, {"broker_frontend_port": str(front), "broker_backend_port": str(back)})
    with Publisher("early", settings=cfg) as pub:
        result: list[bool] = []
        waiter = threading.Thread(target=lambda: result.append(pub.wait_connected(30)))
        waiter.start()
        try:
            b = start_broker(tmp_path, front, back)
        except AssertionError as e:  # somebody else took the port meanwhile: not this test's point
            waiter.join()
            pytest.skip(f"the free port was taken: {e}")
        try:
            waiter.join(40)
            assert result == [True]
        finally:
            assert b.program.stop() == 0


def test_a_script_that_publishes_and_exits_at_once_delivers_everything(broker, tmp_path):
    """The README's pattern under load: wait_connected(), a burst, leave the `with` block and
    exit. Nothing is lost at the start (the slow joiner) or at the end (the queue as the
    process exits)."""
    cfg = broker.settings()
    code = (f"from appliance.bus import Publisher\n"
            f"from tests.conftest import settings_for\n"
            f"from pathlib import Path\n"
            f"cfg = settings_for(Path({str(tmp_path)!r}), {{'broker_frontend_port': '{broker.frontend_port}', "
            f"'broker_backend_port': '{broker.backend_port}'}})\n"
            f"with Publisher('burst', settings=cfg) as pub:\n"
            f"    assert pub.wait_connected(20)\n"
            f"    for n in range(2000):\n"
            f"        pub.publish('burst', {{'n': n, 'pad': 'x' * 200}})\n")
    with Collector(["burst", "probe"], cfg) as c:
        with Publisher("helper", settings=cfg) as helper:
            wait_subscribed(helper, c)
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(tmp_path),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        c.wait_until(lambda: sum(e.topic == "burst" for e in c.envelopes) >= 2000, what="all 2000 messages")
        assert [e.seq for e in c.envelopes if e.topic == "burst"] == list(range(1, 2001))


def test_probes_are_sys_topics_on_the_publishers_own_sequence(broker, tmp_path):
    cfg = broker.settings()
    with Collector([PROBE_TOPIC], cfg) as c, Publisher("prober", settings=cfg) as pub:
        assert pub.wait_connected(20)
        c.wait_until(lambda: any(e.src == pub.src for e in c.envelopes), timeout=20, what="a probe")
        assert PROBE_TOPIC.startswith("sys.")
        assert pub.sent == pub._seq[PROBE_TOPIC]  # they went through _send and its numbering


def test_a_custom_endpoint_needs_its_backend(broker, tmp_path):
    cfg = settings_for(tmp_path, {})  # the default ports: not this broker's
    with Publisher("custom", endpoint=broker.frontend, settings=cfg) as pub:
        with pytest.raises(ValueError, match="backend="):
            pub.wait_connected(1)
        assert pub.wait_connected(20, backend=broker.backend) is True
    with Publisher("custom", endpoint=broker.frontend, backend=broker.backend, settings=cfg) as pub:
        assert pub.wait_connected(20) is True
        with pytest.raises(ValueError, match="timeout"):
            pub.wait_connected(float("nan"))

