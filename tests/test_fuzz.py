"""Property-based fuzzing (hypothesis): the envelope decoder, the settings parser, the JSON API.

Whatever the input, each answers with a result or its own clear error (Rejected,
ConfigError, an HTTP 4xx with a JSON reason), never another exception or a 500.
"""

from __future__ import annotations

import string
from pathlib import Path
from unittest import mock
from urllib.parse import quote, urlencode

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from appliance.bus import envelope
from appliance.bus.envelope import MAX_SEQ, MAX_TS, Envelope, Rejected, decode, encode
from appliance.config import SETTINGS, ConfigError, load

MAX_BYTES = 64 * 1024
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the envelope decoder ------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**63, max_value=2**64 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)
# field values that are mostly right, sometimes subtly wrong
seqs = st.one_of(st.integers(min_value=-2, max_value=2**64 - 1), st.sampled_from([1, MAX_SEQ, MAX_SEQ + 1, 0]),
                 json_values)
stamps = st.one_of(st.integers(min_value=-2, max_value=2**63), st.sampled_from([0, MAX_TS - 1, MAX_TS]), json_values)
frame_data = st.one_of(st.dictionaries(st.sampled_from(["DMEA", "HKLA", "x", ""]), json_values, max_size=4),
                       json_values)
frames = st.fixed_dictionaries({}, optional={"ts": stamps, "data": frame_data, "extra": json_values})
envelopes = st.fixed_dictionaries({}, optional={
    "v": st.one_of(st.just(1), json_values), "src": st.one_of(st.just("rig-1.s"), json_values),
    "boot": st.one_of(st.just("b"), json_values), "seq": seqs, "ts": stamps, "data": frame_data,
    "batch": st.one_of(st.lists(st.one_of(frames, json_values), max_size=4), json_values)})


def decode_without_fast_path(topic: bytes, payload: bytes) -> Envelope:
    with mock.patch.object(envelope, "_decode_plain", lambda *a: None):
        return decode(topic, payload, MAX_BYTES)


def outcome(call, *args) -> object:
    try:
        return call(*args)
    except Rejected as e:
        return Rejected


def check_accepted(env: Envelope, topic: bytes, payload: bytes) -> None:
    assert env.topic == topic.decode() and env.size == len(topic) + len(payload)
    assert 1 <= env.seq <= MAX_SEQ and 0 <= env.ts < MAX_TS
    assert isinstance(env.src, str) and env.src and isinstance(env.boot, str) and env.boot
    assert env.frames and all(isinstance(f.data, dict) and 0 <= f.ts < MAX_TS for f in env.frames)
    orjson.dumps([f.data for f in env.frames])  # anything accepted can be written back out


@FUZZ
@given(st.binary(max_size=40), st.binary(max_size=400))
@example(b"drilling", b'{"v":1,"src":"s","boot":"b","seq":1,"ts":1,"data":{"x":NaN}}')
@example(b"", b"{}")
@example(b"\xff", b"{}")
def test_any_bytes_decode_or_are_rejected_with_a_reason(topic, payload):
    try:
        env = decode(topic, payload, MAX_BYTES)
    except Rejected as e:
        assert str(e)
        return
    check_accepted(env, topic, payload)


@FUZZ
@given(st.sampled_from([b"drilling", b"custom.x", b"t"]), envelopes)
def test_structured_envelopes_and_the_fast_path_agrees_with_the_full_checks(topic, body):
    try:
        payload = orjson.dumps(body)
    except TypeError:  # an integer orjson cannot write: not a message anyone can send
        assume(False)
    fast = outcome(decode, topic, payload, MAX_BYTES)
    full = outcome(decode_without_fast_path, topic, payload)
    assert fast == full
    if fast is not Rejected:
        check_accepted(fast, topic, payload)


@FUZZ
@given(st.text(alphabet=string.ascii_letters + "._-", min_size=1, max_size=30),
       st.integers(min_value=1, max_value=MAX_SEQ), st.integers(min_value=0, max_value=MAX_TS - 1),
       st.lists(st.tuples(st.integers(min_value=0, max_value=MAX_TS - 1),
                          st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False),
                                          max_size=5)), min_size=1, max_size=5))
def test_what_a_publisher_encodes_decodes_to_the_same(src, seq, ts, batch):
    env = decode(b"drilling", encode(src, "boot", seq, ts, batch=batch), MAX_BYTES)
    assert (env.src, env.seq, env.ts) == (src, seq, ts)
    assert [(f.ts, f.data) for f in env.frames] == batch


# -- the settings parser ---------------------------------------------------------------------

NAMES = [s.name for s in SETTINGS]
values = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "0", "-1", "1e400", "nan", "inf", "true",
                                                         "99999999999999999999", "kick@1h+1m", "kick@", "@+",
                                                         "flatline:@1h+1m", "127.0.0.1", "25:00"]))


