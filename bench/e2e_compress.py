"""End to end: `python3 -m bonsai compress` of a safetensors model against a
bonsai-server this script starts on free loopback ports (a fresh one per
run, so its peak memory belongs to that job alone); prints one JSON object.

    e2e_compress.py MODEL --out PRUNED [--repeats 1] [--sparsity 0.5]

Per run: wall time of the CLI (upload, global magnitude pruning, download,
write to disk, Python start-up included), the server's own stage timings
from the report, the server's VmHWM and sampled VmRSS from /proc, and the
output's zero count checked against round(sparsity * n).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import bench_model  # noqa: E402
from server_process import BonsaiServer  # noqa: E402


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


class RssSampler:
    """VmRSS of a process every `interval` seconds, from start to stop."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.samples = []  # (seconds since start, KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter() - start, proc_status_kib(self.pid, "VmRSS")))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def server_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CliFailed(RuntimeError):
    """`python3 -m bonsai compress` exited non-zero; its stderr says why."""

    def __init__(self, returncode: int, stderr: str, server_log: str):
        super().__init__(f"bonsai compress failed ({returncode}): {stderr}\n{server_log}")
        self.returncode, self.stderr = returncode, stderr


def run_once(model: str, out: str, sparsity: float, server_binary: str, server_flags=()) -> dict:
    server = BonsaiServer(server_flags, binary=server_binary).start()
    try:
        idle_hwm = proc_status_kib(server.pid, "VmHWM")
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as report_file:
            report_path = report_file.name
        command = [sys.executable, "-m", "bonsai", "--target", server.target, "compress", model,
                   "-o", out, "--method", "magnitude", "--sparsity", str(sparsity), "--scope", "global",
                   "--quiet", "--report-json", report_path]
        with RssSampler(server.pid) as sampler:
            server_cpu, client_cpu = server_cpu_seconds(server.pid), children_cpu_seconds()
            start = time.perf_counter()
            done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            seconds = time.perf_counter() - start
            server_cpu = server_cpu_seconds(server.pid) - server_cpu
            client_cpu = children_cpu_seconds() - client_cpu
        if done.returncode != 0:
            raise CliFailed(done.returncode, done.stderr, server.log())
        hwm_kib = proc_status_kib(server.pid, "VmHWM")
        server.check_alive()
        with open(report_path) as f:
            report = json.load(f)
        os.unlink(report_path)
    finally:
        server.close()
    peak_at, peak_kib = max(sampler.samples, key=lambda s: s[1]) if sampler.samples else (0.0, 0)
    return {"seconds": seconds, "cpu_seconds": server_cpu + client_cpu, "server_cpu_seconds": server_cpu,
            "client_cpu_seconds": client_cpu, "vm_hwm_bytes": hwm_kib * 1024, "idle_vm_hwm_bytes": idle_hwm * 1024,
            "sampled_peak_rss_bytes": peak_kib * 1024, "sampled_peak_at_seconds": peak_at,
            "rss_samples_kib": sampler.samples[::4],
            "server_timings": report.get("timings", {})}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--out", required=True)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--server", default=os.environ.get("BONSAI_SERVER"))
    args = p.parse_args()

    runs = [run_once(args.model, args.out, args.sparsity, args.server) for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    model_bytes = os.path.getsize(args.model)
    zeros = bench_model.count_zeros(args.out)
    expected = bench_model.expected_zeros(args.model, args.sparsity)
    print(json.dumps({
        "seconds": best["seconds"], "runs": [r["seconds"] for r in runs],
        "cpu_seconds": min(r["cpu_seconds"] for r in runs),
        "model_bytes": model_bytes, "throughput_mb_s": model_bytes / 1e6 / best["seconds"],
        "vm_hwm_bytes": max(r["vm_hwm_bytes"] for r in runs),
        "zeros": zeros, "expected_zeros": expected, "zeros_ok": zeros == expected,
        "best_run": best, "all_runs": runs}))


if __name__ == "__main__":
    main()
