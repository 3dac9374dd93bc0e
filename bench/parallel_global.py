"""What the two-phase global threshold over replicas costs (issue 12).

Writes a Hugging Face-style folder (sharded_model.py, BF16, --total-bytes in
--shards shards), starts --replicas bonsai-server processes on loopback
ports, and compresses the folder with global magnitude scope twice per
round, interleaved:
  single    one job over the whole folder on one server (the reference);
  parallel  bonsai.Client([...]).compress(folder, parallel=True): one job per
            shard, the threshold settled through the two exchange phases;
and the same two with layer scope (no exchange), which separates the cost
of running many jobs at once on this machine from the exchange's own.
Each pair's outputs are checked byte-identical. Prints one JSON object:
  - CPU seconds of every server process plus this process (the client),
    from /proc and getrusage, per mode (the fastest round), and their ratio
    (the bar: parallel at most 1.10 x single);
  - the bytes each phase moves: the shards up and the output down (the same
    in both modes), the summaries of phase 1 and phase 2, the decisions;
  - per-shard job timings of the parallel run (receive, compress, send,
    wall), the inputs of the throughput model in the README.
On a 2-core machine shared with other work the figures are noisy: run it
on a quiet one before quoting it.

    parallel_global.py [--total-bytes 256MiB] [--shards 6] [--replicas 3] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "client", "python"))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import sharded_model  # noqa: E402
from server_process import BonsaiServer  # noqa: E402

import bonsai  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def parse_bytes(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(servers, run) -> dict:
    before = [process_cpu(s.pid) for s in servers]
    client_before = own_cpu()
    start = time.monotonic()
    result = run()
    wall = time.monotonic() - start
    server_cpu = sum(process_cpu(s.pid) - b for s, b in zip(servers, before))
    client_cpu = own_cpu() - client_before
    return {"wall_s": wall, "server_cpu_s": server_cpu, "client_cpu_s": client_cpu,
            "total_cpu_s": server_cpu + client_cpu, "result": result}


def same_tree(a: str, b: str) -> bool:
    for root, _, names in os.walk(a):
        for name in names:
            left = os.path.join(root, name)
            right = os.path.join(b, os.path.relpath(left, a))
            with open(left, "rb") as f, open(right, "rb") as g:
                if f.read() != g.read():
                    return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--total-bytes", default="256MiB")
    p.add_argument("--shards", type=int, default=6)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--work-dir")
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="bonsai-parallel-bench-", dir=args.work_dir)
    servers = []
    try:
        folder = os.path.join(work, "model")
        model = sharded_model.write(folder, total_bytes=parse_bytes(args.total_bytes), shards=args.shards,
                                    hidden=1024, intermediate=2816, vocab=8192)
        servers = [BonsaiServer(workers=2).start() for _ in range(args.replicas)]
        targets = [s.target for s in servers]
        modes = ("single", "parallel", "single-layer", "parallel-layer")
        runs = {mode: [] for mode in modes}
        for r in range(args.rounds):
            for mode in modes:
                out = os.path.join(work, f"out-{mode}-{r}")
                kwargs = dict(method="magnitude", sparsity=args.sparsity,
                              scope="layer" if mode.endswith("-layer") else "global")

                def run(mode=mode, out=out, kwargs=kwargs):
                    if mode.startswith("single"):
                        with bonsai.Client(targets[0], timeout=3600) as client:
                            return client.compress(folder, output_path=out, **kwargs)
                    with bonsai.Client(targets, timeout=3600) as client:
                        return client.compress(folder, output_path=out, parallel=True, **kwargs)
                runs[mode].append(measure(servers, run))
            for scope in ("", "-layer"):
                if not same_tree(os.path.join(work, f"out-single{scope}-{r}"),
                                 os.path.join(work, f"out-parallel{scope}-{r}")):
                    raise SystemExit("parallel output differs from one server's: a bug, not a figure")
            for mode in modes:
                shutil.rmtree(os.path.join(work, f"out-{mode}-{r}"))
        best = {mode: min(rs, key=lambda m: m["total_cpu_s"]) for mode, rs in runs.items()}
        cpu = {mode: best[mode]["total_cpu_s"] for mode in modes}
        par = best["parallel"]["result"]
        shard_bytes = sum(os.path.getsize(os.path.join(folder, f)) for f in model.files)
        output = {
            "folder_bytes": shard_bytes, "shards": args.shards, "replicas": args.replicas,
            "rounds": args.rounds,
            "cpu_s": {mode: {k: round(v, 3) for k, v in best[mode].items() if k != "result"} for mode in best},
            "cpu_ratio_parallel_over_single": round(cpu["parallel"] / cpu["single"], 3),
            # Splitting one job into shard jobs on this machine (no exchange),
            # and what the exchange adds beyond what the single job's own
            # global passes cost.
            "cpu_ratio_parallel_layer_over_single_layer": round(cpu["parallel-layer"] / cpu["single-layer"], 3),
            "exchange_extra_cpu_s": round((cpu["parallel"] - cpu["parallel-layer"])
                                          - (cpu["single"] - cpu["single-layer"]), 3),
            "all_rounds_total_cpu_s": {mode: [round(m["total_cpu_s"], 3) for m in rs] for mode, rs in runs.items()},
            "bytes": {"shards_up": shard_bytes, "output_down": par.report.totals.model_bytes_out,
                      "phase1_summaries": par.summary_bytes.get(1, 0),
                      "phase2_summaries": par.summary_bytes.get(2, 0)},
            "shard_jobs": [{"files": j.files, "replica": j.replica, "wall_s": round(j.seconds, 3),
                            "receive_s": round(j.report.timings.receive_seconds, 3),
                            "compress_s": round(j.report.timings.compress_seconds, 3),
                            "send_s": round(j.report.timings.send_seconds, 3),
                            "bytes_in": j.bytes_in} for j in par.shard_jobs],
            "identical": True,
            "note": "noisy: measured on a shared 2-core machine",
        }
        print(json.dumps(output, indent=1))
    finally:
        for s in servers:
            s.stop()
            s.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
