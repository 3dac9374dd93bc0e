"""Baseline: the model's bytes through a bare Python grpcio echo, the floor
under any gRPC round trip of a file; prints one JSON object.

    grpc_echo.py MODEL --out COPY [--repeats 1] [--chunk-bytes 1048576]

Per run, as e2e_compress.py does for bonsai: a fresh echo server process on
a free loopback port, then a client process timed from its start (Python
start-up and `import grpc` included) to its exit. The client streams MODEL in
1 MiB chunks on one bidi stream and writes what comes back to COPY; the
server yields each chunk back as it arrives. No proto: a generic handler with
bytes in and bytes out. COPY is compared with MODEL after the timing.

    grpc_echo.py serve          # prints its port, serves until killed
    grpc_echo.py send TARGET MODEL COPY [--chunk-bytes N]
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import time
from concurrent import futures

SERVICE, METHOD = "bonsai.bench.Echo", "Stream"
# As bonsai's client: chunks of 1 MiB, messages allowed up to 64 MiB.
MAX_MESSAGE_BYTES = 64 << 20
OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
           ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
START_TIMEOUT = 60.0


def serve() -> None:
    import grpc

    def echo(chunks, context):
        yield from chunks

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=OPTIONS)
    # No (de)serializers: grpcio hands the handler the raw message bytes.
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.stream_stream_rpc_method_handler(echo)})])
    port = server.add_insecure_port("127.0.0.1:0")  # the kernel picks a free port: no race
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def send(target: str, model: str, copy: str, chunk_bytes: int) -> None:
    import grpc

    def chunks():
        with open(model, "rb") as f:
            while chunk := f.read(chunk_bytes):
                yield chunk

    with grpc.insecure_channel(target, options=OPTIONS) as channel:
        stream = channel.stream_stream(f"/{SERVICE}/{METHOD}")
        with open(copy, "wb") as out:
            for chunk in stream(chunks(), timeout=3600):
                out.write(chunk)


class EchoServer:
    """The echo server in a process of its own, as bonsai-server is."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve"],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # blocks until the server listens (or dies)
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"echo server did not start (exit {self.proc.wait()})")
        self.target = f"127.0.0.1:{line.strip()}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def run_once(model: str, copy: str, chunk_bytes: int) -> float:
    with EchoServer() as server:
        command = [sys.executable, os.path.abspath(__file__), "send", server.target, model, copy,
                   "--chunk-bytes", str(chunk_bytes)]
        start = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"echo client failed ({done.returncode}): {done.stderr[-4000:]}")
    return seconds


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        return serve()
    if len(sys.argv) > 1 and sys.argv[1] == "send":
        p = argparse.ArgumentParser(prog="grpc_echo.py send")
        p.add_argument("target")
        p.add_argument("model")
        p.add_argument("copy")
        p.add_argument("--chunk-bytes", type=int, default=1 << 20)
        args = p.parse_args(sys.argv[2:])
        return send(args.target, args.model, args.copy, args.chunk_bytes)

    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--chunk-bytes", type=int, default=1 << 20)
    args = p.parse_args()
    runs = [run_once(args.model, args.out, args.chunk_bytes) for _ in range(args.repeats)]
    model_bytes = os.path.getsize(args.model)
    import grpc
    print(json.dumps({
        "seconds": min(runs), "runs": runs, "model_bytes": model_bytes,
        "throughput_mb_s": model_bytes / 1e6 / min(runs), "chunk_bytes": args.chunk_bytes,
        "same_bytes": filecmp.cmp(args.model, args.out, shallow=False), "grpcio": grpc.__version__}))


if __name__ == "__main__":
    main()
