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

# `directory`: each program starts in the data folder, not in supervisord's working
# directory (a source checkout, as tests and benchmarks start it). `python -m` would put the
# working directory first on sys.path and run the checkout's `appliance` package instead of
# the installed one; PYTHONSAFEPATH (set for every program in supervisord.conf.in) keeps it
# off sys.path altogether, so nothing in the writable data folder can shadow the package.
PROGRAM_COMMON = """\
autostart = true
directory = {lib_dir}
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

# Programs that run only when a setting turns them on. While it is off their section is left
# out of the rendered supervisord.conf (a comment says so): no process holds memory for a
# feature the site does not use, and `supervisorctl status` lists only what should run (a
# STOPPED program there would make it exit 3 on a healthy appliance). `rigtel status` shows
# them as off. Turning the setting on and rendering again (the installer with --set, then
# `supervisorctl update`; or `rigtel dev`) adds and starts them.
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
    return True if setting is None else bool(_setting(setting, settings))


def programs_off(settings: "Config | None") -> dict[str, str]:
    """Optional programs these settings leave out: name -> why, as a technician reads it."""
    return {name: f"off: {setting} = false (set it true, then run the installer again, or make run, to start it)"
            for name, setting in OPTIONAL_PROGRAMS.items() if not program_enabled(name, settings)}


def _leave_out(text: str, name: str, why: str) -> str:
    """The rendered configuration without the section of program `name` (up to the next
    section or the comment block before it), a comment in its place."""
    lines = text.split("\n")
    start = lines.index(f"[program:{name}]")
    end = start + 1
    while end < len(lines) and not lines[end].startswith("[") and not (
            lines[end].startswith(";") and not lines[end - 1].strip()):
        end += 1
    return "\n".join(lines[:start] + [f"; [program:{name}] left out: {why}", ""] + lines[end:])


def _setting(name: str, settings: "Config | None"):
    """A setting's value in these settings, or its default when there are none."""
    if settings is not None:
        return getattr(settings, name)
    from appliance.config import SETTINGS

    declared = next(s for s in SETTINGS if s.name == name)
    return declared.convert(declared.default)


def malloc_environment(settings: "Config | None") -> str:
    """The glibc malloc variables every program inherits from supervisord, in its
    `environment =` syntax with a trailing comma ("" when glibc is left to its defaults).

    Why (docs/DEPLOYMENT.md, memory): glibc raises its mmap threshold to the size of the
    biggest block freed so far (up to 32 MiB) and keeps twice that free at the top of the
    heap, so one big response (the live page's history, ~8 MB of JSON) left the web program
    ~70 MiB bigger for good. A fixed threshold turns that adjustment off."""
    env = []
    arenas = _setting("malloc_arena_max", settings)
    if arenas:
        env.append(f'MALLOC_ARENA_MAX="{arenas}"')
    threshold_kb = _setting("malloc_threshold_kb", settings)
    if threshold_kb:
        env.append(f'MALLOC_MMAP_THRESHOLD_="{threshold_kb * 1024}"')
        env.append(f'MALLOC_TRIM_THRESHOLD_="{threshold_kb * 1024}"')
    return "".join(e + "," for e in env)


def render_supervisord_conf(template: str, layout: Layout, python: str,
                            user: str | None = None, group: str | None = None,
                            settings: "Config | None" = None) -> str:
    """Fill the supervisord template; `user`/`group` are set only in root mode. `settings`
    (the appliance's Config; None: the defaults) decides which OPTIONAL_PROGRAMS are in."""
    user_line = f"\nuser = {user}" if user else ""
    values = {
        "python": python,
        "etc_dir": str(layout.etc_dir),
        "lib_dir": str(layout.lib_dir),
        "log_dir": str(layout.log_dir),
        "run_dir": str(layout.run_dir),
        "socket_owner_line": f"chown = root:{group}" if group else "",
        "program_common": PROGRAM_COMMON.format(user_line=user_line, lib_dir=layout.lib_dir),
        "user_line": user_line,
        "malloc_environment": malloc_environment(settings),
    }
    # substitute() (not safe_substitute) so a misspelt placeholder fails loudly
    text = string.Template(template).substitute(values)
    for name, why in programs_off(settings).items():
        text = _leave_out(text, name, why)
    return text
