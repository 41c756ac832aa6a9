"""What a streaming client that leaves costs the server: CPU after the close, and how soon the workers are idle.

Starts `convoplan serve` on the artifacts (`--artifacts`, e.g. runs/demo/artifacts from `convoplan demo
--no-serve`) as a child process on a free loopback port with a fresh SQLite store, and reads the server process's
CPU time from /proc (Linux) every 10 ms. Then, with POST /v1/suggest {"stream": true, "actions": A, "n": N} after a
fixed customer message:

1. idle: the server's CPU over `--window` seconds with no request (the floor);
2. full: one stream read to its end: wall time, CPU seconds, and CPU per decoding step (CPU / the most tokens of a
   suggestion, `max_new_tokens`: a lower bound on the steps run, so an upper bound on a step's cost);
3. leave: a client that closes after the first text event: the CPU the server spends from the close on, over
   `--window` seconds, and when its last busy 10 ms slice was;
4. burst: `--clients` clients open streams at once (the first `model_workers` compute, the rest wait for a
   worker), and all close after `--hold` seconds: when `convoplan_model_workers_busy` (/metrics) reads 0 again, and
   the CPU spent from the close on.

Prints a markdown table and writes OUT/report.json with the command and the machine.

    .venv/bin/python bench/stream_cancel.py --artifacts runs/demo/artifacts --out runs/bench-stream-cancel
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from convoplan.atomic import atomic_write
from convoplan.serve.process import ServerProcess, free_port

TICKS = os.sysconf("SC_CLK_TCK")
SLICE = 0.01
"""Seconds between CPU samples."""
BUSY = "convoplan_model_workers_busy"
HISTORY = [{"speaker": "user", "text": "hi! can you tell me about elephants? how heavy are they?"}]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children (/proc/PID/stat fields 14-17)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / TICKS


class CpuTrace:
    """Samples a process's CPU time every SLICE seconds on a thread, as (monotonic time, CPU seconds)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), cpu_seconds(self.pid)))
            time.sleep(SLICE)

    def __enter__(self) -> CpuTrace:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def since(self, moment: float) -> tuple[float, float]:
        """(CPU seconds spent after `moment`, seconds from `moment` to the end of the last slice with work)."""
        after = [(t, cpu) for t, cpu in self.samples if t >= moment]
        if len(after) < 2:
            return 0.0, 0.0
        last_busy = max(
            (t for (t, c), (_, before) in zip(after[1:], after, strict=False) if c > before), default=moment
        )
        return after[-1][1] - after[0][1], last_busy - moment


def events(response: httpx.Response) -> Any:
    """The event names of a text/event-stream response, as they arrive."""
    for line in response.iter_lines():
        if line.startswith("event:"):
            yield line.removeprefix("event:").strip()


def metric(url: str, name: str) -> float:
    """A sample's value from the server's /metrics (Prometheus text); NaN where the server has no such metric (a
    version before it)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")]
    return values[0] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True, help="a serve.json folder with an LM")
    parser.add_argument("--actions", type=int, default=5, help="actions per request (the server caps at 5)")
    parser.add_argument("--n", type=int, default=5, help="suggestions per action (the server caps at 5)")
    parser.add_argument("--clients", type=int, default=20, help="clients in the burst")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds the burst's clients stay before leaving")
    parser.add_argument("--window", type=float, default=3.0, help="seconds of CPU measured after a close")
    parser.add_argument("--set", dest="settings", action="append", default=[], help="a ServeConfig override")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-stream-cancel"))
    args = parser.parse_args()
    body = {"conversation": HISTORY, "actions": args.actions, "n": args.n, "stream": True}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temp:
        server = ServerProcess(
            args.artifacts, f"sqlite:///{temp}/store.db", free_port(), args.out / "server.log", tuple(args.settings)
        )
        server.start(timeout=600)
        try:
            assert server.process is not None
            results = measure(server.url, server.process.pid, body, args)
        finally:
            server.stop()
    results["command"] = shlex.join([sys.executable, *sys.argv])
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at the end"
    with atomic_write(args.out / "report.json") as stream:
        stream.write(json.dumps(results, indent=2) + "\n")
    print("\n| measure | value |\n|---|---:|")
    for key, value in results.items():
        if isinstance(value, float):
            print(f"| {key.replace('_', ' ')} | {value:.3f} |")
    print(f"\n{results['command']}\n{results['machine']}")


def measure(url: str, pid: int, body: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with CpuTrace(pid) as trace, httpx.Client(base_url=url, timeout=600) as client:
        start = time.monotonic()
        time.sleep(args.window)
        results["idle_cpu_s"], _ = trace.since(start)

        started = time.monotonic()
        with client.stream("POST", "/v1/suggest", json=body) as response:
            names = list(events(response))
        assert names[-1] == "done", names[-3:]
        done = time.monotonic()
        time.sleep(0.2)
        results["full_stream_wall_s"] = done - started
        results["full_stream_cpu_s"], _ = trace.since(started)
        max_new_tokens = 40  # SamplingConfig's default: the most steps a stream runs
        results["full_stream_cpu_per_step_s_at_most"] = results["full_stream_cpu_s"] / max_new_tokens

        with client.stream("POST", "/v1/suggest", json=body) as response:
            for name in events(response):
                if name == "text":
                    break
        left = time.monotonic()
        time.sleep(args.window)
        results["leave_cpu_after_close_s"], results["leave_last_busy_after_close_s"] = trace.since(left)

        opened = threading.Barrier(args.clients + 1)
        close = threading.Event()

        def one_client() -> None:
            with httpx.Client(base_url=url, timeout=600) as http, http.stream("POST", "/v1/suggest", json=body):
                opened.wait(timeout=600)
                close.wait(timeout=600)

        threads = [threading.Thread(target=one_client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        opened.wait(timeout=600)
        time.sleep(args.hold)
        results["burst_busy_workers_before_close"] = metric(url, BUSY)
        close.set()
        for thread in threads:
            thread.join()
        burst_left = time.monotonic()
        if not math.isnan(metric(url, BUSY)):
            while metric(url, BUSY) > 0 and time.monotonic() - burst_left < 60:
                time.sleep(SLICE)
            results["burst_workers_idle_after_close_s"] = time.monotonic() - burst_left
        time.sleep(args.window)
        results["burst_cpu_after_close_s"], results["burst_last_busy_after_close_s"] = trace.since(burst_left)
        results["streams_cancelled"] = metric(url, "convoplan_streams_cancelled_total")
    return results


if __name__ == "__main__":
    main()
