"""The installer's Python half (`python -m appliance.ops.setup`), run from the new release's
virtualenv by installer/install.sh before anything is switched over, so a bad setting stops
the install while the running appliance is untouched.

    settings    write appliance.ini on a fresh install, or update the given keys in place on
                an upgrade (comments and the site's other settings are kept); check the result
    render      supervisord.conf from the template, the pointer configs that let a bare
                `supervisorctl status` find it, and the systemd unit
    programs    the programs of the rendered supervisord.conf, in start order (for restarts)

The program list is the template's: whatever programs etc/supervisord.conf.in has, the
installer installs, restarts and checks, except those the settings turn off
(layout.OPTIONAL_PROGRAMS: wits0-out unless wits0_out_enabled).
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple, Sequence

from appliance.config import INI_SECTION, ConfigError, load, parse_assignments
from appliance.ops.layout import Layout, programs_off, render_supervisord_conf

POINTER_MARK = "; written by the rigtel installer"
SYSTEMD_UNIT = "rigtel.service"


def install_settings(layout: Layout, opt_current: Path) -> dict[str, str]:
    """Settings that follow from where things are installed (only those this release has)."""
    from appliance.config import SETTINGS

    paths = {
        "data_dir": layout.lib_dir,
        "database_path": layout.lib_dir / "rigtel.db",
        "supervisor_socket": layout.run_dir / "supervisor.sock",
        # files a release ships beside the package in a checkout, in the release folder here
        "web_root": opt_current / "webroot",
        "wits0_map": opt_current / "etc/wits0-map.txt",
        "wits0_out_map": opt_current / "etc/wits0-out-map.txt",
        "tls_cert_file": layout.etc_dir / "tls/cert.pem",
        "tls_key_file": layout.etc_dir / "tls/key.pem",
        "users_file": layout.etc_dir / "users.json",
        "bus_keys_dir": layout.etc_dir / "curve",
    }
    known = {s.name for s in SETTINGS}
    return {name: str(path) for name, path in paths.items() if name in known}


def update_ini(text: str, values: dict[str, str]) -> str:
    """Set keys of the [appliance] section in ini text, keeping everything else.

    A key already set is changed on its line; a key present only as a commented example
    (`; key = ...`) is set there; otherwise it is added at the end of the section."""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == f"[{INI_SECTION}]"), None)
    if start is None:
        lines += ["", f"[{INI_SECTION}]"]
        start = len(lines) - 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for key, value in values.items():
        line = f"{key} = {value}"
        set_at = [i for i in range(start + 1, end) if re.match(rf"\s*{re.escape(key)}\s*[=:]", lines[i])]
        commented = [i for i in range(start + 1, end)
                     if re.match(rf"\s*[;#]\s*{re.escape(key)}\s*[=:]", lines[i])]
        if set_at:
            lines[set_at[0]] = line
            for i in reversed(set_at[1:]):
                del lines[i]
                end -= 1
        elif commented:
            lines[commented[0]] = line
        else:
            while end > start + 1 and not lines[end - 1].strip():
                end -= 1
            lines.insert(end, line)
            end += 1
    return "\n".join(lines) + "\n"


def cmd_settings(args: argparse.Namespace) -> int:
    layout = Layout(Path(args.root))
    ini = layout.config_file
    fresh = not ini.exists()
    base = ini.read_text() if not fresh else Path(args.template).read_text()
    # where things are installed, for every such setting the site has not chosen itself (an
    # upgrade may bring new ones, such as the TLS files)
    chosen = _keys(base)
    values = {k: v for k, v in install_settings(layout, Path(args.opt_current)).items() if k not in chosen}
    try:
        values.update(parse_assignments(args.set))
    except ConfigError as e:
        print(f"install: {e}", file=sys.stderr)
        return 2
    text = update_ini(base, values)
    if args.dry_run:  # the installer's early check, before it builds anything
        fd, name = tempfile.mkstemp(prefix="appliance-", suffix=".ini")
        os.close(fd)
        candidate = Path(name)
    else:
        candidate = ini.with_name(ini.name + ".new")
    candidate.write_text(text)
    try:
        load(config_file=str(candidate), env={}, dotenv="")
        problem = None
    except ConfigError as e:
        problem = e
    if problem or args.dry_run:
        candidate.unlink()
    if problem:
        print(f"install: the settings would not work, nothing was changed: {problem}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    os.chmod(candidate, 0o640)
    os.replace(candidate, ini)
    print(f"install: settings {'written to' if fresh else 'kept in'} {ini}"
          + (f" ({', '.join(values)} set)" if values and not fresh else ""))
    return 0


def _keys(text: str) -> set[str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return set(parser[INI_SECTION]) if parser.has_section(INI_SECTION) else set()


class Program(NamedTuple):
    name: str
    priority: int
    stopwaitsecs: int


def programs(conf_text: str) -> list[Program]:
    """Every program and event listener of a rendered supervisord.conf, in start order."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(conf_text)
    out = []
    for section in parser.sections():
        kind, _, name = section.partition(":")
        if kind in ("program", "eventlistener") and name:
            out.append(Program(name, parser.getint(section, "priority", fallback=999),
                               parser.getint(section, "stopwaitsecs", fallback=10)))
    return sorted(out, key=lambda p: (p[1], p[0]))