def load_or_refuse(**kwargs) -> None:
    try:
        cfg = load(**kwargs)
    except ConfigError as e:
        assert str(e)
        return
    assert set(cfg.values) == set(NAMES)


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=12)), values, max_size=4))
def test_command_line_settings_load_or_stop_with_a_message(tmp_path_factory, overrides):
    ini = tmp_path_factory.getbasetemp() / "fuzz-empty.ini"
    ini.write_text("[appliance]\n")
    load_or_refuse(overrides=overrides, config_file=str(ini), env={}, dotenv="")


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 st.lists(st.tuples(st.one_of(st.sampled_from(NAMES), st.text(max_size=10)), values), max_size=5)
                 .map(lambda kv: ("[appliance]\n" + "".join(f"{k} = {v}\n" for k, v in kv)).encode("utf-8", "replace"))))
@example(b"\xff\xfe[appliance]\n")
@example(b"[appliance]\nrig_id = a\nrig_id = b\n")
def test_ini_and_env_files_load_or_stop_with_a_message(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("ini")
    ini, dotenv = folder / "a.ini", folder / ".env"
    ini.write_bytes(content)
    dotenv.write_bytes(content.replace(b"[appliance]", b""))
    empty = folder / "empty.ini"
    empty.write_text("[appliance]\n")
    load_or_refuse(config_file=str(ini), env={}, dotenv="")
    load_or_refuse(config_file=str(empty), env={}, dotenv=str(dotenv))


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from([s.env_name for s in SETTINGS]),
                                 st.text(alphabet=string.ascii_uppercase + "_", max_size=12).map("RIGTEL_".__add__)),
                       values, max_size=4))
def test_environment_settings_load_or_stop_with_a_message(tmp_path_factory, env):
    ini = tmp_path_factory.getbasetemp() / "fuzz-empty.ini"
    ini.write_text("[appliance]\n")
    load_or_refuse(config_file=str(ini), env=env, dotenv="")


# -- the JSON API ----------------------------------------------------------------------------
# Built with the app factory and logged in like tests/test_web_api.py's client.

PARAMS = ["channels", "from", "to", "max_points", "resolution", "state", "kind", "limit", "rate_hz",
          "last_event_id", "format"]
param_values = st.one_of(st.text(max_size=30), st.integers().map(str),
                         st.sampled_from(["HKLA,DMEA", "HKLA," * 300, "1764449520000", "-1", "1e400", "nan",
                                          "inf", "9" * 40, "1m", "raw", "all", "active", "%00", "\x00"]))
queries = st.dictionaries(st.sampled_from(PARAMS), param_values, max_size=5)
GET_PATHS = ["/api/channels", "/api/series", "/api/latest", "/api/export", "/api/alerts", "/api/system",
             "/api/kpis"]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from appliance.store.writer import Batch, Writer
    from appliance.web.app import create_app
    from tests.conftest import make_web_login, settings_for
    from tests.test_web_api import RecordingBus
    from tests.test_writer import T0, env

    tmp = tmp_path_factory.mktemp("api")
    db = tmp / "rigtel.db"
    w = Writer(db)
    w.commit(Batch([env("drilling", 1, [(T0 + i * 1000, {"DMEA": 5000.0 + i, "HKLA": 200.0}) for i in range(600)])]))
    w.commit(Batch([env("alert", 1, [(T0 + 5000, {"id": "kick-1", "kind": "kick", "state": "active_unack",
                                                  "priority": "high", "message": "pit gain"})], src="rig-1.p")]))
    w.close()
    login = make_web_login(tmp)
    cfg = settings_for(tmp, {"database_path": str(db), "supervisor_socket": str(tmp / "none.sock"),
                             **login.overrides()})
    app = create_app(cfg, hub=None, bus=RecordingBus())  # type: ignore[arg-type]
    app.testing = True
    return login.client(app)


@FUZZ
@given(path=st.sampled_from(GET_PATHS), query=queries)
def test_api_parameters_never_make_a_server_error(api, path, query):
    r = api.get(f"{path}?{urlencode(query)}")
    assert r.status_code in (200, 400, 404, 413, 422, 503), (path, query, r.status_code, r.data[:300])
    if path != "/api/export" or r.status_code != 200:
        body = orjson.loads(r.data)
        if r.status_code >= 400:
            assert body.get("error"), body


@FUZZ
@given(alert_id=st.text(min_size=1, max_size=80), raw_path=st.text(max_size=60))
def test_odd_alert_ids_and_paths_are_answered_cleanly(api, alert_id, raw_path):
    r = api.post(f"/api/alerts/{quote(alert_id, safe='')}/ack", headers={"Content-Type": "application/json"})
    # (an id ending in a slash is redirected by the router: an answer, not an error)
    assert r.status_code in (202, 308, 400, 404, 405, 409), (alert_id, r.status_code, r.data[:300])
    r = api.get(f"/api/{raw_path}")
    assert r.status_code < 500, (raw_path, r.status_code, r.data[:300])
