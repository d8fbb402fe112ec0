"""`rigtel wits0`: WITS0 from the rig's recorder onto the bus, over TCP or a serial port.

Three ways in (`wits0_mode`): `client` connects to the recorder's WITS0 port; `server`
listens and the recorder connects (a new connection replaces the old one, as recorders
reconnect after a cable pull before the old socket is known dead); `serial` reads a serial
port (9600 8N1 unless set otherwise). Whatever the way, a dead link — refused, closed, no
byte for `wits0_timeout_s` — is made again with a backoff doubling from 0.5 s up to
`wits0_reconnect_max_s`, and the program never exits because the recorder went away.

Each frame is decoded with the site mapping file (appliance.sources.wits0) and published
on `drilling` stamped with this appliance's UTC clock (strictly increasing, so two frames
read together never share a millisecond). What cannot be used is counted and kept: bad
lines, values that are not numbers and absurd values go to the dead letters (topic
`reject`, stored by the saver), at most REJECTS_PER_S a second, the excess only counted;
codes the mapping does not know are counted per code and dead-lettered when first seen
and then once an hour, so a recorder sending 40 unmapped items a second does not fill the
database. Statistics (frames/s, bad lines by reason, unmapped codes, last frame age,
reconnects) ride on this program's `sys.heartbeat`.

The keep-alive (`wits0_keepalive`, every `wits0_keepalive_s`) is written to the recorder,
as some expect to hear from their client.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import select
import socket
import sys
import time
from typing import Any, Sequence

import zmq

from appliance.bus.heartbeat import Heartbeat
from appliance.bus.publisher import Publisher, now_ms
from appliance.config import Config
from appliance.ops.runtime import StopSignal
from appliance.sources.wits0 import BadLine, SiteMap, Wits0Parser, decode_frame, load_site_map, unescape, MappingError

log = logging.getLogger("rigtel.wits0")

DATA_TOPIC = "drilling"
REJECT_TOPIC = "reject"
REJECTS_PER_S = 50  # dead letters kept per second; beyond, bad lines are only counted
UNMAPPED_REPEAT_S = 3600.0
POLL_S = 0.2
SUMMARY_S = 30.0
BACKOFF_START_S = 0.5
PACKAGE_ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "etc")


def default_map_path(name: str = "wits0-map.txt") -> str:
    """The shipped mapping file: etc/ beside the package in a checkout, or beside the
    virtualenv in an installed release (opt/rigtel/<release>/{venv,etc})."""
    candidates = [os.path.join(PACKAGE_ETC, name),
                  os.path.join(os.path.dirname(os.path.abspath(sys.prefix)), "etc", name)]
    return next((c for c in candidates if os.path.exists(c)), candidates[0])


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def parse_allow(text: str) -> set[str]:
    """Comma-separated addresses; ValueError naming one that is not an IP address."""
    out = set()
    for item in (t.strip() for t in text.split(",")):
        if item:
            out.add(str(ipaddress.ip_address(item)))
    return out


class LinkClosed(Exception):
    pass


class Link:
    """A connected byte stream: a TCP socket or a serial port, read with select()."""

    def __init__(self, peer: str, sock: socket.socket | None = None, port: Any = None) -> None:
        self.peer = peer
        self.sock = sock
        self.port = port  # a pyserial Serial

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else self.port.fileno()

    def read(self) -> bytes:
        """What is waiting (call after select said readable); LinkClosed at the end."""
        try:
            if self.sock is not None:
                data = self.sock.recv(65536)
            else:
                data = self.port.read(max(1, self.port.in_waiting))
        except (OSError, ValueError) as e:
            raise LinkClosed(str(e) or type(e).__name__) from None
        except Exception as e:  # serial.SerialException: the device went away
            raise LinkClosed(str(e) or type(e).__name__) from None
        if not data:
            raise LinkClosed("closed by the other end")
        return data

    def write(self, data: bytes) -> None:
        try:
            if self.sock is not None:
                self.sock.sendall(data)
            else:
                self.port.write(data)
        except Exception as e:
            raise LinkClosed(f"write failed: {e}") from None

    def close(self) -> None:
        try:
            (self.sock or self.port).close()
        except Exception:
            pass


class Ingest:
    """Reads WITS0 from one link at a time and publishes what it decodes."""

    def __init__(self, cfg: Config, site: SiteMap, publisher: Publisher, stop: StopSignal) -> None:
        self.cfg = cfg
        self.site = site
        self.publisher = publisher
        self.stop = stop
        self.mode = cfg.wits0_mode
        self.keepalive = unescape(cfg.wits0_keepalive) if cfg.wits0_keepalive_s > 0 else b""
        self.allow = parse_allow(cfg.wits0_allow)
        self.parser = Wits0Parser()
        self.heartbeat = Heartbeat(publisher, "wits0", cfg.bus_heartbeat_s, stats=self.stats)
        self.listener: socket.socket | None = None
        self.link: Link | None = None
        self.connected_since = 0.0
        self.last_ts = 0
        self.last_frame_at: float | None = None  # monotonic
        self.frames_published = 0
        self.values_published = 0
        self.reconnects = 0
        self.refused_peers = 0
        self.bad_by_reason: collections.Counter[str] = collections.Counter()
        self.unmapped: collections.Counter[str] = collections.Counter()
        self._unmapped_kept_at: dict[str, float] = {}
        self.rejects: list[tuple[int, dict[str, str]]] = []
        self.rejects_kept = 0
        self.rejects_not_kept = 0
        self._budget = float(REJECTS_PER_S)
        self._budget_at = time.monotonic()
        self._rate_mark = (time.monotonic(), 0)
        self.frames_per_s = 0.0

    # -- statistics ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        t0, f0 = self._rate_mark
        if now - t0 >= 1.0:
            self.frames_per_s = round((self.frames_published - f0) / (now - t0), 3)
            self._rate_mark = (now, self.frames_published)
        p = self.parser
        return {"mode": self.mode, "connected": self.link is not None,
                "peer": self.link.peer if self.link else None,
                "frames": self.frames_published, "frames_per_s": self.frames_per_s,
                "values": self.values_published, "lines": p.lines,
                "frames_without_footer": p.frames_without_footer,
                "bad_lines": sum(self.bad_by_reason.values()),
                "bad_by_reason": dict(self.bad_by_reason.most_common(10)),
                "unmapped_codes": dict(self.unmapped.most_common(20)),
                "rejects_kept": self.rejects_kept, "rejects_not_kept": self.rejects_not_kept,
                "last_frame_age_s": (round(now - self.last_frame_at, 3) if self.last_frame_at else None),
                "reconnects": self.reconnects, "refused_peers": self.refused_peers}

    # -- what arrives -----------------------------------------------------------------------

    def _reject(self, reason: str, raw: bytes, kind: str | None = None) -> None:
        self.bad_by_reason[kind or reason] += 1
        self.rejects.append((now_ms(), {"reason": f"WITS0 {reason}", "input": raw.decode("latin-1")}))

    def handle(self, frames: list, bad: list[BadLine]) -> None:
        for b in bad:
            self._reject(b.reason, b.raw)
        for frame in frames:
            decoded = decode_frame(frame, self.site)
            for b in decoded.bad:
                self._reject(b.reason, b.raw, "value not a number" if "not a number" in b.reason
                             else "implausible value")
            now = time.monotonic()
            for code, value in decoded.unmapped:
                c = code.decode()
                self.unmapped[c] += 1
                kept = self._unmapped_kept_at.get(c)
                if kept is None or now - kept >= UNMAPPED_REPEAT_S:
                    self._unmapped_kept_at[c] = now
                    self.rejects.append((now_ms(), {
                        "reason": f"WITS0 code {c} is not in the mapping file {self.site.path} "
                                  f"(seen {self.unmapped[c]} times so far): add it there, or '-' to ignore it",
                        "input": (code + value).decode("latin-1")}))
                    log.warning("WITS0 code %s (value %s) is not in the mapping file %s; add it there "
                                "(or map it to '-' to ignore it)", c, value.decode("latin-1")[:20], self.site.path)
            if decoded.values:
                ts = max(now_ms(), self.last_ts + 1)
                self.last_ts = ts
                self.publisher.publish(DATA_TOPIC, decoded.values, ts=ts)
                self.frames_published += 1
                self.values_published += len(decoded.values)
                self.last_frame_at = now

    def flush_rejects(self) -> None:
        if not self.rejects:
            return
        now = time.monotonic()
        self._budget = min(float(REJECTS_PER_S), self._budget + (now - self._budget_at) * REJECTS_PER_S)
        self._budget_at = now
        keep = min(len(self.rejects), int(self._budget))
        if keep:
            batch = self.rejects[:keep]
            for i in range(0, len(batch), 200):
                self.publisher.publish_batch(REJECT_TOPIC, batch[i:i + 200])
            self._budget -= keep
            self.rejects_kept += keep
        self.rejects_not_kept += len(self.rejects) - keep
        self.rejects.clear()

    # -- links ------------------------------------------------------------------------------

    def idle(self, seconds: float) -> None:
        """Wait, still heartbeating, until `seconds` pass or a stop is asked for."""
        end = time.monotonic() + seconds
        while not self.stop.is_set():
            self.heartbeat.tick()
            self.flush_rejects()
            left = end - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(min(left, self.heartbeat.seconds_to_next() + 0.01, POLL_S * 5))

    def open_client(self) -> Link:
        host, port = self.cfg.wits0_host, self.cfg.wits0_port
        sock = socket.create_connection((host, port), timeout=min(10.0, self.cfg.wits0_timeout_s))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.settimeout(None)
        return Link(f"{host}:{port}", sock=sock)

    def open_serial(self) -> Link:
        import serial  # pyserial: only the serial mode needs it

        fmt = self.cfg.wits0_serial_format
        port = serial.serial_for_url(
            self.cfg.wits0_serial_device, baudrate=self.cfg.wits0_serial_baud, bytesize=int(fmt[0]),
            parity=fmt[1], stopbits=int(fmt[2]), timeout=0, write_timeout=2, exclusive=True)
        return Link(f"{self.cfg.wits0_serial_device} {self.cfg.wits0_serial_baud} {fmt}", port=port)

    def listen(self) -> None:
        host, port = self.cfg.wits0_host, self.cfg.wits0_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(4)
        self.listener = sock
        bound = sock.getsockname()
        log.info("ready: wits0 server listening on %s:%d for the recorder (mapping %s, %d channels)",
                 bound[0], bound[1], self.site.path, len(self.site.channels()))

    def accept(self) -> Link | None:
        """The next allowed connection on the listener, or None when none is waiting."""
        assert self.listener is not None
        try:
            sock, addr = self.listener.accept()
        except OSError as e:  # the peer gave up between select() and accept()
            log.warning("a WITS0 connection failed as it was accepted: %s", e.strerror or e)
            return None
        peer_ip = addr[0]
        if self.allow and str(ipaddress.ip_address(peer_ip.split("%")[0])) not in self.allow:
            self.refused_peers += 1
            log.warning("refused a WITS0 connection from %s: not in wits0_allow", peer_ip)
            sock.close()
            return None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return Link(f"{peer_ip}:{addr[1]}", sock=sock)

    def wait_for_recorder(self) -> Link | None:
        while not self.stop.is_set():
            self.heartbeat.tick()
            self.flush_rejects()
            ready, _, _ = select.select([self.listener], [], [], POLL_S)
            if ready:
                link = self.accept()
                if link is not None:
                    return link
        return None

    # -- the loop ---------------------------------------------------------------------------

    def session(self, link: Link) -> str:
        """Read one link until it dies or a stop is asked for; returns why it ended."""
        self.link = link
        self.connected_since = time.monotonic()
        log.info("connected: %s", link.peer)
        last_byte = time.monotonic()
        next_keepalive = time.monotonic() + (self.cfg.wits0_keepalive_s if self.keepalive else float("inf"))
        why = "stopped"
        try:
            while not self.stop.is_set():
                watch: list[Any] = [link]
                if self.listener is not None:
                    watch.append(self.listener)
                try:
                    ready, _, _ = select.select(watch, [], [], POLL_S)
                except (OSError, ValueError) as e:  # the descriptor went bad under us
                    raise LinkClosed(f"cannot wait on the link: {e}") from None
                now = time.monotonic()
                if self.listener is not None and self.listener in ready:
                    newer = self.accept()
                    if newer is not None:
                        log.info("disconnected: %s: replaced by a new connection from %s", link.peer, newer.peer)
                        self._end(link)
                        self.reconnects += 1
                        link = self.link = newer
                        log.info("connected: %s", link.peer)
                        last_byte = now
                        continue
                if link in ready:
                    frames, bad = self.parser.feed(link.read())
                    self.handle(frames, bad)
                    last_byte = now
                elif now - last_byte > self.cfg.wits0_timeout_s:
                    why = f"nothing received for {self.cfg.wits0_timeout_s:g} s (wits0_timeout_s)"
                    break
                if now >= next_keepalive:
                    link.write(self.keepalive)
                    next_keepalive = now + self.cfg.wits0_keepalive_s
                self.heartbeat.tick()
                self.flush_rejects()
        except LinkClosed as e:
            why = str(e)
        self._end(link)
        return why

    def _end(self, link: Link) -> None:
        self.handle(*self.parser.end())
        self.flush_rejects()
        link.close()
        self.link = None

    def summary(self) -> None:
        s = self.stats()
        log.info("%s frames (%.2f/s), %d lines, %d bad, unmapped codes %s, last frame %s",
                 s["frames"], s["frames_per_s"], s["lines"], s["bad_lines"],
                 s["unmapped_codes"] or "none",
                 f"{s['last_frame_age_s']:.1f} s ago" if s["last_frame_age_s"] is not None else "never")

    def run(self) -> int:
        backoff = BACKOFF_START_S
        where = {"client": f"the recorder at {self.cfg.wits0_host}:{self.cfg.wits0_port}",
                 "serial": f"{self.cfg.wits0_serial_device} at {self.cfg.wits0_serial_baud} "
                           f"{self.cfg.wits0_serial_format}"}
        if self.mode == "server":
            self.listen()
        else:
            log.info("ready: wits0 %s reading %s (mapping %s, %d channels)", self.mode, where[self.mode],
                     self.site.path, len(self.site.channels()))
        next_summary = time.monotonic() + SUMMARY_S
        first = True
        while not self.stop.is_set():
            try:
                if self.mode == "server":
                    link = self.wait_for_recorder()
                    if link is None:
                        break
                else:
                    link = self.open_client() if self.mode == "client" else self.open_serial()
            except Exception as e:  # OSError, serial.SerialException
                log.warning("cannot reach %s: %s; trying again in %.1f s", where.get(self.mode, "the recorder"),
                            getattr(e, "strerror", None) or e, backoff)
                self.idle(backoff)
                backoff = min(backoff * 2, self.cfg.wits0_reconnect_max_s)
                continue
            if not first:
                self.reconnects += 1
            first = False
            frames_before = self.frames_published
            why = self.session(link)
            log.info("disconnected: %s after %d frames: %s", link.peer, self.frames_published - frames_before, why)
            if self.frames_published > frames_before:
                backoff = BACKOFF_START_S
            if time.monotonic() >= next_summary:
                next_summary = time.monotonic() + SUMMARY_S
                self.summary()
            if not self.stop.is_set() and self.mode != "server":
                self.idle(backoff)
                backoff = min(backoff * 2, self.cfg.wits0_reconnect_max_s)
        self.flush_rejects()
        if self.listener is not None:
            self.listener.close()
        self.summary()
        return 0


def check_exposure(host: str, allow: str, what: str, allow_setting: str) -> str | None:
    """Why listening on `host` is refused, or None: beyond loopback only with an allow-list."""
    try:
        parse_allow(allow)
    except ValueError as e:
        return f"setting {allow_setting}: {e}; expected comma-separated IP addresses"
    if not is_loopback(host) and not allow.strip():
        return (f"{what} would listen on {host}, beyond loopback, open to anyone on the network: WITS0 has "
                f"no authentication. Set {allow_setting} to the addresses allowed to connect, or keep "
                f"the host at 127.0.0.1 and reach it through an SSH or TLS tunnel (docs/DATA.md)")
    return None


def main(argv: Sequence[str]) -> int:
    from appliance.cli import start_service

    cfg, stop = start_service("wits0", "Read WITS0 from the rig's recorder (TCP client, TCP server or "
                                       "serial port) and publish it on 'drilling'.", argv)
    path = cfg.wits0_map or default_map_path()
    try:
        site = load_site_map(path)
    except MappingError as e:
        log.error("%s. Fix the file or point the setting wits0_map at a good one (docs/DATA.md).", e)
        return 2
    if cfg.wits0_mode == "server":
        problem = check_exposure(cfg.wits0_host, cfg.wits0_allow, "the WITS0 server", "wits0_allow")
        if problem:
            log.error("configuration error: %s", problem)
            return 2
    context = zmq.Context()
    try:
        with Publisher("wits0", settings=cfg, context=context, spool=True) as publisher:
            try:
                code = Ingest(cfg, site, publisher, stop).run()
            except OSError as e:  # the server cannot bind
                log.error("cannot listen on %s:%d: %s. Is another program on that port? Choose another "
                          "with wits0_port.", cfg.wits0_host, cfg.wits0_port, e.strerror or e)
                return 1
        log.info("stopped%s", f" ({stop.signal_name})" if stop.signal_name else "")
        return code
    finally:
        context.term()
