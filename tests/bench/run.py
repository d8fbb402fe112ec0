"""`make bench`: run the benchmark modules, print figures and ratios, keep the results.

    .venv/bin/python tests/bench/run.py              # every benchmark
    .venv/bin/python tests/bench/run.py bus --quick  # one of them, a short smoke run

A benchmark module (registered in BENCHMARKS) has NAME, DESCRIPTION and
``run(opts) -> {"rows": [...], "raw": {...}}``. `opts` carries `runs` (repetitions of each
measurement), `quick` and `say` (prints a progress line). Each row is a dict::

    {"metric": str, "unit": str,
     "appliance": {"median", "min", "max", "runs"} | None,
     "baseline":  {"median", "min", "max", "runs"} | None,   # measured in the same run
     "target": {"on": "ratio" | "value", "op": ">=" | "<=", "limit": float},  # optional
     "note": str}                                                             # optional

A row with "error": True marks a part of the benchmark that broke.

This file computes ratios from the medians, judges the targets, prints one table and
writes ``var/bench/<name>-<timestamp>.json``. When both sides have one figure per
repetition, measured back to back, it also shows the spread of those per-repetition
ratios and marks a verdict "(noisy)" when they fall on both sides of the target. A missed
target is reported, not fatal: the exit code is 0 unless a benchmark itself broke (then 1).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: make `tests` and `appliance` importable

# name -> module
BENCHMARKS: dict[str, str] = {
    "bus": "tests.bench.bus",
    "storage": "tests.bench.storage",
    "web": "tests.bench.web",
    "data": "tests.bench.data",
    "predictor": "tests.bench.predictor",
    "spool": "tests.bench.spool",
    "web-soak": "tests.bench.websoak",
    "install": "tests.bench.install",
}

OPS = {">=": (lambda x, limit: x >= limit, "≥"), "<=": (lambda x, limit: x <= limit, "≤")}


def ratio(row: dict[str, Any]) -> float | None:
    a, b = row.get("appliance"), row.get("baseline")
    if not a or not b or not b["median"]:
        return None
    return a["median"] / b["median"]


def pair_ratios(row: dict[str, Any]) -> list[float]:
    """appliance/baseline of each repetition: the two were measured back to back."""
    a, b = row.get("appliance"), row.get("baseline")
    if not a or not b or len(a["runs"]) != len(b["runs"]) or len(a["runs"]) < 2:
        return []
    return [x / y for x, y in zip(a["runs"], b["runs"]) if y]


def verdict(row: dict[str, Any]) -> str:
    """PASS or MISS on the medians; "(noisy)" when the repetitions' own ratios fall on both sides."""
    if row.get("error"):
        return "ERROR"
    target = row.get("target")
    if not target:
        return "-"
    x = ratio(row) if target["on"] == "ratio" else (row["appliance"] or {}).get("median")
    if x is None:
        return "ERROR"
    test, _ = OPS[target["op"]]
    result = "PASS" if test(x, target["limit"]) else "MISS"
    pairs = pair_ratios(row) if target["on"] == "ratio" else []
    if pairs and len({test(p, target["limit"]) for p in pairs}) > 1:
        result += " (noisy)"
    return result


def number(x: float) -> str:
    if abs(x) >= 100_000:
        return f"{x / 1000:.0f}k"
    if abs(x) >= 10_000:
        return f"{x / 1000:.1f}k"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def figure(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    if len(s["runs"]) == 1:
        return number(s["median"])
    return f"{number(s['median'])} [{number(s['min'])}–{number(s['max'])}]"


def target_text(row: dict[str, Any]) -> str:
    t = row.get("target")
    if not t:
        return ""
    sign = OPS[t["op"]][1]
    return f"ratio {sign} {t['limit']:g}" if t["on"] == "ratio" else f"{sign} {t['limit']:g} {row['unit']}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("metric", "unit", "appliance median [min–max]", "baseline median [min–max]", "ratio",
            "run ratios", "target", "result")
    body = []
    for r in rows:
        x, pairs = ratio(r), pair_ratios(r)
        body.append((r["metric"], r["unit"], figure(r.get("appliance")), figure(r.get("baseline")),
                     f"{x:.2f}" if x is not None else "-",
                     f"{min(pairs):.2f}–{max(pairs):.2f}" if pairs else "", target_text(r), verdict(r)))
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*line) for line in body]
    legend = ["", "ratio: appliance median / baseline median. run ratios: appliance / baseline of each "
              "repetition (run back to back), lowest-highest; \"(noisy)\" when they fall on both sides "
              "of the target."]
    notes = [f"  {r['metric']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join(lines + legend + (["", "notes:"] + notes if notes else []))


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                            "cpus": os.cpu_count(), "loadavg": os.getloadavg()}
    try:
        import orjson
        import zmq

        info.update(pyzmq=zmq.__version__, libzmq=zmq.zmq_version(), orjson=orjson.__version__)
    except ImportError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="BENCH",
                        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--quick", action="store_true", help="a short smoke run: small counts, one run each")
    parser.add_argument("--runs", type=int, help="repetitions of each measurement (default 5, --quick 1)")
    parser.add_argument("--out", default=str(REPO / "var" / "bench"), help="folder for the JSON results")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    runs = args.runs or (1 if args.quick else 5)
    if runs < 1:
        parser.error("--runs must be at least 1")

    def say(text: str) -> None:
        print(text, flush=True)

    opts = argparse.Namespace(runs=runs, quick=args.quick, say=say)
    out_dir = Path(args.out)
    broken = 0
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        stamp = time.strftime("%Y%m%d-%H%M%S")
        say(f"== {name}: {module.DESCRIPTION} ({runs} run{'s' if runs > 1 else ''} each"
            f"{', quick' if args.quick else ''})")
        env_before = environment()
        started = time.monotonic()
        try:
            result = module.run(opts)
        except Exception:
            broken += 1
            say(f"!! {name} broke:\n{traceback.format_exc()}")
            continue
        seconds = time.monotonic() - started
        rows = result["rows"]
        for r in rows:
            r["ratio"], r["run_ratios"], r["verdict"] = ratio(r), pair_ratios(r), verdict(r)
        broken += sum(r["verdict"] == "ERROR" for r in rows)
        say("")
        say(table(rows))
        say(f"\n{name}: {seconds:.0f} s; load average before {env_before['loadavg'][0]:.2f}, "
            f"after {os.getloadavg()[0]:.2f}; {env_before['cpus']} CPUs")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}-{stamp}.json"
        doc = {"benchmark": name, "started": stamp, "seconds": seconds, "runs": runs, "quick": args.quick,
               "environment": env_before, "loadavg_after": os.getloadavg(), "rows": rows,
               "raw": result.get("raw", {})}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        say(f"results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}\n")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
