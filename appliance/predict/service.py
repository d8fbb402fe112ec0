"""`rigtel predictor`: runs the predictor engine on the bus.

Subscribes to `drilling` (channel frames), `alert` (operators' acks and shelves) and
`control.thresholds` (limit changes from the dashboard). Publishes:

- `derived`: RIGSTATE, ONBOTTOM, MSE, PITDEV ... as channel frames, the same format as
  `drilling`, so the saver stores them as channels and the dashboard can plot them; every
  1/`predictor_derived_hz` seconds of data time and at every rig-state change;
- `alert`: alarm lifecycle events (appliance.predict.alarms), each stamped with the time
  of the sample that caused it.

At start it reads, read-only, the latest limits per channel (`store.read.current_thresholds`)
and the alarms its previous run left raised, so a restart neither forgets limits nor
leaves stale alarms standing. A frame or limit set it cannot use is counted and logged,
never allowed to stop it.

Caveats: frames published before this program's subscription reaches the broker are not
seen (ZeroMQ's slow joiner); the engine assumes one rig's data stream on `drilling` and
counts frames older than the newest it has seen as `late` (they only refresh values).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Any, Sequence

from appliance.bus.envelope import Envelope
from appliance.bus.heartbeat import Heartbeat
from appliance.bus.publisher import Publisher
from appliance.bus.subscriber import DataSubscriber
from appliance.config import Config
from appliance.predict.engine import THRESHOLD_TOPIC, Predictor
from appliance.predict.params import from_config
from appliance.predict.states import CODE

log = logging.getLogger("rigtel.predictor")

DATA_TOPIC = "drilling"
DERIVED_TOPIC = "derived"
ALERT_TOPIC = "alert"
TOPICS = (DATA_TOPIC, ALERT_TOPIC, THRESHOLD_TOPIC)
MAX_BATCH = 500  # derived frames per message


def _numbers(data: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class PredictorService(DataSubscriber):
    def __init__(self, cfg: Config, publisher: Publisher, predictor: Predictor | None = None, **kwargs) -> None:
        super().__init__(topics=list(TOPICS), settings=cfg, **kwargs)
        self.publisher = publisher
        self.predictor = predictor or Predictor(from_config(cfg))
        self.period_ms = 1000.0 / cfg.predictor_derived_hz
        self.next_derived_ms = 0
        self.last_state: str | None = None
        self.counts = {"frames": 0, "derived": 0, "alerts": 0, "thresholds": 0, "refused": 0, "operator_events": 0}
        self.heartbeat = Heartbeat(publisher, "predictor", cfg.bus_heartbeat_s, stats=self.summary)

    def summary(self) -> dict[str, Any]:
        return {**self.counts, **self.predictor.stats()}

    # -- start-up -------------------------------------------------------------------------

    def load_state(self, database_path: str) -> None:
        """Limits and left-over alarms from the database, if there is one yet."""
        if not os.path.exists(database_path):
            log.info("no database at %s yet: starting with no limits and no alarms to take over", database_path)
            return
        from appliance.store import read
        from appliance.store.schema import connect_reader
        try:
            db = connect_reader(database_path)
            try:
                limits = read.current_thresholds(db)
                left = read.latest_alerts_of(db, self.publisher.src)
            finally:
                db.close()
        except sqlite3.Error as e:
            log.warning("cannot read limits and alarms from %s (%s): starting without them", database_path, e)
            return
        for channel, lim in limits.items():
            try:
                self.predictor.set_threshold(channel, lim)
            except ValueError as e:
                log.warning("stored limits for %s are unusable (%s): ignored", channel, e)
        self.predictor.restore(left)
        log.info("limits for %d channel(s); %d alarm(s) taken over from the previous run",
                 len(self.predictor.limits.limits), len(self.predictor.book.records))

    # -- the bus --------------------------------------------------------------------------

    def on_envelope(self, env: Envelope) -> None:
        if self._stop.is_set():
            return  # stopping: a backlog is not worked off (supervisord waits only stopwaitsecs)
        topic = env.topic
        if topic == DATA_TOPIC:
            self._frames(env)
        elif topic == ALERT_TOPIC:
            if env.src == self.publisher.src:
                return  # our own events coming back
            for frame in env.frames:
                self.counts["operator_events"] += 1
                self._publish_alerts(frame.ts, self.predictor.apply(frame.data))
        elif topic == THRESHOLD_TOPIC:
            for frame in env.frames:
                try:
                    self.predictor.apply(frame.data, THRESHOLD_TOPIC)
                    self.counts["thresholds"] += 1
                    log.info("limits for %s set by %s: %s", frame.data.get("channel"), frame.data.get("by", "?"),
                             {k: frame.data.get(k) for k in ("hh", "h", "l", "ll", "deadband", "priority")})
                except ValueError as e:
                    self.counts["refused"] += 1
                    log.warning("limit change from %s refused: %s", env.src, e)
        self.heartbeat.tick()

    def _frames(self, env: Envelope) -> None:
        derived: list[tuple[int, dict[str, float]]] = []
        step = self.predictor.step
        for frame in env.frames:
            self.counts["frames"] += 1
            ts = frame.ts
            r = step(ts, _numbers(frame.data))
            if r.alerts:
                self._publish_alerts(ts, r.alerts)
            if r.derived and (ts >= self.next_derived_ms or r.state != self.last_state):
                if r.state != self.last_state and self.last_state is not None:
                    log.debug("rig state %s -> %s", self.last_state, r.state)
                self.last_state = r.state
                self.next_derived_ms = ts + self.period_ms
                derived.append((ts, r.derived))
                if len(derived) >= MAX_BATCH:
                    self._publish_derived(derived)
                    derived = []
        if derived:
            self._publish_derived(derived)

    def _publish_derived(self, frames: list[tuple[int, dict[str, float]]]) -> None:
        self.counts["derived"] += len(frames)
        if len(frames) == 1:
            self.publisher.publish(DERIVED_TOPIC, frames[0][1], ts=frames[0][0])
        else:
            self.publisher.publish_batch(DERIVED_TOPIC, frames)

    def _publish_alerts(self, ts: int, events: list[dict[str, Any]]) -> None:
        for e in events:
            self.counts["alerts"] += 1
            level = logging.WARNING if e["state"] == "active_unack" else logging.INFO
            log.log(level, "alert %s %s (%s): %s", e["id"], e["state"], e["action"], e.get("message", ""))
            self.publisher.publish(ALERT_TOPIC, e, ts=ts)

    def on_idle(self) -> None:
        self.heartbeat.tick()


def main(argv: Sequence[str]) -> int:
    from appliance.cli import start_service

    cfg, stop = start_service(
        "predictor", "Watch the drilling data: rig state, derived channels (MSE, pit gain, ...) on "
                     "'derived', and kick, loss, washout, pack-off and sensor alarms on 'alert'.", argv)
    with Publisher("predictor", settings=cfg, spool=True) as pub:
        service = PredictorService(cfg, pub, stop_event=stop.event)
        service.load_state(cfg.database_path)
        log.info("ready: listening on %s for %s (rig states: %d)", service.endpoint, ", ".join(TOPICS), len(CODE))
        service.start()
        s = service.summary()
        log.info("processed %d frames, published %d derived frames and %d alert events",
                 s["frames"], s["derived"], s["alerts"])
    log.info("stopped")
    return 0
