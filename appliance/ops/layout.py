"""Where the appliance keeps its files, installed at / or under a prefix, and the
supervisord configuration rendered from the template in etc/.

Installed (root):   /opt/rigtel, /etc/rigtel, /var/lib/rigtel, /var/log/rigtel, /run/rigtel
Under a prefix DIR: the same tree rooted at DIR (DIR/etc/rigtel, DIR/var/lib/rigtel, ...),
which is what `make run` (prefix var/dev) and the tests use.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.config import Config

PROGRAM_COMMON = """\
autostart = {autostart}
autorestart = true
startsecs = 3
startretries = 100
stopsignal = TERM
stopwaitsecs = 15
stopasgroup = true
killasgroup = true
redirect_stderr = true
stdout_logfile_maxbytes = 10MB
stdout_logfile_backups = 5
environment = PYTHONUNBUFFERED="1"{user_line}"""

# Programs that run only when a setting turns them on. When it is off they are rendered
# with autostart = false: `supervisorctl status` still lists them (STOPPED, "Not started")
# and no process holds memory for a feature the site does not use. Turning the setting on
# and rendering again (the installer with --set, or `rigtel dev`) starts them.
OPTIONAL_PROGRAMS: dict[str, str] = {"wits0-out": "wits0_out_enabled"}


@dataclass(frozen=True)
class Layout:
    root: Path  # "/" when installed, else the prefix

    @property
    def opt_dir(self) -> Path:
        return self.root / "opt/rigtel"

    @property
    def etc_dir(self) -> Path:
        return self.root / "etc/rigtel"

    @property
    def lib_dir(self) -> Path:
        return self.root / "var/lib/rigtel"

    @property
    def log_dir(self) -> Path:
        return self.root / "var/log/rigtel"

    @property
    def run_dir(self) -> Path:
        return self.root / "run/rigtel"

    @property
    def config_file(self) -> Path:
        return self.etc_dir / "appliance.ini"

    @property
    def supervisord_conf(self) -> Path:
        return self.etc_dir / "supervisord.conf"

    def make_dirs(self) -> None:
        for d in (self.etc_dir, self.lib_dir, self.log_dir, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)


def program_enabled(name: str, settings: "Config | None") -> bool:
    """Whether a program is meant to run with these settings (a Config, or None: defaults)."""
    setting = OPTIONAL_PROGRAMS.get(name)
    if setting is None:
        return True
    if settings is None:
        from appliance.config import SETTINGS

        declared = next(s for s in SETTINGS if s.name == setting)
        return bool(declared.convert(declared.default))
    return bool(getattr(settings, setting))


def off_by_settings(name: str, state: str, settings: "Config | None") -> str | None:
    """Why a STOPPED program is meant to be stopped (its setting is off), else None."""
    if state != "STOPPED" or program_enabled(name, settings):
        return None
    return f"off: {OPTIONAL_PROGRAMS[name]} = false (set it true and render again to run it)"


def render_supervisord_conf(template: str, layout: Layout, python: str,
                            user: str | None = None, group: str | None = None,
                            settings: "Config | None" = None) -> str:
    """Fill the supervisord template; `user`/`group` are set only in root mode. `settings`
    (the appliance's Config; None: the defaults) decides which OPTIONAL_PROGRAMS start."""
    user_line = f"\nuser = {user}" if user else ""
    values = {
        "python": python,
        "etc_dir": str(layout.etc_dir),
        "lib_dir": str(layout.lib_dir),
        "log_dir": str(layout.log_dir),
        "run_dir": str(layout.run_dir),
        "socket_owner_line": f"chown = root:{group}" if group else "",
        "program_common": PROGRAM_COMMON.format(autostart="true", user_line=user_line),
        "user_line": user_line,
    }
    for name in OPTIONAL_PROGRAMS:  # ${wits0_out_common}: program_common, autostart as configured
        autostart = "true" if program_enabled(name, settings) else "false"
        values[f"{name.replace('-', '_')}_common"] = PROGRAM_COMMON.format(autostart=autostart, user_line=user_line)
    # substitute() (not safe_substitute) so a misspelt placeholder fails loudly
    return string.Template(template).substitute(values)
