"""HTTPS for the dashboard, terminated in the web program itself.

waitress speaks plain HTTP only and its maintainers point at a reverse proxy for TLS; on
an offline appliance installed from wheels that proxy is this module: the standard
library's `ssl` (TLS 1.2 or newer, forward-secret AEAD ciphers only, no compression or
renegotiation) in front of waitress, which listens on a loopback port of its own and is
told the scheme is https.

Each accepted connection gets a thread: the TLS handshake (bounded by
`web_handshake_timeout_s`), then a byte pump between the client and a fresh loopback
connection to waitress. No HTTP is parsed here. The real client address reaches the app
through PeerMap: the pump records "loopback port of my connection to waitress -> client
address", and ClientAddress, a WSGI middleware, looks up waitress's REMOTE_PORT in it.
At most `web_max_connections` connections are open; more are closed at once and counted.

The certificate and key are re-read when their files change (checked every few seconds),
so `rigtel tls install` takes effect without a restart.

The plain HTTP port (`web_http_port`) is a second, tiny waitress server whose only answer
is a redirect to the HTTPS port.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import quote, urlsplit

log = logging.getLogger("rigtel.web.tls")

CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"
IDLE_TIMEOUT_S = 120.0  # no byte either way for this long: the connection is dropped (SSE beats every 5 s)
RELOAD_CHECK_S = 5.0
# One buffer per connection, read into and written from, for both directions: a TLS record
# carries at most 16 KiB. recv(65536) instead allocated 64 KiB for every read and shrank it
# to the few hundred bytes a live update is, 100 times a second per stream, and those
# half-used blocks scattered the malloc heap (the web's slow RSS growth while streaming)
BUFFER = 16384


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context: TLS 1.2+, forward-secret AEAD suites, HTTP/1.1 by ALPN."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)  # TLS 1.3 suites are all AEAD and are not affected
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class PeerMap:
    """Loopback port of a forwarding connection -> the real client's (address, port)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.peers: dict[int, tuple[str, int]] = {}

    def add(self, local_port: int, client: tuple[str, int]) -> None:
        with self.lock:
            self.peers[local_port] = client

    def remove(self, local_port: int) -> None:
        with self.lock:
            self.peers.pop(local_port, None)

    def get(self, local_port: int) -> tuple[str, int] | None:
        with self.lock:
            return self.peers.get(local_port)


class ClientAddress:
    """WSGI middleware: REMOTE_ADDR/REMOTE_PORT become the client's, not the TLS front's.

    With `trusted_proxy` set, a request whose client is that proxy takes the address the
    proxy appended to X-Forwarded-For (the right-most entry) instead."""

    def __init__(self, app: Callable, peers: PeerMap, trusted_proxy: str = "") -> None:
        self.app = app
        self.peers = peers
        self.trusted_proxy = trusted_proxy.strip()

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("REMOTE_ADDR") in ("127.0.0.1", "::1"):
            try:
                peer = self.peers.get(int(environ.get("REMOTE_PORT") or 0))
            except ValueError:
                peer = None
            if peer is not None:
                environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer[0], str(peer[1])
        if self.trusted_proxy and environ.get("REMOTE_ADDR") == self.trusted_proxy:
            forwarded = environ.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
            try:
                environ["REMOTE_ADDR"] = str(ipaddress.ip_address(forwarded))
                environ.pop("REMOTE_PORT", None)
            except ValueError:
                pass  # no usable address from the proxy: keep the proxy's own
        return self.app(environ, start_response)


