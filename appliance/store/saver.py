"""`rigtel saver`: the single writer, from the bus into SQLite.

Subscribes to every topic except `sys.*`, collects messages for at most `saver_flush_ms`
(or `saver_batch_frames` frames) and commits them in one transaction with the last
sequence number of each stream. On start it reads those positions back, so the first
message of each stream after a restart shows exactly which sequence numbers were
missed while it was down. Every gap is fetched from the source's spool when it keeps one
(appliance.store.recovery; the sources announce their spools on `sys.spool`) and stored
in order like live messages; what cannot be fetched is recorded lost in `gaps` and raised
as a `data_gap` alert. Rejected messages, refused values and repeated messages go to
`dead_letters` with their reason. SIGTERM commits what is waiting and exits 0.

While commits fail (a full disk) the saver keeps its batch and retries every second, but
holds at most `saver_max_pending_frames` frames: beyond that each message is shed — its
sequence number goes into a pending gap instead of memory, to be fetched from the
source's spool once a commit works again (or recorded lost, with an alert, when the
source keeps none) — fetching pauses, rejected messages are counted instead of kept, and
a `saver-backlog` alert says how much waits in the spools. Nothing is dropped silently.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Sequence

from appliance.bus.envelope import Envelope, Frame
from appliance.bus.heartbeat import Heartbeat
from appliance.bus.publisher import Publisher
from appliance.bus.sequence import Gap
from appliance.bus.subscriber import DataSubscriber, Reject
from appliance.config import Config
from appliance.bus.spool import ANNOUNCE_TOPIC
from appliance.store.recovery import Recovery
from appliance.store.writer import Batch, Writer, now_ms

log = logging.getLogger("rigtel.saver")

SKIP_PREFIX = "sys."
RETRY_S = 1.0
BACKLOG_ALERT = "saver-backlog"
SHUTDOWN_S = 10.0  # supervisord waits stopwaitsecs = 15 s before SIGKILL


class Saver(DataSubscriber):
    def __init__(self, cfg: Config, writer: Writer, publisher: Publisher | None = None, **kwargs) -> None:
        super().__init__(topics=[""], settings=cfg, **kwargs)
        self.writer = writer
        self.flush_s = cfg.saver_flush_ms / 1000
        self.batch_frames = cfg.saver_batch_frames
        self.max_pending_frames = cfg.saver_max_pending_frames
        self.shedding = False
        self.shed = {"messages": 0, "frames": 0, "dead_letters": 0}  # this episode
        self.shed_total = 0  # messages, since the start
        self.batch = Batch()
        self._gaps_in_batch: set[int] = set()  # ids of the gap records in self.batch
        self.pending_frames = 0
        self.oldest_pending = 0.0
        self.retry_at = 0.0
        self.commits = 0
        self.last_commit_ms = 0
        self.publisher = publisher
        self.own_src = publisher.src if publisher else f"{cfg.rig_id}.saver"
        self._own_alerts = 0
        self.heartbeat = Heartbeat(publisher, "saver", cfg.bus_heartbeat_s, stats=self.summary) if publisher else None
        # where each stream stopped last time: the next message tells what was missed
        positions = writer.stream_positions()
        for src, boot, topic, last_seq, _ in positions:
            self.tracker.last[(src, boot, topic)] = last_seq
            self.tracker.boots[(src, topic)] = boot
        pending = writer.pending_gaps()
        known = {(src, boot, topic): last for src, boot, topic, last, _ in positions}
        for g in pending:
            known[(g.src, g.boot, g.topic)] = max(known.get((g.src, g.boot, g.topic), 0), g.last_seq)
        self.recovery = Recovery(wait_s=cfg.spool_recovery_wait_s, announce_s=cfg.bus_heartbeat_s,
                                 max_message_bytes=cfg.bus_max_message_bytes, context=kwargs.get("context"),
                                 known=known, pending=pending)

    def summary(self) -> dict:
        t = self.writer.totals
        r = self.recovery
        return {"commits": self.commits, "frames": t.frames, "values": t.values, "events": t.events,
                "alerts": t.alerts, "thresholds": t.thresholds, "dead_letters": t.dead_letters, "gaps": t.gaps,
                "pending_frames": self.pending_frames, "last_commit_ms": self.last_commit_ms,
                "recovered": r.stats["recovered"], "lost": r.stats["lost"],
                "pending_gaps": len(r.pending), "spools": len(r.endpoints), "duplicates": r.stats["duplicates"],
                "shed": self.shed_total}

    # -- collecting -----------------------------------------------------------------------

    def _pending(self, frames: int) -> None:
        if not self.batch:
            self.oldest_pending = time.monotonic()
        self.pending_frames += frames

    def on_envelope(self, env: Envelope) -> None:
        if env.topic == "alert" and self._own(env.src, env.boot):
            return  # stored when it was raised
        if env.topic.startswith(SKIP_PREFIX):
            self.recovery.heard(env.src)
            if env.topic == ANNOUNCE_TOPIC:
                self._add_gaps(self.recovery.on_announcement(env, self._last_seen))
            return
        if self.recovery.active:
            claimed = self.recovery.claim(env.src, env.boot, env.topic, env.seq)
            if claimed is not None:
                verdict, changed = claimed
                if verdict == "duplicate":  # its copy was fetched from the spool and is stored
                    return
                self._add_gaps(changed)
        if self._at_bound():
            self._shed(env)
            return
        self._pending(len(env.frames))
        self.batch.envelopes.append(env)
        if self.pending_frames >= self.batch_frames and time.monotonic() >= self.retry_at:
            self.flush()

    def _own(self, src: str, boot: str) -> bool:
        """A stream of this saver's own alerts: stored as raised, never fetched."""
        return self.publisher is not None and boot == self.publisher.boot and src == self.publisher.src

    def on_gap(self, gap: Gap) -> None:
        if gap.topic.startswith(SKIP_PREFIX) or self._own(gap.src, gap.boot):
            return
        super().on_gap(gap)
        self._add_gaps([self.recovery.add_gap(gap.src, gap.boot, gap.topic, gap.first_missing,
                                              gap.last_missing, now_ms())])

    def _last_seen(self, key: tuple[str, str, str]) -> int:
        return max(self.tracker.last.get(key, 0), self.tracker.ended.get(key, 0))

    def _add_gaps(self, records: list) -> None:
        records = [r for r in records if r.id is not None or not r.empty]
        if records:
            self._pending(0)
            for r in records:
                if id(r) not in self._gaps_in_batch:
                    self._gaps_in_batch.add(id(r))
                    self.batch.gaps.append(r)

    def on_first(self, env: Envelope) -> None:
        self._joined(env)

    def on_restart(self, env: Envelope) -> None:
        super().on_restart(env)
        self._joined(env)

    def _joined(self, env: Envelope) -> None:
        """A stream met after its start: what came before is not stored, and is recorded so."""
        if env.seq > 1 and not env.topic.startswith(SKIP_PREFIX) and not self._own(env.src, env.boot):
            log.warning("%s on %r first seen at seq %d: seq 1..%d are not in the database",
                        env.src, env.topic, env.seq, env.seq - 1)
            self._add_gaps([self.recovery.add_gap(env.src, env.boot, env.topic, 1, env.seq - 1, now_ms(),
                                                  "before it was first seen")])

    def on_late(self, env: Envelope) -> bool:
        if env.topic.startswith(SKIP_PREFIX):
            return False
        if self.recovery.is_pending(env.src, env.boot, env.topic, env.seq):
            return True  # late, but a gap waits for it: on_envelope stores it
        last = self.tracker.last.get((env.src, env.boot, env.topic))
        if self._full():
            return False
        self._pending(1)
        self.batch.refused.append((now_ms(), env.topic, env.src, env.seq,
                                   f"repeated or out of order: seq {env.seq} after {last}",
                                   env.size, b""))
        return False

    def on_reject(self, reject: Reject) -> None:
        if self._full():
            return
        self._pending(1)
        self.batch.rejects.append(reject)

    # -- no room: the database cannot take what arrives --------------------------------------

    def _full(self) -> bool:
        """Whether the batch is at its bound; a dead letter that finds it so is counted, not kept
        (it is not data a spool could give back)."""
        if not self._at_bound():
            return False
        self._start_shedding()
        self.shed["dead_letters"] += 1
        return True

    def _at_bound(self) -> bool:
        """The batch holds saver_max_pending_frames and cannot be committed now."""
        if self.pending_frames < self.max_pending_frames:
            return False
        return not (time.monotonic() >= self.retry_at and self.flush())

    def _shed(self, env: Envelope) -> None:
        """No room for `env`: its sequence number joins a pending gap, fetched later."""
        self._start_shedding()
        self.shed["messages"] += 1
        self.shed["frames"] += len(env.frames)
        self.shed_total += 1
        self._add_gaps([self.recovery.shed(env.src, env.boot, env.topic, env.seq, now_ms())])

    def _start_shedding(self) -> None:
        if self.shedding:
            return
        self.shedding = True
        self.recovery.hold()
        message = (f"the database cannot be written and {self.pending_frames:,} frames wait in memory "
                   f"(saver_max_pending_frames): newer messages are left in the sources' spools and "
                   f"will be fetched once it can be written again; free space on the disk of the database")
        log.error("%s", message)
        self._raise({"id": BACKLOG_ALERT, "kind": "saver_backlog", "state": "active_unack", "priority": "high",
                     "message": message})

    def _stop_shedding(self) -> None:
        """The batch committed: fetch what was shed, say how much it was."""
        shed = self.shed
        self.shedding = False
        self.shed = {"messages": 0, "frames": 0, "dead_letters": 0}
        self.recovery.release()
        message = (f"the database is written again: {shed['messages']:,} message(s) ({shed['frames']:,} frames) "
                   f"were left in the sources' spools and are fetched now; what a source without a spool cannot "
                   f"give back is recorded lost in the gaps table"
                   + (f"; {shed['dead_letters']:,} rejected message(s) could not be kept as dead letters"
                      if shed["dead_letters"] else ""))
        log.warning("%s", message)
        self._raise({"id": BACKLOG_ALERT, "kind": "saver_backlog", "state": "cleared_unack", "priority": "high",
                     "message": message, "shed_messages": shed["messages"], "shed_frames": shed["frames"],
                     "dead_letters_not_kept": shed["dead_letters"]})

    # -- recovering -------------------------------------------------------------------------

    def recover(self) -> None:
        """Store what the sources' spools sent back; raise the alerts for what they could not."""
        if self.shedding:
            return  # nothing fetched could be stored
        outcome = self.recovery.poll()
        if outcome.envelopes:
            self._pending(sum(len(e.frames) for e in outcome.envelopes))
            self.batch.envelopes.extend(outcome.envelopes)
            self.stats["frames"] += sum(len(e.frames) for e in outcome.envelopes)
        self._add_gaps(outcome.records)
        for alert in outcome.alerts:
            self._raise(alert)

    def _raise(self, alert: dict) -> None:
        """Store an alert of the saver's own in the next batch, and publish it for the
        dashboard and the logger (its echo from the bus is not stored twice)."""
        ts = now_ms()
        if self.publisher is not None:
            src, boot = self.publisher.src, self.publisher.boot
            seq = self.publisher.publish("alert", alert, ts=ts)
        else:
            self._own_alerts += 1
            src, boot, seq = self.own_src, "local", self._own_alerts
        self._pending(1)
        self.batch.envelopes.append(Envelope("alert", src, boot, seq, ts, (Frame(ts, alert),), 0))

    # -- committing -----------------------------------------------------------------------

    def on_idle(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.tick()
        self.recover()
        now = time.monotonic()
        if self.batch and now - self.oldest_pending >= self.flush_s and now >= self.retry_at:
            self.flush()

    def flush(self) -> bool:
        """Commit what is waiting; on a database error keep it and retry shortly."""
        if not self.batch:
            return True
        try:
            self.writer.commit(self.batch)
        except Exception as e:
            if retryable(e):
                self.retry_at = time.monotonic() + RETRY_S
                log.error("cannot commit %d message(s) (%s); keeping them and retrying in %.0f s",
                          len(self.batch.envelopes), e, RETRY_S)
                return False
            # something in the batch itself cannot be stored: find it, keep the rest
            log.error("a batch of %d message(s) failed (%s: %s); committing them one by one",
                      len(self.batch.envelopes), type(e).__name__, e)
            if not self._commit_one_by_one():
                return False
        self.commits += 1
        self.last_commit_ms = now_ms()
        self.batch = Batch()
        self._gaps_in_batch = set()
        self.pending_frames = 0
        if self.shedding:
            self._stop_shedding()
        return True

    def _commit_one_by_one(self) -> bool:
        """Commit each message alone; those that still fail go to the dead letters."""
        batch = self.batch
        for i, env in enumerate(batch.envelopes):
            try:
                self.writer.commit(Batch([env]))
            except Exception as e:
                if retryable(e):  # the database went away meanwhile: keep the rest for later
                    batch.envelopes = batch.envelopes[i:]
                    self.retry_at = time.monotonic() + RETRY_S
                    return False
                log.error("message seq %d from %s on %r cannot be stored: %s", env.seq, env.src, env.topic, e)
                batch.refused.append((now_ms(), env.topic, env.src, env.seq,
                                      f"could not be stored: {type(e).__name__}: {e}"[:500], env.size, b""))
        batch.envelopes = []
        try:
            self.writer.commit(batch)  # gaps, rejects and the refused
        except Exception as e:
            self.retry_at = time.monotonic() + RETRY_S
            log.error("cannot commit dead letters and gaps (%s); retrying", e)
            return False
        return True


RETRYABLE_CODES = {5, 6, 10, 13, 14}  # SQLITE_BUSY, LOCKED, IOERR, FULL, CANTOPEN


def retryable(e: Exception) -> bool:
    """Whether a failed commit is the database's trouble (wait and retry) rather than the data's."""
    return isinstance(e, sqlite3.Error) and (getattr(e, "sqlite_errorcode", 0) & 0xFF) in RETRYABLE_CODES


def main(argv: Sequence[str]) -> int:
    from appliance.cli import start_service

    cfg, stop = start_service("saver", "Store everything on the bus (except sys.*) in the SQLite "
                                      "database at database_path.", argv)
    try:
        writer = Writer(cfg.database_path)
    except (sqlite3.Error, OSError, RuntimeError) as e:
        log.error("cannot open the database %s: %s. Check database_path and that the folder is "
                  "writable by this user.", cfg.database_path, e)
        return 1
    try:
        with Publisher("saver", settings=cfg) as pub:
            saver = Saver(cfg, writer, pub, stop_event=stop.event)
            log.info("ready: writing %s, listening on %s (%d stream position(s) restored)",
                     cfg.database_path, saver.endpoint, len(saver.tracker.last))
            try:
                saver.start()
            finally:
                saver.recovery.close()
            # SIGTERM: commit what is waiting before leaving, within supervisord's stopwaitsecs
            writer.db.execute("PRAGMA busy_timeout = 3000")
            deadline = time.monotonic() + SHUTDOWN_S
            while not saver.flush():
                if time.monotonic() + RETRY_S > deadline:
                    log.error("exiting with %d uncommitted message(s); they will show as a gap",
                              len(saver.batch.envelopes))
                    return 1
                time.sleep(RETRY_S)  # a retry back-off, not a wait for readiness
    finally:
        writer.close()
    log.info("stopped: %s", saver.summary())
    return 0
