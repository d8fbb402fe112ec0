"""Bus benchmark: the appliance's publisher, broker and subscriber against bare pyzmq.

Every figure is measured twice in the same run, interleaved: once through the appliance
(`Publisher.publish` -> `rigtel broker` -> `DataSubscriber`) and once through bare pyzmq
with the same codec (a PUB socket sending ``[topic, orjson.dumps(envelope)]`` -> a
`zmq.proxy(XSUB, XPUB)` process -> SUB sockets doing `orjson.loads`). Same frames, same
message counts, the appliance's default high-water marks (read with `rigtel config`) copied
onto the bare sockets, one process per publisher, broker and subscriber, all on ephemeral
loopback ports.

- throughput: frames/s at the subscriber from its first to its last data message (for
  four subscribers, the slowest one); loss is sent minus received, per subscriber.
- latency: one frame per millisecond on an absolute schedule; each frame carries
  `time.monotonic_ns()` taken just before publishing (CLOCK_MONOTONIC, one clock for the
  whole machine on Linux), and the subscriber subtracts it from its own reading after
  decoding. The first WARMUP_S seconds of each run are dropped. Both paths run at the same
  time (Driver.run_together), so bursts of outside load fall on both alike.
- memory: VmRSS (and the peak, VmHWM) from /proc/PID/status of the broker, the logger and
  the simulator, idle and after a burst of traffic; MB here are 10^6 bytes.

Readiness is a handshake: the publisher sends probes on CTL_TOPIC until every
subscriber has printed that it saw one, and only then starts the timed part.

The same file is the worker program: ``python -m tests.bench.bus pub|sub|proxy ...``.
Workers print ``BENCH ready`` and ``BENCH result {json}`` lines; the publisher reads
``go`` and ``stop`` from stdin. Workers import nothing from the appliance on the bare path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import select
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import zmq

NAME = "bus"
DESCRIPTION = "frames/s and 1 kHz latency through the broker, RSS of the bus services"

CTL_TOPIC = "ctl.bench"  # probes and end markers; not a prefix of any data topic
DATA_TOPIC = "drilling"
BURST_TOPIC = "burst.drilling"  # the memory phase, apart from the simulator's "drilling"
SRC = "rig-1.bench"
WARMUP_S = 0.2
LATENCY_S = 6.0
PROBE_EVERY_S = 0.02
END_EVERY_S = 0.05
MB = 1_000_000

# 20 channels as a rig recorder sends them: mnemonic and a typical value
CHANNELS = (
    ("DBTM", 5012.4), ("DMEA", 5013.1), ("BPOS", 62.3), ("ROPA", 85.2), ("HKLA", 212.7),
    ("WOBA", 24.8), ("TQA", 12.6), ("RPMA", 118.0), ("SPPA", 3150.0), ("CHKP", 40.2),
    ("SPM1", 92.0), ("SPM2", 91.5), ("SPM3", 0.0), ("TVA", 512.3), ("MFOP", 48.1),
    ("MFOA", 601.7), ("MFIA", 598.2), ("MDOA", 10.42), ("MDIA", 10.38), ("GASA", 1.27),
)


# name -> (dumps to bytes, loads from bytes); the appliance uses orjson
CODECS: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "orjson": (orjson.dumps, orjson.loads),
    "json": (lambda obj: json.dumps(obj, separators=(",", ":")).encode(), json.loads),
}


def make_frames(n: int = 1000, seed: int = 1) -> list[dict[str, float]]:
    """`n` distinct 20-channel frames, the same in every process."""
    rnd = random.Random(seed)
    return [{name: round(value * (1 + rnd.uniform(-0.02, 0.02)), 2) for name, value in CHANNELS}
            for _ in range(n)]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def emit(event: str, body: dict[str, Any] | None = None) -> None:
    line = f"BENCH {event}" if body is None else f"BENCH {event} {json.dumps(body)}"
    print(line, flush=True)


# =====================================================================================
# workers
# =====================================================================================


def appliance_settings():
    """The default settings, isolated from any installed configuration as the tests do it.

    The driver sets RIGTEL_CONFIG to an empty ini file (tests.conftest.clean_env).
    """
    from appliance.config import load

    return load({}, config_file=os.environ["RIGTEL_CONFIG"], env={}, dotenv="")


class BareSender:
    """The baseline publisher: what `Publisher` does, minus its checks."""

    def __init__(self, endpoint: str, hwm: int, context: zmq.Context,
                 dumps: Callable[[Any], bytes] = orjson.dumps) -> None:
        self.dumps = dumps
        self.socket = context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.connect(endpoint)
        self.boot = os.urandom(8).hex()
        self.seq: dict[bytes, int] = {}
        self.sent = 0

    def publish(self, topic: str, data: dict, ts: int | None = None) -> None:
        raw = topic.encode()
        seq = self.seq[raw] = self.seq.get(raw, 0) + 1
        self.socket.send_multipart((raw, self.dumps(
            {"v": 1, "src": SRC, "boot": self.boot, "seq": seq,
             "ts": now_ms() if ts is None else ts, "data": data})))
        self.sent += 1

    def publish_batch(self, topic: str, frames: list[tuple[int, dict]]) -> None:
        raw = topic.encode()
        seq = self.seq[raw] = self.seq.get(raw, 0) + 1
        self.socket.send_multipart((raw, self.dumps(
            {"v": 1, "src": SRC, "boot": self.boot, "seq": seq, "ts": now_ms(),
             "batch": [{"ts": t, "data": d} for t, d in frames]})))
        self.sent += 1

    def close(self) -> None:
        self.socket.close()


_stdin_lines: list[str] = []
_stdin_rest = b""


def stdin_line(timeout: float) -> str | None:
    """A line from the driver, '' at end of file, None when nothing came within `timeout` s.

    Reads the descriptor itself: select() cannot see lines already in sys.stdin's buffer.
    """
    global _stdin_rest
    if not _stdin_lines:
        ready, _, _ = select.select([0], [], [], timeout)
        if not ready:
            return None
        chunk = os.read(0, 4096)
        if not chunk:
            return ""
        *lines, _stdin_rest = (_stdin_rest + chunk).split(b"\n")
        _stdin_lines.extend(line.decode() for line in lines)
        if not _stdin_lines:
            return None
    return _stdin_lines.pop(0)


def pub_main(a: argparse.Namespace) -> int:
    context = zmq.Context()
    if a.path == "appliance":
        from appliance.bus import Publisher

        pub: Any = Publisher("bench", endpoint=a.frontend, settings=appliance_settings(), context=context)
    else:
        pub = BareSender(a.frontend, a.send_hwm, context, CODECS[a.codec][0])
    frames = make_frames()
    nframes = len(frames)
    while True:  # probe until every subscriber has seen one
        pub.publish(CTL_TOPIC, {"cmd": "probe"})
        line = stdin_line(PROBE_EVERY_S)
        if line == "":
            return 1  # the driver went away
        if line is not None and line.strip() == "go":
            break

    result: dict[str, Any] = {}
    publish, topic = pub.publish, a.topic
    sent_before = pub.sent
    started, cpu_started = time.perf_counter(), time.process_time()
    if a.mode == "throughput" and a.batch <= 1:
        for i in range(a.count):
            publish(topic, frames[i % nframes])
        result["frames"] = a.count
    elif a.mode == "throughput":
        base = now_ms()
        groups = [[(base + g * a.batch + j, frames[(g * a.batch + j) % nframes]) for j in range(a.batch)]
                  for g in range(16)]
        messages = a.count // a.batch
        publish_batch = pub.publish_batch
        for i in range(messages):
            publish_batch(topic, groups[i % 16])
        result["frames"] = messages * a.batch
    else:  # latency: one frame every period on an absolute schedule
        period_ns = round(1e9 / a.rate)
        n = round(a.seconds * a.rate)
        clock, sleep = time.monotonic_ns, time.sleep
        late = []
        first = clock() + period_ns
        for i in range(n):
            due = first + i * period_ns
            wait = due - clock()
            if wait > 0:
                sleep(wait / 1e9)
            frame = dict(frames[i % nframes])
            t = frame["t_ns"] = clock()
            publish(topic, frame)
            late.append(t - due)
        late.sort()
        result["frames"] = n
        result["late_p99_us"] = late[int(0.99 * (n - 1))] / 1000
        result["late_max_us"] = late[-1] / 1000
    elapsed = time.perf_counter() - started
    result.update(messages=pub.sent - sent_before, elapsed_s=elapsed,
                  cpu_s=time.process_time() - cpu_started)
    while True:  # end markers until the driver has every subscriber's result
        pub.publish(CTL_TOPIC, {"cmd": "end"})
        line = stdin_line(END_EVERY_S)
        if line is not None:
            break
    pub.close()
    context.term()
    emit("result", result)
    return 0


class Tally:
    """What a subscriber records, the same on both paths."""

    def __init__(self, latency: bool) -> None:
        self.latency = latency
        self.messages = 0
        self.frames = 0
        self.first_frames = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.lat_ns: list[int] = []
        self.cpu_first = 0.0
        self.ready = False
        self.done = False

    def data(self, nframes: int, t_ns: int | None) -> None:
        now = time.perf_counter()
        if self.latency:
            self.lat_ns.append(time.monotonic_ns() - t_ns)
        if not self.messages:
            self.t_first, self.first_frames = now, nframes
            self.cpu_first = time.process_time()
        self.t_last = now
        self.messages += 1
        self.frames += nframes

    def control(self, cmd: str) -> None:
        if cmd == "probe" and not self.ready:
            self.ready = True
            emit("ready")
        elif cmd == "end":
            self.done = True

    def result(self, **more: Any) -> dict[str, Any]:
        span = self.t_last - self.t_first
        out = {"messages": self.messages, "frames": self.frames, "span_s": span,
               "cpu_s": time.process_time() - self.cpu_first,
               "frames_per_s": (self.frames - self.first_frames) / span if span > 0 else None, **more}
        if self.latency:
            out["lat_us"] = [round(x / 1000, 1) for x in self.lat_ns]
        return out


def sub_main(a: argparse.Namespace) -> int:
    tally = Tally(a.mode == "latency")
    context = zmq.Context()
    if a.path == "appliance":
        from appliance.bus import DataSubscriber

        class Counting(DataSubscriber):
            def on_envelope(self, env) -> None:
                if env.topic == a.topic:
                    tally.data(len(env.frames), env.frames[0].data.get("t_ns") if tally.latency else None)
                elif env.topic == CTL_TOPIC:
                    tally.control(env.frames[0].data["cmd"])
                    if tally.done:
                        self.stop()

        sub = Counting(topics=[a.topic, CTL_TOPIC], endpoint=a.backend,
                       settings=appliance_settings(), context=context)
        sub.start()
        t = sub.tracker
        extra = {"lost_by_seq": t.lost, "gaps": t.gaps, "rejected": sub.stats["rejected"]}
    else:
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, a.hwm)
        sock.setsockopt(zmq.RCVTIMEO, 120_000)
        sock.connect(a.backend)
        data_topic, ctl_topic = a.topic.encode(), CTL_TOPIC.encode()
        sock.setsockopt(zmq.SUBSCRIBE, data_topic)
        sock.setsockopt(zmq.SUBSCRIBE, ctl_topic)
        recv, loads = sock.recv_multipart, CODECS[a.codec][1]
        while not tally.done:
            topic, payload = recv()
            env = loads(payload)
            if topic == data_topic:
                if "data" in env:
                    tally.data(1, env["data"].get("t_ns") if tally.latency else None)
                else:
                    tally.data(len(env["batch"]), None)
            elif topic == ctl_topic:
                tally.control(env["data"]["cmd"])
        sock.close()
        extra = {}
    context.term()
    emit("result", tally.result(**extra))
    return 0


def proxy_main(a: argparse.Namespace) -> int:
    """The baseline broker: zmq.proxy between XSUB and XPUB, nothing else."""
    context = zmq.Context()
    frontend = context.socket(zmq.XSUB)
    backend = context.socket(zmq.XPUB)
    for s in (frontend, backend):
        s.setsockopt(zmq.LINGER, 0)
    frontend.setsockopt(zmq.RCVHWM, a.hwm)
    backend.setsockopt(zmq.SNDHWM, a.hwm)
    frontend.bind("tcp://127.0.0.1:0")
    backend.bind("tcp://127.0.0.1:0")
    # the same line as `rigtel broker`, so one readiness pattern serves both
    print(f"ready: frontend {frontend.getsockopt_string(zmq.LAST_ENDPOINT)} (publishers), "
          f"backend {backend.getsockopt_string(zmq.LAST_ENDPOINT)} (subscribers)", flush=True)
    zmq.proxy(frontend, backend)  # until SIGTERM ends the process
    return 0


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bus")
    parser.add_argument("role", choices=("pub", "sub", "proxy"))
    parser.add_argument("--path", choices=("appliance", "bare"), default="bare")
    parser.add_argument("--frontend")
    parser.add_argument("--backend")
    parser.add_argument("--mode", choices=("throughput", "latency"), default="throughput")
    parser.add_argument("--topic", default=DATA_TOPIC)
    parser.add_argument("--count", type=int, default=100_000, help="frames to send")
    parser.add_argument("--batch", type=int, default=1, help="frames per message")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency: frames per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="latency: how long")
    parser.add_argument("--send-hwm", type=int, default=100_000, help="bare publisher's SNDHWM")
    parser.add_argument("--hwm", type=int, default=100_000, help="bare broker's and subscriber's HWM")
    parser.add_argument("--codec", choices=tuple(CODECS), default="orjson", help="bare path only")
    a = parser.parse_args(argv)
    return {"pub": pub_main, "sub": sub_main, "proxy": proxy_main}[a.role](a)


# =====================================================================================
# driver
# =====================================================================================


class Scenario:
    def __init__(self, key: str, metric: str, mode: str, subscribers: int, count: int = 0,
                 batch: int = 1, seconds: float = 0.0, paths: tuple[str, ...] = ("appliance", "bare"),
                 codec: str = "orjson") -> None:
        self.key, self.metric, self.mode = key, metric, mode
        self.subscribers, self.count, self.batch, self.seconds = subscribers, count, batch, seconds
        self.paths, self.codec = paths, codec


def scenarios(quick: bool) -> list[Scenario]:
    k = 10 if quick else 1
    return [
        Scenario("single", "throughput, 1 subscriber", "throughput", 1, count=80_000 // k),
        Scenario("fanout4", "throughput, 4 subscribers (slowest)", "throughput", 4, count=40_000 // k),
        Scenario("batch100", "throughput, 1 subscriber, 100 frames/message", "throughput", 1,
                 count=400_000 // k, batch=100),
        Scenario("latency", "latency at 1 kHz", "latency", 1, seconds=1.0 if quick else LATENCY_S),
        # the codec's share, end to end: the bare path again with the standard library's json
        Scenario("json", "throughput, 1 subscriber, bare pyzmq: orjson vs stdlib json", "throughput", 1,
                 count=30_000 // k, paths=("bare",), codec="json"),
    ]


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB (10^6 bytes)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024 / MB
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


class Driver:
    """Starts and stops the processes of a benchmark run, all in one temporary folder."""

    def __init__(self, tmp: Path, say: Callable[[str], None]) -> None:
        from tests.conftest import clean_env

        self.tmp, self.say = tmp, say
        self.env = clean_env(tmp)
        self.live: list[Any] = []  # every process started, for cleanup
        self.send_hwm, self.hwm = self.appliance_hwm()

    def appliance_hwm(self) -> tuple[int, int]:
        """The appliance's default bus_send_hwm and bus_receive_hwm, which the bare path copies."""
        import subprocess

        out = subprocess.run([sys.executable, "-m", "appliance", "config"], cwd=self.tmp, env=self.env,
                             capture_output=True, text=True, check=True).stdout
        values = dict(re.findall(r"^(bus_send_hwm|bus_receive_hwm)\s*=\s*(\d+)", out, re.M))
        return int(values["bus_send_hwm"]), int(values["bus_receive_hwm"])

    def spawn(self, args: list[str], stdin: bool = False):
        import subprocess
        import threading

        from tests.conftest import Program

        proc = subprocess.Popen([sys.executable, "-m", "tests.bench.bus", *args], cwd=self.tmp,
                                env=self.env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        program = Program(list(args), proc)
        threading.Thread(target=program._pump, name=f"pump-{args[0]}", daemon=True).start()
        self.live.append(program)
        return program

    def start_program(self, args: list[str]):
        """`python -m appliance ARGS`, isolated like the tests' programs."""
        from tests.conftest import start_program

        program = start_program(args, self.tmp, env=self.env)
        self.live.append(program)
        return program

    def start_broker(self, path: str):
        from tests.conftest import READY_BROKER, BrokerProcess

        if path == "appliance":
            program = self.start_program(["broker", "--set", "broker_frontend_port=0",
                                          "--set", "broker_backend_port=0"])
        else:
            program = self.spawn(["proxy", "--hwm", str(self.hwm)])
        m = program.wait_for(READY_BROKER)
        return BrokerProcess(program, m.group(1), m.group(2), self.tmp)

    def send(self, program, line: str) -> None:
        program.proc.stdin.write(line + "\n")
        program.proc.stdin.flush()

    def run_once(self, path: str, sc: Scenario, broker, topic: str = DATA_TOPIC,
                 before_go: Callable[[], None] | None = None) -> dict[str, Any]:
        return self.run_together(sc, {path: broker}, topic, before_go)[path]

    def run_together(self, sc: Scenario, brokers: dict[str, Any], topic: str = DATA_TOPIC,
                     before_go: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
        """One run of `sc` on each path of `brokers` ({path: broker}), all started together.

        With one path this is a plain run. With two, both publishers get "go" at the same
        moment, so a burst of load from other programs on the machine falls on both paths
        alike: used for latency, where the tail is mostly such bursts.
        """
        workers: dict[str, tuple[Any, list, Any]] = {}
        try:
            for path, broker in brokers.items():
                common = ["--path", path, "--mode", sc.mode, "--topic", topic, "--hwm", str(self.hwm),
                          "--send-hwm", str(self.send_hwm), "--codec", sc.codec]
                subs = [self.spawn(["sub", "--backend", broker.backend, *common]) for _ in range(sc.subscribers)]
                pub = self.spawn(["pub", "--frontend", broker.frontend, *common, "--count", str(sc.count),
                                  "--batch", str(sc.batch), "--seconds", str(sc.seconds)], stdin=True)
                workers[path] = (broker, subs, pub)
            for _, subs, _ in workers.values():
                for s in subs:
                    s.wait_for(r"^BENCH ready", timeout=30)
            if before_go:
                before_go()
            cpu = {path: cpu_seconds(b.program.proc.pid) for path, (b, _, _) in workers.items()}
            for _, _, pub in workers.values():
                self.send(pub, "go")
            timeout = 60 + sc.seconds + sc.count / 2000
            out: dict[str, dict[str, Any]] = {}
            for path, (broker, subs, pub) in workers.items():
                results = [json.loads(s.wait_for(r"^BENCH result (.*)", timeout=timeout).group(1)) for s in subs]
                broker_cpu = cpu_seconds(broker.program.proc.pid) - cpu[path]
                self.send(pub, "stop")
                sent = json.loads(pub.wait_for(r"^BENCH result (.*)", timeout=30).group(1))
                for p in (*subs, pub):
                    rc = p.proc.wait(15)
                    if rc != 0:
                        raise RuntimeError(f"bench worker {p.args} exited {rc}:\n{p.output[-3000:]}")
                out[path] = {"sent": sent, "subscribers": results, "broker_cpu_s": broker_cpu}
        finally:
            for _, subs, pub in workers.values():
                self.reap(*subs, pub)
        return out

    def reap(self, *programs) -> None:
        for p in programs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
            if p in self.live:
                self.live.remove(p)

    def stop(self, program) -> int:
        rc = program.stop()
        if program in self.live:
            self.live.remove(program)
        return rc

    def close(self) -> None:
        self.reap(*list(self.live))


def judge_run(sc: Scenario, run: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run: rate of the slowest subscriber, loss, latency percentiles."""
    sent = run["sent"]["frames"]
    subs = run["subscribers"]
    out: dict[str, Any] = {"lost": max(sent - s["frames"] for s in subs), "sent": sent}
    if sc.mode == "throughput":
        rates = [s["frames_per_s"] or 0.0 for s in subs]
        out["frames_per_s"] = min(rates)
        out["publisher_frames_per_s"] = sent / run["sent"]["elapsed_s"]
    else:
        lat = subs[0]["lat_us"][round(WARMUP_S * 1000):]
        lat.sort()
        out.update(p50_us=percentile(lat, 50), p99_us=percentile(lat, 99), max_us=lat[-1] if lat else None,
                   samples=len(lat), late_p99_us=run["sent"].get("late_p99_us"))
    # CPU per frame sent, in microseconds: where the time goes on a 2-core box
    out["cpu_us_per_frame"] = {
        "publisher": 1e6 * run["sent"]["cpu_s"] / sent,
        "broker": 1e6 * run["broker_cpu_s"] / sent,
        "subscriber": 1e6 * max(s["cpu_s"] for s in subs) / sent,
    }
    return out


def progress(figures: dict[str, Any]) -> str:
    parts = []
    for k, v in figures.items():
        if isinstance(v, dict):
            parts.append(f"{k}=" + "/".join(f"{x:.1f}" for x in v.values()))
        elif isinstance(v, (int, float)):
            parts.append(f"{k}={v:.6g}")
    return ", ".join(parts)


def codec_rows(runs: int, quick: bool) -> tuple[list[dict], dict]:
    """In-process encode+decode of one 20-channel envelope: orjson (chosen) against json."""
    frame = make_frames(1)[0]
    env = {"v": 1, "src": SRC, "boot": "5f0c2a9e1b7d4c36", "seq": 42, "ts": now_ms(), "data": frame}
    n = 2_000 if quick else 20_000
    timings: dict[str, list[float]] = {"orjson": [], "json": []}
    codecs = {"orjson": (orjson.dumps, orjson.loads), "json": (json.dumps, json.loads)}
    for _ in range(runs):
        for name, (dumps, loads) in codecs.items():
            t = time.perf_counter()
            for _ in range(n):
                loads(dumps(env))
            timings[name].append(n / (time.perf_counter() - t))
    row = {"metric": "codec round trip, 20-ch envelope (in-process)", "unit": "msg/s",
           "appliance": summary(timings["orjson"]), "baseline": summary(timings["json"]),
           "note": "appliance column: orjson (used); baseline column: stdlib json"}
    return [row], timings


def run(opts) -> dict[str, Any]:
    """Run the bus benchmark; opts has .runs, .quick and .say (a progress printer)."""
    import shutil
    import tempfile
    import traceback

    tmp = Path(tempfile.mkdtemp(prefix="rigtel-bench-bus-"))
    driver = Driver(tmp, opts.say)
    raw: dict[str, Any] = {"bus_send_hwm": driver.send_hwm, "bus_receive_hwm": driver.hwm, "warmup_s": WARMUP_S,
                           "clock": "time.monotonic_ns (CLOCK_MONOTONIC)"}
    rows: list[dict[str, Any]] = []
    broke = False
    try:
        for phase in (codec_phase, bus_phase, services_phase):
            try:
                rows += phase(driver, opts, raw)
            except Exception as e:
                broke = True
                opts.say(f"  {phase.__name__} broke:\n{traceback.format_exc()}")
                rows.append({"metric": phase.__name__.replace("_", " "), "unit": "", "appliance": None,
                             "baseline": None, "error": True, "note": f"broke: {str(e)[:300]}"})
                driver.close()
    finally:
        driver.close()
        if not broke:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": rows, "raw": raw}


def codec_phase(driver: Driver, opts, raw: dict[str, Any]) -> list[dict[str, Any]]:
    rows, raw["codec"] = codec_rows(opts.runs, opts.quick)
    return rows


def bus_phase(driver: Driver, opts, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Throughput and latency, appliance and bare interleaved; broker RSS before and after."""
    runs, say = opts.runs, opts.say
    brokers = {path: driver.start_broker(path) for path in ("appliance", "bare")}
    broker_rss = {path: {"idle": rss(b.program.proc.pid)} for path, b in brokers.items()}
    scs = scenarios(opts.quick)
    per: dict[str, dict[str, list[dict]]] = {sc.key: {path: [] for path in sc.paths} for sc in scs}
    raw["runs"], raw["broker_rss_mb"] = per, broker_rss
    for rep in range(runs):
        for sc in scs:
            # alternate which path goes first, so a drift in the machine's load hits both
            order = sc.paths if rep % 2 else sc.paths[::-1]
            if sc.mode == "latency":
                # both paths at once: 1 kHz is light work, and the same bursts of outside
                # load then fall on both (run one after the other, the p99 ratio measured
                # mostly which run met a busier moment)
                together = driver.run_together(sc, {path: brokers[path] for path in order})
                runs_now = [(path, together[path]) for path in order]
            else:
                runs_now = [(path, driver.run_once(path, sc, brokers[path])) for path in order]
            for path, result in runs_now:
                figures = judge_run(sc, result)
                per[sc.key][path].append(figures)
                say(f"  run {rep + 1}/{runs} {sc.key:<9} {path:<9} " + progress(figures))
    for path, b in brokers.items():
        broker_rss[path]["after"] = rss(b.program.proc.pid)
    rc = driver.stop(brokers["appliance"].program)
    if rc != 0:
        raise RuntimeError(f"rigtel broker exited {rc} on SIGTERM:\n{brokers['appliance'].program.output[-3000:]}")
    driver.stop(brokers["bare"].program)

    rows: list[dict[str, Any]] = []
    for sc in scs:
        loss = {p: [f["lost"] for f in per[sc.key][p]] for p in sc.paths}
        loss_note = "no loss" if not any(sum(loss.values(), [])) else "LOSS (frames per run): " + ", ".join(
            f"{p} {v}" for p, v in loss.items())
        if sc.key == "json":
            rows.append({"metric": sc.metric, "unit": "frames/s",
                         "appliance": summary([f["frames_per_s"] for f in per["single"]["bare"]]),
                         "baseline": summary([f["frames_per_s"] for f in per[sc.key]["bare"]]),
                         "note": f"columns: bare+orjson (the row above) | bare+json; {sc.count} frames/run; "
                                 f"{loss_note}"})
            continue
        a, b = per[sc.key]["appliance"], per[sc.key]["bare"]
        if sc.mode == "throughput":
            rows.append({"metric": sc.metric, "unit": "frames/s",
                         "appliance": summary([f["frames_per_s"] for f in a]),
                         "baseline": summary([f["frames_per_s"] for f in b]),
                         "target": {"on": "ratio", "op": ">=", "limit": 0.8},
                         "note": f"{sc.count} frames/run; {loss_note}"
                                 + (f"; HWM send {driver.send_hwm}, receive {driver.hwm} (the appliance's "
                                    "defaults, on both paths)" if sc.key == "single" else "")})
        else:
            rows.append({"metric": "latency p50 at 1 kHz, one-way", "unit": "us",
                         "appliance": summary([f["p50_us"] for f in a]),
                         "baseline": summary([f["p50_us"] for f in b]),
                         "note": f"{a[0]['samples']} samples/run after {WARMUP_S} s warm-up; {loss_note}"})
            rows.append({"metric": "latency p99 at 1 kHz, one-way", "unit": "us",
                         "appliance": summary([f["p99_us"] for f in a]),
                         "baseline": summary([f["p99_us"] for f in b]),
                         "target": {"on": "ratio", "op": "<=", "limit": 1.3},
                         "note": "publisher's own lateness against its schedule, p99 median: appliance "
                                 f"{statistics.median(f['late_p99_us'] for f in a):.0f} us, bare "
                                 f"{statistics.median(f['late_p99_us'] for f in b):.0f} us (machine noise)"})
        for role in ("publisher", "broker", "subscriber"):
            rows.append({"metric": f"  CPU per frame, {role}", "unit": "us",
                         "appliance": summary([f["cpu_us_per_frame"][role] for f in a]),
                         "baseline": summary([f["cpu_us_per_frame"][role] for f in b])})
    for when, label in (("idle", "idle, after start"), ("after", "after the runs above")):
        rows.append({"metric": f"RSS broker, {label}", "unit": "MB",
                     "appliance": summary([broker_rss["appliance"][when]["VmRSS"]]),
                     "baseline": summary([broker_rss["bare"][when]["VmRSS"]]),
                     "target": {"on": "value", "op": "<=", "limit": 45},
                     **({"note": "baseline: the bare zmq.proxy process"} if when == "idle" else {})})
    rows.append({"metric": "RSS broker, peak (VmHWM)", "unit": "MB",
                 "appliance": summary([broker_rss["appliance"]["after"]["VmHWM"]]),
                 "baseline": summary([broker_rss["bare"]["after"]["VmHWM"]]),
                 "target": {"on": "value", "op": "<=", "limit": 45}})
    return rows


def services_phase(driver: Driver, opts, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """RSS of the logger and the simulator: idle, then after a burst of traffic through the bus.

    The burst is the single and batch100 throughput workloads on BURST_TOPIC, which the
    logger (subscribed to everything) decodes and counts like any other topic.
    """
    import importlib.util

    broker = driver.start_broker("appliance")
    programs = {"logger": driver.start_program(["logger", *broker.port_args(), "--set", "logger_summary_s=0.5"])}
    logger = programs["logger"]
    rows: list[dict[str, Any]] = []
    if importlib.util.find_spec("appliance.sources.simulator") is not None:
        programs["simulator"] = driver.start_program([
            "simulate", *broker.port_args(), "--set", f"data_dir={driver.tmp}",
            "--set", f"database_path={driver.tmp / 'sim.db'}"])
    else:
        rows.append({"metric": "RSS simulator", "unit": "MB", "appliance": None, "baseline": None,
                     "note": "not measured: appliance/sources/simulator.py does not exist yet"})
    measured: dict[str, dict[str, Any]] = {name: {} for name in programs}
    raw["services_rss_mb"] = measured

    def idle() -> None:
        # the logger has summarised the probes: its subscription is live and it is in its loop
        logger.wait_for(re_escape(CTL_TOPIC) + r": [\d.]+ msg/s", timeout=30)
        if "simulator" in programs:
            programs["simulator"].wait_for(r"ready: publishing", timeout=30)
        for name, p in programs.items():
            measured[name]["idle"] = rss(p.proc.pid)

    burst = [sc for sc in scenarios(opts.quick) if sc.key in ("single", "batch100")]
    for i, sc in enumerate(burst):
        driver.run_once("appliance", sc, broker, topic=BURST_TOPIC, before_go=idle if i == 0 else None)
    for name, p in programs.items():
        measured[name]["after"] = rss(p.proc.pid)
    # then once the logger has worked through its backlog: a summary without the burst topic
    mark = len(logger.lines)
    summary_line = wait_line(logger, mark, lambda line: "| gaps" in line and BURST_TOPIC not in line, 60)
    measured["logger"]["drained"] = rss(logger.proc.pid)
    lost = [int(m.group(1)) for line in logger.lines if (m := LOGGER_LOST.search(line))]
    say_rss = ", ".join(f"{n} {m['idle']['VmRSS']:.1f} -> {m['after']['VmRSS']:.1f} MB" for n, m in measured.items())
    opts.say(f"  services: {say_rss}; logger drained {measured['logger']['drained']['VmRSS']:.1f} MB"
             f"{'' if summary_line else ' (did not drain within 60 s)'}")
    for name, p in reversed([("broker", broker.program), *programs.items()]):
        rc = driver.stop(p)
        if rc != 0:
            raise RuntimeError(f"rigtel {p.args[0]} exited {rc} on SIGTERM:\n{p.output[-3000:]}")

    what = "+".join(sc.key for sc in burst)
    for name in programs:
        m = measured[name]
        rows.append({"metric": f"RSS {name}, idle", "unit": "MB", "appliance": summary([m["idle"]["VmRSS"]]),
                     "baseline": None, "target": {"on": "value", "op": "<=", "limit": 45}})
        rows.append({"metric": f"RSS {name}, right after a {what} burst", "unit": "MB",
                     "appliance": summary([m["after"]["VmRSS"]]), "baseline": None,
                     "target": {"on": "value", "op": "<=", "limit": 45},
                     "note": f"peak (VmHWM) {m['after']['VmHWM']:.1f} MB"
                             + (f"; the logger lost {max(lost, default=0)} messages (gaps)" if name == "logger" else "")})
        if "drained" in m:
            rows.append({"metric": f"RSS {name}, burst worked through", "unit": "MB",
                         "appliance": summary([m["drained"]["VmRSS"]]), "baseline": None,
                         "target": {"on": "value", "op": "<=", "limit": 45}})
    return rows


LOGGER_LOST = re.compile(r"\| gaps \d+ \(lost (\d+)\)")


def wait_line(program, start: int, predicate: Callable[[str], bool], timeout: float) -> str | None:
    """The first output line from index `start` on that satisfies `predicate`, or None."""
    deadline = time.monotonic() + timeout
    seen = start
    while time.monotonic() < deadline:
        lines = program.lines
        for line in lines[seen:]:
            if predicate(line):
                return line
        seen = len(lines)
        if program.proc.poll() is not None:
            return None
        time.sleep(0.05)  # the logger writes a summary every 0.5 s; this only polls for it
    return None


def re_escape(text: str) -> str:
    return re.escape(text)


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
