"""`rigtel dev` (what `make run` calls): the whole appliance from the checkout.

Lays out a prefix under var/dev in the checkout, writes its appliance.ini once (edit it
freely afterwards), renders supervisord.conf from the same template the installer uses,
and runs supervisord in the foreground. Ctrl-C stops every program cleanly.

The dashboard is HTTPS with logins here too: the first run makes a self-signed
certificate and a development admin user with a random password, kept (0600) in
var/dev/etc/rigtel/dev-admin-password and printed at every start.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Sequence

from appliance.ops.layout import Layout, render_supervisord_conf

CHECKOUT = Path(__file__).resolve().parents[2]

DEV_SETTINGS = """\
; Development settings for `make run`, written once by `rigtel dev`; edit freely.
; Every setting: README.md ("Settings") or `make config`.

[appliance]
rig_id = dev-rig
data_dir = {lib_dir}
database_path = {lib_dir}/rigtel.db
supervisor_socket = {run_dir}/supervisor.sock
; The simulator at speed 1: frames stamped with the wall clock. Its events count from each
; start of the simulator; the predictor raises the kick alarm about 6 minutes in, the washout
; about 25 minutes in and the SPPA sensor fault about 46 minutes in (README, "Simulator").
simulator_rate_hz = 1
simulator_speed = 1
simulator_events = kick@5m+10m,washout@25m+15m,spike:SPPA@45m+5m
"""

# Where the development prefix keeps its secrets; appended to an appliance.ini that lacks them.
DEV_SECURITY = {
    "tls_cert_file": "{etc_dir}/tls/cert.pem",
    "tls_key_file": "{etc_dir}/tls/key.pem",
    "users_file": "{etc_dir}/users.json",
    "bus_keys_dir": "{etc_dir}/curve",
}
DEV_ADMIN = "admin"
DEV_PASSWORD_FILE = "dev-admin-password"


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def prepare(prefix: Path, python: str) -> Layout:
    """Create the prefix tree and its configuration files; returns the layout."""
    layout = Layout(prefix.resolve())
    layout.make_dirs()
    if not layout.config_file.exists():
        layout.config_file.write_text(DEV_SETTINGS.format(lib_dir=layout.lib_dir, run_dir=layout.run_dir))
    text = layout.config_file.read_text()
    missing = [k for k in DEV_SECURITY if not any(line.split("=")[0].strip() == k for line in text.splitlines())]
    if missing:
        with layout.config_file.open("a") as f:
            f.write("\n; HTTPS and logins of the development prefix (added by `rigtel dev`)\n")
            for key in missing:
                f.write(f"{key} = {DEV_SECURITY[key].format(etc_dir=layout.etc_dir)}\n")
    from appliance.config import load  # raises ConfigError on a bad setting

    template = (CHECKOUT / "etc/supervisord.conf.in").read_text()
    settings = load(config_file=str(layout.config_file))  # which optional programs are in
    layout.supervisord_conf.write_text(render_supervisord_conf(template, layout, python, settings=settings))
    return layout


def stored_ahead_s(database_path: str, now_ms: int | None = None) -> float:
    """How far ahead of the clock the newest sample in the database is stamped, in seconds
    (0 when it is not, or there is no database or no sample yet)."""
    import sqlite3
    import time

    from appliance.store.backup import BackupError, open_read_only
    from appliance.store.maintenance import newest_sample_ms

    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    try:
        db = open_read_only(database_path)
    except (BackupError, sqlite3.Error):
        return 0.0
    try:
        newest = newest_sample_ms(db)
    except sqlite3.Error:  # no samples table yet, or a broken file: the saver's to report
        return 0.0
    finally:
        db.close()
    return max(0.0, (newest - now_ms) / 1000.0) if newest is not None else 0.0


def dev_login(cfg, layout: Layout) -> tuple[str, str]:
    """Make the dev prefix's certificate and admin user when missing; (user, password)."""
    from appliance.security import certs, users
    from appliance.security.files import write_private

    if not Path(cfg.tls_cert_file).exists():
        names, addresses = certs.host_names_and_addresses()
        cert_pem, key_pem = certs.make_self_signed(names, addresses)
        certs.write_pair(cfg.tls_cert_file, cfg.tls_key_file, cert_pem, key_pem)
    password_file = layout.etc_dir / DEV_PASSWORD_FILE
    existing = users.load(cfg.users_file)
    if DEV_ADMIN not in existing or not password_file.exists():
        password = secrets.token_urlsafe(12)
        users.set_user(cfg.users_file, DEV_ADMIN, "admin", password)
        write_private(password_file, (password + "\n").encode())
    return DEV_ADMIN, password_file.read_text().strip()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rigtel dev", description="Run the whole appliance from this checkout under supervisord "
                                       "(development prefix var/dev). Ctrl-C stops it.")
    parser.add_argument("--prefix", default=str(CHECKOUT / "var/dev"),
                        help="folder for the development tree (default: var/dev in the checkout)")
    parser.add_argument("--no-start", action="store_true",
                        help="write the configuration and print how to start, but do not start")
    args = parser.parse_args(argv)

    # settings as the programs will see them, to check the ports before starting
    from appliance.config import ConfigError, load
    try:
        layout = prepare(Path(args.prefix), sys.executable)
        cfg = load(config_file=str(layout.config_file))
    except ConfigError as e:
        print(f"rigtel dev: configuration error: {e}", file=sys.stderr)
        return 2
    ahead_s = stored_ahead_s(cfg.database_path)
    if ahead_s > 60:  # a prefix that ran the simulator faster than the clock (the first dev settings)
        print(f"rigtel dev: the database {cfg.database_path} holds frames stamped up to {ahead_s / 60:.0f} "
              f"minutes ahead of the clock, from a simulator run at simulator_speed above 1 (the first "
              f"development settings had 10). The dashboard shows them as the latest data, and new frames "
              f"stamped from the clock fall among them until the clock passes them. To start afresh at the "
              f"clock: stop the appliance, delete {layout.lib_dir} (this prefix's data), check that "
              f"{layout.config_file} has simulator_speed = 1, and make run again.", file=sys.stderr)
    conf = layout.supervisord_conf
    sock = layout.run_dir / "supervisor.sock"
    if sock.exists():
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            print(f"rigtel dev: supervisord is already running for {layout.root} "
                  f"(`make status` shows it; `make stop` stops it).", file=sys.stderr)
            return 1
        except OSError:
            sock.unlink()  # left over from a supervisord that was killed
    busy = [f"{cfg.bus_bind_host}:{p} ({name})"
            for name, p in (("broker_frontend_port", cfg.broker_frontend_port),
                            ("broker_backend_port", cfg.broker_backend_port))
            if port_in_use(cfg.bus_bind_host, p)]
    busy += [f"{cfg.web_host}:{p} ({name})"
             for name, p in (("web_port", cfg.web_port), ("web_http_port", cfg.web_http_port))
             if p > 0 and port_in_use(cfg.web_host, p)]
    if busy:
        ports = "|".join(b.split(" ")[0].rsplit(":", 1)[1] for b in busy)
        print(f"rigtel dev: {', '.join(busy)} already in use, so the appliance could not start. "
              f"Find the owner with `ss -ltnp | grep -E ':({ports})\\b'`, stop it, or choose other "
              f"ports in {layout.config_file}.", file=sys.stderr)
        return 1
    user, password = dev_login(cfg, layout)

    supervisorctl = f"{Path(sys.executable).parent / 'supervisorctl'} -c {conf}"
    rigtel = Path(sys.executable).parent / "rigtel"
    wits0_out = ", wits0-out" if cfg.wits0_out_enabled else ""
    wits0_off = "" if cfg.wits0_out_enabled else (
        "\n             (wits0-out is off: set wits0_out_enabled = true in the settings, then make run again)")
    print(f"""
Drilling telemetry appliance, development prefix {layout.root}
  dashboard: https://{cfg.web_host}:{cfg.web_port}/   (self-signed certificate: the browser warns once;
             http://{cfg.web_host}:{cfg.web_http_port}/ redirects there)
  login:     {user} / {password}   (kept in {layout.etc_dir / DEV_PASSWORD_FILE})
  programs:  broker, saver, predictor, web, source ({cfg.data_source}), logger, maintenance{wits0_out} (supervisord, restarted when they exit){wits0_off}
  database:  {cfg.database_path}
  status:    make status     (or: {supervisorctl} status)
  logs:      {layout.log_dir}/<program>.log   e.g. tail -f {layout.log_dir}/logger.log
  settings:  {layout.config_file}   (make config shows the effective values)
  commands:  export RIGTEL_CONFIG={layout.config_file}
             then {rigtel} ... (user add NAME --role viewer, status, ...) and your own
             Publisher/DataSubscriber scripts use this prefix's settings and ports
  stop:      Ctrl-C here, or make stop (closing the terminal stops it too)
""", flush=True)
    if args.no_start:
        return 0
    return supervise([str(Path(sys.executable).parent / "supervisord"), "-n", "-c", str(conf)])


