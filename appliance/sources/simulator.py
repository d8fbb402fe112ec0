"""`rigtel simulate`: a rig that behaves like one, publishing channel frames on 'drilling'.

Rig time runs `simulator_speed` times faster than the wall clock; frames come every
1/`simulator_rate_hz` seconds of rig time, stamped with the start's epoch ms plus the rig
ms, and all frames due at a tick go out in one batch message. The physics live in
appliance.sources.rig; the values depend only on the seed, the settings and where the well
had got to (below): a new well (`--new-well`) can be replayed exactly (only the timestamps'
origin changes).

Across restarts (appliance.sources.simstate): the simulator keeps
DATA_DIR/simulator-state-RIG_ID.json and the next run continues the same well (same seed and
start depth) from the hole depth it had reached; after a run ahead of the clock it stamps
its first frame after that run's last, so that the two never interleave in the database.

Injected events (`simulator_events`) get ground-truth labels: a message on 'sim.label'
when each one starts and ends, and one JSON line per event appended to
`simulator_labels_path` when it ends (or at exit, marked unfinished; an event that never
started leaves no line).

Caveats:
- With speed above 1 the frames' timestamps run ahead of the wall clock: they are rig time,
  and the next run continues after them. Stamping them at wall-clock pace instead would make
  every rate against time wrong by the speed factor (the hole deepening 10x faster than
  ROPA says, the pit filling 10x faster than the flow meters say): a live appliance that
  should stay with the clock runs at speed 1 (`make run` does).
- Event times count from this run's start: a restarted simulator plays them again.
- Frames published before a subscriber's subscription reaches this publisher are lost
  (ZeroMQ's slow joiner): subscribe first, and expect the first frames to be missing.
- The labels file is shared by every run; each line carries the run's `src` and `boot`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import IO, Any, Sequence

import orjson
import zmq

from appliance.bus.heartbeat import Heartbeat
from appliance.bus.publisher import Publisher
from appliance.config import Config
from appliance.ops.runtime import StopSignal
from appliance.sources.events import Event, parse_duration, parse_events
from appliance.sources import simstate
from appliance.sources.rig import RigModel

log = logging.getLogger("rigtel.simulator")

DATA_TOPIC = "drilling"
LABEL_TOPIC = "sim.label"
TICK_S = 0.05  # at most this long between sends when frames are due faster
SUMMARY_S = 10.0
# how often the well's state is saved (wall seconds): each save is flushed to disk, and a
# rig box's flash should not take one a second; a hard kill costs at most this much drilling
STATE_EVERY_S = 30.0
WORK_SLICE_S = 0.2  # when behind, still look at signals and heartbeats this often
FRAME_BYTES_ESTIMATE = 60 * 22  # twice a real frame's size, so batches stay under the limit


def labels_path(cfg: Config) -> str:
    return cfg.simulator_labels_path or os.path.join(cfg.data_dir, "simulator-labels.jsonl")


def format_rig_time(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 86400}d{s // 3600 % 24:02d}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 86400 \
        else f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s"


class Simulation:
    """Runs the model against the clock and publishes frames and labels."""

    def __init__(self, cfg: Config, events: list[Event], publisher: Publisher,
                 labels: IO[str], duration_s: float | None = None,
                 previous: simstate.WellState | None = None, state_file: str | None = None) -> None:
        """previous: where an earlier run left the well and its clock (None: a new well);
        state_file: where to keep this run's (None: nowhere)."""
        self.rate_hz = cfg.simulator_rate_hz
        self.speed = cfg.simulator_speed
        self.seed = cfg.simulator_seed
        self.start_depth_ft = cfg.simulator_start_depth_ft
        self.model = RigModel(seed=cfg.simulator_seed, start_depth_ft=cfg.simulator_start_depth_ft,
                              trip_every_ft=cfg.simulator_trip_every_ft, events=events)
        self.previous = previous
        self.continued = previous is not None and previous.same_well(self.seed, self.start_depth_ft)
        if self.continued:
            try:
                self.model.carry_on(previous.well)
            except ValueError as e:  # checked when loaded; a model that refuses it all the same
                log.warning("cannot continue the previous well (%s): a new well", e)
                self.continued = False
        self.state_file = state_file
        self._state_failed = False
        self.followed_speed = 0.0  # the speed of the run ahead of the clock this one follows
        self.publisher = publisher
        self.labels = labels
        self.max_frames = (int(duration_s * self.rate_hz + 1e-9) if duration_s is not None else None)
        self.batch_frames = max(1, (cfg.bus_max_message_bytes - 512) // FRAME_BYTES_ESTIMATE)
        self.heartbeat = Heartbeat(publisher, "simulator", cfg.bus_heartbeat_s, stats=self._stats)
        self.frames = 0  # frames produced; frame k is at rig time k / rate
        self.origin_ms = 0
        self.behind_s = 0.0  # rig seconds due but not yet produced, at the last tick
        # label transitions in rig-time order: (time s, 0 end / 1 start, event)
        self._transitions = sorted(
            [(e.start_s, 1, i, e) for i, e in enumerate(events)]
            + [(e.end_s, 0, i, e) for i, e in enumerate(events)])
        self._next_transition = 0
        self._open: dict[int, Event] = {}

    def last_ts_ms(self) -> int:
        """The stamp of the last frame produced (the origin before the first)."""
        return self.origin_ms + round(self.frames * 1000.0 / self.rate_hz)

    def _stats(self) -> dict[str, Any]:
        return {"frames": self.frames, "messages": self.publisher.sent,
                "rig_time_s": round(self.model.t_s, 3), "activity": self.model.activity,
                "behind_s": round(self.behind_s, 3), "hole_ft": round(self.model.hole_ft, 2),
                # how far the stamps run ahead of the clock: 0 at speed 1, rig time beyond it
                "ahead_of_clock_s": round(max(0.0, self.last_ts_ms() / 1000.0 - time.time()), 1)}

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        # a run that followed stamps ahead of the clock is still ahead of it: the next follows too
        state = simstate.WellState(self.seed, self.start_depth_ft, self.last_ts_ms(), self.model.carried(),
                                   max(self.speed, self.followed_speed))
        try:
            simstate.save(self.state_file, state)
        except OSError as e:
            if not self._state_failed:  # once: the run goes on, only its restart will not continue
                self._state_failed = True
                log.warning("cannot keep the well's state in %s: %s; a restart will start a new well. "
                            "Make data_dir writable for this user.", self.state_file, e.strerror or e)

    # -- labels --------------------------------------------------------------------------

    def _label_transitions(self, t_s: float) -> list[dict[str, Any]]:
        """Labels whose start or end has come by rig time `t_s`; writes finished ones to the file."""
        out = []
        transitions = self._transitions
        while (self._next_transition < len(transitions)
               and transitions[self._next_transition][0] <= t_s + 1e-9):
            _, is_start, index, event = transitions[self._next_transition]
            self._next_transition += 1
            label = event.label(self.origin_ms)
            if is_start:
                self._open[index] = event
            else:
                del self._open[index]
                self._write_label(label, finished=True)
            out.append({**label, "phase": "start" if is_start else "end"})
        return out

    def _write_label(self, label: dict[str, Any], finished: bool) -> None:
        line = {**label, "finished": finished, "src": self.publisher.src,
                "boot": self.publisher.boot, "seed": self.seed}
        self.labels.write(orjson.dumps(line).decode() + "\n")
        self.labels.flush()

    # -- the loop --------------------------------------------------------------------------

    def _produce(self, due: int, deadline: float) -> None:
        """Step the model up to frame `due` and publish, in batches under the size limit."""
        model, rate, origin = self.model, self.rate_hz, self.origin_ms
        dt = 1.0 / rate
        while self.frames < due:
            batch: list[tuple[int, dict[str, float]]] = []
            labels: list[dict[str, Any]] = []
            end = min(due, self.frames + self.batch_frames)
            next_transition = (self._transitions[self._next_transition][0]
                               if self._next_transition < len(self._transitions) else float("inf"))
            for k in range(self.frames + 1, end + 1):
                data = model.step(dt)
                batch.append((origin + round(k * 1000.0 / rate), data))
                if k * dt + 1e-9 >= next_transition:
                    labels.extend(self._label_transitions(k * dt))
                    next_transition = (self._transitions[self._next_transition][0]
                                       if self._next_transition < len(self._transitions) else float("inf"))
            self.frames = end
            if len(batch) == 1:
                self.publisher.publish(DATA_TOPIC, batch[0][1], ts=batch[0][0])
            else:
                self.publisher.publish_batch(DATA_TOPIC, batch)
            for label in labels:
                ts = label["start_ms"] if label["phase"] == "start" else label["end_ms"]
                self.publisher.publish(LABEL_TOPIC, label, ts=ts)
                log.info("label %s: %s%s", label["phase"], label["kind"],
                         f":{label['channel']}" if label["channel"] else "")
            if time.monotonic() >= deadline:
                return

    def _announce_start(self, now_ms: int) -> None:
        m = self.model
        if self.continued:
            log.info("continuing the well of the previous run: hole %.1f ft, pit %.1f bbl (%s)",
                     m.hole_ft, m.pit_bbl, self.state_file or "its state")
        elif self.previous is not None:
            log.info("a new well at %.0f ft: the previous run's was seed %d from %.0f ft (this run: seed "
                     "%d from %.0f ft)", m.hole_ft, self.previous.seed, self.previous.start_depth_ft,
                     self.seed, self.start_depth_ft)
        else:
            log.info("a new well at %.0f ft", m.hole_ft)
        ahead_s = (self.origin_ms - now_ms) / 1000.0
        if ahead_s > 1.0:
            log.warning("the previous run stamped frames up to %.0f s ahead of the clock (simulator_speed "
                        "%g); this run's frames follow them so that the stored "
                        "series do not interleave. To stamp from the clock again: stop the appliance, set simulator_speed = 1, "
                        "delete %s and start a new database (make run: delete var/dev/var/lib/rigtel).",
                        ahead_s, self.previous.speed if self.previous else self.speed,
                        self.state_file or "the simulator's state file")

    def _summary(self, wall_s: float) -> None:
        m = self.model
        behind = (f"; BEHIND by {self.behind_s:.0f} s of rig time: lower simulator_rate_hz or "
                  f"simulator_speed" if self.behind_s / self.speed > 1.0 else "")
        log.info("rig time %s, %d frames (%.0f/s) in %d messages; %s, hole %.1f ft, bit %.1f ft, "
                 "pit %.1f bbl%s", format_rig_time(m.t_s), self.frames,
                 self.frames / max(wall_s, 1e-9), self.publisher.sent, m.activity, m.hole_ft,
                 m.bit_ft, m.pit_bbl, behind)

    def run(self, stop: StopSignal) -> int:
        """Publish until `stop` is set or the duration is done; returns the exit code."""
        rate, speed = self.rate_hz, self.speed
        frames_per_wall_s = rate * speed
        now_ms = time.time_ns() // 1_000_000
        # after a run ahead of the clock (speed above 1), never a frame at or before its last
        # (frame 1 comes one period after); after a run at speed 1, the clock: stamps ahead of
        # it then came from a clock that was wrong, and are not followed forever
        previous = self.previous
        follow = previous is not None and previous.speed > 1.0
        self.followed_speed = previous.speed if follow else 0.0
        self.origin_ms = max(now_ms, previous.last_ts_ms) if follow else now_ms
        if previous is not None and not follow and previous.last_ts_ms > now_ms + 1000:
            log.warning("the previous run's last frame is stamped %.0f s ahead of the clock at speed 1: "
                        "the clock was wrong then, or is now; stamping from the clock",
                        (previous.last_ts_ms - now_ms) / 1000.0)
        wall0 = time.monotonic()
        next_summary = wall0 + SUMMARY_S
        next_state = wall0
        self._announce_start(now_ms)
        log.info("ready: publishing on %s at %g Hz × %g", self.publisher.endpoint, rate, speed)
        try:
            while not stop.is_set():
                now = tick_start = time.monotonic()
                due = int((now - wall0) * frames_per_wall_s + 1e-9)
                if self.max_frames is not None:
                    due = min(due, self.max_frames)
                self._produce(due, now + WORK_SLICE_S)
                self.behind_s = max(0.0, (due - self.frames) / rate)
                self.heartbeat.tick()
                now = time.monotonic()
                if now >= next_state:
                    next_state = now + STATE_EVERY_S
                    self._save_state()
                if now >= next_summary:
                    next_summary = now + SUMMARY_S
                    self._summary(now - wall0)
                if self.max_frames is not None and self.frames >= self.max_frames:
                    log.info("duration done: %s of rig time", format_rig_time(self.model.t_s))
                    break
                # sleep until the next frame is due, but at least a tick after this one
                # began, so that fast frames gather into batches
                wake = max(wall0 + (self.frames + 1) / frames_per_wall_s, tick_start + TICK_S)
                wait = min(max(wake - now, 0.0), self.heartbeat.seconds_to_next(), next_summary - now,
                           max(next_state - now, 0.0))
                stop.wait(wait)
        finally:
            self._save_state()
            for event in self._open.values():
                self._write_label(event.label(self.origin_ms), finished=False)
            self._open.clear()
        self._summary(time.monotonic() - wall0)
        return 0


def main(argv: Sequence[str]) -> int:
    from appliance.cli import load_settings, settings_parser
    from appliance.ops.runtime import configure_logging

    parser = settings_parser("simulate", "Run the rig simulator: drilling, connections, trips "
                                         "and injected events, published on 'drilling'.")
    parser.add_argument("--rate", metavar="HZ", help="frames per rig second (simulator_rate_hz)")
    parser.add_argument("--speed", metavar="X", help="rig seconds per wall second (simulator_speed)")
    parser.add_argument("--seed", metavar="N", help="random seed (simulator_seed)")
    parser.add_argument("--events", metavar="SPEC", help="events to inject (simulator_events), "
                                                          "e.g. 'kick@2h+20m,spike:SPPA@1h+10m'")
    parser.add_argument("--duration", metavar="TIME", help="stop after this much rig time, "
                                                           "e.g. 600, 90m or 1h30m (default: run until stopped)")
    parser.add_argument("--new-well", action="store_true",
                        help="start a new well at simulator_start_depth_ft, stamped from the clock, instead "
                             "of continuing the one in DATA_DIR/simulator-state-RIG_ID.json: the data then "
                             "depend only on the seed and the settings")
    args = parser.parse_args(argv)
    duration_s = None
    if args.duration is not None:
        try:
            duration_s = parse_duration(args.duration)
        except ValueError as e:
            parser.error(f"--duration: {e}; write it like 600, 90m or 1h30m")
    extra = {name: value for name, value in (
        ("simulator_rate_hz", args.rate), ("simulator_speed", args.speed),
        ("simulator_seed", args.seed), ("simulator_events", args.events)) if value is not None}
    cfg = load_settings(args, extra)
    try:
        events = parse_events(cfg.simulator_events)
    except ValueError as e:
        print(f"rigtel: configuration error: setting simulator_events (from "
              f"{cfg.source('simulator_events')}): {e}", file=sys.stderr)
        return 2
    configure_logging(cfg, "simulator")
    stop = StopSignal().install()

    path = labels_path(cfg)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        labels = open(path, "a", encoding="utf-8")
    except OSError as e:
        log.error("cannot write the simulator's labels to %s: %s. Set simulator_labels_path (or "
                  "data_dir) to a folder this user can write.", path, e.strerror or e)
        return 1

    state_file = simstate.state_path(cfg)
    previous = None
    if args.new_well:
        log.info("--new-well: not continuing any earlier well (%s is replaced)", state_file)
    else:
        try:
            previous = simstate.load(state_file)
        except simstate.StateError as e:
            log.warning("%s: starting a new well, stamped from the clock.", e)

    context = zmq.Context()
    try:
        with labels, Publisher("simulator", settings=cfg, context=context, spool=True) as publisher:
            code = Simulation(cfg, events, publisher, labels, duration_s, previous, state_file).run(stop)
        log.info("stopped%s", f" ({stop.signal_name})" if stop.signal_name else "")
        return code
    finally:
        context.term()  # waits for the publisher's LINGER so the last frames get out