def pointer_conf(layout: Layout) -> str:
    return (f"{POINTER_MARK}: lets `supervisorctl status` (no -c) find the appliance.\n"
            f"; The configuration itself: {layout.supervisord_conf}\n"
            f"[supervisorctl]\nserverurl = unix://{layout.run_dir}/supervisor.sock\n")


def systemd_unit(layout: Layout, opt_current: Path, group: str, conf_text: str) -> str:
    """supervisord in the foreground; stopping waits longer than all programs' stop waits
    together (supervisord stops them group by group), and KillMode=mixed lets supervisord
    stop its programs itself before anything is killed."""
    stop_timeout = sum(p[2] for p in programs(conf_text)) + 30
    bin_dir = opt_current / "venv/bin"
    return f"""\
# Drilling telemetry appliance: supervisord runs every program (written by the rigtel installer)
[Unit]
Description=Drilling telemetry appliance (rigtel: supervisord and its programs)
Documentation=file://{opt_current}/DEPLOYMENT.md
After=network.target

[Service]
Type=simple
ExecStartPre=/usr/bin/install -d -m 0750 -o root -g {group} {layout.run_dir}
ExecStart={bin_dir}/supervisord -n -c {layout.supervisord_conf}
ExecReload={bin_dir}/supervisorctl -c {layout.supervisord_conf} update
KillMode=mixed
TimeoutStopSec={stop_timeout}
Restart=on-failure
RestartSec=5
LimitNOFILE=4096

[Install]
WantedBy=multi-user.target
"""


def write_pointer(path: Path, text: str) -> bool:
    """Write a pointer config unless someone else's file is there; True when written."""
    if path.exists() and POINTER_MARK not in path.read_text(errors="replace"):
        print(f"install: {path} belongs to another supervisord; left alone (use "
              f"`supervisorctl -c ...` or the rigtel wrapper)", file=sys.stderr)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o644)
    return True


def cmd_render(args: argparse.Namespace) -> int:
    layout = Layout(Path(args.root))
    opt_current = Path(args.opt_current)
    template = Path(args.template).read_text()
    python = str(opt_current / "venv/bin/python")
    # the settings written just before (cmd_settings) decide which optional programs are in
    settings = load(config_file=str(layout.config_file), env={}, dotenv="") if layout.config_file.exists() else None
    text = render_supervisord_conf(template, layout, python, user=args.user or None, group=args.group or None,
                                   settings=settings)
    layout.supervisord_conf.write_text(text)
    os.chmod(layout.supervisord_conf, 0o640)
    pointer = pointer_conf(layout)
    # supervisorctl looks in ../etc/supervisord.conf beside its own bin/ first, then
    # ./supervisord.conf, ./etc/supervisord.conf, /etc/supervisord.conf, /etc/supervisor/...
    write_pointer(Path(args.release) / "venv/etc/supervisord.conf", pointer)
    if args.user:  # root mode (at / or relocated): the system-wide places
        write_pointer(layout.root / "etc/supervisord.conf", pointer)
        unit = layout.root / "etc/systemd/system" / SYSTEMD_UNIT
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(systemd_unit(layout, opt_current, args.group, text))
        os.chmod(unit, 0o644)
    off = programs_off(settings)
    print(f"install: {layout.supervisord_conf} rendered: " + ", ".join(p.name for p in programs(text))
          + (f" (left out, off in the settings: {', '.join(off)})" if off else ""))
    return 0


def cmd_programs(args: argparse.Namespace) -> int:
    for p in programs(Path(args.conf).read_text()):
        print(p.name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.ops.setup",
                                     description="The installer's Python half (run by install.sh).")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("settings", help="write or update appliance.ini, and check it")
    s.add_argument("--root", required=True)
    s.add_argument("--opt-current", required=True)
    s.add_argument("--template", required=True, help="the bundle's etc/appliance.ini")
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    s.add_argument("--dry-run", action="store_true", help="only check the result; write nothing")
    s.set_defaults(run=cmd_settings)
    r = sub.add_parser("render", help="supervisord.conf, pointer configs, systemd unit")
    r.add_argument("--root", required=True)
    r.add_argument("--opt-current", required=True)
    r.add_argument("--release", required=True, help="the release folder being installed")
    r.add_argument("--template", required=True)
    r.add_argument("--user", default="")
    r.add_argument("--group", default="")
    r.set_defaults(run=cmd_render)
    p = sub.add_parser("programs", help="program names of a rendered supervisord.conf, in start order")
    p.add_argument("--conf", required=True)
    p.set_defaults(run=cmd_programs)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
