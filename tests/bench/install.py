"""Install benchmark: the offline installer and the installed appliance at rest.

- offline install time: install.sh --prefix in a network namespace with loopback only, from
  the extracted bundle to `rigtel check` passing (target ≤ 90 s); baseline: the bare
  `pip install --no-index --require-hashes` of the same wheels into a fresh virtualenv, the
  floor any offline installer pays;
- cold start: supervisord started as the installer starts it, until every program is
  RUNNING (target ≤ 10 s); baseline: the same supervisord settings (startsecs = 3) running
  as many bare Python interpreters, the floor that startsecs itself sets;
- memory: total RSS of supervisord and every program after 20 s of running (target ≤ 250 MB),
  and each program's (≤ 45 MB, issue 2), from /proc/PID/smaps_rollup; baseline: supervisord
  with as many bare Python interpreters. PSS (shared pages such as libpython's and libzmq's
  divided among the processes that map them) is printed beside RSS: the memory the appliance
  really takes from the machine. RSS, which counts those pages once per process, is what the
  targets are judged on. Figures in MiB (1024² bytes), the targets' MB (10⁶ bytes) converted.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.test_install import REPO, Install, Offline, _alive, _password_file, wait_until

NAME = "install"
DESCRIPTION = "offline install time, cold start to every program RUNNING, total RSS of the appliance"
SETTLE_S = 20
# the issues' targets are in MB (10^6 bytes); the figures are in MiB, so the limits are the
# stricter 238.4 and 42.9 MiB, true in either reading
TOTAL_MIB = round(250e6 / 2**20, 1)  # issue 7: total RSS of the running appliance, 250 MB
EACH_MIB = round(45e6 / 2**20, 1)  # issue 2: each service, 45 MB


def summary(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def build_bundle(work: Path, say) -> Path:
    say("  building the bundle (wheels cached by lock hash)")
    out = subprocess.run([sys.executable, str(REPO / "installer/bundle.py"), "--cache",
                          str(REPO / "tests/artifacts/wheels"), "--out", str(REPO / "tests/artifacts/dist")],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"bundle failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    with tarfile.open(out.stdout.strip().splitlines()[-1]) as tar:
        tar.extractall(work, filter="tar")
    return next(p for p in work.iterdir() if p.name.startswith("rigtel-"))


def process_tree(root_pid: int) -> list[int]:
    """A process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    pids, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += children.get(pid, [])
    return pids


def program_name(pid: int) -> str:
    """`broker` for `python -m appliance broker ...`, `supervisord`, else the command."""
    argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    if "appliance" in argv[:-1]:
        return argv[argv.index("appliance") + 1]
    if any(a.endswith("supervisord") for a in argv[:2]):
        return "supervisord"
    return " ".join(argv)[:40]


def memory_mib(root_pid: int) -> dict[str, tuple[float, float]]:
    """(RSS, PSS) in MiB of each process of the tree, by program name (from smaps_rollup)."""
    out: dict[str, tuple[float, float]] = {}
    for pid in process_tree(root_pid):
        try:
            fields = {line.split(":")[0]: int(line.split()[1])
                      for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]}
            name = program_name(pid)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        while name in out:  # the bare baseline's interpreters share one command line
            name += "'"
        out[name] = (fields["Rss"] / 1024, fields["Pss"] / 1024)
    return out


def memory_table(memory: dict[str, tuple[float, float]], limit_each: float, limit_total: float) -> str:
    rows = sorted(memory.items(), key=lambda kv: -kv[1][0])
    rss, pss = sum(v[0] for v in memory.values()), sum(v[1] for v in memory.values())
    lines = [f"    {'program':<16} {'RSS MiB':>8} {'PSS MiB':>8}"]
    lines += [f"    {name:<16} {r:8.1f} {p:8.1f}{'   > ' + str(limit_each) if r > limit_each else ''}"
              for name, (r, p) in rows]
    lines.append(f"    {'total':<16} {rss:8.1f} {pss:8.1f}   (target: total RSS <= {limit_total}, each <= {limit_each})")
    return "\n".join(lines)


