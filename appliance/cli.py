"""`rigtel` (also `python -m appliance`): one entry point, a subcommand per program and task.

Each subcommand lives in the module that does the work and exposes `main(argv) -> int`;
this module only finds it, so `rigtel --help` stays fast and imports nothing heavy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, Sequence

from appliance import __version__
from appliance.config import Config, ConfigError, load, parse_assignments

if TYPE_CHECKING:
    from appliance.ops.runtime import StopSignal

# name -> ("module" with main(argv), or "module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "broker": ("appliance.bus.broker", "run the bus broker (XSUB/XPUB proxy with statistics)"),
    "simulate": ("appliance.sources.simulator", "run the rig simulator, publishing on 'drilling'"),
    "saver": ("appliance.store.saver", "store everything on the bus in the SQLite database"),
    "web": ("appliance.web.server", "serve the dashboard and its JSON API"),
    "predictor": ("appliance.predict.service", "rig state, derived channels and kick/loss/washout/pack-off alarms"),
    "logger": ("appliance.ops.logger", "log a summary of the bus traffic, every alert and every gap"),
    "config": ("appliance.ops.show_config", "print the effective settings and where each came from"),
    "dev": ("appliance.ops.dev", "set up a development prefix under var/dev and run supervisord"),
    "maintenance": ("appliance.store.maintenance", "nightly backup and integrity check; retention and disk guard"),
    "backup": ("appliance.store.backup", "back up the database now, online, with progress"),
    "backups": ("appliance.store.backup:list_main", "list the backups with size, age and integrity"),
    "restore": ("appliance.store.restore", "check a backup and put it in place of the database"),
    "user": ("appliance.security.users", "add, change, remove and list the dashboard's users (viewer, admin)"),
    "tls": ("appliance.security.certs", "make a self-signed certificate or install the site's, for HTTPS"),
    "keys": ("appliance.security.curve", "CurveZMQ key pairs: the broker's, remote publishers' and the allow-list"),
    "backtest": ("appliance.predict.backtest", "run the predictor over a recorded log; print states and alarms"),
    "evaluate": ("appliance.predict.evaluate", "score the predictor on simulator scenarios and the Volve logs"),
    "program-alerts": ("appliance.ops.program_alerts",
                       "supervisord event listener: a program's crash becomes an alert on the bus"),
    "status": ("appliance.ops.status", "every program's state, data freshness, gaps, backups, disk, "
                                       "certificate; exit 1 when unhealthy"),
    "check": ("appliance.ops.status:check_main", "smoke test of a running appliance (the installer runs it)"),
    "source": ("appliance.sources.source", "run the rig data source the setting data_source names (simulator or wits0)"),
    "wits0": ("appliance.sources.wits0_ingest", "read WITS0 from the rig's recorder (TCP or serial) onto the bus"),
    "wits0-out": ("appliance.sources.wits0_out", "re-serve live and derived channels as WITS0 over TCP"),
    "replay": ("appliance.sources.replay", "publish a recorded CSV, WITSML or LAS log on the bus as if live"),
    "export": ("appliance.store.export", "export stored channels over a time range as CSV, LAS or WITSML"),
    "fuzz-bus": ("appliance.ops.fuzz", "send malformed messages at the broker (for testing a site or build)"),
}


def settings_options() -> argparse.ArgumentParser:
    """--config and --set as a parent parser, for commands with sub-commands of their own."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", metavar="FILE",
                        help="ini file with an [appliance] section (default: $RIGTEL_CONFIG, "
                             "else /etc/rigtel/appliance.ini when it exists)")
    parent.add_argument("--set", metavar="NAME=VALUE", action="append", default=[],
                        help="override one setting; repeatable. `rigtel config` lists them all")
    return parent


# The settings a command reads, by name prefix, for its --help; a command not named here
# reads those starting with its own name ("logger" -> "logger_"). A setting is listed under
# the commands with the longest prefix it matches (wits0_out_port under wits0-out, not wits0;
# backup_dir under both backup and maintenance).
SETTING_PREFIXES: dict[str, tuple[str, ...]] = {
    "broker": ("broker_", "bus_"),
    "simulate": ("simulator_",),
    "web": ("web_", "tls_", "users_file", "kpis_"),
    "maintenance": ("maintenance_", "backup_", "retention_", "disk_"),
    "source": ("data_source",),
}


def command_settings(command: str) -> list:
    """The settings listed under `rigtel COMMAND --help`."""
    from appliance.config import SETTINGS

    prefixes = {name: SETTING_PREFIXES.get(name, (name.replace("-", "_") + "_",)) for name in COMMANDS}

    def owners(setting_name: str) -> set[str]:
        matches = [(len(p), name) for name, ps in prefixes.items() for p in ps if setting_name.startswith(p)]
        longest = max((n for n, _ in matches), default=0)
        return {name for n, name in matches if n == longest}

    return [s for s in SETTINGS if command in owners(s.name)]


def settings_epilog(command: str) -> str | None:
    import textwrap

    rows = command_settings(command)
    if not rows:
        return None
    lines = ["settings it reads (--set NAME=VALUE, the settings file or RIGTEL_<NAME>;",
             "README.md lists every setting, `rigtel config` their values):"]
    for s in rows:
        lines.append(f"  {s.name} = {'********' if s.secret and s.default else s.default}")
        lines += textwrap.wrap(s.help, 78, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def settings_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every program takes: --config and --set; its
    --help lists the settings the program reads."""
    import textwrap

    return argparse.ArgumentParser(prog=f"rigtel {prog}", description=textwrap.fill(description, 79),
                                   epilog=settings_epilog(prog), parents=[settings_options()],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def load_settings(args: argparse.Namespace, extra: dict[str, str] | None = None) -> Config:
    """Settings from files, environment and the command line; exits 2 with the reason if bad."""
    try:
        overrides = parse_assignments(args.set)
        overrides.update(extra or {})
        return load(overrides, config_file=args.config)
    except ConfigError as e:
        print(f"rigtel: configuration error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def start_service(name: str, description: str, argv: Sequence[str]) -> tuple[Config, "StopSignal"]:
    """What every long-running program does first: parse --config/--set, load the settings,
    log to stdout, and turn SIGTERM/SIGINT into a stop event."""
    from appliance.ops.runtime import StopSignal, configure_logging

    cfg = load_settings(settings_parser(name, description).parse_args(argv))
    configure_logging(cfg, name)
    return cfg, StopSignal().install()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(f"usage: rigtel COMMAND [options]   (rigtel COMMAND --help for its options)\n\n"
              f"Drilling telemetry appliance {__version__}.\n\ncommands:")
        width = max(map(len, COMMANDS))
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<{width}}  {help_text}")
        return 0 if argv else 2
    if argv[0] == "--version":
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rigtel: unknown command {name!r}; `rigtel --help` lists the commands", file=sys.stderr)
        return 2
    module_name, _, function = COMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module_name), function or "main")(rest)
