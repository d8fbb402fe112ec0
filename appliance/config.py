"""Settings: declared once, loaded once at start-up.

Every setting is declared in SETTINGS with its type, default and help. The same table
feeds the ini file, the `.env` file, the environment, the command line, `rigtel config`
and the README (a test fails when a setting is missing there).

Precedence, lowest to highest:

    default < ini file < .env file < environment < command line

The ini file has one section, ``[appliance]``, whose keys are setting names. In the
environment and in `.env`, a setting is ``RIGTEL_<NAME>`` (upper case); a few settings
also answer to the names the first prototype used (``BROKER_FRONTEND_PORT`` ...). On the
command line every program takes ``--set name=value``. An unknown key or a bad value
stops start-up with a ConfigError naming the key and what it accepts.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

DEFAULT_CONFIG_FILE = "/etc/rigtel/appliance.ini"
INI_SECTION = "appliance"
ENV_PREFIX = "RIGTEL_"
# Environment names that choose where settings come from, rather than being settings.
LOCATOR_ENV = ("RIGTEL_CONFIG", "RIGTEL_ENV_FILE")


class ConfigError(Exception):
    """A setting that cannot be used; the message names it and says what it accepts."""


# --- converters: str -> value, raising ValueError with what is accepted -------------


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of true/false, yes/no, on/off, 1/0")


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"expected a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    convert.__doc__ = f"integer {low}..{high}"
    return convert


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number from {low:g} to {high:g}") from None
        if not low <= value <= high:  # also refuses NaN
            raise ValueError(f"expected a number from {low:g} to {high:g}")
        return value

    convert.__doc__ = f"number {low:g}..{high:g}"
    return convert


def _choice(*choices: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        t = text.strip().upper() if choices[0].isupper() else text.strip().lower()
        if t not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return t

    convert.__doc__ = " | ".join(choices)
    return convert


def _text(text: str) -> str:
    return text.strip()


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _identifier(text: str) -> str:
    t = text.strip()
    if not _ID.match(t):
        raise ValueError("expected 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return t


def _loopback_host(text: str) -> str:
    t = text.strip()
    try:
        loopback = ipaddress.ip_address(t).is_loopback
    except ValueError:
        loopback = t == "localhost"
    if not loopback:
        raise ValueError(
            "expected a loopback address (127.0.0.1, ::1 or localhost): the bus is not "
            "exposed to the network without CurveZMQ authentication")
    return t


def _host(text: str) -> str:
    t = text.strip()
    if not t or any(c.isspace() for c in t):
        raise ValueError("expected a host name or an IP address")
    return t


_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _clock(text: str) -> str:
    t = text.strip()
    if not _CLOCK.match(t):
        raise ValueError("expected a time of day HH:MM, 00:00 to 23:59")
    return t


def _events(text: str) -> str:
    from appliance.sources.events import parse_events  # the simulator's own parser

    parse_events(text)  # raises ValueError saying what is accepted
    return text.strip()


_SERIAL = re.compile(r"^[5-8][NEOMS][12]$")


def _serial_format(text: str) -> str:
    t = text.strip().upper()
    if not _SERIAL.match(t):
        raise ValueError("expected data bits 5-8, parity N/E/O/M/S and stop bits 1-2, e.g. 8N1")
    return t


_serial_format.__doc__ = "e.g. 8N1"
_clock.__doc__ = "HH:MM"
_events.__doc__ = "event list"
_text.__doc__ = "text"
_bool.__doc__ = "true | false"
_identifier.__doc__ = "identifier"
_loopback_host.__doc__ = "loopback address"
_host.__doc__ = "host or address"


@dataclass(frozen=True)
class Setting:
    name: str
    convert: Callable[[str], Any]
    default: str  # as text, converted like any other source so defaults are checked too
    help: str
    aliases: tuple[str, ...] = ()  # extra environment names, from the first prototype
    secret: bool = False

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def kind(self) -> str:
        return self.convert.__doc__ or "text"


PORT = _int_range(0, 65535)

SETTINGS: tuple[Setting, ...] = (
    # -- identity
    Setting("rig_id", _identifier, "rig-1",
            "This rig's id; every source id on the bus starts with it, so ids stay unique across a fleet."),
    Setting("data_dir", _text, "/var/lib/rigtel",
            "Folder for the appliance's state: database, backups, spools, simulator labels and state."),
    Setting("database_path", _text, "/var/lib/rigtel/rigtel.db",
            "SQLite database file.", aliases=("DATABASE_PATH",)),
    # -- logging
    Setting("log_level", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO",
            "Least severe log level written.", aliases=("LOG_LEVEL",)),
    Setting("log_file", _text, "",
            "Also append log lines to this file (empty: stdout only; supervisord captures and rotates stdout).",
            aliases=("LOG_FILE",)),
    # -- memory (rendered into supervisord.conf: every program's environment)
    Setting("malloc_arena_max", _int_range(0, 64), "2",
            "glibc malloc arenas per program (MALLOC_ARENA_MAX, which supervisord.conf sets for every program "
            "when it is rendered: install.sh --set, or the dev prefix's settings and environment at make run; "
            "set for one program alone it does nothing; 0: glibc's own, 8 per core). Each arena keeps its own freed "
            "memory, and the programs' threads mostly wait (docs/DEPLOYMENT.md, Memory)."),
    Setting("malloc_threshold_kb", _int_range(0, 1_048_576), "128",
            "Memory blocks this big or bigger get pages of their own, and free memory beyond this much at the "
            "top of the heap goes back to the system (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_, "
            "in KiB, set like malloc_arena_max, when rendered; 0: glibc's own, which after freeing a big block keeps up to "
            "twice its size)."),
    # -- bus
    Setting("bus_bind_host", _loopback_host, "127.0.0.1",
            "Address the broker binds for local programs. Loopback only: remote publishers use bus_remote_host (CurveZMQ)."),
    Setting("bus_remote_host", _text, "",
            "Address the broker also binds for remote publishers, CurveZMQ-encrypted and allowed by public key "
            "only (empty: no remote publishers). `rigtel keys` manages the keys."),
    Setting("bus_remote_port", PORT, "5557",
            "Port of the CurveZMQ publisher endpoint on bus_remote_host (0 picks a free port, for tests)."),
    Setting("bus_keys_dir", _text, "/etc/rigtel/curve",
            "Folder of the broker's CurveZMQ key pair (broker.key, broker.key_secret) and clients/, the allow-list "
            "of remote publishers' public keys."),
    Setting("bus_curve_server_key", _text, "",
            "For a publisher on another host: the broker's public key file (broker.key); with bus_curve_secret_key "
            "it connects with CurveZMQ (empty: plain, for loopback)."),
    Setting("bus_curve_secret_key", _text, "",
            "For a publisher on another host: its own secret key file (NAME.key_secret, from `rigtel keys new`)."),
    Setting("bus_host", _host, "127.0.0.1",
            "Address publishers and subscribers connect to."),
    Setting("broker_frontend_port", PORT, "5555",
            "Broker XSUB port: publishers connect here (0 picks a free port, for tests).",
            aliases=("BROKER_FRONTEND_PORT",)),
    Setting("broker_backend_port", PORT, "5556",
            "Broker XPUB port: subscribers connect here (0 picks a free port, for tests).",
            aliases=("BROKER_BACKEND_PORT",)),
    Setting("bus_max_message_bytes", _int_range(1024, 64 * 1024 * 1024), "1048576",
            "Largest message, in bytes. Publishers refuse larger ones; subscribers reject and count them."),
    Setting("bus_send_hwm", _int_range(1, 10_000_000), "100000",
            "Messages a publisher queues for the broker before it drops (it never blocks)."),
    Setting("bus_receive_hwm", _int_range(1, 10_000_000), "100000",
            "Messages queued for a subscriber before the broker drops for it (gaps are detected)."),
    Setting("bus_heartbeat_s", _float_range(0.1, 3600), "1",
            "Seconds between each program's heartbeat on the 'sys.heartbeat' topic."),
    Setting("bus_stats_s", _float_range(0.1, 3600), "5",
            "Seconds between statistics messages on the 'sys.stats' topic."),
    # -- web (the dashboard program)
    Setting("web_host", _host, "127.0.0.1",
            "Address the dashboard's HTTPS and redirect ports bind (0.0.0.0: every interface, for the rig LAN). "
            "Plain HTTP is never served beyond a redirect.",
            aliases=("FLASK_HOST",)),
    Setting("web_port", PORT, "8443",
            "HTTPS port of the dashboard (TLS terminated in the web program).", aliases=("FLASK_PORT",)),
    Setting("web_http_port", _int_range(-1, 65535), "8080",
            "Plain HTTP port that only redirects to HTTPS (-1: no redirect port; 0 picks a free port, for tests)."),
    Setting("tls_cert_file", _text, "/etc/rigtel/tls/cert.pem",
            "The dashboard's TLS certificate chain, PEM (`rigtel tls self-signed` or `rigtel tls install` writes it)."),
    Setting("tls_key_file", _text, "/etc/rigtel/tls/key.pem",
            "The private key of tls_cert_file, PEM, mode 0600."),
    Setting("web_max_connections", _int_range(4, 4096), "200",
            "TLS connections held open at once; more are closed at once and counted."),
    Setting("web_handshake_timeout_s", _float_range(0.5, 120), "10",
            "Seconds a client has to complete its TLS handshake before the connection is dropped."),
    Setting("web_hsts_s", _int_range(0, 63072000), "31536000",
            "Strict-Transport-Security max-age sent with every HTTPS response, in seconds (0: no HSTS header)."),
    Setting("web_trusted_proxy", _text, "",
            "Address of a site reverse proxy in front of the dashboard: only from it is X-Forwarded-For "
            "believed for the client address (empty: no proxy, the TLS peer is the client)."),
    Setting("users_file", _text, "/etc/rigtel/users.json",
            "Dashboard users, roles and salted password hashes, mode 0600 (`rigtel user` manages it)."),
    Setting("web_auth_cache_s", _float_range(0, 3600), "120",
            "Seconds a verified login is remembered (by a keyed hash) so each request does not pay the slow hash (0: never)."),
    Setting("web_login_max_failures", _int_range(1, 1000), "5",
            "Failed logins from one client address within web_login_window_s before it is refused with 429."),
    Setting("web_login_window_s", _float_range(1, 86400), "300",
            "Window for counting failed logins per client, in seconds; also the first lock-out, doubled per repeat up to an hour."),
    Setting("web_debug", _bool, "false",
            "Show Python tracebacks in the dashboard's error responses (for development; never on a rig).",
            aliases=("FLASK_DEBUG",)),
    Setting("web_threads", _int_range(4, 512), "32",
            "Web server threads; each open live stream holds one."),
    Setting("web_max_streams", _int_range(1, 500), "24",
            "Live streams served at once; more are answered 503 with Retry-After (keep below web_threads)."),
    Setting("web_stream_hz", _float_range(0.2, 50), "20",
            "Most live updates per second sent to each browser (frames in between are coalesced)."),
    Setting("kpis_timeout_s", _float_range(5, 3600), "120",
            "Seconds the Analytics KPIs of one range may take (computed in a child process) before it is "
            "stopped and the request answered 504."),
    Setting("web_root", _text, "",
            "Folder with the dashboard's templates/ and static/ (empty: webroot/ beside the package)."),
    Setting("supervisor_socket", _text, "/run/rigtel/supervisor.sock",
            "supervisord's control socket, read by the dashboard's System view."),
    # -- simulator
    Setting("simulator_rate_hz", _float_range(0.1, 1000), "1",
            "Frames per second of rig time the simulator produces."),
    Setting("simulator_speed", _float_range(0.01, 100000), "1",
            "Rig seconds simulated per wall-clock second (1440: a day in a minute); above 1 the frames' stamps run ahead of the clock."),
    Setting("simulator_seed", _int_range(0, 2**31 - 1), "1",
            "Random seed; a new well with the same seed and settings gives the same data (a restart continues the well: rigtel simulate --new-well)."),
    Setting("simulator_start_depth_ft", _float_range(100, 40000), "5000",
            "Hole depth at which a new simulated well starts, in feet (a restart continues the well: DATA_DIR/simulator-state-RIG_ID.json)."),
    Setting("simulator_trip_every_ft", _float_range(0, 40000), "0",
            "Drill this many feet, then trip out and back in (0: never trip)."),
    Setting("simulator_events", _events, "",
            "Events to inject: comma-separated KIND@START+DURATION in rig time since the simulator started, e.g. 'kick@2h+20m,washout@5h30m+1h'. "
            "Kinds: kick, loss, washout, packoff, flatline:CHANNEL, spike:CHANNEL, dropout:CHANNEL."),
    Setting("simulator_labels_path", _text, "",
            "File the simulator appends ground-truth event labels to (JSON lines; empty: DATA_DIR/simulator-labels.jsonl)."),
    # -- rig data source: simulator or WITS0 (docs/DATA.md)
    Setting("data_source", _choice("simulator", "wits0"), "simulator",
            "What the 'source' program runs: the simulator, or WITS0 ingest from the rig's recorder (wits0_* settings)."),
    Setting("wits0_mode", _choice("client", "server", "serial"), "client",
            "How WITS0 arrives: 'client' connects to the recorder, 'server' waits for it to connect, 'serial' reads a serial port."),
    Setting("wits0_host", _host, "127.0.0.1",
            "client: the recorder's address; server: the address to listen on (beyond loopback only with wits0_allow)."),
    Setting("wits0_port", PORT, "5000",
            "client: the recorder's WITS0 port; server: the port to listen on."),
    Setting("wits0_allow", _text, "",
            "server: comma-separated addresses allowed to connect; required to listen beyond loopback (WITS0 has no authentication)."),
    Setting("wits0_serial_device", _text, "/dev/ttyS0",
            "serial: the port the recorder is wired to (or a pyserial URL)."),
    Setting("wits0_serial_baud", _int_range(50, 4_000_000), "9600",
            "serial: bits per second."),
    Setting("wits0_serial_format", _serial_format, "8N1",
            "serial: data bits, parity (N, E, O, M, S) and stop bits, e.g. 8N1 or 7E1."),
    Setting("wits0_map", _text, "",
            "WITS0 mapping file: codes to catalogue channels and the recorder's units (empty: etc/wits0-map.txt beside the package)."),
    Setting("wits0_keepalive", _text, r"&&\r\n0111-9999\r\n!!\r\n",
            "Keep-alive sent to the recorder every wits0_keepalive_s (escapes \\r \\n \\t), as some recorders expect; empty: none."),
    Setting("wits0_keepalive_s", _float_range(0, 3600), "30",
            "Seconds between keep-alives (0: never)."),
    Setting("wits0_timeout_s", _float_range(1, 3600), "60",
            "No byte from the recorder for this long: the connection is taken as dead and made again."),
    Setting("wits0_reconnect_max_s", _float_range(0.1, 3600), "30",
            "Longest wait between reconnection attempts (the wait doubles from 0.5 s up to this)."),
    Setting("wits0_out_enabled", _bool, "false",
            "rigtel wits0-out: re-serve channels as WITS0 over TCP (false: not run under supervisord)."),
    Setting("wits0_out_port", PORT, "5001",
            "rigtel wits0-out: TCP port to listen on (0 picks a free port, for tests)."),
    Setting("wits0_out_host", _host, "127.0.0.1",
            "rigtel wits0-out: address to listen on (beyond loopback only with wits0_out_allow)."),
    Setting("wits0_out_allow", _text, "",
            "rigtel wits0-out: comma-separated client addresses allowed; required to listen beyond loopback."),
    Setting("wits0_out_map", _text, "",
            "rigtel wits0-out: mapping file of the channels sent, their codes, units and decimals (empty: etc/wits0-out-map.txt)."),
    Setting("wits0_out_interval_s", _float_range(0.1, 3600), "1",
            "rigtel wits0-out: seconds between frames sent to each client."),
    # -- spool (sources keep what they published, for the saver to fetch after a loss)
    Setting("spool_dir", _text, "",
            "Folder of the sources' spools, one sub-folder per source (empty: DATA_DIR/spool)."),
    Setting("spool_max_mb", _int_range(1, 1_000_000), "256",
            "Most disk space each source's spool takes, in MB; the oldest messages go first."),
    Setting("spool_max_age_h", _float_range(0.01, 8760), "72",
            "Messages older than this many hours leave the spool (the saver can no longer fetch them)."),
    Setting("spool_fsync_s", _float_range(0, 3600), "1",
            "Seconds between flushes of the spool to the disk (fdatasync); a power loss can take this much "
            "of it. 0: after every message (slow)."),
    Setting("spool_recovery_wait_s", _float_range(1, 86400), "60",
            "How long the saver keeps trying to fetch missed messages from a source's spool (waiting for "
            "the source to come back) before it records them lost and raises a data-gap alert."),
    # -- saver (storage)
    Setting("saver_flush_ms", _int_range(10, 10_000), "100",
            "Longest a received message waits before the saver commits it, in milliseconds."),
    Setting("saver_batch_frames", _int_range(1, 1_000_000), "20000",
            "The saver commits as soon as this many frames are waiting."),
    Setting("saver_max_pending_frames", _int_range(1000, 100_000_000), "500000",
            "Most frames the saver holds in memory while it cannot commit (a full disk), about 200 bytes "
            "each; beyond it messages are left in the sources' spools (recorded as gaps, fetched when "
            "commits work again) and a saver-backlog alert is raised."),
    # -- maintenance (backups, retention, disk guard)
    Setting("backup_dir", _text, "",
            "Folder for database backups (empty: DATA_DIR/backups)."),
    Setting("backup_time", _clock, "02:30",
            "Local time of the nightly backup and integrity check, HH:MM."),
    Setting("backup_keep_daily", _int_range(1, 365), "7",
            "Nightly backups kept."),
    Setting("backup_keep_weekly", _int_range(0, 520), "4",
            "Weekly backups kept (the Sunday night backup of each week), beyond the daily ones."),
    Setting("retention_raw_days", _float_range(0, 36500), "90",
            "Raw samples older than this many days are pruned; roll-ups are kept for the life of the well (0: keep raw forever)."),
    Setting("retention_batch_rows", _int_range(100, 1_000_000), "5000",
            "Rows deleted per pruning step, so pruning never stalls ingest."),
    Setting("disk_min_free_mb", _int_range(0, 10_000_000), "1024",
            "Below this much free space on the database's filesystem, the oldest raw samples are pruned and an alert raised."),
    Setting("maintenance_check_s", _float_range(1, 86400), "60",
            "Seconds between retention and disk-space checks."),
    # -- predictor (appliance.predict.params.PredictorParams; rigs differ, so these are settings)
    Setting("predictor_bit_size_in", _float_range(2, 40), "8.5",
            "Bit diameter in inches: the bit area for MSE and the hole capacity the pit baseline allows for new hole."),
    Setting("predictor_block_weight_klbf", _float_range(0, 500), "45",
            "Hookload (klbf) of the travelling block and top drive alone, with the string in the slips."),
    Setting("predictor_slips_margin_klbf", _float_range(1, 500), "15",
            "Hookload below block weight plus this (klbf) means the string is in the slips."),
    Setting("predictor_on_bottom_ft", _float_range(0.01, 100), "1",
            "Bit within this many feet of hole depth is on bottom."),
    Setting("predictor_pumps_on_gpm", _float_range(0, 5000), "50",
            "Flow in above this (gpm) means the pumps are on."),
    Setting("predictor_pumps_on_spm", _float_range(0, 300), "5",
            "Without a flow-in meter: total pump strokes above this (spm) mean the pumps are on."),
    Setting("predictor_pumps_on_psi", _float_range(0, 15000), "150",
            "Without flow in or strokes: standpipe pressure above this (psi) means the pumps are on."),
    Setting("predictor_rotating_rpm", _float_range(0, 500), "5",
            "Rotary speed above this (rpm) means the string is turning."),
    Setting("predictor_moving_ft_s", _float_range(0.001, 20), "0.05",
            "Bit speed above this (ft/s) means the bit is moving (tripping, reaming)."),
    Setting("predictor_pump_output_gal_stroke", _float_range(0.1, 50), "4.2",
            "Pump output in gallons per stroke, for flow in from the stroke counters when the rig sends no flow in."),
    Setting("predictor_pipe_displacement_bbl_ft", _float_range(0, 1), "0.0075",
            "Steel displacement of the string (bbl/ft): the pit baseline follows pipe run in or pulled."),
    Setting("predictor_flowline_tau_s", _float_range(1, 600), "30",
            "Time constant (s) of the returns following a pump change, until the kick detector has learned the well's own from three connections."),
    Setting("predictor_kick_flow_gpm", _float_range(0.1, 1000), "5",
            "Flow out above the expected flow by more than this (gpm) adds up towards a kick alarm (CUSUM slack)."),
    Setting("predictor_kick_pit_bbl", _float_range(0.1, 1000), "5",
            "A growing pit gain over the baseline of this many bbl alone raises a kick alarm."),
    Setting("predictor_loss_flow_gpm", _float_range(0.1, 1000), "10",
            "Flow out below the expected flow by more than this (gpm) adds up towards a loss alarm."),
    Setting("predictor_loss_pit_bbl", _float_range(0.1, 1000), "8",
            "A falling pit loss against the baseline of this many bbl alone raises a loss alarm."),
    Setting("predictor_washout_drop_pct", _float_range(0.1, 90), "1",
            "Standpipe pressure below the expected for the flow by more than this many percent adds up towards a washout alarm (CUSUM slack; widened to twice the pressure's own scatter)."),
    Setting("predictor_washout_fast_drop_pct", _float_range(0.05, 90), "0.3",
            "Standpipe pressure falling below its own level of the last minutes (steady pumping, same rig state, pump rate and weight on bit) by more than this many percent adds up towards a washout alarm (fast CUSUM slack; widened to 0.75 of the pressure's own noise); a fall fitting a ramp from nothing is called only once it is this deep too."),
    Setting("predictor_overpull_klbf", _float_range(1, 1000), "25",
            "Pick-up hookload this much (klbf) above the usual pick-up weight is an overpull (pack-off / stuck pipe)."),
    Setting("predictor_flatline_s", _float_range(1, 86400), "30",
            "A channel that was moving and then holds one value this long (s) raises a flatline sensor alarm."),
    Setting("predictor_dropout_s", _float_range(1, 86400), "30",
            "A channel that stops arriving for this long (s) while others arrive raises a dropout sensor alarm."),
    Setting("predictor_alarm_on_delay_s", _float_range(0, 3600), "10",
            "Default on-delay (s): a detector's condition must hold this long before its alarm is raised."),
    Setting("predictor_alarm_off_delay_s", _float_range(0, 3600), "60",
            "Default off-delay (s): a condition must be gone this long before its alarm clears."),
    Setting("predictor_flood_alarms", _int_range(2, 1000), "10",
            "This many alarms raised within 10 minutes is a flood: new low and medium priority alarms are held back."),
    Setting("predictor_derived_hz", _float_range(0.01, 100), "1",
            "How often the predictor publishes derived channels (also at every rig-state change)."),
    Setting("predictor_target_depth_ft", _float_range(0, 50000), "0",
            "Target hole depth (ft) for ETA_TD, the hours to reach it at the recent rate of making hole; 0: no target."),
    # -- logger
    Setting("logger_summary_s", _float_range(0.5, 3600), "5",
            "Seconds between the logger's per-topic summary lines."),
)


@dataclass
class Config:
    """Effective settings: `cfg.name` gives a value, `cfg.source(name)` where it came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    table: tuple[Setting, ...] = field(default=SETTINGS, repr=False)
    files: tuple[str, ...] = ()  # the settings and .env files read, as "kind path"

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def source(self, name: str) -> str:
        return self.sources[name]

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, shown value, source) for every setting, secrets masked."""
        rows = []
        for s in self.table:
            value = self.values[s.name]
            if s.secret and value not in ("", None):
                shown = "********"
            elif isinstance(value, bool):
                shown = "true" if value else "false"
            else:
                shown = str(value)
            rows.append((s.name, shown, self.sources[s.name]))
        return rows


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """`name=value` strings from the command line (`--set`) into a dict."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE, for example --set log_level=DEBUG")
        out[name.strip()] = value
    return out


