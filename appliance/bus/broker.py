"""`rigtel broker`: the XSUB/XPUB proxy at the centre of the bus, with a statistics tap.

Publishers connect to the frontend (XSUB, `broker_frontend_port`), subscribers to the
backend (XPUB, `broker_backend_port`); libzmq's own proxy loop moves the messages, so
the broker adds no Python to the data path. A capture socket hands a copy of every
message to the statistics thread, which counts messages and bytes per topic and per
source and publishes them on `sys.stats`, with a heartbeat on `sys.heartbeat`.

Caveats:
- The capture socket drops when the statistics thread falls behind, so under overload
  the statistics can undercount; the data path is never slowed by them.
- A message larger than HARD_LIMIT_FACTOR x `bus_max_message_bytes` makes libzmq drop
  that publisher's connection (it reconnects by itself). Messages above the limit but
  under that ceiling pass on so that subscribers can reject and count them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import zmq

from appliance.bus.heartbeat import Heartbeat
from appliance.bus.publisher import Publisher
from appliance.config import Config
from appliance.ops.runtime import StopSignal, tcp_endpoint

log = logging.getLogger("rigtel.broker")

HARD_LIMIT_FACTOR = 16
STATS_TOPIC = "sys.stats"
SRC_MARK = b'"src":"'


def source_of(payload: bytes) -> str:
    """The `src` of an envelope, found without parsing the JSON (the tap sees every message)."""
    start = payload.find(SRC_MARK, 0, 200)
    if start < 0:
        return "?"
    start += len(SRC_MARK)
    end = payload.find(b'"', start, start + 130)
    return payload[start:end].decode("utf-8", "replace") if end > 0 else "?"


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
            capture.setsockopt(zmq.SNDHWM, cfg.bus_receive_hwm)
            frontend.bind(tcp_endpoint(cfg.bus_bind_host, cfg.broker_frontend_port))
            self.frontend = frontend.getsockopt_string(zmq.LAST_ENDPOINT)
            frontend.bind(self.inproc_frontend)
            backend.bind(tcp_endpoint(cfg.bus_bind_host, cfg.broker_backend_port))
            self.backend = backend.getsockopt_string(zmq.LAST_ENDPOINT)
            capture.bind(self.capture)
            control.bind(self.control)
            # Subscribe the frontend to everything: publishers filter by subscription, so
            # without this a topic nobody listens to would never reach the statistics.
            frontend.send(b"\x01")
        except zmq.ZMQError as e:
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

    # -- statistics thread --------------------------------------------------------------

    def _stats(self) -> None:
        cfg = self.cfg
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, cfg.bus_receive_hwm)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.capture)
        pub = Publisher("broker", endpoint=self.inproc_frontend, settings=cfg, context=self.context)
        topics: Counter[str] = Counter()
        topic_bytes: Counter[str] = Counter()
        sources: Counter[str] = Counter()
        totals = Counter(messages=0, bytes=0, subscriptions=0, malformed=0)
        heartbeat = Heartbeat(pub, "broker", cfg.bus_heartbeat_s,
                              stats=lambda: {"messages": totals["messages"], "bytes": totals["bytes"]})
        started = last_stats = time.monotonic()
        count = self._count
        try:
            while not self._stopping.is_set():
                timeout_ms = int(1000 * min(heartbeat.seconds_to_next(), 0.2)) + 1
                if sub.poll(timeout_ms):
                    for _ in range(10_000):
                        try:
                            # one call per message: cheaper than per-frame zero-copy receives
                            parts = sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        count(parts, topics, topic_bytes, sources, totals)
                heartbeat.tick()
                now = time.monotonic()
                if now - last_stats >= cfg.bus_stats_s:
                    interval = now - last_stats
                    last_stats = now
                    pub.publish(STATS_TOPIC, self._stats_body(
                        interval, now - started, topics, topic_bytes, sources, totals))
                    topics.clear()
                    topic_bytes.clear()
                    sources.clear()
        except zmq.ContextTerminated:
            pass
        finally:
            sub.close()
            pub.close()

    @staticmethod
    def _count(parts: list[bytes], topics: Counter, topic_bytes: Counter,
               sources: Counter, totals: Counter) -> None:
        if len(parts) == 1 and parts[0][:1] in (b"\x00", b"\x01"):
            totals["subscriptions"] += 1  # a (un)subscription travelling upstream
            return
        size = sum(len(p) for p in parts)
        totals["messages"] += 1
        totals["bytes"] += size
        if len(parts) != 2:
            totals["malformed"] += 1
            return
        topic = parts[0][:64].decode("utf-8", "replace")
        topics[topic] += 1
        topic_bytes[topic] += size
        sources[source_of(parts[1])] += 1

    @staticmethod
    def _stats_body(interval: float, uptime: float, topics: Counter, topic_bytes: Counter,
                    sources: Counter, totals: Counter) -> dict[str, Any]:
        return {
            "program": "broker",
            "interval_s": round(interval, 3),
            "uptime_s": round(uptime, 3),
            "topics": {t: {"messages": n, "bytes": topic_bytes[t], "per_s": round(n / interval, 2)}
                       for t, n in topics.most_common(100)},
            "sources": dict(sources.most_common(100)),
            "publishers_seen": len(sources),
            "total_messages": totals["messages"],
            "total_bytes": totals["bytes"],
            "subscriptions": totals["subscriptions"],
            "malformed": totals["malformed"],
        }

    # -- lifecycle ----------------------------------------------------------------------

    def run(self, stop: StopSignal | threading.Event) -> int:
        """Serve until `stop` is set; returns an exit code."""
        proxy = threading.Thread(target=self._proxy, name="broker-proxy")
        proxy.start()
        self.ready.wait()
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
        log.info("ready: frontend %s (publishers), backend %s (subscribers)", self.frontend, self.backend)
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
        log.info("stopped")
        return 0


def main(argv: list[str]) -> int:
    from appliance.cli import load_settings, settings_parser
    from appliance.ops.runtime import configure_logging

    parser = settings_parser("broker", "Run the bus broker: publishers connect to the frontend "
                                       "port, subscribers to the backend port.")
    cfg = load_settings(parser.parse_args(argv))
    configure_logging(cfg, "broker")
    stop = StopSignal().install()
    context = zmq.Context()
    try:
        return Broker(cfg, context).run(stop)
    finally:
        context.term()
