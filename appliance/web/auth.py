"""Who may do what on the dashboard: basic auth with roles, throttling, same-origin checks,
audit.

Every request except the data-free `/healthz` needs a user from the users file
(appliance.security.users) over HTTP basic auth (flask-httpauth), checked in one
`before_request` hook, so a route cannot be forgotten: even a 404 or a static file asks
for a login first. A route needs the `admin` role when its view is decorated with
`admin_only`, its endpoint is listed in ADMIN_ENDPOINTS or its method and path match
ADMIN_ROUTES (thresholds, shelving, restore, audit, users); everything else is open to
any logged-in user (`viewer` or `admin`). Acknowledging an alarm is deliberately a
viewer's right: the driller at the console must be able to.

Basic auth resends the password with every request and every stream reconnect, and the
salted slow hash costs ~100 ms to check, so a successful check is remembered for
`web_auth_cache_s` under an HMAC of name and password with a key that lives only in this
process, and only while the user's stored hash is unchanged (a new password or role ends
it at once).

Failed logins are counted per client address (the real one, carried through the TLS
front): after `web_login_max_failures` within `web_login_window_s` the client gets 429
with Retry-After, for a lock-out that doubles with each repeat. The same wrong credentials
sent again (a browser still holding a changed password) are refused without counting. Every failed login, every
lock-out, every refused cross-site request and every change (any unsafe method) is written
to the log and published on the bus topic `audit`, which the saver stores in the `audit`
table. Passwords are never written anywhere.

Browsers resend basic-auth credentials with cross-site requests too, so unsafe methods
are refused unless same-origin (`Sec-Fetch-Site`, else `Origin` against `Host`).

Logging out of basic auth means making the browser forget its credentials: the page's
Log out link (common.js) asks `/logout` with the placeholder user LOGOUT_USER, which this
server accepts only there, so the browser caches those in place of the real ones and the
next page asks for a login again.
"""

from __future__ import annotations

import collections
import hashlib
import html
import hmac
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request
from flask_httpauth import HTTPBasicAuth

from appliance.security import users as users_mod
from appliance.security.files import too_open

log = logging.getLogger("rigtel.web.auth")

REALM = "rigtel"
PUBLIC_ENDPOINTS = frozenset({"healthz"})  # data-free
LOGOUT_ENDPOINT = "logout"  # its GET checks credentials itself
# What needs the admin role, declared here so that a route cannot miss it: (methods, path
# pattern) pairs matched against each request, endpoint names, and views marked admin_only.
ADMIN_ROUTES: tuple[tuple[frozenset[str], re.Pattern], ...] = (
    (frozenset({"PUT", "POST", "PATCH", "DELETE"}), re.compile(r"^/api/thresholds(/|$)")),  # alarm limits
    (frozenset({"POST", "PUT", "DELETE"}), re.compile(r"^/api/alerts/[^/]+/(shelve|unshelve)$")),  # shelving
    (frozenset({"POST", "PUT"}), re.compile(r"^/api/(restore|backups?)(/|$)")),  # database restore
    (frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}), re.compile(r"^/api/(audit|users)(/|$)")),
)
ADMIN_ENDPOINTS: set[str] = set()
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGOUT_USER = "logged-out"
AUDIT_TOPIC = "audit"
USERS_RECHECK_S = 1.0
CACHE_MAX = 4096
THROTTLE_MAX_CLIENTS = 10_000
LOCKOUT_MAX_S = 3600.0


def admin_only(view: Callable) -> Callable:
    """Mark a view as needing the admin role (apply under the route decorator)."""
    view.rigtel_role = "admin"  # type: ignore[attr-defined]
    return view


def required_role(endpoint: str | None, view: Callable | None, method: str = "", path: str = "") -> str | None:
    """'admin' or None (any logged-in user) for a request."""
    if endpoint in ADMIN_ENDPOINTS or getattr(view, "rigtel_role", None) == "admin":
        return "admin"
    if any(method in methods and rx.match(path) for methods, rx in ADMIN_ROUTES):
        return "admin"
    return None


def request_role() -> str | None:
    return required_role(request.endpoint, current_app.view_functions.get(request.endpoint or ""),
                         request.method, request.path)


# -- users, read from the file as it changes ---------------------------------------------