def supervise(command: list[str]) -> int:
    """Run supervisord in the foreground until it exits; Ctrl-C, SIGTERM and a closed
    terminal (SIGHUP) all shut it down.

    supervisord takes SIGHUP as "reload": had it the terminal, closing the terminal would
    restart every program and leave them running. So it runs in a session of its own, this
    process turns each of those signals into its SIGTERM (a clean shutdown), and its output
    comes through a pipe and is copied here: written to a terminal that has gone away, it
    would fail and kill supervisord in the middle of stopping the programs.
    """
    import signal
    import subprocess

    child: subprocess.Popen | None = None
    asked = False

    def shut_down(signum: int, frame: object) -> None:
        nonlocal asked
        asked = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, shut_down)
    try:
        child = subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as e:
        print(f"rigtel dev: cannot start {command[0]}: {e} (make run installs it into .venv)", file=sys.stderr)
        return 1
    if asked:  # a signal came while it was starting
        child.send_signal(signal.SIGTERM)
    out = sys.stdout.buffer
    for line in child.stdout:  # type: ignore[union-attr]
        try:
            out.write(line)
            out.flush()
        except OSError:  # the terminal is gone: go on reading, so supervisord never blocks
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())  # and what is still buffered goes nowhere, quietly
            os.close(devnull)
    code = child.wait()
    return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