class TLSFront:
    """Accepts TLS connections on (host, port) and pumps each to waitress at `upstream`."""

    def __init__(self, host: str, port: int, upstream: tuple[str, int], cert_file: str, key_file: str,
                 peers: PeerMap, max_connections: int, handshake_timeout_s: float) -> None:
        self.upstream = upstream
        self.cert_file, self.key_file = cert_file, key_file
        self.peers = peers
        self.max_connections = max_connections
        self.handshake_timeout_s = handshake_timeout_s
        self.context = server_context(cert_file, key_file)  # raises when missing or unusable
        self.files_stamp = self._stamp()
        self.checked = time.monotonic()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family, backlog=128)
        self.listener.settimeout(0.5)
        self.port = self.listener.getsockname()[1]
        self.slots = threading.BoundedSemaphore(max_connections)
        self.lock = threading.Lock()
        self.stats = {"accepted": 0, "refused_full": 0, "handshake_failed": 0, "open": 0}
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    # -- certificate ----------------------------------------------------------------------

    def _stamp(self) -> tuple:
        out = []
        for path in (self.cert_file, self.key_file):
            try:
                st = os.stat(path)
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self.checked < RELOAD_CHECK_S:
            return
        self.checked = now
        stamp = self._stamp()
        if stamp == self.files_stamp:
            return
        try:
            self.context = server_context(self.cert_file, self.key_file)
            log.warning("loaded the new TLS certificate %s", self.cert_file)
        except (OSError, ssl.SSLError) as e:
            log.error("the TLS certificate or key changed but cannot be used (%s); still serving the "
                      "previous one. Check `rigtel tls show`.", e)
        self.files_stamp = stamp

    # -- serving ----------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self._accept_loop, name="tls-accept", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(5)
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw, addr = self.listener.accept()
            except TimeoutError:
                self._maybe_reload()
                continue
            except OSError as e:
                if self._stop.is_set():
                    return
                log.error("accept failed: %s", e)
                time.sleep(0.1)  # e.g. out of file descriptors: do not spin
                continue
            self._maybe_reload()
            if not self.slots.acquire(blocking=False):
                with self.lock:
                    self.stats["refused_full"] += 1
                    refused = self.stats["refused_full"]
                if refused == 1 or refused % 100 == 0:
                    log.warning("%d connection(s) refused: web_max_connections (%d) are open",
                                refused, self.max_connections)
                raw.close()
                continue
            with self.lock:
                self.stats["accepted"] += 1
                self.stats["open"] += 1
            try:
                threading.Thread(target=self._serve, args=(raw, addr), name="tls-conn", daemon=True).start()
            except RuntimeError as e:  # no thread to be had: refuse this one, keep serving
                log.error("cannot serve a connection from %s: %s", addr[0], e)
                raw.close()
                with self.lock:
                    self.stats["open"] -= 1
                self.slots.release()

    def _serve(self, raw: socket.socket, addr: tuple) -> None:
        tls = upstream = None
        local_port = 0
        try:
            raw.settimeout(self.handshake_timeout_s)
            try:
                tls = self.context.wrap_socket(raw, server_side=True)  # the handshake, bounded
            except (OSError, ssl.SSLError) as e:
                with self.lock:
                    self.stats["handshake_failed"] += 1
                    failed = self.stats["handshake_failed"]
                # the first, then every 100th: a scanner or a plain-HTTP client must not flood the log
                if failed == 1 or failed % 100 == 0:
                    log.info("TLS handshake with %s failed: %s (%d failed handshakes so far; an old client, "
                             "plain HTTP to the HTTPS port, or a scanner)", addr[0],
                             getattr(e, "reason", None) or e, failed)
                raw.close()
                return
            tls.settimeout(IDLE_TIMEOUT_S)
            upstream = socket.create_connection(self.upstream, timeout=10)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.settimeout(IDLE_TIMEOUT_S)
            local_port = upstream.getsockname()[1]
            self.peers.add(local_port, (addr[0], addr[1]))
            self._pump(tls, upstream)
        except OSError as e:  # resets, timeouts, TLS errors mid-stream: the connection ends
            log.debug("connection from %s ended: %s", addr[0], e)
        finally:
            if local_port:
                self.peers.remove(local_port)
            for s in (upstream, tls):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
            with self.lock:
                self.stats["open"] -= 1
            self.slots.release()

    def _pump(self, tls: ssl.SSLSocket, upstream: socket.socket) -> None:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        with selectors.DefaultSelector() as sel:
            sel.register(tls, selectors.EVENT_READ, "client")
            sel.register(upstream, selectors.EVENT_READ, "server")
            while not self._stop.is_set():
                # decrypted bytes already held by the TLS layer do not show in select()
                ready = ["client"] if tls.pending() else [key.data for key, _ in sel.select(IDLE_TIMEOUT_S)]
                if not ready:
                    return  # idle too long
                for side in ready:
                    if side == "client":
                        n = tls.recv_into(buffer)
                        if not n:
                            return
                        upstream.sendall(view[:n])
                    else:
                        n = upstream.recv_into(buffer)
                        if not n:
                            return
                        tls.sendall(view[:n])


# -- the plain HTTP port: a redirect and nothing else ----------------------------------------

_HOST_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")


def redirect_app(https_port: int) -> Callable:
    """A WSGI app answering every request with a redirect to the same path over HTTPS."""

    def app(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        try:
            name = (urlsplit("//" + host).hostname or "") if set(host.lower()) <= _HOST_CHARS | set(":[]") else ""
        except ValueError:
            name = ""
        try:
            ipaddress.ip_address(name)
            valid = True
        except ValueError:
            valid = bool(name) and set(name) <= _HOST_CHARS
        if not valid:
            body = b"bad Host header\n"
            start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        if ":" in name:
            name = f"[{name}]"
        port = "" if https_port == 443 else f":{https_port}"
        path = quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/:@!$&'()*+,;=-._~%")
        query = environ.get("QUERY_STRING", "")
        location = f"https://{name}{port}{path}{'?' + query if query else ''}"
        body = f"This dashboard is served over HTTPS only: {location}\n".encode()
        status = "301 Moved Permanently" if environ.get("REQUEST_METHOD") in ("GET", "HEAD") \
            else "308 Permanent Redirect"
        start_response(status, [("Location", location), ("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
        return [body]

    return app
