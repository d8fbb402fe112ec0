"""Publishing onto the bus.

    from appliance.bus import Publisher
    pub = Publisher("mud-logger")          # connects to the broker's XSUB port
    pub.publish("custom_topic", {"shaker_load": 0.7})

Caveats, as with any ZeroMQ PUB socket:
- publish() never blocks. If the broker is down or slow, up to `bus_send_hwm` messages
  queue; beyond that they are dropped here, and subscribers see the gap in `seq`.
- Messages sent before a subscriber's subscription has reached the broker are lost (the
  "slow joiner"): a fresh publisher should not assume its first messages are seen.
- A Publisher belongs to the thread that created it; make one per thread.
- With `spool=True` every message (except `sys.*`) is also written to the source's spool
  (appliance.bus.spool) and served back to the saver when it missed some: pass it for any
  source whose data must not be lost (the simulator, WITS0, file replay). One process per
  source id may spool.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from time import time_ns
from typing import TYPE_CHECKING, Any, Iterable

import zmq

from appliance.bus.envelope import MAX_TS, check_finite, check_topic, encode
from appliance.config import Config, load
from appliance.ops.runtime import tcp_endpoint

if TYPE_CHECKING:
    from appliance.bus.spool import Spool, SpoolServer


SNDMORE = int(zmq.SNDMORE)
log = logging.getLogger("rigtel.bus")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_ts(ts: object, where: str = "") -> None:
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < MAX_TS:
        raise ValueError(f"{where}ts must be whole epoch milliseconds (an int such as "
                         f"time.time_ns() // 1_000_000), not {ts!r}")


class Publisher:
    """Sends envelopes with per-topic sequence numbers to the broker.

    name: this source's name; the source id on the bus is `<rig_id>.<name>`, unique across
    a fleet. Without a name, one is made from the host name and process id.
    endpoint: where to connect; by default the broker's frontend from the settings.
    spool: keep what is published in a durable spool under `spool_dir` and serve it back to
    the saver after a loss (see appliance.bus.spool); `self.spool_endpoint` is then where.
    """

    def __init__(self, name: str | None = None, *, endpoint: str | None = None,
                 settings: Config | None = None, context: zmq.Context | None = None,
                 spool: bool = False) -> None:
        cfg = settings or load()
        self.src = f"{cfg.rig_id}.{name or f'{socket.gethostname()}-{os.getpid()}'}"
        self.boot = uuid.uuid4().hex[:16]
        self.max_message_bytes = cfg.bus_max_message_bytes
        self.endpoint = endpoint or tcp_endpoint(cfg.bus_host, cfg.broker_frontend_port)
        self._seq: dict[str, int] = {}
        self._topics: dict[str, bytes] = {}  # checked topics, encoded
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.setsockopt(zmq.SNDHWM, cfg.bus_send_hwm)
        if cfg.bus_curve_secret_key or cfg.bus_curve_server_key:
            # a publisher on another host: CurveZMQ to the broker's remote endpoint
            from appliance.security.curve import client_keys

            public, secret, server = client_keys(cfg.bus_curve_secret_key, cfg.bus_curve_server_key)
            self._socket.setsockopt(zmq.CURVE_PUBLICKEY, public)
            self._socket.setsockopt(zmq.CURVE_SECRETKEY, secret)
            self._socket.setsockopt(zmq.CURVE_SERVERKEY, server)
        self._socket.connect(self.endpoint)
        self.sent = 0
        self.sent_bytes = 0
        self.spool: Spool | None = None
        self._spool_server: SpoolServer | None = None
        self.spool_endpoint = ""
        if spool:
            try:
                self._start_spool(cfg)
            except (RuntimeError, OSError) as e:
                # publishing matters more than spooling: go on, loudly, without the spool
                log.error("%s publishes WITHOUT a spool, so what the saver misses cannot be fetched "
                          "again: %s", self.src, e)
                self.spool = None
            except BaseException:
                self._socket.close()
                raise

    def _start_spool(self, cfg: Config) -> None:
        from appliance.bus.spool import Spool, SpoolServer
        from appliance.bus.spooldir import spool_folder

        folder = spool_folder(cfg, self.src)
        self.spool = Spool(folder, self.boot, max_bytes=cfg.spool_max_mb * 1024 * 1024,
                           max_age_s=cfg.spool_max_age_h * 3600, fsync_s=cfg.spool_fsync_s)
        self._spool_server = SpoolServer(self.spool, self.src, self.boot, self.endpoint, self._context,
                                         cfg.bus_heartbeat_s).start()
        self.spool_endpoint = self._spool_server.endpoint

    def publish(self, topic: str, data: dict[str, Any], ts: int | None = None) -> int:
        """Publish one frame of `data` at `ts` (UTC epoch ms, default now); returns its seq.

        Raises ValueError for a bad topic, non-dict data, NaN or infinity, or a message
        larger than `bus_max_message_bytes`; TypeError for values JSON cannot carry.
        """
        if not isinstance(data, dict):
            raise ValueError(f"data must be a dict, not {type(data).__name__}")
        if ts is None:
            ts = time_ns() // 1_000_000
        else:
            check_ts(ts)
        return self._send(topic, ts, data, None)

    def publish_batch(self, topic: str, frames: Iterable[tuple[int, dict[str, Any]]]) -> int:
        """Publish many (ts_ms, data) frames in one message; returns its seq."""
        frames = list(frames)
        if not frames:
            raise ValueError("a batch needs at least one frame")
        # the usual batch passes in one comprehension (~0.14 µs a frame, against ~0.6 for a
        # loop calling check_ts); a batch that fails is walked again for the reason
        try:
            suspect = [1 for ts, data in frames
                       if type(data) is not dict or type(ts) is not int or not 0 <= ts < MAX_TS]
        except (TypeError, ValueError):  # a frame that is not a (ts, data) pair
            suspect = [1]
        if suspect:
            for i, (ts, data) in enumerate(frames):
                if not isinstance(data, dict):
                    raise ValueError(f"frame {i}: data must be a dict, not {type(data).__name__}")
                check_ts(ts, f"frame {i}: ")
        return self._send(topic, now_ms(), None, frames)

    def _send(self, topic: str, ts: int, data: dict | None, batch: list | None) -> int:
        """Encode and send one envelope: `data` for one frame, else `batch`.

        Positional arguments all the way to encode(): keyword arguments passed on twice
        cost ~4k of the ~34k CPU instructions a publish() took (callgrind).
        """
        raw_topic = self._topics.get(topic) if type(topic) is str else None
        if raw_topic is None:
            raw_topic = check_topic(topic)
            if len(self._topics) < 1000:
                self._topics[topic] = raw_topic
        seq = self._seq.get(topic, 0) + 1
        payload = encode(self.src, self.boot, seq, ts, data, batch)
        if b"null" in payload:
            # orjson writes NaN and infinities as null: only a payload with a null can hide
            # one, so only then is the data walked (telemetry rarely carries nulls)
            if batch is None:
                check_finite(data)
            else:
                for i, (_, frame) in enumerate(batch):
                    check_finite(frame, f"frame {i}")
        size = len(raw_topic) + len(payload)
        if size > self.max_message_bytes:
            raise ValueError(f"message of {size} bytes exceeds bus_max_message_bytes "
                             f"({self.max_message_bytes}); split it into smaller batches")
        # two send() calls with int flags: half the cost of send_multipart's enum arithmetic
        send = self._socket.send
        send(raw_topic, SNDMORE)
        send(payload)
        if self.spool is not None and not topic.startswith("sys."):
            self.spool.append(topic, raw_topic, seq, payload)
        self._seq[topic] = seq
        self.sent += 1
        self.sent_bytes += size
        return seq

    def close(self) -> None:
        if self._spool_server is not None:
            self._spool_server.stop()
            self._spool_server = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None
        self._socket.close()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
