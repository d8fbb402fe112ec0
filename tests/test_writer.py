"""The writer against a real SQLite file: rows, roll-ups, dead letters, stream positions."""

from __future__ import annotations

import sqlite3

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.bus.envelope import Envelope, Frame
from appliance.bus.sequence import Gap
from appliance.bus.subscriber import Reject
from appliance.store import rollups
from appliance.store.writer import Batch, Writer

T0 = 1_764_449_520_000  # 2025-11-29 20:52 UTC, on a minute boundary


def env(topic: str, seq: int, frames: list[tuple[int, dict]], src: str = "rig-1.sim", boot: str = "b1") -> Envelope:
    return Envelope(topic, src, boot, seq, frames[-1][0], tuple(Frame(t, d) for t, d in frames), 100)


def sample_columns(db: sqlite3.Connection) -> dict[str, str]:
    return {name: f"c{cid}" for cid, name in db.execute("SELECT id, name FROM channels")}


def test_frames_become_rows_and_new_channels_just_work(tmp_path):
    w = Writer(tmp_path / "t.db")
    batch = Batch([env("drilling", 1, [(T0 + i * 1000, {"DMEA": 5000.0 + i, "HKLA": 200.0}) for i in range(10)])])
    assert w.commit(batch).frames == 10
    # a channel appearing mid-stream, and an integrator's custom numeric topic
    w.commit(Batch([env("drilling", 2, [(T0 + 10_000, {"DMEA": 5010.0, "GASA": 1.5})]),
                    env("mud_lab", 1, [(T0 + 10_000, {"viscosity": 45})])]))
    cols = sample_columns(w.db)
    assert set(cols) == {"DMEA", "HKLA", "GASA", "mud_lab.viscosity"}
    rows = w.db.execute(f"SELECT ts, {cols['DMEA']}, {cols['HKLA']}, {cols['GASA']}, {cols['mud_lab.viscosity']} "
                        "FROM samples ORDER BY ts").fetchall()
    assert len(rows) == 11
    assert rows[0] == (T0, 5000.0, 200.0, None, None)
    assert rows[-1] == (T0 + 10_000, 5010.0, None, 1.5, 45.0)  # merged by timestamp
    assert w.db.execute("SELECT unit FROM channels WHERE name = 'HKLA'").fetchone() == ("klbf",)
    assert w.stream_positions()[0][:4] == ("rig-1.sim", "b1", "drilling", 2)
    w.close()


def test_bad_values_are_dead_lettered_and_good_ones_kept(tmp_path):
    w = Writer(tmp_path / "t.db")
    frame = {"DMEA": 5000.0, "SPPA": -50.0, "RPMA": "fast", "HKLA": True, "bad name;--": 1.0}
    stats = w.commit(Batch(
        [env("drilling", 1, [(T0, frame)])],
        rejects=[Reject(T0, b"drilling", b"{not json", 9, "bad JSON: unexpected character")],
        gaps=[Gap("rig-1.sim", "b1", "drilling", 5, 7)]))
    assert stats.values == 1 and stats.dead_letters == 5 and stats.gaps == 1
    reasons = [r for (r,) in w.db.execute("SELECT reason FROM dead_letters ORDER BY id")]
    assert reasons[0].startswith("bad JSON")
    assert any("SPPA: -50 psi outside the plausible range" in r for r in reasons)
    assert any("RPMA: not a number (str)" in r for r in reasons)
    assert any("HKLA: not a number (bool)" in r for r in reasons)
    assert "bad channel name" in reasons
    assert w.db.execute("SELECT first_seq, last_seq FROM gaps").fetchall() == [(5, 7)]
    payload = w.db.execute("SELECT payload FROM dead_letters WHERE reason LIKE 'SPPA%'").fetchone()[0]
    assert orjson.loads(payload) == {"ts": T0, "SPPA": -50.0}


