"""`rigtel wits0-out`: live and derived channels re-served as WITS0 over TCP.

Third-party systems on the rig (a mud logger's unit, a directional driller's software, a
cuttings monitor) take WITS0. This program subscribes to `drilling` and `derived`, keeps
each channel's latest value, and every `wits0_out_interval_s` sends every connected client
one frame of the channels in `wits0_out_map` — in that file's codes, units and decimals.
A channel with no value in the last STALE_INTERVALS intervals (at least STALE_MIN_S) is
left out of the frame rather than sent as if it were current; when none is fresh nothing
is sent, so the consumer's own timeout sees the silence.

Security: it listens on `wits0_out_host`:`wits0_out_port`, loopback by default. WITS0 has
no authentication and no encryption, so listening beyond loopback is refused unless
`wits0_out_allow` lists the client addresses allowed (others are disconnected at once and
counted); the better way to reach it from another machine is an SSH or TLS tunnel to the
loopback port (docs/DATA.md). With `wits0_out_enabled = false` (the default) it idles.

A client that does not read (its unsent bytes pass MAX_PENDING_BYTES) is disconnected so
it cannot hold memory; what clients send (keep-alives) is read and ignored.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import time
from typing import Any, Sequence

from appliance.bus.heartbeat import Heartbeat
from appliance.bus.publisher import Publisher
from appliance.bus.subscriber import DataSubscriber
from appliance.config import Config
from appliance.sources.wits0 import MappingError, SiteMap, encode_frame, load_site_map
from appliance.sources.wits0_ingest import check_exposure, default_map_path, parse_allow

log = logging.getLogger("rigtel.wits0-out")

TOPICS = ["drilling", "derived"]
STALE_INTERVALS = 5
STALE_MIN_S = 5.0
MAX_PENDING_BYTES = 256 * 1024
MAX_CLIENTS = 16


class Client:
    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.pending = b""
        self.sent_frames = 0


class Wits0Out(DataSubscriber):
    """Keeps the latest values from the bus and serves them to TCP clients as WITS0."""

    def __init__(self, cfg: Config, site: SiteMap, publisher: Publisher, stop_event, listener: socket.socket | None):
        super().__init__(topics=TOPICS, settings=cfg, stop_event=stop_event)
        self.site = site
        self.wanted = {e.channel for e in site.channels()}
        self.latest: dict[str, tuple[float, float]] = {}  # channel -> (monotonic time, value)
        self.interval_s = cfg.wits0_out_interval_s
        self.stale_s = max(STALE_MIN_S, STALE_INTERVALS * self.interval_s)
        self.allow = parse_allow(cfg.wits0_out_allow)
        self.listener = listener
        self.clients: list[Client] = []
        self.next_send = time.monotonic()
        self.frames_sent = 0
        self.bytes_sent = 0
        self.refused = 0
        self.dropped_slow = 0
        self.heartbeat = Heartbeat(publisher, "wits0-out", cfg.bus_heartbeat_s, stats=self.summary)

    def summary(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"enabled": self.listener is not None, "clients": [c.peer for c in self.clients],
                "frames_sent": self.frames_sent, "bytes_sent": self.bytes_sent,
                "fresh_channels": sum(1 for t, _ in self.latest.values() if now - t <= self.stale_s),
                "refused_clients": self.refused, "dropped_slow_clients": self.dropped_slow}

    def on_message(self, topic: str, data: dict[str, Any]) -> None:
        now = time.monotonic()
        for k, v in data.items():
            if k in self.wanted and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.latest[k] = (now, float(v))

    def on_idle(self) -> None:
        self.heartbeat.tick()
        if self.listener is None:
            return
        self._accept_and_read()
        now = time.monotonic()
        if now >= self.next_send:
            self.next_send = max(self.next_send + self.interval_s, now)
            fresh = {k: v for k, (t, v) in self.latest.items() if now - t <= self.stale_s}
            frame = encode_frame(fresh, self.site) if fresh else b""
            if frame:
                for c in self.clients:
                    c.pending += frame
                    c.sent_frames += 1
                self.frames_sent += 1 if self.clients else 0
        self._flush()

    def _accept_and_read(self) -> None:
        watch = [self.listener, *(c.sock for c in self.clients)]
        readable, _, _ = select.select(watch, [], [], 0)
        for sock in readable:
            if sock is self.listener:
                self._accept()
                continue
            client = next(c for c in self.clients if c.sock is sock)
            try:
                data = sock.recv(4096)  # a consumer's keep-alives: read and ignored
            except OSError:
                data = b""
            if not data:
                self._drop(client, "disconnected")

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, addr = self.listener.accept()
        except OSError:
            return
        peer = f"{addr[0]}:{addr[1]}"
        ip = str(ipaddress.ip_address(addr[0].split("%")[0]))
        if (self.allow and ip not in self.allow) or len(self.clients) >= MAX_CLIENTS:
            self.refused += 1
            log.warning("refused WITS0 client %s: %s", peer,
                        "not in wits0_out_allow" if self.allow and ip not in self.allow
                        else f"already {MAX_CLIENTS} clients")
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.clients.append(Client(sock, peer))
        log.info("client connected: %s (%d now)", peer, len(self.clients))

    def _flush(self) -> None:
        for c in list(self.clients):
            if not c.pending:
                continue
            try:
                n = c.sock.send(c.pending)
            except BlockingIOError:
                n = 0
            except OSError:
                self._drop(c, "connection lost")
                continue
            c.pending = c.pending[n:]
            self.bytes_sent += n
            if len(c.pending) > MAX_PENDING_BYTES:
                self.dropped_slow += 1
                self._drop(c, f"not reading ({len(c.pending)} bytes waiting)")

    def _drop(self, client: Client, why: str) -> None:
        if client in self.clients:
            self.clients.remove(client)
            client.sock.close()
            log.info("client %s: %s after %d frames", client.peer, why, client.sent_frames)

    def close(self) -> None:
        for c in list(self.clients):
            self._drop(c, "server stopping")
        if self.listener is not None:
            self.listener.close()


def main(argv: Sequence[str]) -> int:
    from appliance.cli import start_service

    cfg, stop = start_service("wits0-out", "Re-serve live and derived channels as WITS0 over TCP "
                                           "(loopback unless wits0_out_allow lists clients).", argv)
    if not cfg.wits0_out_enabled:
        log.info("ready: wits0-out is off (wits0_out_enabled = false); idle until stopped")
        with Publisher("wits0-out", settings=cfg) as publisher:
            heartbeat = Heartbeat(publisher, "wits0-out", cfg.bus_heartbeat_s, stats=lambda: {"enabled": False})
            while not stop.is_set():
                heartbeat.tick()
                stop.wait(heartbeat.seconds_to_next() + 0.01)
        log.info("stopped%s", f" ({stop.signal_name})" if stop.signal_name else "")
        return 0
    path = cfg.wits0_out_map or default_map_path("wits0-out-map.txt")
    try:
        site = load_site_map(path)
    except MappingError as e:
        log.error("%s. Fix the file or point the setting wits0_out_map at a good one (docs/DATA.md).", e)
        return 2
    listener = None
    if cfg.wits0_out_enabled:
        problem = check_exposure(cfg.wits0_out_host, cfg.wits0_out_allow, "wits0-out", "wits0_out_allow")
        if problem:
            log.error("configuration error: %s", problem)
            return 2
        host = cfg.wits0_out_host
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, cfg.wits0_out_port))
        except OSError as e:
            log.error("cannot listen on %s:%d: %s. Choose another port with wits0_out_port.",
                      host, cfg.wits0_out_port, e.strerror or e)
            return 1
        listener.listen(8)
        listener.setblocking(False)
        bound = listener.getsockname()
        log.info("ready: wits0-out serving %d channels on %s:%d every %g s (mapping %s)",
                 len(site.channels()), bound[0], bound[1], cfg.wits0_out_interval_s, path)
    with Publisher("wits0-out", settings=cfg) as publisher:
        server = Wits0Out(cfg, site, publisher, stop.event, listener)
        try:
            server.start()
        finally:
            server.close()
    log.info("stopped%s", f" ({stop.signal_name})" if stop.signal_name else "")
    return 0
