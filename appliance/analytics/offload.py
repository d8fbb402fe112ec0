"""KPIs computed in a short-lived child process, so numpy never enters the web program.

`/api/kpis` is heavy numpy work over up to 7 days of samples. Done in the web program, the
first Analytics view would load numpy and OpenBLAS into it for the rest of its life: the web
went from 42 MB to 65 MB RSS after one request (docs/ARCHITECTURE.md, memory), against a
45 MB budget. Here a request runs `python -m appliance.analytics.offload DB FROM TO`, which
loads, computes and prints the answer as JSON, and exits; its memory goes back to the system
with it. Starting the child costs about 0.3 s (the interpreter and numpy), small next to the
computation and paid only when the answer is not in the cache.

The parent side (`KpiRunner`) imports neither numpy nor appliance.analytics.kpis. It runs one
child at a time (each can take a few hundred MB over a week of 1 Hz data on a small box),
stops one that runs past `kpis_timeout_s`, and keeps the last few answers for CACHE_S by
range, so a page reload or a second operator on the same range costs nothing.
"""

from __future__ import annotations

import collections
import logging
import os
import site
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger("rigtel.web.kpis")

MAX_RANGE_MS = 7 * 86_400_000  # kpis.MAX_RANGE_MS, checked here too so a bad request starts no child
CACHE_S = 60.0  # an answer for a range is reused this long (data keeps arriving at its end)
CACHE_ENTRIES = 8
CACHE_MAX_BYTES = 512 * 1024  # a bigger answer is not kept
QUERY_ERROR_EXIT = 65  # the child's exit code for a range it cannot answer (a 400, its message on stdout);
# not 2, which Python itself exits with for its own start-up errors
SLOT_WAIT_S = 5.0  # how long a request waits for the child of another range
# the child's numpy needs no BLAS threads: each would reserve a stack and a buffer for nothing
CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class KpiFailed(Exception):
    """The KPIs could not be computed; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class KpiRunner:
    """Runs the KPI child for the web's request threads; thread-safe."""

    def __init__(self, timeout_s: float, cache_s: float = CACHE_S) -> None:
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._slot = threading.Lock()  # one child at a time
        self._lock = threading.Lock()  # the cache
        self._cache: collections.OrderedDict[tuple[str, int, int], tuple[float, bytes]] = collections.OrderedDict()
        self.children = 0  # started so far (tests and the System view's curiosity)

    def kpis_json(self, db_path: str, start_ms: int, end_ms: int) -> bytes:
        """The /api/kpis answer for [start, end) as JSON bytes.

        Raises read.QueryError for a range the computation refuses (a 400, as before) and
        KpiFailed when no child could answer: busy past the timeout, too slow, or crashed."""
        from appliance.store.read import QueryError

        if end_ms - start_ms > MAX_RANGE_MS:
            raise QueryError(f"KPIs are computed over at most {MAX_RANGE_MS // 86_400_000} days at a time; "
                             "ask for a shorter range")
        key = (os.path.abspath(db_path), start_ms, end_ms)
        cached = self._cached(key)
        if cached is not None:
            return cached
        # a request waits a few seconds for the one child, not the whole timeout: each waiting
        # request holds a web thread, and an operator clicking through presets would hold them all
        if not self._slot.acquire(timeout=min(SLOT_WAIT_S, self.timeout_s)):
            raise KpiFailed("KPIs for another range are being computed; retry in a minute", 503,
                            retry_after_s=60)
        deadline = time.monotonic() + self.timeout_s
        try:
            cached = self._cached(key)  # the request we waited behind may have been for this range
            if cached is not None:
                return cached
            body = self._run_child(key, max(deadline - time.monotonic(), 0.05))
        finally:
            self._slot.release()
        if len(body) <= CACHE_MAX_BYTES:
            with self._lock:
                self._cache[key] = (time.monotonic(), body)
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return body

    def _cached(self, key: tuple[str, int, int]) -> bytes | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            if time.monotonic() - hit[0] > self.cache_s:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return hit[1]

    def _run_child(self, key: tuple[str, int, int], timeout_s: float) -> bytes:
        from appliance.store.read import QueryError

        db_path, start_ms, end_ms = key
        args = [sys.executable, "-m", "appliance.analytics.offload", db_path, str(start_ms), str(end_ms)]
        self.children += 1
        started = time.monotonic()
        try:
            done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s,
                                  env=child_env())
        except subprocess.TimeoutExpired:
            log.warning("KPIs from %d to %d: stopped the computation after %.0f s", start_ms, end_ms, timeout_s)
            raise KpiFailed(f"computing KPIs for this range took longer than {timeout_s:.0f} s and was stopped; "
                            "ask for a shorter range (or raise kpis_timeout_s)", 504) from None
        except OSError as e:
            log.error("cannot start the KPI computation (%s): %s", args[0], e)
            raise KpiFailed(f"cannot start the KPI computation: {e}", 500) from None
        if done.returncode == QUERY_ERROR_EXIT and done.stdout.strip():
            raise QueryError(done.stdout.decode(errors="replace").strip())
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()
            log.error("KPIs from %d to %d: the computation failed with exit code %d:\n%s", start_ms, end_ms,
                      done.returncode, err[-4000:])
            last = err.splitlines()[-1] if err else f"exit code {done.returncode}"
            raise KpiFailed(f"the KPI computation failed ({last[:300]}); the web program's log has the details",
                            500)
        log.info("KPIs from %d to %d computed in %.2f s (%d bytes)", start_ms, end_ms,
                 time.monotonic() - started, len(done.stdout))
        return done.stdout


def child_env() -> dict[str, str]:
    """The web's environment, single-threaded BLAS, and this very package on the path."""
    # not the tracemalloc debug switch (it would trace every numpy allocation of the child)
    # nor the settings, secrets among them: the child is given all it needs in its arguments
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONTRACEMALLOC" and not k.startswith("RIGTEL_")} | CHILD_ENV
    root = str(Path(__file__).resolve().parents[2])
    # a checkout or a test tree (PYTHONPATH, cwd) rather than site-packages: the child must
    # import the code this process runs, whatever the child's working directory
    if root not in site.getsitepackages() and root != site.getusersitepackages():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def main(argv: Sequence[str]) -> int:
    """The child: DB FROM_MS TO_MS -> the KPIs as JSON on stdout (exit 0), or the reason the
    range cannot be answered on stdout (exit QUERY_ERROR_EXIT)."""
    import orjson

    from appliance.analytics import kpis
    from appliance.store import read
    from appliance.store.schema import connect_reader

    db_path, start_ms, end_ms = argv[0], int(argv[1]), int(argv[2])
    conn = connect_reader(db_path)
    try:
        answer = kpis.kpis_for_range(conn, start_ms, end_ms)
    except read.QueryError as e:
        sys.stdout.write(str(e))
        return QUERY_ERROR_EXIT
    finally:
        conn.close()
    sys.stdout.buffer.write(orjson.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
