"""`rigtel backtest FILE`: the predictor over a recorded log, as fast as it will go.

The file is read by appliance.sources.files (CSV as the replay command reads it, WITSML
1.4.1.1 `<log>` documents, LAS 2.0; mnemonics mapped to the catalogue and units
converted), each row goes into one `Predictor` in file order with the row's own time,
and every rig-state change and every alarm event is printed as it happens: readable
lines, or JSON lines with `--json` ({"type": "state", ...} / {"type": "alert", ...} /
a final {"type": "summary", ...}). Engineers tune thresholds on past wells with
`--set predictor_...=` (the predictor's settings) and `--thresholds FILE` (a JSON object
{channel: {"hh", "h", "l", "ll", "deadband", "priority"}}, as GET /api/thresholds shows).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any, Sequence

from appliance.store.thresholds import ThresholdError, check


def utc(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}Z"


def load_thresholds(path: str) -> dict[str, dict[str, Any]]:
    """{channel: limits} from a JSON file, each checked like a dashboard change; ValueError says why."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("thresholds"), list):  # GET /api/thresholds saved as is
        data = {row["channel"]: row for row in data["thresholds"] if isinstance(row, dict) and "channel" in row}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{channel: {{\"h\": ..., \"hh\": ...}}}}")
    out = {}
    keep = ("hh", "h", "l", "ll", "deadband", "priority")
    for channel, limits in data.items():
        if not isinstance(limits, dict):
            raise ValueError(f"{path}: {channel}: expected an object of limits")
        try:
            t = check({k: limits.get(k) for k in keep}, channel=channel, extra_channels=frozenset({channel}))
        except ThresholdError as e:
            raise ValueError(f"{path}: {channel}: {e}") from None
        if not t.cleared:
            out[channel] = {**t.as_dict(), "by": "backtest"}
    return out


class Printer:
    def __init__(self, as_json: bool, out=sys.stdout) -> None:
        self.as_json = as_json
        self.out = out

    def state(self, ts_ms: int, state: str, previous: str | None, held_s: float | None) -> None:
        if self.as_json:
            self._json({"type": "state", "ts": ts_ms, "state": state, "previous": previous,
                        "previous_s": None if held_s is None else round(held_s, 3)})
        else:
            held = f" (after {held_s:.0f} s {previous})" if previous is not None and held_s is not None else ""
            print(f"{utc(ts_ms)}  state  {state}{held}", file=self.out)

    def alert(self, ts_ms: int, event: dict[str, Any]) -> None:
        if self.as_json:
            self._json({"type": "alert", "ts": ts_ms, **event})
        else:
            print(f"{utc(ts_ms)}  alert  {event.get('state', ''):<13} {event.get('priority') or '-':<8} "
                  f"{event.get('id')}: {event.get('message', '')}", file=self.out)

    def summary(self, summary: dict[str, Any]) -> None:
        if self.as_json:
            self._json({"type": "summary", **summary})
            return
        s = summary
        print(f"\n{s['file']} ({s['format']}): {s['rows']} rows, {s['hours']} h of data "
              f"in {s['seconds']} s ({s['rows_per_s']} rows/s)", file=self.out)
        for reason, n in s["skipped"].items():
            print(f"  skipped {n} row(s): {reason}", file=self.out)
        print(f"  rig states: {s['state_changes']} changes; time by state: " + ", ".join(
            f"{k} {v:.2f} h" for k, v in s["hours_by_state"].items()), file=self.out)
        print(f"  alarms: {s['alarms']} raised ({s['alarms_per_10min']} per 10 minutes); by kind: "
              f"{s['alarms_by_kind'] or 'none'}", file=self.out)

    def _json(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")


def backtest(log: Any, predictor: Any, printer: Printer) -> dict[str, Any]:
    """Run every row of `log` through `predictor`, printing as it goes; returns the summary."""
    from appliance.predict.evaluate import detector_of, raises_in

    state: str | None = None
    since = first = last = None
    rows = 0
    hours: Counter = Counter()
    changes = 0
    active: set[str] = set()
    raised: Counter = Counter()
    started = time.perf_counter()
    for ts, values in log.rows():
        result = predictor.step(ts, values)
        rows += 1
        if first is None:
            first = ts
        if last is not None and state is not None:
            hours[state] += min(ts - last, 120_000) / 3_600_000  # a long gap is not time in the state
        last = ts
        if result.state != state:
            printer.state(ts, result.state, state, None if since is None else (ts - since) / 1000)
            changes += state is not None
            state, since = result.state, ts
        for event in result.alerts:
            printer.alert(int(event.get("ts") or ts), event)
        for r in raises_in(result.alerts, active):
            raised[detector_of(r)] += 1
    seconds = time.perf_counter() - started
    span_h = (last - first) / 3_600_000 if first is not None and last is not None else 0.0
    alarms = sum(raised.values())
    return {"file": log.path, "format": log.format, "rows": rows, "hours": round(span_h, 3),
            "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds) if seconds > 0 else None,
            "skipped": dict(log.problems), "state_changes": changes,
            "hours_by_state": {k: round(v, 3) for k, v in hours.most_common()},
            "alarms": alarms, "alarms_per_10min": round(alarms / (span_h * 6), 3) if span_h > 0 else None,
            "alarms_by_kind": dict(raised.most_common())}


def main(argv: Sequence[str]) -> int:
    from appliance.cli import load_settings, settings_parser
    from appliance.sources.files import FORMATS, LogError, open_log

    parser = settings_parser("backtest", "Run the predictor over a recorded drilling log as fast as "
                                         "possible; print every rig-state change and every alarm.")
    parser.add_argument("file", metavar="FILE", help="the recorded log: CSV, WITSML 1.4.1.1 <log> or LAS 2.0")
    parser.add_argument("--format", choices=FORMATS, help="the file's format (default: from its content)")
    parser.add_argument("--json", action="store_true", help="JSON lines: one per state change, alarm "
                                                             "event and a final summary")
    parser.add_argument("--thresholds", metavar="FILE", help="JSON {channel: {hh, h, l, ll, deadband, "
                                                              "priority}} of alarm limits to apply")
    args = parser.parse_args(argv)
    cfg = load_settings(args)
    limits = None
    if args.thresholds:
        try:
            limits = load_thresholds(args.thresholds)
        except ValueError as e:
            print(f"rigtel backtest: {e}", file=sys.stderr)
            return 2
    try:
        log = open_log(args.file, args.format)
    except (OSError, LogError) as e:
        print(f"rigtel backtest: {e}", file=sys.stderr)
        return 1
    if not log.channels.mapped:
        print(f"rigtel backtest: {args.file}: no curve maps to a catalogue channel; what each curve is:\n  "
              + "\n  ".join(log.channels.describe()), file=sys.stderr)
        return 1
    from appliance.predict.engine import Predictor

    predictor = Predictor(params=predictor_params(cfg), thresholds=limits)
    printer = Printer(args.json)
    try:
        summary = backtest(log, predictor, printer)
    except BrokenPipeError:  # piped into head: not an error
        return 0
    except (OSError, LogError) as e:
        print(f"rigtel backtest: reading {args.file} failed: {e}", file=sys.stderr)
        return 1
    printer.summary(summary)
    return 0


def predictor_params(cfg: Any) -> Any:
    """The predictor's parameters from the settings (its rig-dependent ones are settings)."""
    from appliance.config import SETTINGS
    from appliance.predict import params

    declared = {s.name for s in SETTINGS}
    if not all(f"predictor_{n}" in declared for n in params.SETTING_FIELDS):
        # a checkout where the predictor's settings are not declared yet: its defaults
        return params.PredictorParams()
    return params.from_config(cfg)
