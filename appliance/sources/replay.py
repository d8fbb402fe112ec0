"""`rigtel replay FILE`: publish a recorded log onto the bus as if it were live.

The file (CSV, WITSML 1.4.1.1 or LAS 2.0: appliance.sources.files) is read as it goes, in
constant memory, and its rows are published on `drilling` in catalogue channels and units,
from the source `<rig_id>.replay` (or `--name`). Before the first row the program waits
until a probe of its own comes back through the broker, so no row is lost to ZeroMQ's slow
joiner when the bus is up (when it is not, it says so and publishes anyway).

Time: by default the first row is stamped now and the others keep their spacing, so the
dashboard shows the file as live data; `--original-time` keeps the file's own times (for
loading history). `--speed N` plays N file seconds per wall second (timestamps then run
ahead of the clock, as the simulator's do); `--speed max` as fast as the bus takes it,
in batches. Depth-indexed logs get the synthetic clock of `--depth-step` seconds per row.

Rows the reader skips (unreadable time, time going back, a cell that is not a number)
are dead-lettered on the `reject` topic — the first MAX_REJECTS_KEPT of them, all counted —
and the curves that map to no catalogue channel are listed at the start; `--extras TOPIC`
publishes those that are numeric on a topic of their own, in the file's units.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any, Sequence

import orjson
import zmq

from appliance.bus.heartbeat import Heartbeat
from appliance.bus.publisher import Publisher, now_ms
from appliance.config import Config
from appliance.ops.runtime import StopSignal, tcp_endpoint
from appliance.sources.files import FORMATS, LogError, RecordedLog, open_log

log = logging.getLogger("rigtel.replay")

DATA_TOPIC = "drilling"
REJECT_TOPIC = "reject"
MAX_REJECTS_KEPT = 1000
TICK_S = 0.05
SUMMARY_S = 10.0


def wait_for_bus(publisher: Publisher, cfg: Config, timeout_s: float, stop: StopSignal) -> bool:
    """Publish probes until one comes back through the broker: the path to subscribers is up.

    The broker forwards every subscription it holds to a publisher as soon as it connects, so
    when our own probe's subscription has arrived, the saver's and the dashboard's have too.
    """
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"sys.probe")
    sub.connect(tcp_endpoint(cfg.bus_host, cfg.broker_backend_port))
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not stop.is_set():
            publisher.publish("sys.probe", {"program": "replay"})
            if sub.poll(100):
                while sub.poll(0):
                    frames = sub.recv_multipart()
                    try:
                        if orjson.loads(frames[-1]).get("src") == publisher.src:
                            return True
                    except orjson.JSONDecodeError:
                        continue
        return False
    finally:
        sub.close()


class Replay:
    def __init__(self, cfg: Config, rec: RecordedLog, publisher: Publisher, stop: StopSignal,
                 speed: float | None, original_time: bool, extras_topic: str | None = None) -> None:
        self.rec = rec
        self.extras_topic = extras_topic
        self.catalogue_names = {m.channel for m in rec.channels.mapped.values()}
        self.extras: list[tuple[int, dict[str, float]]] = []
        self.publisher = publisher
        self.stop = stop
        self.speed = speed  # None: as fast as possible
        self.original_time = original_time
        per_frame = 40 + 32 * max(1, len(rec.channels.mapped))
        self.batch_frames = max(1, min(5000, (cfg.bus_max_message_bytes - 1024) // per_frame))
        self.heartbeat = Heartbeat(publisher, "replay", cfg.bus_heartbeat_s, stats=self.stats)
        self.rows = 0
        self.messages = 0
        self.rejects: list[tuple[int, dict[str, str]]] = []
        self.rejects_seen = 0
        self.file_ts = 0
        self.started = time.monotonic()

    def stats(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {"file": self.rec.path, "rows": self.rows, "rows_per_s": round(self.rows / elapsed, 1),
                "file_time_ms": self.file_ts, "problems": dict(self.rec.problems),
                "rejects_kept": min(self.rejects_seen, MAX_REJECTS_KEPT)}

    def _on_bad(self, reason: str, text: str) -> None:
        self.rejects_seen += 1
        if self.rejects_seen <= MAX_REJECTS_KEPT:
            self.rejects.append((now_ms(), {"reason": f"replay: {reason}", "input": text}))

    def _send(self, batch: list[tuple[int, dict[str, float]]]) -> None:
        if len(batch) == 1:
            self.publisher.publish(DATA_TOPIC, batch[0][1], ts=batch[0][0])
        elif batch:
            self.publisher.publish_batch(DATA_TOPIC, batch)
        if batch:
            self.messages += 1
        if self.extras:
            for i in range(0, len(self.extras), self.batch_frames):
                self.publisher.publish_batch(self.extras_topic, self.extras[i:i + self.batch_frames])
            self.extras.clear()
        if self.rejects:
            for i in range(0, len(self.rejects), 200):
                self.publisher.publish_batch(REJECT_TOPIC, self.rejects[i:i + 200])
            self.rejects.clear()

    def run(self) -> int:
        rows = self.rec.rows(on_bad=self._on_bad, extra=self.extras_topic is not None)
        names = self.catalogue_names
        first_ts: int | None = None
        offset = 0
        wall0 = time.monotonic()
        self.started = wall0
        next_summary = wall0 + SUMMARY_S
        batch: list[tuple[int, dict[str, float]]] = []
        for ts, values in rows:
            if self.stop.is_set():
                break
            if first_ts is None:
                first_ts = ts
                offset = 0 if self.original_time else now_ms() - ts
            self.file_ts = ts
            if self.speed is not None:
                due = wall0 + (ts - first_ts) / 1000.0 / self.speed
                now = time.monotonic()
                if due > now:
                    self._send(batch)
                    batch = []
                    while not self.stop.is_set():  # wait for the row's time, heartbeating
                        self.heartbeat.tick()
                        left = due - time.monotonic()
                        if left <= 0:
                            break
                        self.stop.wait(min(left, self.heartbeat.seconds_to_next() + 0.001, 1.0))
                    if self.stop.is_set():
                        break
            if self.extras_topic is not None:
                extra = {k: v for k, v in values.items() if k not in names}
                if extra:
                    self.extras.append((ts + offset, extra))
                    values = {k: v for k, v in values.items() if k in names}
                if not values:
                    continue
            batch.append((ts + offset, values))
            self.rows += 1
            if len(batch) >= self.batch_frames:
                self._send(batch)
                batch = []
                self.heartbeat.tick()
            if self.rows % 1000 == 0 and time.monotonic() >= next_summary:
                next_summary = time.monotonic() + SUMMARY_S
                self._summary()
        self._send(batch)
        self.heartbeat.next_due = 0.0
        self.heartbeat.tick()  # the final figures
        self._summary(done=not self.stop.is_set())
        return 0

    def _summary(self, done: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        problems = ", ".join(f"{k}: {v}" for k, v in self.rec.problems.items()) or "none"
        log.info("%s%d rows in %d messages in %.1f s (%.0f rows/s); problems: %s; %d dead-lettered",
                 "done: " if done else "", self.rows, self.messages, elapsed, self.rows / max(elapsed, 1e-9),
                 problems, min(self.rejects_seen, MAX_REJECTS_KEPT))


def parse_speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number such as 1 or 60, or 'max'") from None
    if not 0 < v <= 1e6:
        raise argparse.ArgumentTypeError("expected a speed above 0 (1 = real time), or 'max'")
    return v


def parse_map(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        src, sep, channel = item.partition("=")
        if not sep or not src.strip():
            raise argparse.ArgumentTypeError(f"--map {item!r}: expected SOURCE=CHANNEL (or SOURCE= to leave it out)")
        out[src.strip()] = channel.strip()
    return out


def main(argv: Sequence[str]) -> int:
    from appliance.cli import load_settings, settings_parser
    from appliance.ops.runtime import configure_logging

    parser = settings_parser("replay", "Publish a recorded log (CSV, WITSML 1.4.1.1 or LAS 2.0) on 'drilling' "
                                       "as if live, in catalogue channels and units.")
    parser.add_argument("file", metavar="FILE", help="the log to replay")
    parser.add_argument("--format", choices=FORMATS, help="the file's format (default: from its content)")
    parser.add_argument("--speed", type=parse_speed, default=1.0, metavar="N|max",
                        help="file seconds per wall second (default 1, real time), or 'max'")
    parser.add_argument("--original-time", action="store_true",
                        help="keep the file's timestamps (default: the first row is stamped now)")
    parser.add_argument("--depth-step", type=float, default=1.0, metavar="S",
                        help="depth-indexed logs: seconds of the synthetic clock per row (default 1)")
    parser.add_argument("--map", action="append", default=[], metavar="SOURCE=CHANNEL",
                        help="map a curve to a catalogue channel (or SOURCE= to leave it out); repeatable")
    parser.add_argument("--extras", metavar="TOPIC",
                        help="also publish the numeric curves that are not catalogue channels, in the file's "
                             "units, on TOPIC (the saver stores them as TOPIC.MNEMONIC), e.g. Volve's "
                             "RigActivityCode for scoring rig-state detection")
    parser.add_argument("--name", default="replay", help="source name on the bus (default 'replay': "
                                                          "source id <rig_id>.replay)")
    parser.add_argument("--check", action="store_true",
                        help="only read the file and print what each curve becomes; publish nothing")
    args = parser.parse_args(argv)
    try:
        mapping = parse_map(args.map)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    if args.depth_step <= 0:
        parser.error("--depth-step must be above 0")
    if args.extras is not None and (args.extras in ("drilling", "derived", "alert", "reject")
                                    or args.extras.startswith("sys") or not args.extras.strip()
                                    or any(c.isspace() for c in args.extras)):
        parser.error("--extras needs a topic of its own (not drilling, derived, alert, reject or sys.*), "
                     "without spaces, e.g. --extras volve")
    cfg = load_settings(args)
    configure_logging(cfg, "replay")
    try:
        rec = open_log(args.file, args.format, mapping=mapping, depth_step_ms=max(1, round(args.depth_step * 1000)))
    except (LogError, OSError) as e:
        log.error("cannot replay %s: %s", args.file, getattr(e, "strerror", None) or e)
        return 2
    log.info("%s", rec.summary())
    for line in rec.channels.describe():
        log.info("  %s", line)
    if not rec.channels.mapped:
        log.error("no curve of %s maps to a catalogue channel: nothing to replay. Map them with "
                  "--map SOURCE=CHANNEL (docs/DATA.md lists the names understood).", args.file)
        return 2
    if args.check:
        n = sum(1 for _ in rec.rows())
        problems = ", ".join(f"{k}: {v}" for k, v in rec.problems.items()) or "none"
        log.info("checked: %d rows would be published; problems: %s", n, problems)
        return 0

    stop = StopSignal().install()
    context = zmq.Context()
    try:
        with Publisher(args.name, settings=cfg, context=context) as publisher:
            if not wait_for_bus(publisher, cfg, 10.0, stop):
                log.warning("the broker at %s did not answer within 10 s: publishing anyway (rows queue up to "
                            "bus_send_hwm; subscribers that are not there miss them)", publisher.endpoint)
            log.info("ready: replaying %s as %s at speed %s%s", args.file, publisher.src,
                     "max" if args.speed is None else f"{args.speed:g}",
                     " with the file's own times" if args.original_time else "")
            code = Replay(cfg, rec, publisher, stop, args.speed, args.original_time, args.extras).run()
        if stop.signal_name:
            log.info("stopped (%s)", stop.signal_name)
        return code
    finally:
        context.term()
