"""Generic statistical anomalies per channel: a robust z-score with a warm-up.

For each channel in `anomaly_channels` (channel -> the smallest change worth an alarm, in
its unit), the per-second means of the last `anomaly_window_s` seconds give a median and a
MAD-based scale (recomputed every RECOMPUTE_S). A value further from the median than both
`anomaly_z` scales and that smallest change is anomalous; nothing is judged before
`anomaly_warmup_s` of data. The median resists the very outliers it looks for, and the
smallest change keeps a quiet channel's tiny scale from turning noise into alarms.
Pump channels are not judged while the pumps are off or changing; gas and mud density out
are excused while a kick is raised and for a window after (they are its consequences).
"""

from __future__ import annotations

from appliance.channels import BY_MNEMONIC
from appliance.predict.alarms import AlarmBook, Condition
from appliance.predict.derive import Inputs
from appliance.predict.params import PUMP_CHANNELS, PredictorParams
from appliance.predict.signals import RobustWindow

RECOMPUTE_S = 10.0
KICK_CONSEQUENCES = frozenset({"GASA", "MDOA", "MTOA", "MFOA", "MFOP", "TVA"})


class AnomalyWatch:
    def __init__(self, params: PredictorParams) -> None:
        self.params = params
        size = max(int(params.anomaly_window_s), 10)
        self.windows = {ch: RobustWindow(size) for ch in params.anomaly_channels}
        self.stats: dict[str, tuple[float, float]] = {}
        self.seen_s: dict[str, float] = {}
        self.next_s = 0.0
        self.since: dict[str, float] = {}
        self.kick_seen_s = -1e18

    def update(self, t_s: float, inp: Inputs, v: dict[str, float], pumps_quiet: str | None,
               book: AlarmBook) -> list[Condition]:
        p = self.params
        out: list[Condition] = []
        recompute = t_s >= self.next_s
        if recompute:
            self.next_s = t_s + RECOMPUTE_S
        kick = book.records.get("kick")
        if kick is not None and kick.active:
            self.kick_seen_s = t_s
        # gas and mud out stay odd until the influx is circulated out: excused for a window after
        kick_raised = t_s - self.kick_seen_s <= p.anomaly_window_s
        for ch, w in self.windows.items():
            x = v.get(ch)
            if x is None:
                out.append(Condition(f"anomaly.{ch}", "anomaly", None, "low", "", {}, ch))
                continue
            if recompute and w.n >= 10:
                self.stats[ch] = w.median_scale()
            judged = self.seen_s.get(ch, 0.0) >= p.anomaly_warmup_s and ch in self.stats
            active = None
            ev = {}
            if judged:
                med, scale = self.stats[ch]
                dev = x - med
                z = dev / scale if scale > 0 else float("inf") if dev else 0.0
                active = abs(dev) > max(p.anomaly_z * scale, p.anomaly_channels[ch])
                ev = {"channel": ch, "value": x, "median": round(med, 3), "scale": round(scale, 4),
                      "z": round(z, 1) if abs(z) < 1e9 else None, "min_change": p.anomaly_channels[ch],
                      "relied_on": [ch]}
            if active:
                self.since.setdefault(ch, t_s)
            else:
                self.since.pop(ch, None)
            # anomalous values stay out of the reference, until a lasting new level is the norm
            frozen = kick_raised and ch in KICK_CONSEQUENCES  # keep the reference from before the kick
            if not frozen and (not active or t_s - self.since[ch] >= p.anomaly_window_s / 2):
                w.add(x)
                self.seen_s[ch] = self.seen_s.get(ch, 0.0) + 1.0
            suppressed = None
            if ch in PUMP_CHANNELS and pumps_quiet:
                suppressed = pumps_quiet
            elif kick_raised and ch in KICK_CONSEQUENCES:
                suppressed = "explained by the kick alarm"
            unit = BY_MNEMONIC[ch].unit if ch in BY_MNEMONIC else ""
            out.append(Condition(
                f"anomaly.{ch}", "anomaly", active, "low",
                f"{ch} unusual: {x:g} {unit} against a usual {ev.get('median', 0):g}" if ev else "",
                ev, ch, suppressed=suppressed, on_delay_s=30.0, off_delay_s=60.0))
        return out
