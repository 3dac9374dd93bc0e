"""One sharded checkpoint over many replicas.

`Client.compress(folder, parallel=True)` comes here. The folder's
*.safetensors shards (in name order, as one job would order them) are cut
into consecutive groups, each one Compress job on one replica, with the
calibration entries of its own tensors only (calibration_split.py). The
client passes the index and the other files (config, tokenizer) through
itself, as the server would, and merges the jobs' reports into one.

Global magnitude scope needs one threshold over every job: the jobs settle
it with the client through two rounds of exact histograms (global_cut.py),
so every job must be in flight at once; there is then one job per worker of
the replicas (at most each replica's per-client cap, from GetCapabilities),
since a replica computes on its workers only.

Failures: a replica that dies, refuses (RESOURCE_EXHAUSTED) or times out
costs only its job, which is tried again on another replica after a backoff.
The whole call fails when a job has failed on every replica, on an error
that retrying cannot mend (INVALID_ARGUMENT and the like), or at the
deadline; then no output file is left, because every job's files wait in a
hidden staging folder until all of them have arrived and been checked.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import grpc

from bonsai import calibration_split, chunk_wire, model_files, safetensors_io, spec as specs
from bonsai.errors import BonsaiError, ModelTooLarge, from_rpc_error
from bonsai.global_cut import GlobalCuts
from bonsai.replicas import Replica, resolve
from bonsai.results import CompressResult, FilesSink, _make_dirs
from bonsai.streaming import ByteSource, UploadRequests
from bonsai.v1 import compressor_pb2 as pb

# Errors the same request would meet on any replica: retrying cannot help.
_FATAL = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
          grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED,
          grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.ALREADY_EXISTS)
_NO_TENSOR_WARNING = "no tensor was selected for compression"
# A replica that says nothing for this long, while its job is not waiting
# for the other jobs' summaries, is taken for stuck: its job goes elsewhere.
# (Servers send progress at least every half second while they receive, and
# per tensor while they work.)
STALL_SECONDS = 120.0


@dataclasses.dataclass
class ShardJob:
    """One Compress job of a parallel run, as the result reports it."""

    index: int
    files: List[str]                 # shard names, in name order
    bytes_in: int
    replica: str = ""                # where it succeeded
    attempts: List[str] = dataclasses.field(default_factory=list)  # "replica: error" of failed tries
    seconds: float = 0.0             # wall time of the successful attempt
    report: Optional[pb.CompressionReport] = None


@dataclasses.dataclass
class _Job:
    info: ShardJob
    shards: list                     # ModelFile
    spec: pb.CompressionSpec
    calibration: Optional[str] = None
    failed_on: set = dataclasses.field(default_factory=set)
    files: Optional[Dict[str, bytes]] = None


def needs_exchange(spec: pb.CompressionSpec) -> bool:
    """Whether some tensor may get global magnitude scope."""
    if spec.rules:
        return any(r.method == "magnitude" and r.scope == pb.SCOPE_GLOBAL for r in spec.rules)
    return spec.method == "magnitude" and spec.scope == pb.SCOPE_GLOBAL


def shard_groups(sizes: List[int], groups: int) -> List[List[int]]:
    """Consecutive groups of shard indexes with balanced bytes."""
    groups = max(1, min(groups, len(sizes)))
    total = sum(sizes)
    result: List[List[int]] = []
    current: List[int] = []
    done = 0
    for i, size in enumerate(sizes):
        current.append(i)
        done += size
        left_shards = len(sizes) - i - 1
        left_groups = groups - len(result) - 1
        if left_groups > 0 and (left_shards == left_groups or done >= total * (len(result) + 1) / groups):
            result.append(current)
            current = []
    if current:
        result.append(current)
    return result


class _Run:
    def __init__(self, client, replicas: List[Replica], jobs: List[_Job], cuts: Optional[GlobalCuts],
                 deadline: float, staging: Optional[str], on_job_done: Optional[Callable[[int, int], None]]):
        self.client = client
        self.replicas = replicas
        self.jobs = jobs
        self.cuts = cuts
        self.deadline = deadline
        self.staging = staging
        self.on_job_done = on_job_done
        self.cond = threading.Condition()
        self.error: Optional[BonsaiError] = None
        self.calls: set = set()
        self.watched: Dict[object, dict] = {}  # call -> {"last", "waiting", "stalled"}
        self.done = 0
        self.rng = random.Random()

    # ------------------------------------------------------------ control

    def fail(self, error: BonsaiError) -> None:
        with self.cond:
            if self.error is None:
                self.error = error
            calls = list(self.calls)
            self.cond.notify_all()
        if self.cuts is not None:
            self.cuts.abort()
        for call in calls:
            call.cancel()

    def run(self) -> None:
        if self.on_job_done is not None:
            self.on_job_done(0, len(self.jobs))
        threads = [threading.Thread(target=self._run_job, args=(job,), name=f"bonsai-shard-{job.info.index}",
                                    daemon=True) for job in self.jobs]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
                self._cancel_stalled()
                if time.monotonic() > self.deadline + 5:
                    self.fail(BonsaiError(grpc.StatusCode.DEADLINE_EXCEEDED, "the parallel job's deadline passed"))
        if self.error is not None:
            raise self.error

    def _cancel_stalled(self) -> None:
        now = time.monotonic()
        with self.cond:
            stalled = [call for call, w in self.watched.items()
                       if w["summaries"] <= w["answers"] and not w["stalled"] and now - w["last"] > STALL_SECONDS]
            for call in stalled:
                self.watched[call]["stalled"] = True
        for call in stalled:
            call.cancel()

    def _acquire(self, job: _Job) -> Optional[Replica]:
        """A replica with room that this job has not failed on; None when it failed on all."""
        with self.cond:
            while True:
                if self.error is not None:
                    return None
                if time.monotonic() >= self.deadline:
                    raise BonsaiError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                      f"the deadline passed before shard job {job.info.files} ran "
                                      f"(tries: {'; '.join(job.info.attempts) or 'none'}; replicas: " +
                                      ", ".join(f"{r.target} {r.in_flight}/{r.capacity}" for r in self.replicas)
                                      + ")")
                left = [r for r in self.replicas if r.target not in job.failed_on]
                if not left:
                    return None
                now = time.monotonic()
                room = [r for r in left if r.in_flight < r.capacity]
                if room:
                    room.sort(key=lambda r: (r.avoid_until > now, r.in_flight / r.capacity))
                    replica = room[0]
                    replica.in_flight += 1
                    return replica
                self.cond.wait(0.2)

    def _release(self, replica: Replica) -> None:
        with self.cond:
            replica.in_flight -= 1
            self.cond.notify_all()

    # ------------------------------------------------------------ one job

    def _run_job(self, job: _Job) -> None:
        try:
            attempt = 0
            while self.error is None:
                replica = self._acquire(job)
                if replica is None:
                    if self.error is None:
                        self.fail(BonsaiError(
                            grpc.StatusCode.UNAVAILABLE,
                            f"shard job {', '.join(job.info.files)} failed on every replica: "
                            + "; ".join(job.info.attempts)))
                    return
                attempt += 1
                started = time.monotonic()
                try:
                    report, files = self._attempt(job, replica)
                except BonsaiError as error:
                    if self.error is not None:
                        return
                    job.info.attempts.append(f"{replica.target}: {error.code.name}: {error.message}")
                    if error.code in _FATAL:
                        self.fail(error)
                        return
                    backoff = self.client.retry.backoff(attempt, self.rng)
                    with self.cond:
                        replica.avoid_until = time.monotonic() + max(backoff, 1.0)
                    # Busy is not failed: the replica may have room later. Too
                    # large for its limits (the server's reason says so) is.
                    if error.code != grpc.StatusCode.RESOURCE_EXHAUSTED or isinstance(error, ModelTooLarge):
                        job.failed_on.add(replica.target)
                    time.sleep(min(backoff, max(0.0, self.deadline - time.monotonic())))
                    continue
                finally:
                    self._release(replica)
                job.info.replica = replica.target
                job.info.seconds = time.monotonic() - started
                job.info.report = report
                job.files = files
                with self.cond:
                    self.done += 1
                    done = self.done
                if self.on_job_done is not None:
                    self.on_job_done(done, len(self.jobs))
                return
        except BonsaiError as error:
            self.fail(error)
        except BaseException as error:  # a bug or an OS error: stop everything, say what
            self.fail(BonsaiError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"))

    def _attempt(self, job: _Job, replica: Replica):
        parts = []
        if job.calibration is not None:
            parts.append((lambda c: pb.CompressRequest(calibration_chunk=c), ByteSource(job.calibration)))
        for i, f in enumerate(job.shards):
            parts.append((lambda c, i=i: chunk_wire.encode_file_chunk(i, c), f.source))
        # While the replica has sent a summary that has no answer yet, its
        # silence is ours (the other jobs' summaries may take long): no stall.
        watch = {"last": time.monotonic(), "summaries": 0, "answers": 0, "stalled": False}
        decide = None
        if self.cuts is not None:
            def decide(phase, call_done):
                decision = self.cuts.decision(job.info.index, phase, call_done)
                with self.cond:
                    watch["answers"] += 1
                    watch["last"] = time.monotonic()
                return decision
        requests = _ExchangeRequests(pb.CompressRequest(spec=job.spec), parts, self.client.chunk_bytes,
                                     self.client.admission_wait, decide)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise BonsaiError(grpc.StatusCode.DEADLINE_EXCEEDED, "the parallel job's deadline passed")
        call = replica.compress_rpc(iter(requests), timeout=remaining)

        def on_done(_call) -> None:
            requests.call_done.set()
            requests.server_spoke.set()
        call.add_done_callback(on_done)
        with self.cond:
            self.calls.add(call)
            self.watched[call] = watch
        names = [f.name for f in job.shards]
        paths = None
        if self.staging is not None:
            paths = [os.path.join(self.staging, *name.split("/")) for name in names]
        sink = FilesSink(names, paths)
        report = None
        try:
            for response in call:
                requests.server_spoke.set()
                watch["last"] = time.monotonic()
                kind, value = chunk_wire.payload_of(response)
                if kind == "file_chunk":
                    if report is not None:
                        raise BonsaiError(grpc.StatusCode.INTERNAL, "server sent model bytes after the report")
                    sink.write(value.file, value.data)
                elif kind == "global_summary":
                    if self.cuts is None:
                        raise BonsaiError(grpc.StatusCode.INTERNAL, "server sent a global summary unasked")
                    with self.cond:
                        watch["summaries"] += 1
                    self.cuts.submit(job.info.index, value)
                elif kind == "report":
                    report = value
            if report is None:
                raise BonsaiError(grpc.StatusCode.INTERNAL, "server ended the stream without a report")
            sink.verify(report)
            files = sink.commit()
        except grpc.RpcError as err:
            sink.discard()
            if watch["stalled"]:
                raise BonsaiError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"the replica said nothing for {STALL_SECONDS:.0f} s") from None
            raise from_rpc_error(err) from None
        except BaseException:
            call.cancel()
            sink.discard()
            raise
        finally:
            with self.cond:
                self.calls.discard(call)
                self.watched.pop(call, None)
        return report, files


class _ExchangeRequests(UploadRequests):
    """The upload, then (with a global exchange) the two decisions, then the half-close."""

    def __init__(self, first, parts, chunk_bytes, admission_wait, decide):
        super().__init__(first, parts, chunk_bytes, admission_wait)
        self._decide = decide

    def __iter__(self):
        yield from super().__iter__()
        if self._decide is None:
            return
        for phase in (1, 2):
            if self.call_done.is_set():
                return
            decision = self._decide(phase, self.call_done)
            if decision is None:
                return
            yield pb.CompressRequest(global_decision=decision)


# ---------------------------------------------------------------- the call


def _check_index(index_path: str, index_file, shards, tensors_of: Dict[str, List[str]]) -> None:
    """What the server checks of an index it receives with every shard."""
    with open(index_path, "rb") as f:
        try:
            parsed = json.loads(f.read())
            weight_map = parsed["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise BonsaiError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{index_file.name} is not a safetensors index (a JSON object with a "
                              f"\"weight_map\")") from None
    folder = index_file.name.rpartition("/")[0]
    prefix = folder + "/" if folder else ""
    names = {f.name for f in shards}
    for tensor, file in weight_map.items():
        if prefix + str(file) not in names:
            raise BonsaiError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{index_file.name} puts tensor \"{tensor}\" in {prefix}{file}, which was not "
                              f"uploaded; upload every shard the index names")
    for shard in shards:
        for tensor in tensors_of[shard.name]:
            if prefix + str(weight_map.get(tensor)) != shard.name:
                raise BonsaiError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"tensor \"{tensor}\" is in {shard.name} but {index_file.name} does not put it "
                                  f"there; upload the index that belongs to these shards")


def rewritten_index(index_bytes: bytes, index_name: str, inputs: Dict[str, dict],
                    outputs: Dict[str, dict]) -> Optional[bytes]:
    """The index one job over the folder would write, or None when it would
    send it back as it came: rewritten only when the output's tensors (names
    or sizes) differ from the input's, as packing makes them. The text is
    the server's (nlohmann::json dump(2): keys sorted, two-space indent,
    UTF-8 unescaped) with weight_map and metadata.total_size replaced.

    `inputs` and `outputs` map each shard name to its safetensors header."""
    folder = index_name.rpartition("/")[0]
    prefix = len(folder) + 1 if folder else 0
    old = json.loads(index_bytes)

    def entries(headers):
        weight_map, total = {}, 0
        for shard, header in headers.items():
            for name, entry in header.items():
                if name == "__metadata__":
                    continue
                begin, end = entry["data_offsets"]
                weight_map[name] = shard[prefix:]
                total += end - begin
        return weight_map, total
    new_map, new_total = entries(outputs)
    _, old_total = entries(inputs)
    if new_map == old.get("weight_map") and new_total == old_total:
        return None
    if not isinstance(old.get("metadata"), dict):
        old["metadata"] = {}
    old["metadata"]["total_size"] = new_total
    old["weight_map"] = new_map
    return (json.dumps(old, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _file_report(name: str, role: str, path_or_bytes) -> pb.FileReport:
    digest = hashlib.sha256()
    size = 0
    for chunk in ByteSource(path_or_bytes).chunks(8 << 20):
        digest.update(chunk)
        size += len(chunk)
    return pb.FileReport(name=name, role=role, bytes_in=size, bytes_out=size, sha256=digest.hexdigest())


def merge_reports(reports: List[pb.CompressionReport], spec: pb.CompressionSpec, passed: List[pb.FileReport],
                  extra_warnings: List[str], seconds: float) -> pb.CompressionReport:
    """One report over the whole model from the jobs' reports, in model order
    (also used by bonsai.sequential, whose jobs are the blocks)."""
    merged = pb.CompressionReport(format="safetensors", method=spec.method)
    warnings: List[str] = []
    totals = merged.totals
    timings = merged.timings
    for r in reports:
        merged.tensors.extend(r.tensors)
        merged.files.extend(r.files)
        for w in r.warnings:
            if not w.startswith(_NO_TENSOR_WARNING) and w not in warnings:
                warnings.append(w)
        t = r.totals
        totals.params += t.params
        totals.params_after += t.params_after
        totals.prunable_params += t.prunable_params
        totals.nonzero_after += t.nonzero_after
        totals.model_bytes_in += t.model_bytes_in
        totals.model_bytes_out += t.model_bytes_out
        totals.model_bytes_out_zstd += t.model_bytes_out_zstd
        totals.model_bytes_out_zstd_estimated |= t.model_bytes_out_zstd_estimated
        totals.macs_before += t.macs_before
        totals.macs_after += t.macs_after
        totals.dense_bytes += t.dense_bytes
        totals.packed_bytes += t.packed_bytes
        # Stages summed over jobs: work done, not wall time (jobs overlap).
        timings.queue_seconds += r.timings.queue_seconds
        timings.receive_seconds += r.timings.receive_seconds
        timings.parse_seconds += r.timings.parse_seconds
        timings.compress_seconds += r.timings.compress_seconds
        timings.serialize_seconds += r.timings.serialize_seconds
        timings.send_seconds += r.timings.send_seconds
    for f in passed:
        merged.files.append(f)
        totals.model_bytes_in += f.bytes_in
        totals.model_bytes_out += f.bytes_out
        totals.model_bytes_out_zstd += f.bytes_out  # passed through uncompressed by the client
    totals.sparsity = 1.0 - totals.nonzero_after / totals.prunable_params if totals.prunable_params else 0.0
    timings.total_seconds = seconds  # wall time of the whole parallel call
    warnings.extend(extra_warnings)
    if not merged.tensors:
        warnings.append("no tensor was selected for compression; see Inspect for tensor names and use "
                        "include patterns to select some")
    merged.warnings.extend(warnings)
    return merged


_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_HEAD_NAMES = {"lm_head", "classifier", "score", "head"}


def _weights_in_order(header: dict) -> List[Tuple[str, bool, bool]]:
    """(name, is a weight matrix, selected by default) for a shard's tensors
    in the server's order (by data offset), by the server's rules
    (formats/safetensors.cc): a floating tensor of rank >= 2 is a weight
    matrix, selected unless its name marks an embedding."""
    entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                     key=lambda kv: (kv[1]["data_offsets"][0], kv[0].encode()))
    out = []
    for name, entry in entries:
        matrix = entry["dtype"] in _FLOAT_DTYPES and len(entry["shape"]) >= 2
        count = 1
        for d in entry["shape"]:
            count *= d
        embedding = any(m in name.lower() for m in ("embed", "wte", "wpe", "lm_head"))
        out.append((name, matrix, matrix and count > 0 and not embedding))
    return out


def _output_heads(weights: List[Tuple[str, bool, bool]]) -> set:
    """The tensors one job over `weights` leaves out of structured pruning as
    output heads (formats/safetensors.cc MarkOutputHeads)."""
    named = {n for n, matrix, _ in weights if matrix and _HEAD_NAMES & set(n.split("."))}
    if named:
        return named
    selected = [n for n, _, chosen in weights if chosen]
    return {selected[-1]} if len(selected) >= 2 else set()


def _align_heads(kwargs: dict, whole: set, part: set) -> dict:
    """A shard job sees only its own tensors, so it may take another tensor
    for the output head than one job over the folder would. The job is told
    to prune the tensors only it would leave alone (an include naming a head
    prunes it), and to leave alone the folder's heads it would prune: with a
    sparsity override of 0 (which names the tensor and changes nothing), or,
    with rules, where an override needs a rule, with an exclude."""
    kwargs = dict(kwargs)
    # A head the user names (an include or an override) is pruned by both.
    named = [n for n in whole - part
             if n in kwargs["overrides"] or any(re.search(p, n) for p in kwargs.get("include") or ())]
    keep = sorted(whole - part - set(named))
    kwargs["include"] = list(kwargs.get("include") or ()) + [f"^{re.escape(n)}$" for n in sorted(part - whole)]
    if kwargs.get("rules"):
        kwargs["exclude"] = list(kwargs.get("exclude") or ()) + [f"^{re.escape(n)}$" for n in keep]
    else:
        kwargs["overrides"] = {**kwargs["overrides"], **{n: 0.0 for n in keep}}
    return kwargs


def _uses_structured(spec: pb.CompressionSpec) -> bool:
    return spec.method == "structured" or any(r.method == "structured" for r in spec.rules)


def compress_parallel(client, model, *, spec_kwargs: dict, calibration, output_path,
                      shard_progress: Optional[Callable[[int, int], None]] = None,
                      timeout: Optional[float] = None) -> CompressResult:
    started = time.monotonic()
    deadline = started + (timeout or client.timeout)
    if not model_files.is_folder(model):
        raise ValueError("parallel compression takes a folder of *.safetensors shards")
    files = model_files.collect(model)
    paths = model_files.output_paths(files, model, output_path)

    def path_of(f) -> str:
        return os.path.join(os.fspath(model), *f.name.split("/"))
    shards = sorted((f for f in files if f.name.endswith(".safetensors")), key=lambda f: f.name.encode())
    indexes = [f for f in files if f.name.endswith(".safetensors.index.json")]
    if any(f.name.endswith(".onnx") for f in files) or not shards:
        raise ValueError("parallel compression takes a folder of *.safetensors shards (no .onnx)")
    if len(indexes) > 1:
        raise BonsaiError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"two index files ({indexes[0].name}, {indexes[1].name}); upload one checkpoint per job")
    spec_kwargs = dict(spec_kwargs)
    for key in ("include", "exclude", "rules"):
        spec_kwargs[key] = list(spec_kwargs.get(key) or ())
    passed_files = [f for f in files if f not in shards]

    tensors_of: Dict[str, List[str]] = {}
    input_headers: Dict[str, dict] = {}
    for shard in shards:
        header, _ = calibration_split.read_header(path_of(shard))
        input_headers[shard.name] = header
        tensors_of[shard.name] = [k for k in header if k != "__metadata__"]
    if indexes:
        _check_index(path_of(indexes[0]), indexes[0], shards, tensors_of)
    all_tensors = {t for names in tensors_of.values() for t in names}
    overrides = dict(spec_kwargs.get("overrides") or {})
    for name in overrides:
        if name not in all_tensors:
            raise BonsaiError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"sparsity override names tensor '{name}', which the model does not have; see "
                              f"Inspect for the tensor names")

    base_spec = specs.compression_spec(files=[], calibration_size_bytes=None, **spec_kwargs)
    exchange = needs_exchange(base_spec)
    structured = _uses_structured(base_spec)
    weights_of = {s.name: _weights_in_order(input_headers[s.name]) for s in shards}
    whole_heads = _output_heads([w for s in shards for w in weights_of[s.name]]) if structured else set()

    targets = resolve(client.targets)
    replicas = [Replica(t, host, client._credentials, client._channel_options) for t, host in targets]
    probes = [threading.Thread(target=r.probe, args=(min(10.0, max(1.0, deadline - time.monotonic())),))
              for r in replicas]
    answered = []
    for r, t in zip(replicas, probes):
        t.start()
    for r, t in zip(replicas, probes):
        t.join()
        if hasattr(r, "limits"):
            answered.append(r)
    if not answered:
        for r in replicas:
            r.close()
        raise BonsaiError(grpc.StatusCode.UNAVAILABLE,
                          f"no replica answered ({', '.join(r.target for r in replicas)})")

    sizes = [f.source.size for f in shards]
    groups = len(shards)
    if exchange:
        # Every job must be in flight at once to settle the threshold, and a
        # replica computes on `workers` of them at a time: more jobs than that
        # add only per-job costs (a call, spool files, threads) and contention.
        groups = min(groups, sum(min(r.capacity, max(1, int(r.limits.workers))) for r in answered))
    grouped = shard_groups(sizes, groups)

    scratch = tempfile.mkdtemp(prefix="bonsai-parallel-")
    created_dirs: list = []
    staging = None
    try:
        calib_header = calib_start = None
        extra_warnings: List[str] = []
        if calibration is not None:
            if isinstance(calibration, (bytes, bytearray, memoryview)):
                calib_path = os.path.join(scratch, "calibration.safetensors")
                with open(calib_path, "wb") as f:
                    f.write(calibration)
            elif isinstance(calibration, (str, os.PathLike)):
                calib_path = os.fspath(calibration)
            else:
                raise ValueError("parallel compression takes the calibration file as a path or bytes")
            calib_header, calib_start = calibration_split.read_header(calib_path)
            warning = calibration_split.unused_warning(calibration_split.weights_named(calib_header), all_tensors)
            if warning:
                extra_warnings.append(warning)
        jobs: List[_Job] = []
        for j, members in enumerate(grouped):
            job_shards = [shards[i] for i in members]
            names = {t for s in job_shards for t in tensors_of[s.name]}
            job_calibration = None
            if calib_header is not None:
                destination = os.path.join(scratch, f"calibration-{j}.safetensors")
                if calibration_split.write_subset(calib_path, calib_header, calib_start, names, destination):
                    job_calibration = destination
            kwargs = dict(spec_kwargs)
            kwargs["overrides"] = {k: v for k, v in overrides.items() if k in names}
            if structured:
                part_heads = _output_heads([w for s in job_shards for w in weights_of[s.name]])
                kwargs = _align_heads(kwargs, whole_heads & names, part_heads)
            spec = specs.compression_spec(
                files=[pb.FileDeclaration(name=s.name, size_bytes=s.source.size) for s in job_shards],
                calibration_size_bytes=os.path.getsize(job_calibration) if job_calibration else None, **kwargs)
            spec.exchange_global_cuts = exchange
            # Where this job's output starts in the whole model's: the report's
            # exact zstd prefix is then the model's, not one per job.
            spec.output_offset_bytes = sum(sizes[:members[0]])
            info = ShardJob(index=j, files=[s.name for s in job_shards], bytes_in=sum(s.source.size for s in job_shards))
            jobs.append(_Job(info=info, shards=job_shards, spec=spec, calibration=job_calibration))

        if paths is not None:
            out_dir = os.fspath(output_path)
            _make_dirs(os.path.abspath(out_dir), created_dirs)
            staging = tempfile.mkdtemp(prefix=".bonsai-parallel-", dir=out_dir)

        cuts = GlobalCuts(len(jobs)) if exchange else None
        run = _Run(client, answered, jobs, cuts, deadline, staging, shard_progress)
        run.run()

        # Packing renames tensors: then the index is the client's to rewrite.
        new_index = None
        if indexes:
            output_headers = {}
            for job in jobs:
                for f in job.shards:
                    if job.files is not None and f.name in job.files:
                        data = job.files[f.name]
                    else:
                        with open(os.path.join(staging, *f.name.split("/")), "rb") as g:
                            head = g.read(8)
                            data = head + g.read(int.from_bytes(head, "little"))
                    output_headers[f.name] = safetensors_io.read_header(data)
            with open(path_of(indexes[0]), "rb") as g:
                index_bytes = g.read()
            new_index = rewritten_index(index_bytes, indexes[0].name, input_headers, output_headers)
        passed_reports = []
        for f in passed_files:
            if f in indexes and new_index is not None:
                report_entry = _file_report(f.name, "index", new_index)
                report_entry.bytes_in = len(index_bytes)
                passed_reports.append(report_entry)
                continue
            role = "index" if f in indexes else "other"
            passed_reports.append(_file_report(f.name, role, path_of(f)))
        report = merge_reports([j.info.report for j in jobs], base_spec, passed_reports, extra_warnings,
                               time.monotonic() - started)
        if paths is None:
            in_memory: Dict[str, bytes] = {}
            for job in jobs:
                in_memory.update(job.files)
            for f in passed_files:
                in_memory[f.name] = b"".join(f.source.chunks())
            if new_index is not None:
                in_memory[indexes[0].name] = new_index
            ordered = {f.name: in_memory[f.name] for f in files}
            return ParallelResult(report=report, files=ordered, shard_jobs=[j.info for j in jobs],
                                  summary_bytes=dict(cuts.summary_bytes) if cuts else {})
        for f in passed_files:  # copied into staging, then everything moves at once
            destination = os.path.join(staging, *f.name.split("/"))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            if f in indexes and new_index is not None:
                with open(destination, "wb") as g:
                    g.write(new_index)
            else:
                shutil.copyfile(path_of(f), destination)
        for f, final in zip(files, paths):
            _make_dirs(os.path.dirname(os.path.abspath(final)), created_dirs)
            os.replace(os.path.join(staging, *f.name.split("/")), final)
        shutil.rmtree(staging, ignore_errors=True)
        staging = None
        return ParallelResult(report=report, output_path=os.fspath(output_path),
                              shard_jobs=[j.info for j in jobs],
                              summary_bytes=dict(cuts.summary_bytes) if cuts else {})
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for d in reversed(created_dirs):
            try:
                os.rmdir(d)
            except OSError:
                pass
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for r in replicas:
            r.close()


@dataclasses.dataclass
class ParallelResult(CompressResult):
    """A CompressResult with each job's own report, replica and wall time, and
    the bytes each global phase's summaries moved."""

    shard_jobs: List[ShardJob] = dataclasses.field(default_factory=list)
    summary_bytes: Dict[int, int] = dataclasses.field(default_factory=dict)
