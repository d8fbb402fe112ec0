"""`rigtel status` and `rigtel check`: is the appliance healthy, in one look.

`supervisorctl status` shows whether programs run; `rigtel status` adds what it cannot:
whether data is arriving and stored (freshness), messages lost on the bus (gaps), the last
backup, free disk and the TLS certificate's expiry. It exits 1 when any program is not
RUNNING (BACKOFF included: supervisorctl itself exits 0 then) or data is stale, so
monitoring and scripts can rely on it.

`rigtel check` is the smoke test the installer runs at the end: everything `status` looks
at, plus a message sent through the broker and back, and the dashboard's /healthz. With
`--wait S` it retries until all pass or S seconds are up (programs need a moment to start).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import ssl
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from appliance.config import Config

OK, WARN, FAIL = "ok", "warn", "FAIL"
GAP_WINDOW_S = 3600
BACKUP_DUE_H = 26  # a nightly backup older than this means one was missed
CERT_WARN_DAYS = 30


class Check(NamedTuple):
    name: str
    level: str  # OK, WARN or FAIL
    text: str


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _setting(cfg: Config, name: str, default: Any = "") -> Any:
    """A setting that a later feature declares (TLS); absent from older settings tables."""
    return cfg.values.get(name, default)


def check_programs(cfg: Config) -> list[Check]:
    from appliance.web.api import supervisor_states

    states = supervisor_states(cfg.supervisor_socket)
    if isinstance(states, str):
        return [Check("programs", FAIL, f"{states}: is supervisord running? "
                                        f"(systemctl status rigtel, or the installer's start command)")]
    return program_checks(states, cfg)


def program_checks(states: list[dict[str, Any]], cfg: Config) -> list[Check]:
    """A check per program supervisord has, and per optional program it has not (off, or
    on in the settings but not rendered)."""
    from appliance.ops.layout import OPTIONAL_PROGRAMS, programs_off

    out = []
    for p in states:
        level = OK if p["state"] == "RUNNING" else FAIL
        out.append(Check(f"program {p['name']}", level, f"{p['state']} {p['description']}".strip()))
    off = programs_off(cfg)
    for name in OPTIONAL_PROGRAMS:  # not in supervisord.conf: meant to be, or not?
        if not any(p["name"] == name for p in states):
            out.append(Check(f"program {name}", OK, off[name]) if name in off else Check(
                f"program {name}", FAIL, f"on in the settings but not in supervisord.conf: run the "
                                         f"installer again (or `rigtel dev`) to render it"))
    return out


def _open_db(cfg: Config) -> sqlite3.Connection:
    if not os.path.exists(cfg.database_path):
        raise sqlite3.OperationalError(f"no database at {cfg.database_path}")
    db = sqlite3.connect(f"file:{cfg.database_path}?mode=ro", uri=True, timeout=5)
    return db


def check_data(cfg: Config, stale_s: float) -> list[Check]:
    """When the saver last stored drilling data, and gaps detected in the last hour."""
    try:
        db = _open_db(cfg)
        try:
            newest = db.execute("SELECT max(updated_ms) FROM streams WHERE topic = 'drilling'").fetchone()[0]
            gaps, lost = db.execute("SELECT count(*), coalesce(sum(last_seq - first_seq + 1), 0) FROM gaps "
                                    "WHERE detected_ms >= ?", (now_ms() - GAP_WINDOW_S * 1000,)).fetchone()
            from appliance.store.read import active_alerts

            alerts = active_alerts(db)
        finally:
            db.close()
    except sqlite3.Error as e:
        return [Check("data", FAIL, f"cannot read the database: {e}")]
    out = []
    if newest is None:
        out.append(Check("data", FAIL, "no drilling data stored yet: is the source (simulator or rig feed) "
                                       "running and the saver RUNNING?"))
    else:
        age = (now_ms() - newest) / 1000
        level = OK if age <= stale_s else FAIL
        out.append(Check("data", level, f"drilling data last stored {age:.0f} s ago"
                         + ("" if level == OK else f" (stale: more than {stale_s:g} s)")))
    out.append(Check("bus gaps", OK if gaps == 0 else WARN,
                     f"{gaps} gap(s), {lost} message(s) lost in the last hour"))
    high = [a for a in alerts if a.get("priority") in ("high", "urgent") and a["state"].startswith("active")]
    out.append(Check("alerts", WARN if high else OK,
                     f"{len(alerts)} active or unacknowledged"
                     + (f", {len(high)} of high priority: {', '.join(str(a.get('id')) for a in high[:5])}"
                        if high else "")))
    return out


def check_backup(cfg: Config) -> Check:
    from appliance.store.backup import default_folder, list_backups

    backups = list_backups(default_folder(cfg))
    if not backups:
        return Check("last backup", WARN, f"none yet in {default_folder(cfg)} (nightly at {cfg.backup_time}; "
                                          "`rigtel backup` takes one now)")
    newest = backups[0]
    age_h = (datetime.now(timezone.utc) - newest.taken).total_seconds() / 3600
    level = OK if age_h <= BACKUP_DUE_H else WARN
    return Check("last backup", level, f"{newest.path.name}, {age_h:.1f} h ago, "
                                       f"{newest.size_bytes / 1e6:.1f} MB")


def check_disk(cfg: Config) -> Check:
    folder = Path(cfg.database_path).resolve().parent
    while not folder.exists():
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    free_mb = usage.free / 1e6
    level = OK if free_mb >= cfg.disk_min_free_mb else FAIL
    return Check("disk", level, f"{free_mb:,.0f} MB free of {usage.total / 1e6:,.0f} MB on {folder}"
                 + ("" if level == OK else f" (below disk_min_free_mb = {cfg.disk_min_free_mb})"))


def certificate_expiry(path: str) -> datetime:
    """The certificate's notAfter, UTC; raises ValueError when it cannot be read."""
    from appliance.security.certs import info

    try:
        return datetime.fromtimestamp(info(path).not_after_ms / 1000, timezone.utc)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the certificate {path}: {e}") from None


