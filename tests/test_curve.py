"""Remote publishers over CurveZMQ: a known key delivers, an unknown one is refused and
logged, a plain (unencrypted) publisher gets nothing through; the loopback port stays as
it was. Real broker process, real sockets on ephemeral ports."""

from __future__ import annotations

import re
import time

import pytest

from appliance.bus import Publisher
from appliance.security import curve
from appliance.security.files import mode_of
from tests.conftest import Collector, clean_env, settings_for, start_program, wait_subscribed

READY = re.compile(r"ready: frontend (tcp://\S+) \(publishers\), backend (tcp://\S+) \(subscribers\), "
                   r"remote publishers (tcp://\S+) \(CurveZMQ\)")


@pytest.fixture
def curve_broker(tmp_path):
    keys = tmp_path / "curve"
    env = clean_env(tmp_path)
    for args in (["keys", "broker"], ["keys", "new", "gateway", "--out", str(tmp_path / "gw"), "--allow"],
                 ["keys", "new", "rogue", "--out", str(tmp_path / "rogue")]):
        p = start_program([*args, "--set", f"bus_keys_dir={keys}"], tmp_path, env)
        assert p.proc.wait(30) == 0, p.output
    broker = start_program(["broker", "--set", "broker_frontend_port=0", "--set", "broker_backend_port=0",
                            "--set", "bus_remote_host=127.0.0.1", "--set", "bus_remote_port=0",
                            "--set", f"bus_keys_dir={keys}"], tmp_path, env)
    m = broker.wait_for(READY)
    yield broker, m, keys
    assert broker.stop() == 0, broker.output


def port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_key_files_are_private(curve_broker, tmp_path):
    _, _, keys = curve_broker
    assert mode_of(keys / "broker.key_secret") == 0o600
    assert mode_of(tmp_path / "gw/gateway.key_secret") == 0o600
    assert mode_of(keys / "clients/gateway.key") == 0o644  # public: no secret in it
    assert "secret-key" not in (keys / "clients/gateway.key").read_text()


def test_known_key_delivers_unknown_key_and_plain_are_refused(curve_broker, tmp_path):
    broker, m, keys = curve_broker
    local = settings_for(tmp_path, {"broker_frontend_port": str(port(m.group(1))),
                                    "broker_backend_port": str(port(m.group(2)))})
    remote = f"tcp://127.0.0.1:{port(m.group(3))}"

    def remote_settings(secret):
        return settings_for(tmp_path, {"bus_curve_secret_key": str(secret),
                                       "bus_curve_server_key": str(keys / "broker.key")})

    good = Publisher("gateway", endpoint=remote, settings=remote_settings(tmp_path / "gw/gateway.key_secret"))
    rogue = Publisher("rogue", endpoint=remote, settings=remote_settings(tmp_path / "rogue/rogue.key_secret"))
    plain = Publisher("plain", endpoint=remote, settings=local)
    loopback = Publisher("local", settings=local)
    try:
        with Collector(["remote", "probe", "audit"], local) as c:
            wait_subscribed(good, c)  # the allowed publisher's probes arrive: it is through
            wait_subscribed(loopback, c)  # and the loopback port is plain, as before
            broker.wait_for(r"refused a remote publisher from 127\.0\.0\.1: its CurveZMQ public key "
                            + re.escape(curve.client_keys(tmp_path / "rogue/rogue.key_secret",
                                                          keys / "broker.key")[0].decode()))
            for i in range(20):
                for p in (good, rogue, plain):
                    p.publish("remote", {"i": i, "who": p.src})
                c.wait_change(0.05)
            c.wait_until(lambda: sum(e.topic == "remote" for e in c.envelopes) >= 20, what="the gateway's messages")
            c.wait_until(lambda: any(e.topic == "audit" for e in c.envelopes), what="an audit event for the refusal")
            time.sleep(0.5)  # anything the refused publishers might have got through would be here by now
            senders = {e.src for e in c.envelopes if e.topic == "remote"}
            assert senders == {good.src}
            refusal = next(e for e in c.envelopes if e.topic == "audit").frames[0].data
            assert refusal["event"] == "bus_key_refused" and refusal["client"] == "127.0.0.1"
    finally:
        for p in (good, rogue, plain, loopback):
            p.close()


def test_remote_publishers_without_broker_keys_stop_the_broker_with_instructions(tmp_path):
    broker = start_program(["broker", "--set", "broker_frontend_port=0", "--set", "broker_backend_port=0",
                            "--set", "bus_remote_host=127.0.0.1", "--set", "bus_remote_port=0",
                            "--set", f"bus_keys_dir={tmp_path / 'none'}"], tmp_path)
    assert broker.proc.wait(30) == 1
    broker.wait_for("rigtel keys broker")  # the output thread may not have read it yet



def test_wait_connected_for_a_remote_publisher(curve_broker, tmp_path):
    """A remote publisher has no route to the backend by itself: wait_connected() says so
    rather than guess from the handshake. Given `backend=` it makes the full round trip, and
    what follows arrives from the first message on."""
    broker, m, keys = curve_broker
    local = settings_for(tmp_path, {"broker_frontend_port": str(port(m.group(1))),
                                    "broker_backend_port": str(port(m.group(2)))})
    remote = f"tcp://127.0.0.1:{port(m.group(3))}"
    cfg = settings_for(tmp_path, {"bus_curve_secret_key": str(tmp_path / "gw/gateway.key_secret"),
                                  "bus_curve_server_key": str(keys / "broker.key")})
    with Publisher("gateway", endpoint=remote, settings=cfg) as good:
        assert good.backend == ""  # the settings' backend would be another broker's
        with pytest.raises(ValueError, match="remote .*backend="):
            good.wait_connected(5)
    with Collector(["remote", "probe"], local) as c:
        with Publisher("local", settings=local) as helper:
            wait_subscribed(helper, c)
        with Publisher("gateway", endpoint=remote, backend=m.group(2), settings=cfg) as good:
            assert good.wait_connected(20) is True
            for i in range(3):
                good.publish("remote", {"i": i})
        c.wait_until(lambda: sum(e.topic == "remote" for e in c.envelopes) >= 3, what="the gateway's messages")
        assert [e.seq for e in c.envelopes if e.topic == "remote"] == [1, 2, 3]
    cfg_rogue = settings_for(tmp_path, {"bus_curve_secret_key": str(tmp_path / "rogue/rogue.key_secret"),
                                        "bus_curve_server_key": str(keys / "broker.key")})
    with Publisher("rogue", endpoint=remote, backend=m.group(2), settings=cfg_rogue) as rogue:
        t0 = time.monotonic()
        assert rogue.wait_connected(1.5) is False  # refused: its probes never come back
        assert time.monotonic() - t0 >= 1.5