class UserDirectory:
    """The users file, reloaded when it changes (checked at most once a second)."""

    def __init__(self, path: str, on_change: Callable[[str, dict[str, Any]], None]) -> None:
        self.path = path
        self.on_change = on_change
        self.lock = threading.Lock()
        self.users: dict[str, users_mod.User] = {}
        self.stamp: tuple | None = None
        self.checked = 0.0
        self.reload(initial=True)

    def _stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def reload(self, initial: bool = False) -> None:
        stamp = self._stamp()
        if stamp == self.stamp and not initial:
            return
        try:
            new = users_mod.load(self.path)
        except users_mod.UsersError as e:
            log.error("%s; keeping the %d users loaded before", e, len(self.users))
            self.stamp = stamp
            return
        if stamp is None:
            log.error("no users file at %s: nobody can log in. Add an admin with `rigtel user add NAME "
                      "--role admin` (users_file setting)", self.path)
        elif too_open(self.path):
            log.warning("%s is readable by other users: run chmod 600 %s", self.path, self.path)
        if not initial:
            old = self.users
            changed = sorted(n for n in new if n in old and new[n] != old[n])
            self.on_change("users_changed", {"added": sorted(set(new) - set(old)),
                                             "removed": sorted(set(old) - set(new)), "changed": changed})
        self.users, self.stamp = new, stamp

    def get(self, name: str) -> users_mod.User | None:
        with self.lock:
            now = time.monotonic()
            if now - self.checked >= USERS_RECHECK_S:
                self.checked = now
                self.reload()
            return self.users.get(name)


# -- remembered verifications -------------------------------------------------------------


class VerifiedCache:
    """HMAC(name, password) -> (expiry, stored hash): the slow hash is paid once per lifetime."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self.key = secrets.token_bytes(32)  # never leaves this process
        self.lock = threading.Lock()
        self.entries: dict[bytes, tuple[float, str]] = {}

    def token(self, name: str, password: str) -> bytes:
        return hmac.new(self.key, name.encode() + b"\0" + password.encode(), hashlib.sha256).digest()

    def hit(self, token: bytes, stored_hash: str) -> bool:
        with self.lock:
            entry = self.entries.get(token)
            if entry is None:
                return False
            if entry[0] < time.monotonic() or not hmac.compare_digest(entry[1], stored_hash):
                del self.entries[token]
                return False
            return True

    def put(self, token: bytes, stored_hash: str) -> None:
        if self.lifetime_s <= 0:
            return
        with self.lock:
            now = time.monotonic()
            if len(self.entries) >= CACHE_MAX:
                self.entries = {k: v for k, v in self.entries.items() if v[0] >= now}
                if len(self.entries) >= CACHE_MAX:
                    self.entries.clear()
            self.entries[token] = (now + self.lifetime_s, stored_hash)

    def forget(self, token: bytes) -> bool:
        """Drop a remembered login; True when there was one."""
        with self.lock:
            return self.entries.pop(token, None) is not None


# -- failed-login throttle ----------------------------------------------------------------


@dataclass
class _Client:
    failures: collections.deque = field(default_factory=collections.deque)  # (time, what failed)
    locked_until: float = 0.0
    lockouts: int = 0


class LoginThrottle:
    """Failed logins per client address; a client over the limit is locked out for a while.

    Only different wrong credentials count: a guesser tries new passwords, while a browser
    still holding an old password (changed meanwhile) repeats the same one with every poll
    and stream reconnect, and must not lock out its address (often shared by a whole crew
    behind one router). A repeat is refused at once, without the slow hash."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lock = threading.Lock()
        self.clients: dict[str, _Client] = {}

    def retry_after(self, client: str) -> float:
        """Seconds until this client may try again (0: now)."""
        with self.lock:
            c = self.clients.get(client)
            return max(0.0, c.locked_until - time.monotonic()) if c else 0.0

    def repeated(self, client: str, what: bytes) -> bool:
        """True when these same credentials already failed from this client in the window."""
        now = time.monotonic()
        with self.lock:
            c = self.clients.get(client)
            return c is not None and any(w == what and t >= now - self.window_s for t, w in c.failures)

    def failed(self, client: str, what: bytes = b"") -> float:
        """Count a failure of `what` (a keyed hash of the credentials); returns the lock-out it
        started, in seconds, or 0."""
        now = time.monotonic()
        with self.lock:
            if client not in self.clients and len(self.clients) >= THROTTLE_MAX_CLIENTS:
                self._prune(now)
            c = self.clients.setdefault(client, _Client())
            c.failures.append((now, what))
            while c.failures and c.failures[0][0] < now - self.window_s:
                c.failures.popleft()
            if len(c.failures) < self.max_failures:
                return 0.0
            c.failures.clear()
            lock_s = min(self.window_s * 2 ** c.lockouts, LOCKOUT_MAX_S)
            c.lockouts += 1
            c.locked_until = now + lock_s
            return lock_s

    def succeeded(self, client: str) -> None:
        with self.lock:
            c = self.clients.get(client)
            if c is not None:
                c.failures.clear()

    def _prune(self, now: float) -> None:
        for key in [k for k, c in self.clients.items()
                    if c.locked_until < now and (not c.failures or c.failures[-1][0] < now - self.window_s)]:
            del self.clients[key]
        while len(self.clients) >= THROTTLE_MAX_CLIENTS:  # still full: forget the oldest
            self.clients.pop(next(iter(self.clients)))


