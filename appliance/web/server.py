"""`rigtel web`: the dashboard served by waitress, bound to loopback.

One LiveHub (one bus subscription) per process feeds every browser's live stream. Each
open stream holds a waitress thread, so `web_max_streams` stays below `web_threads`.
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

log = logging.getLogger("rigtel.web")


def main(argv: Sequence[str]) -> int:
    from waitress.server import create_server

    from appliance.bus.heartbeat import Heartbeat
    from appliance.cli import start_service
    from appliance.web.app import BusLink, create_app
    from appliance.web.hub import LiveHub

    cfg, stop = start_service("web", "Serve the dashboard and its JSON API (waitress, loopback).", argv)
    if cfg.web_max_streams >= cfg.web_threads:
        log.error("web_max_streams (%d) must be below web_threads (%d): each live stream holds a "
                  "thread and the rest serve pages and the API", cfg.web_max_streams, cfg.web_threads)
        return 2
    hub = LiveHub(cfg, cfg.web_max_streams)
    hub.start_thread()
    bus = BusLink(cfg)
    app = create_app(cfg, hub=hub, bus=bus)
    try:
        server = create_server(app, host=cfg.web_host, port=cfg.web_port, threads=cfg.web_threads,
                               ident="rigtel", channel_timeout=60, cleanup_interval=10,
                               expose_tracebacks=cfg.web_debug)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s. Another program holds the port (`ss -ltnp | grep "
                  ":%d`), or choose another with web_port.", cfg.web_host, cfg.web_port, e, cfg.web_port)
        hub.close()
        return 1
    serving = threading.Thread(target=server.run, name="web-server", daemon=True)
    serving.start()
    log.info("ready: dashboard on http://%s:%d/", cfg.web_host, int(server.effective_port))
    heartbeat = Heartbeat(bus, "web", cfg.bus_heartbeat_s,
                          stats=lambda: {"streams": hub.stream_count(), "received": hub.stats["messages"]})
    while not stop.wait(heartbeat.seconds_to_next() or cfg.bus_heartbeat_s):
        heartbeat.tick()
    # open live streams notice the hub stopping and end; waitress's threads are daemons
    hub.close()
    server.close()
    bus.close()
    log.info("stopped")
    return 0
