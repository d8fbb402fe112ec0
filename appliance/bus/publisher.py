"""Publishing onto the bus.

    from appliance.bus import Publisher
    with Publisher("mud-logger") as pub:   # connects to the broker's XSUB port
        pub.wait_connected()               # the broker's subscription has come back
        pub.publish("custom_topic", {"shaker_load": 0.7})

Caveats, as with any ZeroMQ PUB socket:
- publish() never blocks. If the broker is down or slow, up to `bus_send_hwm` messages
  queue; beyond that they are dropped here, and subscribers see the gap in `seq`.
- A fresh publisher drops what it publishes until the broker's subscription has come back
  over the new connection (the "slow joiner"), silently: no gap, the stream just starts
  later. wait_connected() waits for that; a script that publishes a few messages and exits
  must call it. Likewise a subscriber gets nothing published before its own subscription
  reached the broker.
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

import orjson
import zmq

from appliance.bus.envelope import MAX_TS, check_finite, check_topic, encode
from appliance.config import Config, load
from appliance.ops.runtime import tcp_endpoint

if TYPE_CHECKING:
    from appliance.bus.spool import Spool, SpoolServer


SNDMORE = int(zmq.SNDMORE)
log = logging.getLogger("rigtel.bus")

# wait_connected()'s probes: under sys., so the saver does not store them and no spool keeps
# them. The first few go out quickly (a loopback round trip takes well under a millisecond,
# the probe SUB's own subscription a few), then one every PROBE_EVERY_S.
PROBE_TOPIC = "sys.probe"
PROBE_FIRST_S = 0.005
PROBE_EVERY_S = 0.05


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
    backend: the broker's backend, where wait_connected() listens for its probes; by default
    from the settings when `endpoint` is too. Pass it with a custom `endpoint`.
    spool: keep what is published in a durable spool under `spool_dir` and serve it back to
    the saver after a loss (see appliance.bus.spool); `self.spool_endpoint` is then where.
    """

    def __init__(self, name: str | None = None, *, endpoint: str | None = None,
                 backend: str | None = None, settings: Config | None = None,
                 context: zmq.Context | None = None, spool: bool = False) -> None:
        cfg = settings or load()
        self.src = f"{cfg.rig_id}.{name or f'{socket.gethostname()}-{os.getpid()}'}"
        self.boot = uuid.uuid4().hex[:16]
        self.max_message_bytes = cfg.bus_max_message_bytes
        frontend = tcp_endpoint(cfg.bus_host, cfg.broker_frontend_port)
        self.endpoint = endpoint or frontend
        self.remote = bool(cfg.bus_curve_secret_key or cfg.bus_curve_server_key)
        # the settings' backend belongs to the settings' broker, which a remote publisher
        # cannot reach (it listens on the appliance's loopback)
        self.backend = backend or (tcp_endpoint(cfg.bus_host, cfg.broker_backend_port)
                                   if self.endpoint == frontend and not self.remote else "")
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

    def wait_connected(self, timeout: float = 10.0, *, backend: str | None = None) -> bool:
        """Wait until what is published from now on reaches the broker: True then, False after
        `timeout` seconds (nothing raised; try again, or go on knowing the start may be lost).

        Why: a fresh PUB socket drops what it publishes until the broker's subscription has
        come back over the new connection (ZeroMQ's slow joiner), silently, with no gap to
        see. A script that publishes and exits at once delivers nothing without this.

        How, without sleeping and hoping: a temporary SUB socket on the broker's backend
        (`self.backend`) subscribes to `sys.probe`, and this publisher sends probes there
        through its own socket and sequence numbers (sys.* is neither stored by the saver nor
        spooled), a few quickly and then every 50 ms, until one of its own comes back. The
        broker subscribes its frontend to everything and hands that subscription to a
        publisher first thing on a new connection, ahead of any other, so a probe that made
        the round trip proves this socket has it. Every subscriber whose subscription had
        reached the broker gets what follows. A probe also travels behind everything
        published before it: calling this again confirms that all of that reached the broker.
        Close the publisher before a script ends (a `with` block): ZeroMQ then sends what it
        still holds for up to 1 s (the socket's linger) as the process exits.

        A remote publisher (CurveZMQ, `bus_curve_*` set) cannot reach the backend, which
        listens on the appliance's loopback only: give it `backend=` with a route there (an
        SSH tunnel, say), or it raises ValueError. Nothing weaker is offered in its place: a
        successful CurveZMQ handshake (a socket monitor's event) comes before the broker's
        subscription: a message published at once after it was lost in 9 of 40 tries on
        loopback (in 40 of 40 without any wait).

        backend: the broker's backend endpoint, kept for later calls; by default the one given
        to the constructor or, without a custom `endpoint`, the settings'. Raises ValueError
        when it is unknown (a publisher given `endpoint=` needs `backend=` too) or for a
        timeout that is not 0 or more seconds.
        """
        if not timeout >= 0:
            raise ValueError(f"timeout must be seconds, 0 or more, not {timeout!r}")
        if backend:
            self.backend = backend
        if self.backend:
            return self._round_trip(self.backend, timeout)
        if self.remote:
            raise ValueError(f"wait_connected() needs a route to the broker's backend, which a remote "
                             f"(CurveZMQ) publisher to {self.endpoint} does not have: the backend listens "
                             "on the appliance's loopback. Pass Publisher(..., backend='tcp://HOST:PORT') "
                             "through an SSH tunnel to it, or publish without the confirmation")
        raise ValueError(f"wait_connected() does not know the broker's backend for {self.endpoint}: "
                         "pass Publisher(..., backend='tcp://HOST:PORT') with endpoint=")

    def _round_trip(self, backend: str, timeout: float) -> bool:
        """Send probes until one sent in this call comes back through the broker."""
        sub = self._context.socket(zmq.SUB)
        try:
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, PROBE_TOPIC.encode())
            sub.connect(backend)
            first = self._seq.get(PROBE_TOPIC, 0) + 1
            deadline = time.monotonic() + timeout
            interval = PROBE_FIRST_S
            while True:
                self._send(PROBE_TOPIC, now_ms(), {"probe": "wait_connected"}, None)
                if self._probe_back(sub, first, min(time.monotonic() + interval, deadline)):
                    return True
                if time.monotonic() >= deadline:
                    return False
                interval = min(interval * 2, PROBE_EVERY_S)
        finally:
            sub.close()

    def _probe_back(self, sub: zmq.Socket, first_seq: int, until: float) -> bool:
        """Read probes until `until` (monotonic s); True at one of ours with seq >= first_seq.
        Other publishers' probes come too: `sys.probe` is shared."""
        while True:
            left = until - time.monotonic()
            if left <= 0 or not sub.poll(left * 1000):
                return False
            frames = sub.recv_multipart()
            try:
                env = orjson.loads(frames[-1])
            except orjson.JSONDecodeError:
                continue
            if (len(frames) == 2 and isinstance(env, dict) and env.get("src") == self.src
                    and env.get("boot") == self.boot and isinstance(env.get("seq"), int)
                    and env["seq"] >= first_seq):
                return True

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
