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

PROGRAM_COMMON = """\
autostart = true
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


def render_supervisord_conf(template: str, layout: Layout, python: str,
                            user: str | None = None, group: str | None = None) -> str:
    """Fill the supervisord template; `user`/`group` are set only in root mode."""
    user_line = f"\nuser = {user}" if user else ""
    values = {
        "python": python,
        "etc_dir": str(layout.etc_dir),
        "lib_dir": str(layout.lib_dir),
        "log_dir": str(layout.log_dir),
        "run_dir": str(layout.run_dir),
        "socket_owner_line": f"chown = root:{group}" if group else "",
        "program_common": PROGRAM_COMMON.format(user_line=user_line),
        "user_line": user_line,
    }
    # substitute() (not safe_substitute) so a misspelt placeholder fails loudly
    return string.Template(template).substitute(values)
