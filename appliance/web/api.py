"""The JSON API under /api/, documented in docs/API.md.

Times are UTC epoch milliseconds. Bad parameters get a 400 with {"error": "..."} saying
what to change; an unknown channel is a 400 too, naming it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from typing import Any, Iterator

import orjson
from flask import Blueprint, Response, abort, current_app, g, jsonify, request

from appliance.bus.envelope import MAX_TS
from appliance.channels import BY_MNEMONIC
from appliance.store import read
from appliance.store import thresholds as limits
from appliance.store.schema import connect_reader
from appliance.web.auth import admin_only, current_user

bp = Blueprint("api", __name__)

STREAM_HEARTBEAT_S = 5.0
STREAM_BACKFILL_MS = 15 * 60_000  # the most a reconnecting browser is refilled from storage
EXPORT_CHUNK_MS = 3_600_000


class BadRequest(Exception):
    pass


@bp.errorhandler(BadRequest)
@bp.errorhandler(read.QueryError)
def bad_request(e: Exception):
    return jsonify(error=str(e)), 400


def cfg():
    return current_app.config["RIGTEL"]


def database_path() -> str:
    """The database's path; a 503 saying so when the saver has not made it yet."""
    path = cfg().database_path
    if not os.path.exists(path):
        abort(Response(orjson.dumps({"error": f"no database yet at {path}: is the saver running?"}),
                       503, mimetype="application/json"))
    return path


def db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = connect_reader(database_path())
    return g.db


@bp.teardown_app_request
def close_db(exc: BaseException | None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def login_name() -> str:
    """Who is changing something: the logged-in user (events record it as `by`)."""
    user = current_user()
    return user.name if user else request.remote_addr or ""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def int_arg(name: str, default: int | None = None, low: int = 0, high: int = MAX_TS - 1) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        if default is None:
            raise BadRequest(f"parameter '{name}' is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"parameter '{name}' must be a whole number, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"parameter '{name}' must be between {low} and {high}")
    return value


def channels_arg(required: bool = True) -> list[str]:
    raw = request.args.get("channels", "")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if required and not names:
        raise BadRequest("parameter 'channels' is required: a comma-separated list of channel names")
    if len(names) > 100:
        raise BadRequest("at most 100 channels per request")
    return names


def json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, mimetype="application/json")


# -- channels and history ---------------------------------------------------------------


@bp.get("/channels")
def channels():
    stored = read.channels(db())
    out = []
    for c in stored:
        entry = BY_MNEMONIC.get(c.name)
        out.append({"name": c.name, "topic": c.topic, "unit": c.unit,
                    "description": entry.description if entry else "",
                    "low": entry.low if entry else None, "high": entry.high if entry else None,
                    "first_ts": c.first_ts})
    return json(out)


@bp.get("/series")
def series():
    end = int_arg("to", now_ms())
    start = int_arg("from", end - 3_600_000)
    # a list of per-channel pieces: waitress sends them one by one, and no channel's values
    # are Python objects while another's are built (read.series_json)
    return Response(read.series_json(db(), channels_arg(), start, end,
                                     max_points=int_arg("max_points", read.DEFAULT_MAX_POINTS, 1,
                                                        read.MAX_POINTS_LIMIT),
                                     resolution=request.args.get("resolution") or None),
                    mimetype="application/json")


@bp.get("/latest")
def latest():
    """The newest value of each channel: the newer of the hub's live one (`drilling` and
    `derived`) and the newest stored (custom topics' channels, and everything while no live
    frame has come since this process started). Every channel /api/channels lists answers."""
    hub = current_app.extensions["rigtel.hub"]
    names = channels_arg(required=False)
    values = dict(hub.latest) if hub is not None else {}
    if names:
        values = {k: v for k, v in values.items() if k in names}
    if os.path.exists(cfg().database_path):  # no database yet: the live values alone, not a 503
        for name, (ts, value) in read.latest(db(), names or None).items():
            if name not in values or ts > values[name][0]:
                values[name] = (ts, value)
    return json({"values": {k: {"ts": ts, "value": v} for k, (ts, v) in values.items()},
                 "data_age_s": hub.data_age_s() if hub is not None else None})


