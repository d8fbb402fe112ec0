"""Where the simulated well and its clock got to, kept in DATA_DIR across restarts.

A rig does not go back to its start depth when the appliance restarts, and a database must
not get a second set of frames stamped over the first: so `rigtel simulate` writes this
small file about once a second and when it stops, and the next run reads it to

- continue the same well (same `simulator_seed` and `simulator_start_depth_ft`): the bit back
  on bottom of the hole drilled so far, pit and mud temperatures as they were; another seed
  or start depth starts a new well;
- stamp its first frame after the previous run's last one, whatever the well, so that two
  runs never interleave in the database (at speed 1 that is the wall clock anyway).

The database itself is not read here: the simulator stays clear of sqlite3 (memory; see
tests/test_imports.py). A database filled ahead of the clock before this file existed (a
development prefix that ran at speed 10) is `rigtel dev`'s to point out.

After a hard kill (kill -9, power loss) the file is at most about a second behind: up to a
second of drilling is drilled again, and at speeds above 1 the first frames of the next run
can overlap the last ones of the killed run by that second times the speed. Deleting the file
starts a new well at `simulator_start_depth_ft`, stamped from the wall clock.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import orjson

STATE_FILE = "simulator-state.json"
VERSION = 1


class StateError(ValueError):
    """The state file exists but cannot be used; the message says why."""


@dataclass(frozen=True)
class WellState:
    seed: int
    start_depth_ft: float  # the setting the well began with: another value is another well
    last_ts_ms: int  # the stamp of the last frame published, UTC epoch ms
    well: dict[str, float]  # RigModel.carried(): hole_ft, pit_bbl, ...

    def same_well(self, seed: int, start_depth_ft: float) -> bool:
        return self.seed == seed and self.start_depth_ft == start_depth_ft

    def to_json(self) -> bytes:
        return orjson.dumps({"version": VERSION, "seed": self.seed, "start_depth_ft": self.start_depth_ft,
                             "last_ts_ms": self.last_ts_ms, "well": self.well})


def state_path(cfg: Any) -> str:
    return os.path.join(cfg.data_dir, STATE_FILE)


def load(path: str) -> WellState | None:
    """The state in `path`; None when there is no file; StateError when it is unreadable."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        doc = orjson.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} state")
        well = doc["well"]
        if not isinstance(well, dict) or "hole_ft" not in well:
            raise ValueError("no well in it")
        numbers = {str(k): float(v) for k, v in well.items()}
        if not all(math.isfinite(v) for v in numbers.values()):
            raise ValueError("a value that is not a number")
        seed, depth, last = doc["seed"], float(doc["start_depth_ft"]), doc["last_ts_ms"]
        if not isinstance(seed, int) or not isinstance(last, int) or not math.isfinite(depth):
            raise ValueError("seed, start depth or last stamp is not a number")
        return WellState(seed, depth, last, numbers)
    except (ValueError, KeyError, TypeError) as e:
        raise StateError(f"{path} is not a simulator state ({e})") from None


def save(path: str, state: WellState) -> None:
    """Write `state` to `path` atomically (a reader sees the old file or the new, never half)."""
    partial = f"{path}.partial"
    with open(partial, "wb") as f:
        f.write(state.to_json())
    os.replace(partial, path)

