"""The dashboard's Flask application factory.

`create_app(cfg)` builds the app and touches nothing at import time. Pages and the JSON
API are blueprints; every route except the data-free `/healthz` asks for a login in one
app-wide hook (appliance.web.auth), static files and unknown paths included. Every
response carries strict security headers: no inline script, no framing, no sniffing, no
referrer, HSTS over HTTPS, and nothing but static files may be cached.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request

from appliance import __version__
from appliance.analytics.offload import KpiRunner
from appliance.bus.publisher import Publisher
from appliance.config import Config
from appliance.web.hub import LiveHub

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


def webroot_dir(cfg: Config) -> Path:
    """The folder holding templates/ and static/: the setting, else beside the package."""
    if cfg.web_root:
        return Path(cfg.web_root)
    return Path(__file__).resolve().parents[2] / "webroot"


class BusLink:
    """A publisher the request threads share, one at a time (a socket is not thread-safe)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.publisher: Publisher | None = None

    def publish(self, topic: str, data: dict[str, Any]) -> int:
        with self.lock:
            if self.publisher is None:
                self.publisher = Publisher("web", settings=self.cfg)
            return self.publisher.publish(topic, data)

    def close(self) -> None:
        with self.lock:
            if self.publisher is not None:
                self.publisher.close()
                self.publisher = None


def create_app(cfg: Config, hub: LiveHub | None = None, bus: BusLink | None = None) -> Flask:
    root = webroot_dir(cfg)
    app = Flask("appliance.web", template_folder=str(root / "templates"),
                static_folder=str(root / "static"), static_url_path="/static")
    app.config.update(RIGTEL=cfg, JSON_SORT_KEYS=False, MAX_CONTENT_LENGTH=64 * 1024)
    app.extensions["rigtel.hub"] = hub
    app.extensions["rigtel.bus"] = bus or BusLink(cfg)
    app.extensions["rigtel.kpis"] = KpiRunner(cfg.kpis_timeout_s)

    from appliance.web import api, auth, pages
    auth.install(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp, url_prefix="/api")

    @app.get("/healthz")
    def healthz():
        # deliberately data-free: monitoring may call it without credentials
        return jsonify(status="ok", version=__version__)

    @app.after_request
    def security_headers(response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        if request.is_secure and cfg.web_hsts_s:
            response.headers["Strict-Transport-Security"] = f"max-age={cfg.web_hsts_s}"
        if request.endpoint != "static":  # API data and pages: never kept by a browser or proxy
            response.headers["Cache-Control"] = "no-store"
        return response

    return app
