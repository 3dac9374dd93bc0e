"""bonsai.Client: the Python face of the Compressor service."""
from __future__ import annotations

import json
import os
import random
import time
from typing import Callable, Iterable, Mapping, Optional, Sequence

import grpc

from bonsai import chunk_wire
from bonsai import recipes, replicas
from bonsai import spec as specs
from bonsai import tls
from bonsai.errors import BonsaiError, ModelTooLarge, from_rpc_error
from bonsai import model_files
from bonsai.results import CompressResult, FilesSink
from bonsai.retry import RetryPolicy
from bonsai.streaming import DEFAULT_CHUNK_BYTES, ByteSource, ModelInput, UploadRequests
from bonsai.v1 import compressor_pb2 as pb
from bonsai.v1 import compressor_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT = 3600.0
# Replicas behind a headless service (dns:///...) each take whole jobs, so
# spread calls over all of them rather than pinning the first address.
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
_MAX_MESSAGE_BYTES = 64 << 20


def channel_options(max_message_bytes: int = _MAX_MESSAGE_BYTES) -> list:
    return [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.service_config", _SERVICE_CONFIG),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


class _AttemptFailed(Exception):
    def __init__(self, error: BonsaiError, upload_started: bool):
        super().__init__(str(error))
        self.error = error
        self.upload_started = upload_started


class Client:
    """A connection to a bonsai server (or a round-robin set of them).

    `timeout` is the deadline of each call in seconds; `admission_wait` is how
    long a Compress call holds its upload after the spec, waiting for the
    server's first word, so that a refusal at admission costs no upload and
    can be retried.

    TLS: `tls_ca` is the PEM file of the CA that signed the server's
    certificate (None with a client certificate: the system's CAs);
    `tls_cert` and `tls_key` are the client's certificate and key, for a
    server that requires them (mutual TLS). `tls_server_name` is the name to
    expect in the server's certificate when the target names it otherwise
    (e.g. localhost through a port-forward). Any other channel credentials go
    in `credentials`. A connection refused for a TLS reason is UNAVAILABLE
    with a `hint` saying what to check.

    `target` may also be a list of addresses, or a `dns:///host:port` name
    that resolves to several replicas (the chart's headless Service); then
    `compress(folder, parallel=True)` spreads a sharded checkpoint over them
    (see bonsai.parallel), and other calls go to them round-robin.
    """

    def __init__(
        self,
        target: "str | Sequence[str]" = "localhost:50051",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: Optional[RetryPolicy] = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        admission_wait: float = 1.0,
        credentials: Optional[grpc.ChannelCredentials] = None,
        tls_ca=None,
        tls_cert=None,
        tls_key=None,
        tls_server_name: Optional[str] = None,
        options: Iterable = (),
    ):
        self.targets = replicas.target_list(target)
        if not self.targets:
            raise ValueError("no target given")
        self.target = replicas.channel_target(self.targets)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.chunk_bytes = chunk_bytes
        self.admission_wait = admission_wait
        opts = channel_options() + list(options)
        if any(p is not None for p in (tls_ca, tls_cert, tls_key)):
            if credentials is not None:
                raise ValueError("pass either credentials or tls_ca/tls_cert/tls_key, not both")
            credentials = tls.channel_credentials(tls_ca, tls_cert, tls_key)
        if tls_server_name:
            if credentials is None:
                raise ValueError("tls_server_name needs TLS: pass tls_ca (or credentials) as well")
            opts.append(("grpc.ssl_target_name_override", tls_server_name))
        self.tls = credentials is not None
        self._credentials = credentials
        self._channel_options = opts
        if credentials is None:
            self._channel = grpc.insecure_channel(self.target, options=opts)
        else:
            self._channel = grpc.secure_channel(self.target, credentials, options=opts)
        self.stub = pb_grpc.CompressorStub(self._channel)
        self._compress_rpc = chunk_wire.compress_rpc(self._channel)
        self._rng = random.Random()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ RPCs

    def capabilities(self, *, timeout: Optional[float] = None) -> pb.Capabilities:
        def once():
            try:
                return self.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=timeout or self.timeout)
            except grpc.RpcError as err:
                raise _AttemptFailed(from_rpc_error(err), upload_started=False) from None
        return self._with_retries(once, rereadable=True)

    def inspect(
        self,
        model: ModelInput,
        *,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        timeout: Optional[float] = None,
    ) -> pb.InspectResponse:
        files = model_files.collect(model)
        declarations = []
        parts = []
        for index, f in enumerate(files):
            header = _safetensors_header(f) if f.source.size and f.name.endswith(".safetensors") else None
            declarations.append(pb.FileDeclaration(name=f.name, size_bytes=f.source.size or 0,
                                                   header_only=header is not None))
            source = ByteSource(header) if header is not None else f.source
            parts.append((lambda c, i=index: pb.InspectRequest(file_chunk=pb.FileChunk(file=i, data=c)), source))
        first = pb.InspectRequest(spec=specs.inspect_spec(include=include, exclude=exclude, files=declarations))
        rereadable = all(f.source.rereadable for f in files)

        def once():
            requests = UploadRequests(first, parts, self.chunk_bytes, admission_wait=0)
            future = self.stub.Inspect.future(iter(requests), timeout=timeout or self.timeout)
            future.add_done_callback(lambda _: requests.call_done.set())
            try:
                return future.result()
            except grpc.RpcError as err:
                raise _AttemptFailed(from_rpc_error(err), requests.data_started) from None
            except BaseException:
                future.cancel()
                raise
        return self._with_retries(once, rereadable)

    def sweep(self, model: ModelInput, sparsities: Iterable[float], *, method: str = "magnitude",
              **options):
        """A sensitivity sweep (bonsai.sweep): one layer-scope job per sparsity,
        each layer's error at each; `.suggest(target)` proposes per-layer
        sparsities, `.table()` and `.save_html(path)` show them. Other
        keyword arguments are those of compress (options, calibration, ...)."""
        from bonsai import sweep
        return sweep.run(self, model, list(sparsities), method=method, **options)

    def compress(
        self,
        model: ModelInput,
        *,
        method: Optional[str] = None,
        sparsity: Optional[float] = None,
        scope: str = "layer",
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        include_only: bool = False,
        overrides: Optional[Mapping[str, float]] = None,
        options=None,
        rules: Iterable = (),
        recipe=None,
        output: str = "dense",
        quantized_layout: Optional[str] = None,
        calibration: Optional[ModelInput] = None,
        progress: Optional[Callable[[pb.Progress], None]] = None,
        output_path=None,
        upload_progress: Optional[Callable[[int, Optional[int]], None]] = None,
        download_progress: Optional[Callable[[int, int], None]] = None,
        timeout: Optional[float] = None,
        parallel: Optional[bool] = False,
        shard_progress: Optional[Callable[[int, int], None]] = None,
    ) -> CompressResult:
        """Compresses `model`: a file path, a folder (a Hugging Face
        checkpoint: every file goes, shards are compressed, the rest comes back
        byte for byte), an .onnx path (its external data files beside it go
        too), bytes or a binary file object.

        With `output_path`, a folder gives a folder and a file gives a file
        (with its data files beside it); nothing is written unless every
        file's SHA-256 matches the final report. Without it, the result holds
        the bytes (`model` for one file, `files` by name for several).

        `method` and `sparsity` (default magnitude, 0.5) apply to every
        selected tensor; `rules` (dicts or Rule messages, or a JSON/YAML file
        via `bonsai.recipes.load_rules`) or `recipe` (an llm-compressor
        recipe: a YAML path, text or mapping) give a method per pattern
        instead, and then method and sparsity stay unset.

        `quantized_layout` picks how packed output stores quantized
        safetensors weights: "compressed-tensors" (default) or "gptq".

        `progress` receives the server's Progress messages; `upload_progress`
        (bytes sent so far, total) and `download_progress` (bytes received,
        total in) are for byte counters such as bars.

        `parallel=True` spreads a folder's shards over the client's targets,
        one job per shard or group of shards (bonsai.parallel), with the same
        output as one job; `parallel=None` does so when the targets resolve
        to more than one replica and the folder holds several shards.
        `shard_progress` receives (jobs done, jobs) as each one ends; the
        result is then a bonsai.parallel.ParallelResult.
        """
        if recipe is not None:
            if rules:
                raise ValueError("give rules or recipe, not both")
            rules = recipes.from_llmcompressor(recipe)
        rules = list(rules or ())
        if method is None:
            method = "" if rules else "magnitude"
        if sparsity is None:
            sparsity = 0.0 if rules else 0.5
        if parallel is None:
            parallel = replicas.worth_spreading(self.targets, model)
        if parallel:
            from bonsai import parallel as parallel_jobs
            return parallel_jobs.compress_parallel(
                self, model, calibration=calibration, output_path=output_path,
                shard_progress=shard_progress, timeout=timeout,
                spec_kwargs=dict(method=method, sparsity=sparsity, scope=scope, include=include,
                                 exclude=exclude, include_only=include_only, overrides=overrides,
                                 options=options, rules=rules, output=output,
                                 quantized_layout=quantized_layout))
        files = model_files.collect(model)
        paths = model_files.output_paths(files, model, output_path)
        calib = ByteSource(calibration) if calibration is not None else None
        if calib is not None and calib.size is None:
            raise ValueError("the calibration file's size must be known (a path, bytes or a seekable file)")
        spec = specs.compression_spec(
            method=method, sparsity=sparsity, scope=scope, include=include, exclude=exclude,
            include_only=include_only, overrides=overrides, options=options, rules=rules, output=output,
            quantized_layout=quantized_layout,
            files=[pb.FileDeclaration(name=f.name, size_bytes=f.source.size) for f in files],
            calibration_size_bytes=calib.size if calib else None)
        parts = []
        if calib is not None:
            parts.append((lambda c: pb.CompressRequest(calibration_chunk=c), calib))
        for index, f in enumerate(files):
            parts.append((lambda c, i=index: chunk_wire.encode_file_chunk(i, c), f.source))
        model_bytes = sum(f.source.size for f in files)
        upload_total = model_bytes + (calib.size if calib else 0)
        rereadable = all(f.source.rereadable for f in files) and (calib is None or calib.rereadable)
        names = [f.name for f in files]

        def once():
            return self._compress_once(pb.CompressRequest(spec=spec), parts, upload_total, progress,
                                       names, paths, output_path, model_bytes, upload_progress,
                                       download_progress, timeout)

        return self._with_retries(once, rereadable)

    # ------------------------------------------------------------ internals

    def _compress_once(self, first, parts, upload_total, progress, names, paths, output_path,
                       model_bytes, upload_progress, download_progress, timeout) -> CompressResult:
        sent = [0]

        def on_bytes(n: int) -> None:
            sent[0] += n
            if upload_progress is not None:
                upload_progress(sent[0], upload_total)

        requests = UploadRequests(first, parts, self.chunk_bytes, self.admission_wait, on_bytes)
        call = self._compress_rpc(iter(requests), timeout=timeout or self.timeout)

        def on_done(_call) -> None:
            requests.call_done.set()
            requests.server_spoke.set()
        call.add_done_callback(on_done)

        sink = FilesSink(names, paths)
        report = None
        try:
            for response in call:
                requests.server_spoke.set()
                kind, value = chunk_wire.payload_of(response)
                if kind == "progress":
                    if progress is not None:
                        progress(value)
                elif kind == "file_chunk":
                    if report is not None:
                        raise BonsaiError(grpc.StatusCode.INTERNAL, "server sent model bytes after the report")
                    sink.write(value.file, value.data)
                    if download_progress is not None:
                        download_progress(sink.size, model_bytes)
                elif kind == "report":
                    report = value
            if report is None:
                raise BonsaiError(grpc.StatusCode.INTERNAL, "server ended the stream without a report")
            sink.verify(report)
            in_memory = sink.commit()
        except grpc.RpcError as err:
            sink.discard()
            raise _AttemptFailed(from_rpc_error(err), requests.data_started) from None
        except BaseException:
            call.cancel()
            sink.discard()
            raise
        if paths is not None:
            return CompressResult(report=report, output_path=os.fspath(output_path))
        if len(names) == 1:
            return CompressResult(report=report, model=in_memory[names[0]])
        return CompressResult(report=report, files=in_memory)

    def _with_retries(self, once, rereadable: bool):
        attempt = 0
        while True:
            attempt += 1
            try:
                return once()
            except _AttemptFailed as failed:
                code = failed.error.code
                if (tls.handshake_refused(failed.error, self.tls) or
                        not (rereadable and self.retry.should_retry(code, attempt, failed.upload_started))):
                    error = tls.explain(failed.error, self.tls)
                    raise error from error.__cause__
                # Over this server's limits: the same request can never fit here.
                if isinstance(failed.error, ModelTooLarge):
                    raise failed.error from failed.error.__cause__
                time.sleep(self.retry.backoff(attempt, self._rng))


def _safetensors_header(f) -> "bytes | None":
    """The 8-byte length and JSON header of a safetensors file, when it has one."""
    import struct
    head = next(f.source.chunks(8), b"")
    if len(head) < 8:
        return None
    (length,) = struct.unpack("<Q", head[:8])
    if length > (100 << 20) or 8 + length > (f.source.size or 0):
        return None  # not a valid header: send the whole file and let the server say why
    out = bytearray()
    for chunk in f.source.chunks(1 << 20):
        out += chunk
        if len(out) >= 8 + length:
            break
    header = bytes(out[:8 + length])
    return header if header[8:9] == b"{" else None
