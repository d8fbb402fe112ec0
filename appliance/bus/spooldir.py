"""Where a source's spool lives: `spool_dir/<src>/` (default `data_dir/spool/<src>/`).

Apart from `spool.py` (which carries ZeroMQ) so that a process can look for an earlier
run's spool without loading the bus: the supervisord event listener connects only when
it has something to send.
"""

from __future__ import annotations

import os
import re
from typing import Any


def folder_name(src: str) -> str:
    """A source id as a folder name (ids are user text: keep it to safe characters)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", src)[:200] or "_"


def spool_folder(cfg: Any, src: str) -> str:
    """The folder of `src`'s spool under the settings `cfg` (spool_dir, data_dir)."""
    return os.path.join(cfg.spool_dir or os.path.join(cfg.data_dir, "spool"), folder_name(src))