# -- the audit trail ----------------------------------------------------------------------


def audit(event: str, user: str | None = None, client: str | None = None, **detail: Any) -> None:
    """Log an audit event and publish it on the bus (the saver stores it). Never a password."""
    cfg = current_app.config["RIGTEL"]
    record = {"event": event, "user": user or "", "client": client or "", **detail}
    log.warning("audit %s", " ".join(f"{k}={v!r}" for k, v in record.items()))
    try:
        current_app.extensions["rigtel.bus"].publish(AUDIT_TOPIC, {**record, "rig": cfg.rig_id})
    except Exception as e:  # the log line above is the record of last resort
        log.error("audit event %s not published on the bus: %s", event, e)


# -- same-origin check ---------------------------------------------------------------------


def cross_site_reason() -> str | None:
    """Why this unsafe request looks cross-site, or None when it is same-origin (or no browser's)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return None if site in ("same-origin", "none") else f"Sec-Fetch-Site is {site!r}"
    origin = request.headers.get("Origin")
    if origin is None:
        return None  # browsers always send Origin with unsafe methods; curl and scripts need not
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        netloc = ""
    if not netloc or netloc != request.host.lower():
        return f"Origin {origin[:100]!r} is not this host {request.host[:100]!r}"
    return None


# -- wiring ---------------------------------------------------------------------------------


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    import orjson

    return Response(orjson.dumps({"error": message}), status, mimetype="application/json",
                    headers={"Cache-Control": "no-store", **(headers or {})})


def install(app: Flask) -> HTTPBasicAuth:
    """Attach authentication, roles, throttling, the same-origin check and the audit trail."""
    cfg = app.config["RIGTEL"]
    basic = HTTPBasicAuth(realm=REALM)
    cache = VerifiedCache(cfg.web_auth_cache_s)
    throttle = LoginThrottle(cfg.web_login_max_failures, cfg.web_login_window_s)

    def users_changed(event: str, detail: dict[str, Any]) -> None:
        log.warning("users file %s changed: %s", cfg.users_file, detail)
        with app.app_context():
            audit(event, None, None, **detail)

    directory = UserDirectory(cfg.users_file, users_changed)
    # what an unknown user's login costs, so timing does not tell which names exist
    decoy_hash = users_mod.hash_password(secrets.token_hex(16))
    # one slow hash at a time: werkzeug's scrypt takes 32 MiB for its ~100 ms, so browsers
    # logging in together (every live page reconnecting after a restart) multiplied it:
    # 3 at once took the web from 42 to 111 MB RSS. Queued they cost the same CPU. A request
    # that waited looks in the cache again: one browser's parallel requests after a restart
    # then pay for one hash, not one each in turn.
    slow_hash = threading.Lock()

    def check_hash(stored_hash: str, password: str, token: bytes | None = None) -> bool:
        with slow_hash:
            if token is not None and cache.hit(token, stored_hash):
                return True
            return users_mod.check_password_hash(stored_hash, password)
    app.extensions["rigtel.auth"] = basic
    app.extensions["rigtel.throttle"] = throttle

    @basic.verify_password
    def verify(name: str, password: str):
        if not name or name == LOGOUT_USER:
            return None  # no credentials, or a logged-out browser: ask, do not count
        user = directory.get(name)
        token = cache.token(name, password)
        client = request.remote_addr or ""
        failure = token + (user.hash.encode() if user else b"")  # a new stored password is a new try
        if throttle.repeated(client, failure):
            return None  # the same wrong credentials again (a stale browser): refused, not counted
        if user is not None and (cache.hit(token, user.hash) or check_hash(user.hash, password, token)):
            cache.put(token, user.hash)
            throttle.succeeded(request.remote_addr or "")
            g.rigtel_token = token
            return user
        if user is None:
            check_hash(decoy_hash, password)
        lock_s = throttle.failed(client, failure)
        audit("login_failed", name[:64], client, path=request.path[:200])
        if lock_s:
            audit("login_locked", name[:64], client, seconds=round(lock_s))
        return None

    @basic.get_user_roles
    def roles(user: users_mod.User) -> list[str]:
        return ["admin", "viewer"] if user.role == "admin" else ["viewer"]

    def challenge(message: str = "log in to use the dashboard") -> Response:
        headers = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}
        if request.path.startswith("/api/"):
            return error(401, message, headers)
        # what a browser shows when its login box is cancelled
        page = (f"<!doctype html><title>rigtel: log in</title><h1>rigtel</h1><p>{html.escape(message)}. "
                "Reload the page to log in. Users are added on the appliance with "
                "<code>rigtel user add</code>.</p>")
        return Response(page, 401, mimetype="text/html", headers={"Cache-Control": "no-store", **headers})

    @app.before_request
    def gate():
        if request.endpoint in PUBLIC_ENDPOINTS or (request.endpoint == LOGOUT_ENDPOINT
                                                     and request.method in ("GET", "HEAD")):
            return None
        if request.method not in SAFE_METHODS:
            reason = cross_site_reason()
            if reason:
                audit("cross_site_refused", None, request.remote_addr, method=request.method,
                      path=request.path[:200], reason=reason)
                return error(403, f"cross-site request refused ({reason})")
        wait = throttle.retry_after(request.remote_addr or "")
        if wait > 0:
            return error(429, f"too many failed logins from {request.remote_addr}; try again in "
                              f"{int(wait) + 1} s", {"Retry-After": str(int(wait) + 1)})
        auth = basic.get_auth()
        user = basic.authenticate(auth, None)
        if not user:
            wait = throttle.retry_after(request.remote_addr or "")
            if wait > 0:  # this very failure locked the client out
                return error(429, f"too many failed logins; try again in {int(wait) + 1} s",
                             {"Retry-After": str(int(wait) + 1)})
            return challenge()
        g.flask_httpauth_user = user
        role = request_role()
        if not basic.authorize(role, user, auth):
            g.rigtel_refused = True
            audit("forbidden", user.name, request.remote_addr, method=request.method, path=request.path[:200])
            return error(403, f"{user.name} is a {user.role}: this needs the {role} role")
        return None

    @app.after_request
    def audit_changes(response: Response) -> Response:
        user = g.get("flask_httpauth_user")
        if user is not None and request.method not in SAFE_METHODS and not g.get("rigtel_refused"):
            role = request_role()
            audit("admin_action" if role == "admin" else "change", user.name, request.remote_addr,
                  method=request.method, path=request.path[:200], status=response.status_code)
        return response

    @app.get("/logout")
    def logout():
        auth = basic.get_auth()
        if auth is not None and auth.username == LOGOUT_USER:
            # the placeholder the Log out link sends: accepted here only, so the browser keeps it
            return error(200, "logged out")
        if auth is not None and auth.username:
            # no password check here (it would be an unthrottled oracle): forget a remembered login
            if cache.forget(cache.token(auth.username, auth.password or "")):
                audit("logout", auth.username[:64], request.remote_addr)
        return challenge("logged out: close this tab, or reload to log in again")

    @app.get("/api/me")
    def me():
        user = basic.current_user()
        return {"user": user.name, "role": user.role}

    return basic


def current_user() -> users_mod.User | None:
    """The logged-in user of this request, if any."""
    return g.get("flask_httpauth_user")