def test_source_rejects_become_dead_letters_with_their_reason_and_bytes(tmp_path):
    w = Writer(tmp_path / "t.db")
    stats = w.commit(Batch([env("reject", 1, [
        (T0, {"reason": "WITS0 not a WITS0 line", "input": "\x00\xffnoise"}),
        (T0 + 1, {"reason": "replay: time not readable", "input": "log.csv:41: yesterday,1,2"}),
        (T0 + 2, {"input": {"odd": 1}}),
    ], src="rig-1.wits0")]))
    assert stats.dead_letters == 3 and stats.values == 0
    rows = w.db.execute("SELECT received_ms, topic, src, seq, reason, size, payload FROM dead_letters "
                        "ORDER BY id").fetchall()
    assert rows[0] == (T0, "reject", "rig-1.wits0", 1, "WITS0 not a WITS0 line", 7, b"\x00\xffnoise")
    assert rows[1][4:] == ("replay: time not readable", 25, b"log.csv:41: yesterday,1,2")
    assert rows[2][4] == "refused by the source (no reason given)" and rows[2][6] == b'{"odd":1}'
    assert w.db.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_custom_payloads_go_to_events_and_alerts_to_alerts(tmp_path):
    w = Writer(tmp_path / "t.db")
    w.commit(Batch([
        env("custom_topic", 1, [(T0, {"note": "cement job", "volume_bbl": 120.0})]),
        env("alert", 1, [(T0 + 5, {"id": "kick-1", "kind": "kick", "state": "active_unack", "priority": "high",
                                   "evidence": {"pit_gain_bbl": 6.2}})], src="rig-1.predictor"),
    ]))
    assert w.db.execute("SELECT topic, src, seq, data FROM events").fetchone() == (
        "custom_topic", "rig-1.sim", 1, '{"note":"cement job","volume_bbl":120.0}')
    row = w.db.execute("SELECT ts, alert_id, kind, state, priority, data FROM alerts").fetchone()
    assert row[:5] == (T0 + 5, "kick-1", "kick", "active_unack", "high")
    assert orjson.loads(row[5])["evidence"] == {"pit_gain_bbl": 6.2}


def brute_force(db: sqlite3.Connection, column: str, width: int) -> list[tuple]:
    out = []
    rows = db.execute(f"SELECT ts, {column} FROM samples WHERE {column} IS NOT NULL ORDER BY ts").fetchall()
    buckets: dict[int, list[tuple]] = {}
    for ts, v in rows:
        buckets.setdefault(ts // width * width, []).append((ts, v))
    for b, items in sorted(buckets.items()):
        vals = [v for _, v in items]
        out.append((b, min(vals), max(vals), pytest.approx(sum(vals)), len(vals), items[-1][1], items[-1][0]))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=3 * 3_600_000), min_size=1, max_size=300, unique=True),
    splits=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
    data=st.data(),
)
def test_rollups_equal_a_brute_force_computation_however_batches_are_split(tmp_path_factory, offsets, splits, data):
    values = data.draw(st.lists(st.floats(min_value=0, max_value=5000, allow_nan=False),
                                min_size=len(offsets), max_size=len(offsets)))
    w = Writer(tmp_path_factory.mktemp("r") / "t.db")
    frames = [(T0 + o, {"SPPA": v}) for o, v in zip(offsets, values)]
    seq, i = 0, 0
    while i < len(frames):  # batches of varying size, arriving in any order
        n = splits[seq % len(splits)]
        seq += 1
        w.commit(Batch([env("drilling", seq, frames[i:i + n])]))
        i += n
    col = sample_columns(w.db)["SPPA"]
    cid = int(col[1:])
    for table, width in rollups.RESOLUTIONS.values():
        stored = w.db.execute(f"SELECT bucket, min, max, sum, count, last, last_ts FROM {table} "
                              "WHERE channel_id = ? ORDER BY bucket", (cid,)).fetchall()
        assert stored == brute_force(w.db, col, width)
    w.close()


def test_aggregate_handles_unsorted_input():
    ts = [T0 + 61_000, T0 + 1_000, T0 + 59_000, T0 + 120_000]
    vals = [4.0, 1.0, 3.0, 9.0]
    aggs = rollups.aggregate(7, ts, vals, rollups.MINUTE_MS)
    assert [(a.bucket - T0, a.min, a.max, a.count, a.last) for a in aggs] == [
        (0, 1.0, 3.0, 2, 3.0), (60_000, 4.0, 4.0, 1, 4.0), (120_000, 9.0, 9.0, 1, 9.0)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=3 * 3_600_000),
                          st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)), max_size=200))
