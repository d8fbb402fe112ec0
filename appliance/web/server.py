"""`rigtel web`: the dashboard over HTTPS, with a plain HTTP port that only redirects.

waitress serves the Flask app on a loopback port of its own (told the scheme is https);
the TLS front (appliance.web.front) listens on `web_host:web_port` and forwards to it,
carrying the real client address through. One LiveHub (one bus subscription) per process
feeds every browser's live stream. Each open stream holds a waitress thread, so
`web_max_streams` stays below `web_threads`.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Sequence

log = logging.getLogger("rigtel.web")
OUTBUF_HIGH_WATERMARK = 1 << 16  # bytes of a response buffered per connection (see create_server below)


def main(argv: Sequence[str]) -> int:
    from waitress.server import create_server

    from appliance.bus.heartbeat import Heartbeat
    from appliance.cli import start_service
    from appliance.web.app import BusLink, create_app
    from appliance.web.front import ClientAddress, PeerMap, TLSFront, redirect_app
    from appliance.web.hub import LiveHub

    cfg, stop = start_service("web", "Serve the dashboard and its JSON API over HTTPS.", argv)
    if cfg.web_max_streams >= cfg.web_threads:
        log.error("web_max_streams (%d) must be below web_threads (%d): each live stream holds a "
                  "thread and the rest serve pages and the API", cfg.web_max_streams, cfg.web_threads)
        return 2
    peers = PeerMap()
    hub = LiveHub(cfg, cfg.web_max_streams)
    bus = BusLink(cfg)
    app = create_app(cfg, hub=hub, bus=bus)
    servers = []
    try:
        inner = create_server(ClientAddress(app, peers, cfg.web_trusted_proxy), host="127.0.0.1", port=0,
                              threads=cfg.web_threads, _dispatcher=task_dispatcher(cfg.web_threads),
                              url_scheme="https", ident="rigtel",
                              connection_limit=cfg.web_max_connections + 10, channel_timeout=60,
                              cleanup_interval=10, expose_tracebacks=cfg.web_debug,
                              # waitress keeps a response's sent bytes in its buffer until that has
                              # taken this much (16 MB by default): a live stream's memory would saw
                              # up and down by 16 MB each, and a slow reader would be 16 MB behind
                              # before the hub's per-stream queue skipped it forward. 64 KB: a live
                              # stream (~20 KB/s at 100 Hz) rotates its buffer every few seconds
                              # (1 MB held +0.5 MiB RSS per stream after 90 s); a big response is
                              # one write and is not split by it
                              outbuf_high_watermark=OUTBUF_HIGH_WATERMARK)
        servers.append(inner)
        front = TLSFront(cfg.web_host, cfg.web_port, ("127.0.0.1", int(inner.effective_port)),
                         cfg.tls_cert_file, cfg.tls_key_file, peers, cfg.web_max_connections,
                         cfg.web_handshake_timeout_s)
        redirect = None
        if cfg.web_http_port >= 0:
            redirect = create_server(redirect_app(front.port), host=cfg.web_host, port=cfg.web_http_port,
                                     threads=2, ident="rigtel", channel_timeout=10)
            servers.append(redirect)
    except (FileNotFoundError, ssl.SSLError) as e:
        log.error("cannot use the TLS certificate %s with key %s (%s). Make one with `rigtel tls "
                  "self-signed`, or install the site's with `rigtel tls install --cert FILE --key FILE`.",
                  cfg.tls_cert_file, cfg.tls_key_file, e)
        _close(servers)
        return 1
    except OSError as e:
        log.error("cannot listen on %s port %d or %d: %s. Another program holds the port (`ss -ltnp | grep "
                  "-E ':(%d|%d)'`), or choose others with web_port and web_http_port.", cfg.web_host,
                  cfg.web_port, cfg.web_http_port, e, cfg.web_port, cfg.web_http_port)
        _close(servers)
        return 1
    warn_if_expiring(cfg.tls_cert_file)
    hub.start_thread()
    connect_bus(hub, bus, cfg.bus_heartbeat_s * 5 + 5)
    for server, name in ((inner, "web-server"), (redirect, "web-redirect")):
        if server is not None:
            threading.Thread(target=server.run, name=name, daemon=True).start()
    front.start()
    shown_host = f"[{cfg.web_host}]" if ":" in cfg.web_host else cfg.web_host
    log.info("ready: dashboard on https://%s:%d/ (%sapp on 127.0.0.1:%d, loopback only)", shown_host, front.port,
             f"http://{shown_host}:{int(redirect.effective_port)}/ redirects; " if redirect else "",
             int(inner.effective_port))
    heartbeat = Heartbeat(bus, "web", cfg.bus_heartbeat_s,
                          stats=lambda: {"streams": hub.stream_count(), "received": hub.stats["messages"],
                                         "tls": dict(front.stats)})
    traced = TraceDumps(cfg.data_dir)
    while not stop.wait(heartbeat.seconds_to_next() or cfg.bus_heartbeat_s):
        heartbeat.tick()
        traced.tick()
    # open live streams notice the hub stopping and end; waitress's threads are daemons
    hub.close()
    front.close()
    _close(servers)
    bus.close()
    log.info("stopped")
    return 0


class _Released:
    """A waitress task (a channel) that its worker thread lets go of once served."""

    __slots__ = ("task", "failed")

    def __init__(self, task) -> None:
        self.task = task
        self.failed = ""  # the task's repr when its service raised, for waitress's log line

    def service(self) -> None:
        task, self.task = self.task, None
        try:
            task.service()
        except BaseException:
            self.failed = repr(task)
            raise

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def __repr__(self) -> str:  # in waitress's "Exception when servicing %r"
        return self.failed or repr(self.task)


def task_dispatcher(threads: int):
    """waitress's thread pool, except that an idle thread holds no finished connection.

    waitress's worker loop keeps its last task in a local variable while it waits for the
    next, so each of the web_threads idle workers kept its last connection alive (the
    channel, its request and buffers): 32 of them after a few minutes of the dashboard
    (counted with gc), ~0.08 MiB a thread. Each task is handed over wrapped, and the
    wrapper drops it when served."""
    from waitress.task import ThreadedTaskDispatcher

    class Dispatcher(ThreadedTaskDispatcher):
        def add_task(self, task) -> None:
            super().add_task(_Released(task))

    dispatcher = Dispatcher()
    dispatcher.set_thread_count(threads)  # create_server does this only for its own dispatcher
    return dispatcher


class TraceDumps:
    """Debugging memory: with Python's own PYTHONTRACEMALLOC=N in the web's environment, a
    tracemalloc snapshot every TRACE_EVERY_S in data_dir (web-PID-MIN.tracemalloc, the last KEEP), for
    comparing where memory went over minutes of streaming (docs/ARCHITECTURE.md, memory).
    Without it nothing happens: tracing costs memory and time, never on in production."""

    TRACE_EVERY_S = 60.0
    KEEP = 10  # the first snapshot (the baseline) is replaced too: compare any two kept

    def __init__(self, folder: str) -> None:
        import os
        import tracemalloc

        self.on = tracemalloc.is_tracing()
        self.folder = folder
        self.started = self.next = time.monotonic()
        self.written: list[str] = []
        if self.on:
            os.makedirs(folder, exist_ok=True)
            log.warning("tracemalloc is on (PYTHONTRACEMALLOC): snapshots every %.0f s in %s",
                        self.TRACE_EVERY_S, folder)

    def tick(self) -> None:
        if not self.on or time.monotonic() < self.next:
            return
        import os
        import tracemalloc

        minute = round((time.monotonic() - self.started) / 60)
        path = os.path.join(self.folder, f"web-{os.getpid()}-{minute:04d}.tracemalloc")
        tracemalloc.take_snapshot().dump(path)
        self.written.append(path)
        while len(self.written) > self.KEEP:  # a switch left on must not fill the data disk
            try:
                os.remove(self.written.pop(0))
            except OSError:
                pass
        self.next += self.TRACE_EVERY_S


def warn_if_expiring(cert_file: str) -> None:
    from appliance.security import certs

    try:
        shown = certs.info(cert_file)
    except (OSError, ValueError) as e:
        log.warning("cannot read the TLS certificate %s to check its expiry: %s", cert_file, e)
        return
    if shown.expiring:
        log.warning("%s", shown.as_dict()["warning"])


def connect_bus(hub, bus, timeout_s: float) -> bool:
    """Publish probes until the hub receives one: from then on nothing this program publishes
    (audit events above all) is lost to ZeroMQ's slow joiner. A missing broker only delays
    the start, with a warning; the dashboard serves without the bus."""
    from appliance.web.hub import PROBE_TOPIC

    deadline = time.monotonic() + timeout_s
    while not hub.probe_seen.wait(0.05):
        if time.monotonic() > deadline:
            log.warning("no answer from the bus broker within %.0f s: live data and audit events wait for it", timeout_s)
            return False
        bus.publish(PROBE_TOPIC, {})
    return True


def _close(servers: list) -> None:
    for server in servers:
        server.close()