def read_dotenv(path: str) -> dict[str, str]:
    """KEY=VALUE lines of a `.env` file; `#` comments, `export` and quotes allowed."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{path}:{number}: expected KEY=VALUE, found {line!r}")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[key.strip()] = value
    return out


def load(
    overrides: Mapping[str, str] | None = None,
    *,
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    dotenv: str | None = None,
    table: tuple[Setting, ...] = SETTINGS,
) -> Config:
    """Load the effective settings.

    config_file: ini file; None means $RIGTEL_CONFIG, else /etc/rigtel/appliance.ini if it
    exists. An explicitly named file that does not exist is an error.
    dotenv: `.env` file; None means $RIGTEL_ENV_FILE, else `.env` in the current folder if
    it exists; "" means none.
    overrides: command-line `name=value` pairs, the highest precedence.
    """
    env = os.environ if env is None else env
    by_name = {s.name: s for s in table}
    by_env: dict[str, Setting] = {}
    for s in table:
        by_env[s.env_name] = s
        for alias in s.aliases:
            by_env[alias] = s

    raw: dict[str, tuple[str, str]] = {s.name: (s.default, "default") for s in table}

    # ini file
    path = config_file or env.get("RIGTEL_CONFIG")
    explicit = path is not None
    path = path or DEFAULT_CONFIG_FILE
    files: list[str] = []
    if explicit or os.path.exists(path):
        files.append(f"settings file {path}")
        parser = configparser.ConfigParser(interpolation=None, default_section="__no_defaults__")
        parser.optionxform = str  # keep case so a mistyped key is reported as written
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror}; pass --config FILE or set RIGTEL_CONFIG") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        except configparser.Error as e:
            raise ConfigError(f"config file {path}: {e}") from None
        for section in parser.sections():
            if section != INI_SECTION:
                raise ConfigError(f"{path}: unknown section [{section}]; settings go in [{INI_SECTION}]")
            for key, value in parser.items(section):
                if key not in by_name:
                    raise ConfigError(f"{path}: unknown setting {key!r}{_did_you_mean(key, by_name)}")
                raw[key] = (value, f"file {path}")

    # .env file: environment-style names, lower precedence than the real environment
    dotenv_path = dotenv if dotenv is not None else env.get("RIGTEL_ENV_FILE")
    if dotenv_path is None and os.path.exists(".env"):
        dotenv_path = ".env"
    if dotenv_path:
        files.append(f".env file {dotenv_path}")
        try:
            pairs = read_dotenv(dotenv_path)
        except OSError as e:
            raise ConfigError(f".env file {dotenv_path}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f".env file {dotenv_path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        for key, value in pairs.items():
            setting = by_env.get(key)
            if setting is None:
                if key.startswith(ENV_PREFIX) and key not in LOCATOR_ENV:
                    raise ConfigError(f"{dotenv_path}: unknown setting {key!r}{_did_you_mean(key, by_env)}")
                continue  # other tools' variables may share a .env file
            raw[setting.name] = (value, f"env file {dotenv_path} ({key})")

    # environment: RIGTEL_* names win over the prototype's aliases when both are set
    for key, value in env.items():
        setting = by_env.get(key)
        if setting is None:
            if key.startswith(ENV_PREFIX) and key not in LOCATOR_ENV:
                raise ConfigError(f"environment: unknown setting {key!r}{_did_you_mean(key, by_env)}")
            continue
        if key != setting.env_name and setting.env_name in env:
            continue
        raw[setting.name] = (value, f"environment {key}")

    for key, value in (overrides or {}).items():
        if key not in by_name:
            raise ConfigError(f"command line: unknown setting {key!r}{_did_you_mean(key, by_name)}")
        raw[key] = (value, "command line")

    values: dict[str, Any] = {}
    for s in table:
        text, source = raw[s.name]
        try:
            values[s.name] = s.convert(text)
        except ValueError as e:
            shown = "********" if s.secret else repr(text)
            raise ConfigError(f"setting {s.name} = {shown} (from {source}): {e}") from None
    return Config(values, {name: src for name, (_, src) in raw.items()}, table, tuple(files))


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    import difflib

    known = list(known)
    same = [k for k in known if k.lower() == key.lower()]  # RIGTEL_rig_id for RIGTEL_RIG_ID
    close = same or difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return (f" (did you mean {close[0]!r}?)" if close
            else "; every setting is in README.md (Settings), and `rigtel config` lists them")
