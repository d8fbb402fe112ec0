"""The broker's ZAP handler for remote publishers: pyzmq's ThreadAuthenticator with our
allow-list, and a record of whom it refused.

A module of its own because `zmq.auth.thread` imports asyncio (and with it ssl): about
8 MB of resident memory that a broker without remote publishers should not carry. The
broker imports it only when `bus_remote_host` is set.
"""

from __future__ import annotations

import logging
import queue
import time

import zmq
from zmq.auth.thread import ThreadAuthenticator

from appliance.security.curve import REPORT_EVERY_S, ZAP_DOMAIN, AllowList

log = logging.getLogger("rigtel.bus.curve")


class Gatekeeper(ThreadAuthenticator):
    """pyzmq's ZAP handler with our allow-list, and a record of whom it refused."""

    def __init__(self, context: zmq.Context, allow: AllowList) -> None:
        super().__init__(context, log=logging.getLogger("rigtel.bus.zap"))
        self.allow = allow
        self.refused: "queue.SimpleQueue[tuple[str, str, int]]" = queue.SimpleQueue()
        self.refused_total = 0
        self.allowed_total = 0
        self._address = ""
        self._reported: dict[tuple[str, bytes], tuple[float, int]] = {}

    def start_for_curve(self) -> "Gatekeeper":
        self.start()
        self.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)
        return self

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
        await super().handle_zap_message(msg)

    def callback(self, domain: str, z85_key: bytes) -> bool:
        name = self.allow.name_of(z85_key)
        if name is not None:
            self.allowed_total += 1
            log.debug("remote publisher %s (%s) allowed", name, self._address)
            return True
        self.refused_total += 1
        key = (self._address, z85_key)
        last, count = self._reported.get(key, (0.0, 0))
        now = time.monotonic()
        count += 1
        if now - last >= REPORT_EVERY_S:
            log.warning("refused a remote publisher from %s: its CurveZMQ public key %s is not on the allow-list "
                        "(%d attempt(s)); allow it with `rigtel keys allow FILE.key` if it is yours",
                        self._address, z85_key.decode(), count)
            self.refused.put((self._address, z85_key.decode(), count))
            self._reported[key] = (now, 0)
            if len(self._reported) > 10_000:
                self._reported.clear()
        else:
            self._reported[key] = (last, count)
        return False