def test_aggregate_equals_a_brute_force_in_any_order(samples):
    """Repeated timestamps included: of two samples at one ms, the later one given is last."""
    for width in (rollups.MINUTE_MS, rollups.HOUR_MS):
        buckets: dict[int, list[tuple[int, float]]] = {}
        for ts, v in sorted(samples, key=lambda s: s[0]):  # stable, as the writer's order
            buckets.setdefault(ts // width * width, []).append((ts, v))
        expected = [(b, min(v for _, v in items), max(v for _, v in items), pytest.approx(sum(v for _, v in items)),
                     len(items), items[-1][1], items[-1][0]) for b, items in sorted(buckets.items())]
        got = rollups.aggregate(3, [t for t, _ in samples], [v for _, v in samples], width)
        assert [rollups.as_row(a)[1:] for a in got] == expected
        assert all(a.channel_id == 3 for a in got)


def test_each_rollup_width_is_a_multiple_of_the_one_before():
    """The saver folds each resolution from the finer one before it (rollups.coarser)."""
    widths = [width for _, width in rollups.RESOLUTIONS.values()]
    assert all(b % a == 0 and b > a for a, b in zip(widths, widths[1:])), widths


def test_a_failed_commit_leaves_nothing_behind(tmp_path):
    w = Writer(tmp_path / "t.db")
    w.commit(Batch([env("drilling", 1, [(T0, {"DMEA": 1.0})])]))
    bad = Batch([env("drilling", 2, [(T0 + 1, {"NEWCH": 2.0})])])
    bad.gaps.append("not a gap")  # type: ignore[arg-type]  # makes the commit fail midway
    with pytest.raises(AttributeError):
        w.commit(bad)
    assert w.db.execute("SELECT count(*) FROM samples").fetchone() == (1,)
    assert "NEWCH" not in sample_columns(w.db) and "NEWCH" not in w.columns
    # and the writer still works, including for the channel whose column was rolled back
    w.commit(Batch([env("drilling", 2, [(T0 + 1, {"NEWCH": 2.0})])]))
    assert w.db.execute(f"SELECT {sample_columns(w.db)['NEWCH']} FROM samples WHERE ts = ?", (T0 + 1,)).fetchone() == (2.0,)


def test_series_picks_the_resolution_for_the_window_and_budget(tmp_path):
    from appliance.store.read import QueryError, series
    w = Writer(tmp_path / "t.db")
    # 6 hours of one channel at 1 Hz, written as a source would, in batches
    for hour in range(6):
        frames = [(T0 + (hour * 3600 + s) * 1000, {"HKLA": 200.0 + (s % 60)}) for s in range(3600)]
        w.commit(Batch([env("drilling", hour + 1, frames)]))
    db = w.db
    ten_min = series(db, ["HKLA"], T0, T0 + 600_000)
    assert ten_min["resolution"] == "raw" and len(ten_min["channels"]["HKLA"]["value"]) == 600
    six_h = series(db, ["HKLA"], T0, T0 + 6 * 3_600_000)
    assert six_h["resolution"] == "1m"
    hk = six_h["channels"]["HKLA"]
    assert len(hk["ts"]) == 360 and hk["min"][0] == 200.0 and hk["max"][0] == 259.0
    assert hk["avg"][0] == pytest.approx(229.5) and hk["count"][0] == 60
    coarse = series(db, ["HKLA"], T0, T0 + 6 * 3_600_000, max_points=100)
    counts = coarse["channels"]["HKLA"]["count"]
    # T0 is 20:52, so the hours are 8 minutes, five whole ones, and 52 minutes
    assert coarse["resolution"] == "1h" and counts == [480] + [3600] * 5 + [3120]
    # an odd window: the estimate counts whole minutes at the edges (at most two extra),
    # and the raw read returns exactly the samples inside
    odd = series(db, ["HKLA"], T0 + 30_500, T0 + 30_500 + 1_900_000, max_points=2020)
    assert odd["resolution"] == "raw" and len(odd["channels"]["HKLA"]["ts"]) == 1900
    with pytest.raises(QueryError, match="unknown channel"):
        series(db, ["NOPE"], T0, T0 + 1000)
    with pytest.raises(QueryError, match="inverted"):
        series(db, ["HKLA"], T0 + 1000, T0)
    with pytest.raises(QueryError, match="max_points"):
        series(db, ["HKLA"], T0, T0 + 1000, max_points=0)


def test_values_that_would_break_sqlite_are_refused_not_fatal(tmp_path):
    w = Writer(tmp_path / "t.db")
    stats = w.commit(Batch([env("mud_lab", 1, [(T0, {"big": 2**64, "ok": 1})]),
                            env("drilling", 1, [(T0 + 1, {})])]))
    # 2**64 fits a float: stored as one (an int column would overflow)
    assert stats.values == 2 and stats.dead_letters == 1
    col = sample_columns(w.db)["mud_lab.big"]
    assert w.db.execute(f"SELECT {col} FROM samples WHERE ts = ?", (T0,)).fetchone() == (float(2**64),)
    assert w.db.execute("SELECT reason FROM dead_letters").fetchone() == ("empty frame: no values",)


def test_channels_beyond_the_column_limit_are_dead_lettered(tmp_path, monkeypatch):
    from appliance.store import writer as writer_module
    monkeypatch.setattr(writer_module, "MAX_CHANNELS", 3)
    w = Writer(tmp_path / "t.db")
    stats = w.commit(Batch([env("drilling", 1, [(T0, {"DMEA": 1.0, "HKLA": 2.0, "SPPA": 3.0, "TQA": 4.0})])]))
    assert stats.values == 3 and stats.dead_letters == 1
    assert "channel limit of 3 reached" in w.db.execute("SELECT reason FROM dead_letters").fetchone()[0]
    # later frames of known channels still go the fast way
    assert w.commit(Batch([env("drilling", 2, [(T0 + 1, {"DMEA": 1.0})])])).values == 1


def test_a_second_value_for_a_channel_at_the_same_millisecond_is_refused_not_swapped(tmp_path):
    w = Writer(tmp_path / "t.db")
    w.commit(Batch([env("drilling", 1, [(T0, {"DMEA": 5000.0, "HKLA": 200.0})], src="rig-1.edr"),
                    env("drilling", 1, [(T0, {"DMEA": 5100.0})], src="rig-1.mudlog"),
                    env("derived", 1, [(T0, {"MSE": 30.0})], src="rig-1.predictor")]))  # merges: fine
    w.commit(Batch([env("drilling", 2, [(T0, {"DMEA": 5200.0}), (T0 + 1000, {"DMEA": 5001.0})],
                        src="rig-1.edr")]))  # a late repeat of T0
    cols = sample_columns(w.db)
    assert w.db.execute(f"SELECT {cols['DMEA']}, {cols['HKLA']}, {cols['MSE']} FROM samples WHERE ts = ?",
                        (T0,)).fetchone() == (5000.0, 200.0, 30.0)
    reasons = [r for (r,) in w.db.execute("SELECT reason FROM dead_letters ORDER BY id")]
    assert reasons == [f"DMEA: a value at ts {T0} is already stored; this one (5100) was not",
                       f"DMEA: a value at ts {T0} is already stored; this one (5200) was not"]
    (count,) = w.db.execute("SELECT sum(count) FROM rollup_1m WHERE channel_id = ?", (int(cols["DMEA"][1:]),)).fetchone()
    assert count == 2  # T0 once, T0 + 1000: the roll-ups agree with the raw rows


def test_late_recovered_frames_are_stored_once_with_exact_roll_ups(tmp_path):
    """Frames fetched from a spool arrive after newer ones: they are stored, roll-ups stay
    exact, and the newest stored time per channel is not lowered by them (else the next
    batch would skip the collision check and overwrite stored values)."""
    w = Writer(tmp_path / "t.db")
    live = [(T0 + 60_000 + i * 100, {"DMEA": 6000.0 + i}) for i in range(600)]  # minute 1
    w.commit(Batch([env("drilling", 101, live)]))
    late = [(T0 + i * 100, {"DMEA": 5000.0 + i}) for i in range(1200)]  # minutes 0 and 1, interleaved
    late = [(t + 50, d) if t >= T0 + 60_000 else (t, d) for t, d in late]
    stats = w.commit(Batch([env("drilling", i + 1, [f]) for i, f in enumerate(late[:100])]
                           + [env("drilling", 1000, late[100:])]))
    assert stats.dead_letters == 0
    assert w.db.execute("SELECT count(*) FROM samples").fetchone() == (1800,)
    minute1 = w.db.execute("SELECT count, min, max, last, last_ts FROM rollup_1m WHERE bucket = ?",
                           (T0 + 60_000,)).fetchone()
    assert minute1 == (1200, 5600.0, 6599.0, 6199.0, T0 + 60_000 + 599 * 100 + 50)  # the latest is a late one
    assert w.db.execute("SELECT sum(count) FROM rollup_1h").fetchone() == (1800,)
    # a batch of only older frames, then a repeat of a live value: still refused, not written over it
    assert w.commit(Batch([env("drilling", 1999, [(T0 + 5, {"DMEA": 4999.0})])])).dead_letters == 0
    stats = w.commit(Batch([env("drilling", 2000, [(T0 + 60_000 + 599 * 100, {"DMEA": 1.0})])]))
    assert stats.dead_letters == 1
    (column,) = w.db.execute("SELECT 'c' || id FROM channels WHERE name = 'DMEA'").fetchone()
    assert w.db.execute(f"SELECT {column} FROM samples WHERE ts = ?", (T0 + 60_000 + 599 * 100,)).fetchone() == (6599.0,)
    w.close()
