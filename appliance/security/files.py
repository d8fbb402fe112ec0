"""Writing files that hold secrets: never readable by others, even for an instant.

A secret file is written to a temporary file created with mode 0600 in the same folder,
flushed to disk and renamed over the old one, so a reader sees the old file or the new
one, never half of either, and a crash leaves the old one intact. When the old file
exists its owner is kept (the installer runs as root for files the `rigtel` user reads).
"""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

SECRET_MODE = 0o600


def write_private(path: str | Path, data: bytes, owner: str | None = None, mode: int = SECRET_MODE) -> None:
    """Atomically replace `path` with `data`, mode 0600 (or `mode`), keeping or setting its owner.

    owner: a user name to give the file to (only possible as root); None keeps the
    previous file's owner, if there was one and we may.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = path.stat() if path.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        uid = gid = -1
        if owner is not None:
            entry = pwd.getpwnam(owner)
            uid, gid = entry.pw_uid, entry.pw_gid
        elif previous is not None and os.geteuid() == 0:
            uid, gid = previous.st_uid, previous.st_gid
        if (uid, gid) != (-1, -1):
            os.chown(tmp, uid, gid)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def mode_of(path: str | Path) -> int:
    return os.stat(path).st_mode & 0o777


def too_open(path: str | Path) -> bool:
    """True when group or others may read or write the file."""
    return bool(mode_of(path) & 0o077)
