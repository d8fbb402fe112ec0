"""`rigtel broker`: the XSUB/XPUB proxy at the centre of the bus, with a statistics tap.

Publishers connect to the frontend (XSUB, `broker_frontend_port`), subscribers to the
backend (XPUB, `broker_backend_port`); libzmq's own proxy loop moves the messages, so
the broker adds no Python to the data path. A capture socket offers a copy of every
message to the statistics thread, which reads a sample of them a few times a second
(appliance.bus.tally: exact message counts from sequence numbers, estimated bytes) and
publishes per-topic and per-source figures on `sys.stats`, with a heartbeat on
`sys.heartbeat`.

With `bus_remote_host` set, the frontend also listens there as a CurveZMQ server for
publishers on other hosts, each allowed by its public key (appliance.security.curve);
the loopback ports stay plain.

Caveats:
- Statistics count envelopes with `src`, `boot` and `seq`; other messages are "malformed".
- A message larger than HARD_LIMIT_FACTOR x `bus_max_message_bytes` makes libzmq drop
  that publisher's connection (it reconnects by itself). Messages above the limit but
  under that ceiling pass on so that subscribers can reject and count them.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import zmq

from appliance.bus.heartbeat import Heartbeat
from appliance.bus.publisher import Publisher
from appliance.bus.tally import Tally
from appliance.config import Config
from appliance.ops.runtime import StopSignal, release_freed_memory, tcp_endpoint

log = logging.getLogger("rigtel.broker")

HARD_LIMIT_FACTOR = 16
STATS_TOPIC = "sys.stats"
# Captured messages held for the statistics thread between two reads; more are dropped.
# An inproc queue holds the capture socket's SNDHWM plus the reader's RCVHWM, so each side
# gets half. A quarter of a second at up to 1,000 messages/s is read in full: every topic of
# a real rig (the simulator and replay batch their frames: tens of messages a second) is
# sampled in every interval. Above that the sample is a fraction (~1,000/s over the rate),
# and the counts stay exact from the sequence numbers: a low-rate topic's messages are then
# counted in the interval in which one of them is sampled (tally.FORGET_AFTER keeps such a
# stream the longer the smaller the sampled fraction, so its count does not start again).
# Measured in the bus bench's four-subscriber fan-out (~15k messages/s): 2,000 held (up to
# 8,000 samples/s at ~27k CPU instructions each) cost the broker 2-3 us per frame, a
# quarter of its CPU.
TAP_QUEUE = 250
TAP_PERIOD_S = 0.25


NOBLOCK = int(zmq.NOBLOCK)  # an int: pyzmq converts enum flags on every call


def _drain(sub: zmq.Socket, add) -> None:
    """Hand what the capture queue holds to `add`, a list of frames per message.

    Frames and .more rather than recv_multipart(), whose getsockopt(RCVMORE) per part
    costs more than the receive itself: this runs for up to TAP_QUEUE / TAP_PERIOD_S messages a
    second.
    """
    recv = sub.recv
    for _ in range(2 * TAP_QUEUE):
        try:
            frame = recv(NOBLOCK, copy=False)
        except zmq.Again:
            return
        parts = [frame.bytes]
        while frame.more:
            frame = recv(NOBLOCK, copy=False)
            parts.append(frame.bytes)
        add(parts)


class RemoteKeyError(Exception):
    """The broker's CurveZMQ key files for remote publishers are missing or unusable."""