def start_supervisord(inst: Install) -> float:
    """Start supervisord in the namespace as the installer does; seconds to every program RUNNING."""
    cmd = inst.offline.join([str(inst.bin / "supervisord"), "-c", str(inst.conf)])
    t0 = time.monotonic()
    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"})
    wait_until(lambda: (inst.prefix / "run/rigtel/supervisor.sock").exists() and inst.all_running(),
               60, "every program RUNNING", inst.states, interval=0.05)
    return time.monotonic() - t0


def bare_baseline(inst: Install, work: Path) -> tuple[float, dict[str, tuple[float, float]]]:
    """supervisord with the appliance's settings running bare Python interpreters instead."""
    names = inst.programs()
    conf = work / "bare.conf"
    sock = work / "bare.sock"
    sections = "".join(
        f"\n[program:{n}]\ncommand = {sys.executable} -c \"import time; time.sleep(1e6)\"\n"
        f"startsecs = 3\nautorestart = true\nstopasgroup = true\nstdout_logfile = NONE\n" for n in names)
    conf.write_text(f"[unix_http_server]\nfile = {sock}\n[supervisord]\nnodaemon = true\n"
                    f"logfile = {work}/bare.log\npidfile = {work}/bare.pid\n"
                    "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
                    f"supervisor.rpcinterface:make_main_rpcinterface\n[supervisorctl]\nserverurl = unix://{sock}\n"
                    + sections)
    ctl = [str(inst.bin / "supervisorctl"), "-c", str(conf)]
    t0 = time.monotonic()
    proc = subprocess.Popen([str(inst.bin / "supervisord"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def running() -> bool:
            out = subprocess.run([*ctl, "status"], capture_output=True, text=True).stdout.split("\n")
            return sum(" RUNNING " in line for line in out) == len(names)
        wait_until(running, 60, "bare programs RUNNING", interval=0.05)
        start_s = time.monotonic() - t0
        time.sleep(SETTLE_S)
        memory = memory_mib(proc.pid)
    finally:
        subprocess.run([*ctl, "shutdown"], capture_output=True)
        proc.wait(60)
    return start_s, memory


def bare_pip(bundle: Path, work: Path) -> float:
    venv = work / "bare-venv"
    shutil.rmtree(venv, ignore_errors=True)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip_wheel = next((bundle / "wheels").glob("pip-*.whl"))
    subprocess.run([str(venv / "bin/python"), f"{pip_wheel}/pip", "install", "--quiet", "--no-index",
                    "--find-links", str(bundle / "wheels"), "--require-hashes", "--no-cache-dir",
                    "-r", str(bundle / "requirements.txt")], check=True,
                   env={**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")},
                        "PIP_CONFIG_FILE": os.devnull})  # as the installer: only the bundle counts
    return time.monotonic() - t0


def run(opts) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="rigtel-bench-install-"))
    try:
        bundle = build_bundle(work, opts.say)
        installs, pips, starts, bare_starts, rss, bare_rss, pss, bare_pss = [], [], [], [], [], [], [], []
        per_program: dict[str, list[tuple[float, float]]] = {}
        bare_each: list[float] = []
        for i in range(opts.runs):
            # the two sides back to back, alternating which goes first
            inst = Install(work / f"rig{i}", bundle, Offline())
            try:
                for side in (("pip", "install") if i % 2 else ("install", "pip")):
                    if side == "pip":
                        pips.append(bare_pip(bundle, work))
                        continue
                    t0 = time.monotonic()
                    rc, out = inst.run_installer(*inst.port_settings(), "--admin-password-file",
                                                 str(_password_file(work)))
                    if rc != 0:
                        raise RuntimeError(f"install failed:\n{out[-3000:]}")
                    installs.append(time.monotonic() - t0)
                    inst.offline.pid = inst.supervisord_pid()
                opts.say(f"  run {i + 1}: install {installs[-1]:.1f} s, bare pip {pips[-1]:.1f} s")
                # cold start: stop everything, start supervisord again as the installer does
                pid = inst.supervisord_pid()
                holder = subprocess.Popen(inst.offline.join(["sleep", "600"]))  # keeps the namespace
                inst.offline.pid = holder.pid
                inst.ctl("shutdown")
                wait_until(lambda: not _alive(pid), 90, "supervisord to stop")
                (inst.prefix / "run/rigtel/supervisord.pid").unlink(missing_ok=True)
                starts.append(start_supervisord(inst))
                time.sleep(SETTLE_S)
                memory = memory_mib(inst.supervisord_pid())
                for name, figures in memory.items():
                    per_program.setdefault(name, []).append(figures)
                rss.append(sum(v[0] for v in memory.values()))
                pss.append(sum(v[1] for v in memory.values()))
                bs, bare = bare_baseline(inst, work)
                bare_starts.append(bs)
                bare_rss.append(sum(v[0] for v in bare.values()))
                bare_pss.append(sum(v[1] for v in bare.values()))
                bare_each += [v[0] for name, v in bare.items() if name != "supervisord"]
                opts.say(f"  run {i + 1}: cold start {starts[-1]:.1f} s (bare {bs:.1f} s), "
                         f"RSS {rss[-1]:.0f} MiB, PSS {pss[-1]:.0f} MiB (bare {bare_rss[-1]:.0f} / "
                         f"{bare_pss[-1]:.0f} MiB)\n" + memory_table(memory, EACH_MIB, TOTAL_MIB))
                holder.kill()
                holder.wait()
            finally:
                inst.stop()
                subprocess.run([str(bundle / "uninstall.sh"), "--prefix", str(inst.prefix), "--purge"],
                               capture_output=True)
        rows = [
            {"metric": "offline install (bundle to check passing)", "unit": "s",
             "appliance": summary(installs), "baseline": summary(pips),
             "target": {"on": "value", "op": "<=", "limit": 90},
             "note": "baseline: bare pip install --no-index --require-hashes of the same wheels"},
            {"metric": "cold start to every program RUNNING", "unit": "s",
             "appliance": summary(starts), "baseline": summary(bare_starts),
             "target": {"on": "value", "op": "<=", "limit": 10},
             "note": "baseline: supervisord with startsecs = 3 running as many bare Python interpreters"},
            {"metric": f"total RSS after {SETTLE_S} s (supervisord + programs)", "unit": "MiB",
             "appliance": summary(rss), "baseline": summary(bare_rss),
             "target": {"on": "value", "op": "<=", "limit": TOTAL_MIB},
             "note": "baseline: supervisord with as many bare Python interpreters; PSS below counts "
                     "shared pages once"},
            {"metric": f"total PSS after {SETTLE_S} s (supervisord + programs)", "unit": "MiB",
             "appliance": summary(pss), "baseline": summary(bare_pss)},
        ]
        bare_one = summary(bare_each)
        for name, figures in sorted(per_program.items(), key=lambda kv: -statistics.median(f[0] for f in kv[1])):
            rows.append({"metric": f"RSS {name} (PSS {statistics.median(f[1] for f in figures):.0f})",
                         "unit": "MiB", "appliance": summary([f[0] for f in figures]), "baseline": bare_one,
                         "target": {"on": "value", "op": "<=", "limit": EACH_MIB}})
        rows[-1]["note"] = "per program; baseline: one bare Python interpreter under supervisord"
        return {"rows": rows, "raw": {"installs": installs, "pips": pips, "starts": starts, "rss": rss,
                                      "pss": pss, "per_program": per_program}}
    finally:
        shutil.rmtree(work, ignore_errors=True)