@bp.get("/export")
def export():
    """A channel set over a range as CSV, LAS 2.0 or WITSML 1.4.1.1 (`format`), streamed
    hour by hour in constant memory."""
    from appliance.sources import writers  # with xml.sax and urllib: on the first export only

    names = channels_arg()
    end = int_arg("to", now_ms())
    start = int_arg("from", end - 3_600_000)
    fmt = request.args.get("format", "csv").lower()
    if fmt not in writers.FORMATS:
        raise BadRequest(f"format must be one of {', '.join(writers.FORMATS)}, not {fmt!r}")
    if end <= start:
        raise BadRequest(f"the range is empty or inverted: from {start} to {end}")
    conn = db()
    read.series(conn, names, start, min(end, start + 1), max_points=1, resolution="raw")  # validates names
    path = cfg().database_path
    stored = dict(conn.execute(f"SELECT name, unit FROM channels WHERE name IN ({', '.join('?' * len(names))})",
                               names).fetchall())
    columns = [(n, stored.get(n) or (BY_MNEMONIC[n].unit if n in BY_MNEMONIC else "")) for n in names]
    rig = cfg().rig_id

    def generate() -> Iterator[str]:
        # its own connection: the request's is closed when the view returns
        with_conn = connect_reader(path)
        try:
            rows = read.iter_rows(with_conn, names, start, end, EXPORT_CHUNK_MS)
            pieces: list[str] = []
            size = 0
            for piece in writers.log_text(fmt, columns, rows, start_ms=start, end_ms=end, well=rig):
                pieces.append(piece)
                size += len(piece)
                if size > 65536:
                    yield "".join(pieces)
                    pieces.clear()
                    size = 0
            yield "".join(pieces)
        finally:
            with_conn.close()

    filename = f"rigtel-{rig}-{start}-{end}.{writers.EXTENSIONS[fmt]}"
    return Response(generate(), mimetype=writers.MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# -- alerts -----------------------------------------------------------------------------

ACK_TRANSITIONS = {"active_unack": "active_ack", "cleared_unack": "normal"}


@bp.get("/alerts")
def alerts():
    state = request.args.get("state", "active")
    if state not in ("active", "all"):
        raise BadRequest("parameter 'state' must be 'active' or 'all'")
    limit = int_arg("limit", 500, 1, 10_000)
    if state == "active":
        rows = read.active_alerts(db())
    else:
        end = int_arg("to", now_ms())
        rows = read.alert_history(db(), int_arg("from", end - 7 * 86_400_000), end, limit,
                                  kind=request.args.get("kind") or None)
    return json(rows)


@bp.post("/alerts/<alert_id>/ack")
def acknowledge(alert_id: str):
    """Any logged-in user, viewer included, may acknowledge: the driller at the console must."""
    current = read.alert_state(db(), alert_id)
    if current is None:
        return json({"error": f"no alert {alert_id!r}"}, 404)
    new_state = ACK_TRANSITIONS.get(current.get("state", ""))
    if new_state is None:
        return json({"error": f"alert {alert_id!r} is {current.get('state')}: nothing to acknowledge"}, 409)
    event = {k: v for k, v in current.items() if k not in ("ts", "state", "src", "seq")}
    event.update(state=new_state, action="ack", by=login_name())
    current_app.extensions["rigtel.bus"].publish("alert", event)
    return json({"id": alert_id, "state": new_state}, 202)


@bp.get("/audit")
@admin_only
def audit_trail():
    """Failed logins, lock-outs, changes and refused bus keys, newest first (admins only)."""
    end = int_arg("to", now_ms())
    return json(read.audit_events(db(), int_arg("from", end - 7 * 86_400_000), end, int_arg("limit", 500, 1, 10_000),
                                  event=request.args.get("event") or None))


SHELVE_MAX_MINUTES = 24 * 60
SHELVABLE = ("active_unack", "active_ack", "cleared_unack", "shelved", "normal")


@bp.post("/alerts/<alert_id>/shelve")
@admin_only
def shelve(alert_id: str):
    """Hide an alarm for `minutes` with a `reason` (ISA-18.2 shelving); the predictor brings
    it back when the time is up, raised if its condition still holds."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest('send a JSON object: {"minutes": N, "reason": "why"}')
    minutes, reason = body.get("minutes"), body.get("reason")
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 1 <= minutes <= SHELVE_MAX_MINUTES:
        raise BadRequest(f"'minutes' must be a number from 1 to {SHELVE_MAX_MINUTES}")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise BadRequest("'reason' must say why, in up to 500 characters")
    current = read.alert_state(db(), alert_id)
    if current is None:
        return json({"error": f"no alert {alert_id!r}"}, 404)
    if current.get("state") not in SHELVABLE:
        return json({"error": f"alert {alert_id!r} is {current.get('state')}: it cannot be shelved"}, 409)
    until = now_ms() + round(minutes * 60_000)
    event = {k: v for k, v in current.items() if k not in ("ts", "state", "src", "seq")}
    event.update(state="shelved", action="shelve", minutes=minutes, reason=reason.strip(), until_ms=until,
                 by=login_name())
    current_app.extensions["rigtel.bus"].publish("alert", event)
    return json({"id": alert_id, "state": "shelved", "until_ms": until}, 202)


# -- alarm thresholds ------------------------------------------------------------------


def _derived_channels(conn: sqlite3.Connection) -> list[read.ChannelInfo]:
    return [c for c in read.channels(conn) if c.name not in BY_MNEMONIC and c.topic == "derived"]


@bp.get("/thresholds")
def thresholds():
    """Every channel that can carry alarm limits, with the limits in force (null: not set)."""
    conn = db()
    current = read.current_thresholds(conn)
    rows = [{"channel": c.mnemonic, "description": c.description, "unit": c.unit, "low": c.low,
             "high": c.high} for c in BY_MNEMONIC.values() if limits.limitable(c)]
    rows += [{"channel": c.name, "description": "derived", "unit": c.unit, "low": None, "high": None}
             for c in _derived_channels(conn)]
    listed = {r["channel"] for r in rows}
    rows += [{"channel": name, "description": "", "unit": "", "low": None, "high": None}
             for name in current if name not in listed]
    empty = dict.fromkeys(("hh", "h", "l", "ll", "deadband", "priority", "by", "ts"))
    for r in rows:
        setting = current.get(r["channel"], empty)
        r.update({k: setting[k] for k in empty})
    return json({"thresholds": rows, "priorities": list(limits.PRIORITIES)})


@bp.get("/thresholds/<channel>")
def threshold_history(channel: str):
    """One channel's threshold changes, newest first (who changed what, when)."""
    return json({"channel": channel, "history": read.threshold_history(db(), channel,
                                                                        int_arg("limit", 50, 1, 1000))})


@bp.put("/thresholds/<channel>")
@admin_only
def set_threshold(channel: str):
    """Check a channel's new limits and publish them on `control.thresholds`; the predictor
    applies them at once and the saver stores them. 202: accepted, being applied."""
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("send the limits as a JSON object: "
                         '{"hh": number|null, "h": ..., "l": ..., "ll": ..., "deadband": ..., "priority": ...}')
    if isinstance(body, dict) and "by" in body:
        raise BadRequest("'by' is set by the appliance from your login, not by the request")
    extra = frozenset(c.name for c in _derived_channels(db()))
    try:
        setting = limits.check(body, channel=channel, extra_channels=extra)
    except limits.ThresholdError as e:
        raise BadRequest(str(e)) from None
    setting = setting._replace(by=login_name())
    current_app.extensions["rigtel.bus"].publish(limits.TOPIC, setting.as_dict())
    return json(setting.as_dict(), 202)


# -- live stream ------------------------------------------------------------------------


def sse(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


@bp.get("/stream")
def stream():
    """Server-Sent Events: `frames` (coalesced), `alert`, `status`; heartbeats between."""
    hub = current_app.extensions["rigtel.hub"]
    if hub is None:
        return json({"error": "live data is not available in this process"}, 503)
    names = channels_arg(required=False)
    ceiling = float(cfg().web_stream_hz)
    try:
        rate_hz = float(request.args.get("rate_hz") or ceiling)
    except ValueError:
        raise BadRequest("parameter 'rate_hz' must be a number") from None
    if not 0.2 <= rate_hz <= ceiling:
        raise BadRequest(f"parameter 'rate_hz' must be from 0.2 to {ceiling:g}")
    last_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    backfill_from = None
    if last_id:
        try:
            backfill_from = max(int(last_id) + 1, now_ms() - STREAM_BACKFILL_MS)
        except ValueError:
            raise BadRequest("Last-Event-ID must be the id of an event this server sent") from None
    s = hub.open(frozenset(names) if names else None)
    if s is None:
        return Response(orjson.dumps({"error": "too many live streams open; retry shortly"}), 503,
                        mimetype="application/json", headers={"Retry-After": "5"})
    path = cfg().database_path
    interval = 1.0 / rate_hz

    def generate() -> Iterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            if backfill_from is not None and names and os.path.exists(path):
                conn = connect_reader(path)
                try:
                    frames = [(ts, {n: v for n, v in zip(names, values) if v is not None})
                              for ts, values in read.iter_rows(conn, names, backfill_from,
                                                               # not now: a simulator's rig time runs ahead
                                                               backfill_from + STREAM_BACKFILL_MS,
                                                               EXPORT_CHUNK_MS, known_only=True)]
                finally:
                    conn.close()
                if frames:
                    yield sse("frames", {"frames": frames, "backfill": True}, frames[-1][0])
            latest_values = dict(hub.latest)
            yield sse("snapshot", {"values": {k: [ts, v] for k, (ts, v) in latest_values.items()
                                              if not names or k in names},
                                   "alerts": list(hub.active_alerts.values()),
                                   "data_age_s": hub.data_age_s()})
            next_status = time.monotonic() + STREAM_HEARTBEAT_S
            while not hub.stopping:
                s.wake.wait(STREAM_HEARTBEAT_S)
                frames, alerts_ = s.drain()
                if frames:
                    yield sse("frames", {"frames": frames, "skipped": s.skipped}, frames[-1][0])
                for ts, alert in alerts_:
                    yield sse("alert", {"ts": ts, **alert})
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + STREAM_HEARTBEAT_S
                    yield sse("status", {"data_age_s": hub.data_age_s(), "skipped": s.skipped,
                                         "streams": hub.stream_count()})
                # coalesce: whatever arrives during the interval goes out together
                hub.wait_stopping(interval)
        finally:
            hub.close_stream(s)

    response = Response(generate(), mimetype="text/event-stream",
                        headers={"X-Accel-Buffering": "no", "Cache-Control": "no-store"})
    # also when the generator never starts (a HEAD request): give the slot back
    response.call_on_close(lambda: hub.close_stream(s))
    return response


# -- system -----------------------------------------------------------------------------


def supervisor_states(socket_path: str) -> list[dict[str, Any]] | str:
    """Every program's state from supervisord, or why it could not be asked."""
    if not os.path.exists(socket_path):
        return f"no supervisord control socket at {socket_path}"
    import xmlrpc.client  # with xml.parsers and gzip: once the System view asks

    from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

    class TimedConnection(UnixStreamHTTPConnection):
        def connect(self) -> None:
            super().connect()
            self.sock.settimeout(5)  # a hung supervisord must not hold a web thread

    transport = SupervisorTransport(None, None, serverurl=f"unix://{socket_path}")
    connection = TimedConnection("localhost")
    connection.socketfile = socket_path
    transport._get_connection = lambda: connection
    try:
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        infos = proxy.supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error) as e:
        return f"supervisord did not answer on {socket_path}: {e}"
    finally:
        transport.close()
    return [{"name": p["name"], "state": p["statename"], "pid": p["pid"],
             "description": p["description"], "since": p["start"]} for p in infos]


@bp.get("/system")
def system():
    c = cfg()
    hub = current_app.extensions["rigtel.hub"]
    db_path = c.database_path
    sizes = {suffix or "db": os.path.getsize(db_path + suffix)
             for suffix in ("", "-wal") if os.path.exists(db_path + suffix)}
    folder = os.path.dirname(os.path.abspath(db_path))
    disk = shutil.disk_usage(folder) if os.path.isdir(folder) else None
    backup_dir = c.backup_dir or os.path.join(c.data_dir, "backups")
    backups = sorted((f for f in os.listdir(backup_dir) if f.endswith(".db")), reverse=True) \
        if os.path.isdir(backup_dir) else []
    last_backup = None
    if backups:
        st = os.stat(os.path.join(backup_dir, backups[0]))
        last_backup = {"name": backups[0], "bytes": st.st_size, "mtime_ms": int(st.st_mtime * 1000)}
    programs = supervisor_states(c.supervisor_socket)
    stats = read.storage_stats(db()) if os.path.exists(db_path) else {}
    return json({
        "programs": programs if isinstance(programs, list) else [],
        "programs_error": programs if isinstance(programs, str) else None,
        "bus": {"received": dict(hub.stats) if hub else {}, "gaps": hub.tracker.gaps if hub else 0,
                "lost": hub.tracker.lost if hub else 0, "data_age_s": hub.data_age_s() if hub else None,
                "streams": hub.stream_count() if hub else 0},
        "database": {"path": db_path, "bytes": sizes, **stats},
        "sources": hub.source_states() if hub else [],
        "disk": {"free_bytes": disk.free, "total_bytes": disk.total} if disk else None,
        "last_backup": last_backup,
        "tls": tls_status(c.tls_cert_file),
    })


def tls_status(cert_file: str) -> dict[str, Any]:
    """The dashboard certificate's names and expiry (with a warning 30 days ahead), or why not."""
    from appliance.security import certs

    try:
        return certs.info(cert_file).as_dict()
    except (OSError, ValueError) as e:
        return {"path": cert_file, "error": f"cannot read the HTTPS certificate {cert_file}: {e}"}


# -- performance KPIs -------------------------------------------------------------------


@bp.get("/kpis")
def kpis():
    """Connections, trips, ROP per stand, time by activity and NPT, estimated from raw channels.

    Computed in a child process (appliance.analytics.offload): numpy stays out of this one."""
    from appliance.analytics.offload import KpiFailed

    end = int_arg("to", now_ms())
    start = int_arg("from", end - 86_400_000)
    if end <= start:
        raise BadRequest(f"the range is empty or inverted: from {start} to {end}")
    path = database_path()
    try:
        body = current_app.extensions["rigtel.kpis"].kpis_json(path, start, end)
    except KpiFailed as e:
        headers = {"Retry-After": str(e.retry_after_s)} if e.retry_after_s else {}
        return Response(orjson.dumps({"error": str(e)}), e.status, mimetype="application/json", headers=headers)
    return Response(body, 200, mimetype="application/json")