class Broker:
    def __init__(self, cfg: Config, context: zmq.Context | None = None) -> None:
        self.cfg = cfg
        self.context = context or zmq.Context()
        self.name = f"{id(self):x}"
        self.inproc_frontend = f"inproc://rigtel-broker-{self.name}-frontend"
        self.capture = f"inproc://rigtel-broker-{self.name}-capture"
        self.control = f"inproc://rigtel-broker-{self.name}-control"
        self.frontend = ""  # the bound endpoints, known once ready is set
        self.backend = ""
        self.remote = ""
        self.gatekeeper = None  # the ZAP handler, when remote publishers are allowed
        self.ready = threading.Event()
        self.failed: Exception | None = None
        self._stopping = threading.Event()

    # -- proxy thread -------------------------------------------------------------------

    def _proxy(self) -> None:
        ctx, cfg = self.context, self.cfg
        sockets = []
        try:
            frontend = ctx.socket(zmq.XSUB)
            backend = ctx.socket(zmq.XPUB)
            capture = ctx.socket(zmq.PUB)
            control = ctx.socket(zmq.PAIR)
            sockets = [frontend, backend, capture, control]
            for s in sockets:
                s.setsockopt(zmq.LINGER, 0)
            frontend.setsockopt(zmq.MAXMSGSIZE, cfg.bus_max_message_bytes * HARD_LIMIT_FACTOR)
            frontend.setsockopt(zmq.RCVHWM, cfg.bus_receive_hwm)
            backend.setsockopt(zmq.SNDHWM, cfg.bus_receive_hwm)
            capture.setsockopt(zmq.SNDHWM, TAP_QUEUE // 2)  # the reader holds the other half
            frontend.bind(tcp_endpoint(cfg.bus_bind_host, cfg.broker_frontend_port))
            self.frontend = frontend.getsockopt_string(zmq.LAST_ENDPOINT)
            frontend.bind(self.inproc_frontend)
            if cfg.bus_remote_host:
                self._bind_remote(frontend)
            backend.bind(tcp_endpoint(cfg.bus_bind_host, cfg.broker_backend_port))
            self.backend = backend.getsockopt_string(zmq.LAST_ENDPOINT)
            capture.bind(self.capture)
            control.bind(self.control)
            # Subscribe the frontend to everything: publishers filter by subscription, so
            # without this a topic nobody listens to would never reach the statistics.
            frontend.send(b"\x01")
        except (zmq.ZMQError, RemoteKeyError) as e:
            self.failed = e
            for s in sockets:
                s.close()
            self.ready.set()
            return
        self.ready.set()
        try:
            zmq.proxy_steerable(frontend, backend, capture, control)
        except zmq.ContextTerminated:
            pass
        finally:
            for s in sockets:
                s.close()

    def _bind_remote(self, frontend: zmq.Socket) -> None:
        """Listen for remote publishers: CurveZMQ, keys checked by ZAP. Options set now apply
        to this endpoint only; the loopback ones, bound before, stay plain."""
        # key files (and shutil, tempfile) and ZAP (asyncio): only when remote publishers are on
        from appliance.security.curve import CLIENTS, ZAP_DOMAIN, AllowList, CurveKeyError, broker_keys
        from appliance.security.zap import Gatekeeper

        try:
            public, secret = broker_keys(self.cfg.bus_keys_dir)
            allowed = AllowList(os.path.join(self.cfg.bus_keys_dir, CLIENTS))
        except CurveKeyError as e:
            raise RemoteKeyError(str(e)) from e
        self.gatekeeper = Gatekeeper(self.context, allowed)
        self.gatekeeper.start_for_curve()
        frontend.setsockopt(zmq.CURVE_SERVER, 1)
        frontend.setsockopt(zmq.CURVE_PUBLICKEY, public)
        frontend.setsockopt(zmq.CURVE_SECRETKEY, secret)
        frontend.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        frontend.bind(tcp_endpoint(self.cfg.bus_remote_host, self.cfg.bus_remote_port))
        self.remote = frontend.getsockopt_string(zmq.LAST_ENDPOINT)

    # -- statistics thread --------------------------------------------------------------

    def _stats(self) -> None:
        cfg = self.cfg
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, TAP_QUEUE - TAP_QUEUE // 2)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.capture)
        pub = Publisher("broker", endpoint=self.inproc_frontend, settings=cfg, context=self.context)
        tally = Tally()
        gate = self.gatekeeper
        heartbeat = Heartbeat(pub, "broker", cfg.bus_heartbeat_s,
                              stats=lambda: {"messages": tally.total_messages, "bytes": round(tally.total_bytes),
                                             **({"remote_refused": gate.refused_total} if gate else {})})
        started = last_stats = time.monotonic()
        try:
            # wake a few times a second and take what the small capture queue holds; libzmq
            # drops the rest cheaply, and the sequence numbers keep the counts exact
            while not self._stopping.wait(min(TAP_PERIOD_S, heartbeat.seconds_to_next())):
                _drain(sub, tally.add)
                heartbeat.tick()
                while gate is not None and not gate.refused.empty():
                    address, key, attempts = gate.refused.get()
                    pub.publish("audit", {"event": "bus_key_refused", "user": "", "client": address,
                                          "key": key, "attempts": attempts, "rig": cfg.rig_id})
                now = time.monotonic()
                if now - last_stats >= cfg.bus_stats_s:
                    interval, last_stats = now - last_stats, now
                    try:
                        pub.publish(STATS_TOPIC, {"program": "broker", "interval_s": round(interval, 3),
                                                  "uptime_s": round(now - started, 3), **tally.summary(interval)})
                    except (ValueError, TypeError) as e:  # never let odd traffic end the statistics
                        log.error("cannot publish the bus statistics: %s", e)
                    release_freed_memory()  # what a backlog toward a slow subscriber left
        except zmq.ContextTerminated:
            pass
        finally:
            sub.close()
            pub.close()

    # -- lifecycle ----------------------------------------------------------------------

    def run(self, stop: StopSignal | threading.Event) -> int:
        """Serve until `stop` is set; returns an exit code."""
        proxy = threading.Thread(target=self._proxy, name="broker-proxy")
        proxy.start()
        self.ready.wait()
        if self.failed is not None and self.gatekeeper is not None:
            self.gatekeeper.stop()
        if isinstance(self.failed, RemoteKeyError):
            proxy.join()
            log.error("remote publishers are configured (bus_remote_host = %s) but %s",
                      self.cfg.bus_remote_host, self.failed)
            return 1
        if self.failed is not None:
            proxy.join()
            log.error("cannot bind the bus ports (%s:%d, %s:%d): %s. Another broker may be "
                      "running; `ss -ltnp | grep -E ':(%d|%d)'` shows who holds them, or set "
                      "broker_frontend_port / broker_backend_port.",
                      self.cfg.bus_bind_host, self.cfg.broker_frontend_port,
                      self.cfg.bus_bind_host, self.cfg.broker_backend_port, self.failed,
                      self.cfg.broker_frontend_port, self.cfg.broker_backend_port)
            return 1
        stats = threading.Thread(target=self._stats, name="broker-stats")
        stats.start()
        log.info("ready: frontend %s (publishers), backend %s (subscribers)%s", self.frontend, self.backend,
                 f", remote publishers {self.remote} (CurveZMQ)" if self.remote else "")
        try:
            while not stop.wait(0.5):
                if not proxy.is_alive():
                    log.error("the proxy thread ended unexpectedly")
                    return 1
        finally:
            self._stopping.set()
            control = self.context.socket(zmq.PAIR)
            control.setsockopt(zmq.LINGER, 0)
            control.connect(self.control)
            control.send(b"TERMINATE")
            proxy.join(5)
            stats.join(5)
            control.close()
            if self.gatekeeper is not None:
                self.gatekeeper.stop()
        log.info("stopped")
        return 0


def main(argv: list[str]) -> int:
    from appliance.cli import start_service

    cfg, stop = start_service("broker", "Run the bus broker: publishers connect to the frontend "
                                       "port, subscribers to the backend port.", argv)
    context = zmq.Context()
    try:
        return Broker(cfg, context).run(stop)
    finally:
        context.term()
