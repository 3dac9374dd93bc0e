"""`make soak`: the load-and-fault suite (issue 9). Never part of `make test`.

One bonsai-server with default flags (all cores) and CLIENTS client threads
for MINUTES, each looping over random requests: model sizes from 1 KiB to
MAX_SIZE_MIB (safetensors, and small ONNX graphs), methods magnitude, nm and
rtn. At random a client instead cancels mid-job, vanishes mid-upload (a CLI
subprocess SIGKILLed while it uploads), stalls mid-upload for a few seconds
and then goes on, or sends a hostile file. Every completed job's output is
compared byte for byte with a reference run of the same request made before
the load, on the same server.

Prints (and writes as JSON with --json): jobs completed, refused by reason,
wrong (must be 0), lost (must be 0: a plain request that failed other than
by a refusal), p50/p99 latency per size class, server RSS at start, peak and
30 s after the end (must be within 1.2x start + 50 MiB), file descriptors
and threads before and after (must be equal). Exits 1 if a must fails.

    bench/soak.py [--clients 50] [--minutes 10] [--max-size-mib 256] [--seed 1]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "client", "python"))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

import bonsai  # noqa: E402
from bonsai import safetensors_io  # noqa: E402
from bonsai.v1 import compressor_pb2 as pb  # noqa: E402
from bonsai.v1 import compressor_pb2_grpc as pb_grpc  # noqa: E402
from server_process import BonsaiServer  # noqa: E402

MIB = 1 << 20
# Size classes: name -> (tensors, rows, cols) of float32 weights.
SIZE_CLASSES = {
    "1KiB": (1, 16, 16),
    "1MiB": (4, 256, 256),
    "16MiB": (4, 1024, 1024),
    "64MiB": (16, 1024, 1024),
    "256MiB": (16, 2048, 2048),
}
REQUESTS = [
    {"method": "magnitude", "sparsity": 0.5, "scope": "global"},
    {"method": "nm", "sparsity": 0.5, "options": {"n": 2, "m": 4}},
    {"method": "rtn", "sparsity": 0.0, "options": {"bits": 4, "group_size": 16}},
]
# What each client iteration does; the rest is a plain request.
FAULTS = {"cancel": 0.08, "vanish": 0.06, "stall": 0.06, "hostile": 0.05}
RSS_FACTOR, RSS_SLACK = 1.2, 50 * MIB
GRPC_POOLS = ("default-executo", "grpc_global_tim")  # thread names, as /proc truncates them


def safetensors_model(tensors: int, rows: int, cols: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return safetensors_io.dumps({f"layers.{i}.weight": rng.standard_normal((rows, cols), dtype=np.float32)
                                 for i in range(tensors)})


def onnx_model(seed: int) -> bytes:
    """Two MatMuls with 64x64 float32 initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 64), dtype=np.float32), "fc1.weight")
    w2 = numpy_helper.from_array(rng.standard_normal((64, 64), dtype=np.float32), "fc2.weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "fc1.weight"], ["h"]),
         helper.make_node("MatMul", ["h", "fc2.weight"], ["y"])],
        "soak", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def hostile_files(rng: random.Random) -> list:
    good = safetensors_model(1, 16, 16, 0)
    return [
        good[: len(good) // 2],                                   # truncated
        b"\xff" * 8 + b"{}",                                      # absurd header length
        (60).to_bytes(8, "little") + b'{"a":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4]}}',
        bytes(rng.getrandbits(8) for _ in range(4096)),           # noise
    ]


class ServerProbe:
    def __init__(self, pid: int):
        self.pid = pid

    def status(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(field)

    def rss(self) -> int:
        return self.status("VmRSS") * 1024

    def hwm(self) -> int:
        return self.status("VmHWM") * 1024

    def threads(self) -> int:
        return self.status("Threads")

    def threads_by_name(self) -> collections.Counter:
        names = collections.Counter()
        for task in os.listdir(f"/proc/{self.pid}/task"):
            with open(f"/proc/{self.pid}/task/{task}/comm") as f:
                names[f.read().strip()] += 1
        return names

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


class Soak:
    def __init__(self, args, server: BonsaiServer, workdir: str):
        self.args, self.server, self.workdir = args, server, workdir
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.refused = collections.Counter()
        self.lost = []
        self.wrong = []
        self.latency = collections.defaultdict(list)
        self.models = {}      # key -> (size class, bytes, path)
        self.reference = {}   # (model key, request index) -> output bytes

    def build_models(self) -> None:
        for name, (tensors, rows, cols) in SIZE_CLASSES.items():
            if tensors * rows * cols * 4 > self.args.max_size_mib * MIB:
                continue
            data = safetensors_model(tensors, rows, cols, seed=len(self.models))
            self.add_model(f"st-{name}", name, data, ".safetensors")
        self.add_model("onnx-32KiB", "onnx", onnx_model(7), ".onnx")

    def add_model(self, key: str, size_class: str, data: bytes, suffix: str) -> None:
        path = os.path.join(self.workdir, key + suffix)
        with open(path, "wb") as f:
            f.write(data)
        self.models[key] = (size_class, data, path)

    def make_references(self) -> None:
        with bonsai.Client(self.server.target, timeout=3600) as client:
            for key, (_, data, _) in self.models.items():
                for index, request in enumerate(REQUESTS):
                    self.reference[(key, index)] = client.compress(data, **request).model

    def record(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def refusal(self, err: bonsai.BonsaiError) -> bool:
        if err.code not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
            return False
        message = err.message
        reason = next((flag for flag in ("max_jobs_per_peer", "max_spool_bytes", "max_memory_bytes",
                                         "max_model_bytes") if flag in message), None)
        if reason is None:
            reason = "job slots" if "job slots" in message else err.code_name
        with self.lock:
            self.refused[reason] += 1
        return True

    # ------------------------------------------------------------ client kinds

    def plain(self, client: bonsai.Client, rng: random.Random) -> None:
        key = rng.choice(list(self.models))
        index = rng.randrange(len(REQUESTS))
        size_class, data, _ = self.models[key]
        start = time.monotonic()
        try:
            out = client.compress(data, **REQUESTS[index]).model
        except bonsai.BonsaiError as err:
            if not self.refusal(err):
                with self.lock:
                    self.lost.append(f"{key} {REQUESTS[index]['method']}: {err.code_name}: {err.message}")
            return
        elapsed = time.monotonic() - start
        with self.lock:
            self.counts["completed"] += 1
            self.latency[size_class].append(elapsed)
            if out != self.reference[(key, index)]:
                self.wrong.append(f"{key} {REQUESTS[index]['method']}")

    def cancel(self, client: bonsai.Client, rng: random.Random) -> None:
        key = rng.choice(list(self.models))
        after = rng.randint(1, 4)
        seen = [0]

        class Stop(Exception):
            pass

        def progress(_event):
            seen[0] += 1
            if seen[0] >= after:
                raise Stop()
        try:
            client.compress(self.models[key][1], progress=progress, **REQUESTS[0])
        except Stop:
            pass
        except bonsai.BonsaiError as err:
            self.refusal(err)
        self.record("cancelled")

    def vanish(self, rng: random.Random) -> None:
        key = max(self.models, key=lambda k: len(self.models[k][1]))  # the largest: still uploading
        out = os.path.join(self.workdir, f"vanish-{threading.get_ident()}.out")
        cli = subprocess.Popen([sys.executable, "-m", "bonsai", "--target", self.server.target, "compress",
                                self.models[key][2], "-o", out],
                               env={**os.environ, "PYTHONPATH": os.path.join(REPO, "client", "python")},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.5))
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        self.record("vanished")

    def stall(self, rng: random.Random) -> None:
        """Half the upload, a pause shorter than the idle timeout, the rest:
        must complete, and correctly."""
        key = rng.choice([k for k in self.models if k.startswith("st-")])
        size_class, data, _ = self.models[key]
        pause = rng.uniform(1, 5)

        def requests():
            # The library's own spec for REQUESTS[0], so the reference applies.
            spec = bonsai.client.specs.compression_spec(
                include=(), exclude=(), include_only=False, overrides=None, options=None, rules=(),
                output="dense", calibration_size_bytes=0,
                files=[pb.FileDeclaration(name="m.safetensors", size_bytes=len(data))], **REQUESTS[0])
            yield pb.CompressRequest(spec=spec)
            half = len(data) // 2
            for start in range(0, half, MIB):
                yield pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=data[start:min(half, start + MIB)]))
            time.sleep(pause)
            for start in range(half, len(data), MIB):
                yield pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=data[start:min(len(data), start + MIB)]))

        with grpc.insecure_channel(self.server.target, options=bonsai.channel_options()) as channel:
            try:
                chunks = [r.file_chunk.data for r in pb_grpc.CompressorStub(channel).Compress(requests(), timeout=3600)
                          if r.WhichOneof("payload") == "file_chunk"]
            except grpc.RpcError as err:
                if err.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                    with self.lock:
                        self.lost.append(f"stalled {key}: {err.code()}: {err.details()}")
                else:
                    with self.lock:
                        self.refused[err.code().name] += 1
                return
        with self.lock:
            self.counts["stalled-completed"] += 1
            if b"".join(chunks) != self.reference[(key, 0)]:
                self.wrong.append(f"stalled {key}")

    def hostile(self, client: bonsai.Client, rng: random.Random) -> None:
        data = rng.choice(hostile_files(rng))
        try:
            client.compress(data, method="magnitude", sparsity=0.5)
            with self.lock:
                self.wrong.append("a hostile file was compressed")
        except bonsai.BonsaiError as err:
            if err.code == grpc.StatusCode.INVALID_ARGUMENT:
                self.record("hostile-refused")
            elif not self.refusal(err):
                with self.lock:
                    self.lost.append(f"hostile: {err.code_name}: {err.message}")

    def client_loop(self, seed: int, end: float) -> None:
        rng = random.Random(seed)
        retry = bonsai.RetryPolicy(max_attempts=8, initial_backoff=0.2, max_backoff=5.0)
        with bonsai.Client(self.server.target, timeout=3600, retry=retry) as client:
            while time.monotonic() < end:
                roll, fault = rng.random(), None
                for name, p in FAULTS.items():
                    if roll < p:
                        fault = name
                        break
                    roll -= p
                try:
                    if fault == "cancel":
                        self.cancel(client, rng)
                    elif fault == "vanish":
                        self.vanish(rng)
                    elif fault == "stall":
                        self.stall(rng)
                    elif fault == "hostile":
                        self.hostile(client, rng)
                    else:
                        self.plain(client, rng)
                except Exception as err:  # a bug in the suite or the client: counted, never hidden
                    with self.lock:
                        self.lost.append(f"{fault or 'plain'}: {type(err).__name__}: {err}")


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--max-size-mib", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle-seconds", type=float, default=30)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bonsai-soak-")
    server = BonsaiServer(workers=os.cpu_count() or 1).start()
    probe = ServerProbe(server.pid)
    try:
        soak = Soak(args, server, workdir)
        soak.build_models()
        rss_start, fds_start, threads_start = probe.rss(), probe.fds(), probe.threads()
        names_start = probe.threads_by_name()
        print(f"server up: RSS {rss_start / MIB:.0f} MiB, {fds_start} fds, {threads_start} threads; "
              f"reference runs of {len(soak.models)} models x {len(REQUESTS)} requests ...", flush=True)
        started = time.monotonic()
        soak.make_references()
        print(f"references done in {time.monotonic() - started:.0f} s; "
              f"{args.clients} clients for {args.minutes:g} min ...", flush=True)
        end = time.monotonic() + args.minutes * 60
        threads = [threading.Thread(target=soak.client_loop, args=(args.seed * 1000 + i, end), daemon=True)
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, end - time.monotonic() + 3600))
        hung = sum(t.is_alive() for t in threads)
        rss_peak = probe.hwm()
        settle_end = time.monotonic() + args.settle_seconds
        settling = []  # (seconds after the end, RSS MiB, threads)
        while time.monotonic() < settle_end:
            settling.append((round(args.settle_seconds - (settle_end - time.monotonic())),
                             round(probe.rss() / MIB), probe.threads()))
            time.sleep(min(5.0, max(0.0, settle_end - time.monotonic())))
        rss_after, fds_after, threads_after = probe.rss(), probe.fds(), probe.threads()
        names_after = probe.threads_by_name()
        alive = server.alive()
    finally:
        status = server.stop()
        log = server.log()
        server.close()

    results = {
        "clients": args.clients, "minutes": args.minutes, "max_size_mib": args.max_size_mib,
        "jobs": dict(soak.counts), "refused": dict(soak.refused),
        "wrong": soak.wrong, "lost": soak.lost, "hung_clients": hung,
        "latency_seconds": {c: {"n": len(v), "p50": percentile(v, 0.5), "p99": percentile(v, 0.99)}
                            for c, v in sorted(soak.latency.items())},
        "rss_mib": {"start": rss_start / MIB, "peak": rss_peak / MIB, "after": rss_after / MIB},
        "fds": {"before": fds_start, "after": fds_after},
        "threads": {"before": threads_start, "after": threads_after,
                    "by_name_before": dict(names_start), "by_name_after": dict(names_after)},
        "settling": settling,
        "server_alive_at_end": alive, "server_exit_status": status,
    }
    checks = {
        "wrong == 0": not soak.wrong,
        "lost == 0": not soak.lost and hung == 0,
        "server survived": alive and status == 0,
        "RSS back within 1.2x start + 50 MiB": rss_after <= RSS_FACTOR * rss_start + RSS_SLACK,
        "fds equal": fds_after == fds_start,
        # gRPC's own pools start small and grow on demand to a bound of their
        # own (its default executor to 2 per core), keeping their threads;
        # every other thread (bonsai's job pool, metrics, ...) must be equal.
        "threads equal (outside gRPC's growable pools)":
            {k: v for k, v in names_after.items() if k not in GRPC_POOLS}
            == {k: v for k, v in names_start.items() if k not in GRPC_POOLS},
    }
    results["checks"] = checks

    print(f"\njobs: {dict(soak.counts)}")
    print(f"refused by reason: {dict(soak.refused)}")
    print(f"wrong: {len(soak.wrong)} {soak.wrong[:5]}")
    print(f"lost: {len(soak.lost)} (+{hung} hung clients) {soak.lost[:5]}")
    print("latency per size class (completed plain jobs):")
    for size_class, stats in results["latency_seconds"].items():
        print(f"  {size_class:>7}: n={stats['n']:4d}  p50={stats['p50']:.2f} s  p99={stats['p99']:.2f} s")
    print(f"server RSS: start {rss_start / MIB:.0f} MiB, peak {rss_peak / MIB:.0f} MiB, "
          f"{args.settle_seconds:g} s after the end {rss_after / MIB:.0f} MiB")
    print(f"fds {fds_start} -> {fds_after}, threads {threads_start} -> {threads_after} "
          f"(gRPC pools {sum(names_start[k] for k in GRPC_POOLS)} -> {sum(names_after[k] for k in GRPC_POOLS)})")
    print(f"after the end (s, RSS MiB, threads): {settling}")
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    if not checks["server survived"]:
        print(log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