def check_certificate(cfg: Config) -> Check | None:
    path = _setting(cfg, "tls_cert_file")
    if not path:
        return None
    try:
        expires = certificate_expiry(path)
    except ValueError as e:
        return Check("certificate", FAIL, str(e))
    days = (expires - datetime.now(timezone.utc)).total_seconds() / 86400
    level = FAIL if days < 0 else WARN if days < CERT_WARN_DAYS else OK
    return Check("certificate", level, f"{path} expires {expires:%Y-%m-%d} ({days:.0f} days)"
                 + ("" if level == OK else ": renew it with `rigtel tls self-signed` or `rigtel tls install`"))


def check_bus(cfg: Config, timeout_s: float = 5) -> Check:
    """A probe published to the broker comes back through it."""
    import zmq

    from appliance.bus import Publisher
    from appliance.bus.envelope import decode
    from appliance.ops.runtime import tcp_endpoint

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(tcp_endpoint(cfg.bus_host, cfg.broker_backend_port))
    topic = f"sys.check.{os.getpid()}"
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    pub = Publisher("check", settings=cfg, context=ctx)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            # republish until the subscription has reached the broker (slow joiner)
            pub.publish(topic, {"probe": 1})
            if sub.poll(200):
                frames = sub.recv_multipart()
                if len(frames) == 2 and decode(frames[0], frames[1], cfg.bus_max_message_bytes).src == pub.src:
                    return Check("bus", OK, f"a probe went through the broker "
                                            f"({cfg.bus_host}:{cfg.broker_frontend_port} -> "
                                            f"{cfg.broker_backend_port})")
        return Check("bus", FAIL, f"no probe came back through the broker within {timeout_s:g} s: "
                                  "is the broker RUNNING?")
    finally:
        pub.close()
        sub.close()
        ctx.term()


def web_url(cfg: Config) -> str:
    scheme = "https" if _setting(cfg, "tls_cert_file") else "http"
    host = cfg.web_host if cfg.web_host not in ("0.0.0.0", "::") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{cfg.web_port}/"


def check_web(cfg: Config) -> Check:
    url = web_url(cfg) + "healthz"
    context = None
    if url.startswith("https"):
        # trust our own certificate (self-signed or not) as the anchor; the name is not checked
        # because monitoring asks by loopback address
        context = ssl.create_default_context(cafile=_setting(cfg, "tls_cert_file"))
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.check_hostname = False
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as r:
            body = json.load(r)
    except (OSError, ValueError, urllib.error.URLError) as e:
        return Check("web", FAIL, f"{url} did not answer: {e}")
    return Check("web", OK if body.get("status") == "ok" else FAIL, f"{url} answers {body}")


def gather(cfg: Config, stale_s: float, probe: bool) -> list[Check]:
    checks = check_programs(cfg) + check_data(cfg, stale_s) + [check_backup(cfg), check_disk(cfg)]
    cert = check_certificate(cfg)
    checks += [cert] if cert else []
    if probe:
        checks += [check_bus(cfg), check_web(cfg)]
    return checks


def report(checks: list[Check], as_json: bool) -> str:
    if as_json:
        return json.dumps({"healthy": healthy(checks),
                           "checks": [c._asdict() for c in checks]}, indent=1)
    width = max(len(c.name) for c in checks)
    lines = [f"{c.level:<4}  {c.name:<{width}}  {c.text}" for c in checks]
    lines.append("healthy" if healthy(checks) else
                 "NOT healthy: see the FAIL lines above; docs/DEPLOYMENT.md (Troubleshooting) says what to do")
    return "\n".join(lines)


def healthy(checks: list[Check]) -> bool:
    return not any(c.level == FAIL for c in checks)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    from appliance.cli import settings_parser

    parser = settings_parser(prog, description)
    parser.add_argument("--stale", type=float, default=60, metavar="S",
                        help="drilling data older than S seconds is stale (default 60)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    return parser


def _run(argv: Sequence[str], prog: str, description: str, probe: bool,
         waiting: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    from appliance.cli import load_settings

    parser = _parser(prog, description)
    if waiting:
        waiting(parser)
    args = parser.parse_args(argv)
    cfg = load_settings(args)
    deadline = time.monotonic() + getattr(args, "wait", 0)
    while True:
        checks = gather(cfg, args.stale, probe)
        if healthy(checks) or time.monotonic() >= deadline:
            break
        time.sleep(1)  # programs are still starting: look again
    print(report(checks, args.json))
    return 0 if healthy(checks) else 1


def main(argv: Sequence[str]) -> int:
    return _run(argv, "status", "Every program's state plus data freshness, bus gaps, last backup, disk and "
                                "certificate expiry. Exits 1 when a program is not RUNNING or data is stale.",
                probe=False)


def check_main(argv: Sequence[str]) -> int:
    def wait_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--wait", type=float, default=0, metavar="S",
                            help="retry for up to S seconds until every check passes (default: once)")

    return _run(argv, "check", "Smoke test of the running appliance: programs, data, a probe through the "
                               "broker and the dashboard's /healthz. Exits 0 when all pass, else 1.",
                probe=True, waiting=wait_option)

