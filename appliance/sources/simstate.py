"""Where the simulated well and its clock got to, kept in DATA_DIR across restarts.

A rig does not go back to its start depth when the appliance restarts, and a database must
not get a second set of frames stamped over the first: so `rigtel simulate` writes this
small file every STATE_EVERY_S (30 s) and when it stops, and the next run reads it to

- continue the same well (same `simulator_seed` and `simulator_start_depth_ft`): the bit back
  on bottom of the hole drilled so far, pit and mud temperatures as they were; another seed
  or start depth starts a new well;
- stamp its first frame after the previous run's last one when that run was ahead of the
  clock (speed above 1), so that the two never interleave in the database; after a run at
  speed 1 it stamps from the clock, so a clock that was once wrong is not followed forever.

The database itself is not read here: the simulator stays clear of sqlite3 (memory; see
tests/test_imports.py). A database filled ahead of the clock before this file existed (a
development prefix that ran at speed 10) is `rigtel dev`'s to point out.

After a hard kill (kill -9, power loss) the file is up to STATE_EVERY_S behind: that much
drilling is drilled again, and at speeds above 1 the first frames of the next run can
overlap the last ones of the killed run by that time the speed. Deleting the file starts a
new well at `simulator_start_depth_ft`, stamped from the wall clock, as does
`rigtel simulate --new-well`: a new well's data depend only on the seed and the settings.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import orjson

STATE_FILE = "simulator-state-{rig_id}.json"  # one per rig id: two simulators never share a well
VERSION = 1
MAX_TS_MS = 2**53  # the bus's limit for a stamp
MAX_DEPTH_FT = 100_000.0  # RigModel.carry_on's


class StateError(ValueError):
    """The state file exists but cannot be used; the message says why."""


@dataclass(frozen=True)
class WellState:
    seed: int
    start_depth_ft: float  # the setting the well began with: another value is another well
    last_ts_ms: int  # the stamp of the last frame published, UTC epoch ms
    well: dict[str, float]  # RigModel.carried(): hole_ft, pit_bbl, ...
    speed: float = 1.0  # the run's simulator_speed: only a run ahead of the clock is followed

    def same_well(self, seed: int, start_depth_ft: float) -> bool:
        return self.seed == seed and self.start_depth_ft == start_depth_ft

    def to_json(self) -> bytes:
        return orjson.dumps({"version": VERSION, "seed": self.seed, "start_depth_ft": self.start_depth_ft,
                             "last_ts_ms": self.last_ts_ms, "speed": self.speed, "well": self.well})


def state_path(cfg: Any) -> str:
    return os.path.join(cfg.data_dir, STATE_FILE.format(rig_id=cfg.rig_id))


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
        speed = float(doc.get("speed", 1.0))
        if not isinstance(seed, int) or not isinstance(last, int) or not math.isfinite(depth):
            raise ValueError("seed, start depth or last stamp is not a number")
        if not 0 <= last < MAX_TS_MS:
            raise ValueError(f"last stamp {last} is not epoch milliseconds")
        if not 0.0 <= numbers["hole_ft"] <= MAX_DEPTH_FT:
            raise ValueError(f"hole_ft {numbers['hole_ft']} is not a depth")
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed {speed} is not a speed")
        return WellState(seed, depth, last, numbers, speed)
    except (ValueError, KeyError, TypeError) as e:
        raise StateError(f"{path} is not a simulator state ({e})") from None


def save(path: str, state: WellState) -> None:
    """Write `state` to `path` atomically and durably: a reader, or the next start after a
    power cut, sees the old file or the new, never half of one (written, flushed to disk,
    then renamed over it; the temporary name is this process's own)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    try:
        with open(partial, "wb") as f:
            f.write(state.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        try:
            os.remove(partial)
        except OSError:
            pass
        raise

