"""One checkpoint over three replicas (issue 12): real servers on loopback
ports, a six-shard checkpoint (replica_checkpoint.py), the parallel client.

Every parallel output is compared byte for byte with one server's output of
the whole folder, and the global masks also with numpy's own selection (a
stable sort over the shards in name order).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

import bonsai
from bonsai import global_cut, safetensors_io
from bonsai.parallel import ParallelResult, shard_groups
from bonsai.v1 import compressor_pb2 as pb

import replica_checkpoint as ckpt
from held_job import HeldJob

SELECTED = [n for n, (_, _, v) in ckpt.make_tensors().items()
            if v.ndim == 2 and "embed" not in n and "lm_head" not in n]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("six-shards") / "model")
    tensors = ckpt.write_checkpoint(path)
    calibration = os.path.join(os.path.dirname(path), "calibration.safetensors")
    ckpt.write_calibration(calibration, tensors)
    return path, tensors, calibration


@pytest.fixture
def three(start_server):
    return [start_server() for _ in range(3)]


def _files(folder: str) -> dict:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, folder)] = f.read()
    return out


def _single(server, folder, out, **kwargs):
    with bonsai.Client(server.target, timeout=120) as client:
        return client.compress(folder, output_path=out, **kwargs)


def _parallel(servers, folder, out, **kwargs) -> ParallelResult:
    with bonsai.Client([s.target for s in servers], timeout=120) as client:
        result = client.compress(folder, output_path=out, parallel=True, **kwargs)
    assert isinstance(result, ParallelResult)
    return result


def _assert_same_output(single_dir, parallel_dir):
    single, parallel = _files(single_dir), _files(parallel_dir)
    assert sorted(single) == sorted(parallel)
    for name in single:
        assert single[name] == parallel[name], f"{name} differs from one server's output"


def _assert_same_report(single: pb.CompressionReport, merged: pb.CompressionReport):
    strip = lambda rows: [(t.name, t.file, t.nonzero_before, t.nonzero_after, t.method, t.rule, t.params)  # noqa
                          for t in rows]
    assert strip(merged.tensors) == strip(single.tensors)
    for field in ("params", "prunable_params", "nonzero_after", "model_bytes_in", "model_bytes_out",
                  "dense_bytes", "packed_bytes", "params_after"):
        assert getattr(merged.totals, field) == getattr(single.totals, field), field
    assert merged.totals.sparsity == pytest.approx(single.totals.sparsity)
    assert {(f.name, f.sha256, f.bytes_out) for f in merged.files} == \
           {(f.name, f.sha256, f.bytes_out) for f in single.files}
    assert list(merged.warnings) == list(single.warnings)


def _global_kwargs():
    return dict(method="magnitude", sparsity=0.55, scope="global")


# ---------------------------------------------------------------- exact threshold


def test_global_magnitude_is_byte_identical_and_splits_ties_across_shards(three, folder, tmp_path):
    path, tensors, _ = folder
    single = _single(three[0], path, tmp_path / "single", **_global_kwargs())
    result = _parallel(three, path, tmp_path / "parallel", **_global_kwargs())
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    _assert_same_report(single.report, result.report)
    assert len(result.shard_jobs) == 6 and all(j.report is not None for j in result.shard_jobs)
    assert len({j.replica for j in result.shard_jobs}) == 3, "every replica should take a job"
    assert result.summary_bytes[1] > 0 and result.summary_bytes[2] > 0

    # numpy's selection, independent of both paths.
    expected = ckpt.expected_global_mask(tensors, SELECTED, 0.55)
    out = {}
    for shard in ckpt.SHARDS:
        out.update(_read_floats(os.path.join(tmp_path / "parallel", shard)))
    for name in SELECTED:
        np.testing.assert_array_equal(out[name] == 0, expected[name], err_msg=name)
    # The threshold falls on a value held by weights of several shards, some
    # of which are pruned and some kept: the tie order is what is tested.
    ordered = ckpt.global_order_magnitudes(tensors, SELECTED)
    flat = np.concatenate([m for _, m in ordered])
    k = int(np.rint(0.55 * flat.size))
    threshold = np.sort(flat, kind="stable")[k - 1]
    tie_shards = {tensors[n][0] for n, m in ordered if (m == threshold).any()}
    assert len(tie_shards) >= 3
    kept_ties = sum(int(((out[n] != 0) & (np.abs(tensors[n][2]) == threshold)).sum()) for n in SELECTED)
    assert kept_ties > 0 and (flat == threshold).sum() > kept_ties


def _read_floats(path) -> dict:
    """A shard's tensors as float32 (BF16 widened), from the raw bytes."""
    with open(path, "rb") as f:
        data = f.read()
    header = safetensors_io.read_header(data)
    base = 8 + int.from_bytes(data[:8], "little")
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = np.frombuffer(data[base + begin:base + end], dtype="<u2" if entry["dtype"] == "BF16" else "<f4")
        if entry["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.reshape(entry["shape"])
    return out


def test_recipe_with_a_global_rule_and_layer_rule(three, folder, tmp_path):
    path, _, _ = folder
    rules = [{"tensor_regex": r"mlp\.", "method": "magnitude", "sparsity": 0.6, "scope": "global"},
             {"tensor_regex": r"self_attn\.", "method": "magnitude", "sparsity": 0.3, "scope": "global"},
             {"tensor_regex": r"layernorm", "method": "none"}]
    kwargs = dict(method="", rules=rules, overrides={"model.layers.4.mlp.up_proj.weight": 0.2})
    single = _single(three[0], path, tmp_path / "single", **kwargs)
    result = _parallel(three, path, tmp_path / "parallel", **kwargs)
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    _assert_same_report(single.report, result.report)


def test_layer_scope_needs_no_exchange(three, folder, tmp_path):
    path, _, _ = folder
    kwargs = dict(method="magnitude", sparsity=0.5, scope="layer")
    single = _single(three[0], path, tmp_path / "single", **kwargs)
    result = _parallel(three, path, tmp_path / "parallel", **kwargs)
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    _assert_same_report(single.report, result.report)
    assert result.summary_bytes == {}


def test_a_global_job_plans_no_more_jobs_than_this_client_may_have_admitted(start_server, folder, tmp_path):
    # One replica with 3 slots, of which one client may hold 2: six shards
    # must go as at most two groups. Planned as three jobs, the third could
    # never be admitted while the first two wait for its summary.
    path, _, _ = folder
    srv = start_server(["--max_queued_jobs=2", "--max_jobs_per_peer=2"], workers=2)
    single = _single(srv, path, tmp_path / "single", **_global_kwargs())
    with bonsai.Client([srv.target], timeout=120) as client:
        result = client.compress(path, output_path=tmp_path / "parallel", parallel=True, **_global_kwargs())
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    _assert_same_report(single.report, result.report)
    assert len(result.shard_jobs) == 2


def test_the_zstd_figure_of_a_big_model_is_one_servers_at_one_servers_cost(start_server, tmp_path):
    """The report's zstd size is exact over the first 64 MiB of a model's
    output and estimated from samples after. Each shard job is told where its
    output starts in the whole model's (output_offset_bytes), so the shard
    jobs together compress exactly the frames one job would: the same figure,
    the same 'estimated' flag, and not 64 MiB of exact zstd per shard job
    (which cost ~0.4 s of server CPU per extra job)."""
    rng = np.random.default_rng(5)
    path = tmp_path / "model"
    path.mkdir()
    for i in range(6):  # 6 x 14 MiB: shards 5 and 6 lie past the exact prefix
        tensor = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((3584, 1024), dtype=np.float32)}
        (path / f"model-0000{i + 1}-of-00006.safetensors").write_bytes(safetensors_io.dumps(tensor))
    kwargs = dict(method="magnitude", sparsity=0.5, scope="layer")
    servers = [start_server() for _ in range(2)]
    single = _single(servers[0], str(path), tmp_path / "single", **kwargs)
    result = _parallel(servers, str(path), tmp_path / "parallel", **kwargs)
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    assert single.report.totals.model_bytes_out_zstd_estimated
    assert result.report.totals.model_bytes_out_zstd_estimated
    assert result.report.totals.model_bytes_out_zstd == single.report.totals.model_bytes_out_zstd
    exact = [j for j in result.shard_jobs if not j.report.totals.model_bytes_out_zstd_estimated]
    assert 3 <= len(exact) < len(result.shard_jobs)


def test_a_global_job_plans_one_job_per_worker_and_layer_scope_one_per_shard(start_server, folder, tmp_path):
    """The global exchange holds every job in flight, and a replica computes on
    its workers only: more jobs than workers would add per-job costs and
    contention, nothing else (bench/parallel_global.py: 5 jobs on one 2-worker
    replica cost 1.14-1.37x one job's CPU, 2 jobs ~1.04x). Layer scope has no
    exchange, so each shard is a job that queues for its turn."""
    path, _, _ = folder
    srv = start_server(workers=2)
    with bonsai.Client([srv.target], timeout=120) as client:
        glob = client.compress(path, output_path=tmp_path / "global", parallel=True, **_global_kwargs())
        layer = client.compress(path, output_path=tmp_path / "layer", parallel=True,
                                method="magnitude", sparsity=0.5, scope="layer")
    assert len(glob.shard_jobs) == 2
    assert len(layer.shard_jobs) == len(ckpt.SHARDS)
    _single(srv, path, tmp_path / "single", **_global_kwargs())
    _assert_same_output(tmp_path / "single", tmp_path / "global")


def test_sparsegpt_with_calibration_is_byte_identical(three, folder, tmp_path):
    path, _, calibration = folder
    kwargs = dict(method="sparsegpt", sparsity=0.5, calibration=calibration)
    single = _single(three[0], path, tmp_path / "single", **kwargs)
    result = _parallel(three, path, tmp_path / "parallel", **kwargs)
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    _assert_same_report(single.report, result.report)
    assert any("calibration entry names no tensor" in w for w in result.report.warnings)


def test_packed_output_rewrites_the_index_as_one_server_does(three, folder, tmp_path):
    path, _, _ = folder
    kwargs = dict(_global_kwargs(), output="packed", sparsity=0.8)
    single = _single(three[0], path, tmp_path / "single", **kwargs)
    index = (tmp_path / "single" / ckpt.INDEX).read_bytes()
    assert index != (open(os.path.join(path, ckpt.INDEX), "rb").read()), "packing renamed nothing"
    result = _parallel(three, path, tmp_path / "parallel", **kwargs)
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    _assert_same_report(single.report, result.report)


def test_in_memory_result_matches(three, folder, tmp_path):
    path, _, _ = folder
    _single(three[0], path, tmp_path / "single", **_global_kwargs())
    with bonsai.Client([s.target for s in three], timeout=120) as client:
        result = client.compress(path, parallel=True, **_global_kwargs())
    assert result.files == _files(tmp_path / "single")


# ---------------------------------------------------------------- failures


def _admitted(server) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for name in ("bonsai_jobs_running", "bonsai_jobs_queued"):
        m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
        total += float(m.group(1)) if m else 0.0
    return total


def _kill_when_busy(victims, watched, stop: threading.Event):
    """SIGKILLs `victims` as soon as `watched` has admitted a job."""
    while not stop.is_set():
        try:
            if _admitted(watched) > 0:
                for v in victims:
                    v.kill()
                return
        except OSError:
            return
        time.sleep(0.005)


def _bigger(tmp_path_factory_dir):
    path = os.path.join(tmp_path_factory_dir, "model-big")
    ckpt.write_checkpoint(path, seed=3, rows=4096)  # ~3 MB a shard: jobs last long enough to be hit
    return path


def test_a_replica_killed_mid_job_costs_only_its_shard(three, tmp_path):
    path = _bigger(str(tmp_path))
    single = _single(three[0], path, tmp_path / "single", **_global_kwargs())
    stop = threading.Event()
    killer = threading.Thread(target=_kill_when_busy, args=([three[1]], three[1], stop), daemon=True)
    killer.start()
    try:
        result = _parallel(three, path, tmp_path / "parallel", **_global_kwargs())
    finally:
        stop.set()
        killer.join(10)
    assert not three[1].alive()
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    _assert_same_report(single.report, result.report)
    failed = [a for j in result.shard_jobs for a in j.attempts]
    assert any(three[1].target in a for a in failed), f"no job was hit by the kill: {failed}"
    assert all(j.replica != three[1].target for j in result.shard_jobs)


def test_a_replica_that_stops_answering_times_out_and_its_shard_moves(three, tmp_path, monkeypatch):
    import signal
    from bonsai import parallel
    monkeypatch.setattr(parallel, "STALL_SECONDS", 3.0)
    path = _bigger(str(tmp_path))
    single = _single(three[0], path, tmp_path / "single", **_global_kwargs())
    stopped = threading.Event()

    def stop_when_busy():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _admitted(three[2]) > 0:
                os.kill(three[2].pid, signal.SIGSTOP)
                stopped.set()
                return
            time.sleep(0.005)
    watcher = threading.Thread(target=stop_when_busy, daemon=True)
    watcher.start()
    try:
        result = _parallel(three, path, tmp_path / "parallel", **_global_kwargs())
    finally:
        watcher.join(10)
        os.kill(three[2].pid, signal.SIGCONT)
    assert stopped.is_set()
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    _assert_same_report(single.report, result.report)
    stalls = [a for j in result.shard_jobs for a in j.attempts if three[2].target in a]
    assert stalls and all("DEADLINE_EXCEEDED" in a and "said nothing" in a for a in stalls), stalls
    assert all(j.replica != three[2].target for j in result.shard_jobs)


def test_all_replicas_killed_gives_a_clear_error_and_no_output(three, tmp_path):
    path = _bigger(str(tmp_path))
    out = tmp_path / "out" / "model"
    stop = threading.Event()
    killer = threading.Thread(target=_kill_when_busy, args=(three, three[0], stop), daemon=True)
    killer.start()
    try:
        with pytest.raises(bonsai.BonsaiError) as err:
            _parallel(three, path, out, **_global_kwargs())
    finally:
        stop.set()
        killer.join(10)
    assert err.value.code_name == "UNAVAILABLE"
    assert "failed on every replica" in err.value.message
    assert not (tmp_path / "out").exists(), "a failed parallel job left files behind"


def test_a_refusing_replica_sends_its_shards_elsewhere(start_server, folder, tmp_path):
    path, _, _ = folder
    refusing = start_server(flags=["--max_queued_jobs=0"], workers=1)
    others = [start_server(), start_server()]
    with bonsai.Client(refusing.target, timeout=60) as holder:
        held = HeldJob(holder, ckpt_bytes())
        assert held.admitted.wait(30)
        try:
            single = _single(others[0], path, tmp_path / "single", **_global_kwargs())
            result = _parallel([refusing] + others, path, tmp_path / "parallel", **_global_kwargs())
        finally:
            held.finish()
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    _assert_same_report(single.report, result.report)
    refusals = [a for j in result.shard_jobs for a in j.attempts if refusing.target in a]
    assert refusals and all("RESOURCE_EXHAUSTED" in a for a in refusals)
    assert all(j.replica != refusing.target for j in result.shard_jobs)


def ckpt_bytes() -> bytes:
    values = np.arange(64, dtype=np.float32).reshape(8, 8)
    return safetensors_io.dumps({"w": values})


# ---------------------------------------------------------------- pieces


def test_bad_request_fails_at_once_with_the_servers_message(three, folder, tmp_path):
    path, _, _ = folder
    with pytest.raises(bonsai.BonsaiError) as err:
        _parallel(three, path, tmp_path / "out", method="magnitude", sparsity=0.5, include=["("])
    assert err.value.code_name == "INVALID_ARGUMENT" and "does not compile" in err.value.message
    assert not (tmp_path / "out").exists()


def test_shard_groups_are_consecutive_and_balanced():
    assert shard_groups([5, 5, 5, 5, 5, 5], 3) == [[0, 1], [2, 3], [4, 5]]
    assert shard_groups([1, 1, 10, 1], 2) == [[0, 1, 2], [3]]
    groups = shard_groups([3] * 7, 7)
    assert groups == [[i] for i in range(7)]
    assert sum(shard_groups([2] * 30, 4), []) == list(range(30))


def test_prune_count_rounds_half_to_even_like_the_server():
    assert global_cut.prune_count(0.5, 5) == 2   # 2.5 -> 2
    assert global_cut.prune_count(0.5, 7) == 4   # 3.5 -> 4
    assert global_cut.prune_count(0.0, 9) == 0
    assert global_cut.prune_count(0.9999, 3) == 3


def _server_summary(phase, shard_values, bucket=None):
    """What a job sends: the histograms the server builds, here from numpy."""
    bits = np.concatenate([np.abs(v).view(np.uint32).ravel() for v in shard_values]) if shard_values else \
        np.zeros(0, np.uint32)
    if phase == 1:
        keys = bits >> 16
    else:
        keys = bits[(bits >> 16) == bucket] & 0xFFFF
    values, counts = np.unique(keys, return_counts=True)
    return pb.GlobalSummary(phase=phase, groups=[pb.GlobalGroupSummary(
        rule=-1, sparsity=0.37, weights=int(bits.size) if phase == 1 else 0,
        values=values.tolist(), counts=counts.tolist())])


@pytest.mark.parametrize("seed", range(5))
def test_cuts_from_summaries_match_a_stable_sort(seed):
    rng = np.random.default_rng(seed)
    levels = rng.choice(np.float32([0.5, 0.25, 0.75, 1.0, 0.125, 3.0]), size=6, replace=False)
    shards = [[rng.choice(levels, size=int(n)) * rng.choice([-1, 1], size=int(n))
               for n in rng.integers(0, 300, size=2)] for _ in range(5)]
    shards = [[v.astype(np.float32) for v in s] for s in shards]
    cuts = global_cut.GlobalCuts(len(shards))
    never = threading.Event()
    for j, s in enumerate(shards):
        cuts.submit(j, _server_summary(1, s))
    buckets = [cuts.decision(j, 1, never).groups[0].bucket for j in range(len(shards))]
    assert len(set(buckets)) == 1
    for j, s in enumerate(shards):
        cuts.submit(j, _server_summary(2, s, buckets[0]))
    pruned = []
    for j, s in enumerate(shards):
        cut = cuts.decision(j, 2, never).groups[0]
        ties = cut.ties_to_prune
        for v in s:  # the server's MagnitudeMasker, in order
            bits = np.abs(v).view(np.uint32)
            mask = bits < cut.threshold_bits
            for i in np.flatnonzero(bits == cut.threshold_bits):
                if ties == 0:
                    break
                mask[i] = True
                ties -= 1
            pruned.append(mask if not cut.prune_nothing else np.zeros(v.size, bool))
    flat = np.concatenate([np.abs(v) for s in shards for v in s])
    k = global_cut.prune_count(0.37, flat.size)
    expected = np.zeros(flat.size, bool)
    expected[np.argsort(flat, kind="stable")[:k]] = True
    np.testing.assert_array_equal(np.concatenate(pruned), expected)


# ---------------------------------------------------------------- every method, the CLI


@pytest.mark.parametrize("kwargs", [
    dict(method="nm", options={"n": 2, "m": 4}),
    dict(method="structured", sparsity=0.25),
    dict(method="ternarize"),
    dict(method="rtn", options={"bits": 4, "group_size": 16}),
    dict(method="wanda", sparsity=0.5, calibration=True),
    dict(method="gptq", options={"bits": 4}, calibration=True),
], ids=lambda k: k["method"])
def test_every_method_is_byte_identical(three, folder, tmp_path, kwargs):
    path, _, calibration = folder
    kwargs = dict(kwargs)
    if kwargs.pop("calibration", False):
        kwargs["calibration"] = calibration
    single = _single(three[0], path, tmp_path / "single", **kwargs)
    result = _parallel(three, path, tmp_path / "parallel", **kwargs)
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")
    _assert_same_report(single.report, result.report)


def test_cli_spreads_by_default_over_several_targets(three, folder, tmp_path):
    path, _, _ = folder
    _single(three[0], path, tmp_path / "single", **_global_kwargs())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run(
        [sys.executable, "-m", "bonsai", "--target", ",".join(s.target for s in three), "--timeout", "120",
         "compress", path, "-o", str(tmp_path / "parallel"), "--scope", "global", "--sparsity", "0.55",
         "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("job ") == 6 and "on 127.0.0.1:" in run.stdout
    _assert_same_output(tmp_path / "single", tmp_path / "parallel")


# ---------------------------------------------------------------- the protocol, misused


def _exchange_call(server, decisions, half_close_early=False):
    """A raw Compress with exchange_global_cuts: `decisions(summary)` gives
    what to answer each summary with (None: half-close instead)."""
    import queue
    import grpc
    model = safetensors_io.dumps({"a.weight": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8),
                                  "b.weight": np.linspace(-2, 2, 64, dtype=np.float32).reshape(8, 8)})
    summaries: "queue.Queue" = queue.Queue()
    spec = pb.CompressionSpec(method="magnitude", sparsity=0.5, scope=pb.SCOPE_GLOBAL, exchange_global_cuts=True,
                              files=[pb.FileDeclaration(name="model.safetensors", size_bytes=len(model))])

    def requests():
        yield pb.CompressRequest(spec=spec)
        yield pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=model))
        if half_close_early:
            return
        while True:
            summary = summaries.get(timeout=30)
            answer = decisions(summary)
            if answer is None:
                return
            yield pb.CompressRequest(global_decision=answer)
            if summary.phase == 2:
                return  # the last decision: half-close, as the protocol asks

    channel = grpc.insecure_channel(server.target)
    stub = __import__("bonsai.v1.compressor_pb2_grpc", fromlist=["x"]).CompressorStub(channel)
    kinds = []
    try:
        for response in stub.Compress(requests(), timeout=60):
            kinds.append(response.WhichOneof("payload"))
            if kinds[-1] == "global_summary":
                summaries.put(response.global_summary)
        return None, kinds
    except grpc.RpcError as err:
        return err, kinds
    finally:
        channel.close()


def test_an_exchange_answered_by_hand_gives_the_one_job_result(server):
    def answer(summary):
        group = summary.groups[0]
        if summary.phase == 1:
            assert group.weights == 128 and sum(group.counts) == 128
            return pb.GlobalDecision(phase=1, groups=[pb.GlobalGroupDecision(rule=-1, bucket=group.values[0])])
        return pb.GlobalDecision(phase=2, groups=[pb.GlobalGroupDecision(rule=-1, prune_nothing=True)])
    err, kinds = _exchange_call(server, answer)
    assert err is None, err
    assert kinds.count("global_summary") == 2 and kinds[-1] == "report"


@pytest.mark.parametrize("case, expected", [
    ("wrong_phase", "it says phase 2"),
    ("too_many_ties", "exceeds the"),
    ("outside_bucket", "outside the decided bucket"),
    ("no_groups", "holds 0 groups"),
    ("half_close", "half-closed before answering"),
])
def test_a_decision_that_does_not_fit_is_invalid_argument(server, case, expected):
    chosen = {}

    def answer(summary):
        group = summary.groups[0]
        if summary.phase == 1:
            if case == "wrong_phase":
                return pb.GlobalDecision(phase=2, groups=[pb.GlobalGroupDecision(rule=-1)])
            if case == "no_groups":
                return pb.GlobalDecision(phase=1)
            if case == "half_close":
                return None
            chosen["bucket"] = group.values[0]
            return pb.GlobalDecision(phase=1, groups=[pb.GlobalGroupDecision(rule=-1, bucket=group.values[0])])
        if case == "too_many_ties":
            return pb.GlobalDecision(phase=2, groups=[pb.GlobalGroupDecision(
                rule=-1, threshold_bits=(chosen["bucket"] << 16) | group.values[0], ties_to_prune=10**6)])
        return pb.GlobalDecision(phase=2, groups=[pb.GlobalGroupDecision(rule=-1, threshold_bits=0xFFFF0000)])
    err, _ = _exchange_call(server, answer)
    assert err is not None and err.code().name == "INVALID_ARGUMENT", err
    assert expected in err.details()


def test_a_decision_without_the_exchange_is_refused(server):
    import grpc
    channel = grpc.insecure_channel(server.target)
    stub = __import__("bonsai.v1.compressor_pb2_grpc", fromlist=["x"]).CompressorStub(channel)
    spec = pb.CompressionSpec(method="magnitude", sparsity=0.5,
                              files=[pb.FileDeclaration(name="m.safetensors", size_bytes=8)])
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Compress(iter([pb.CompressRequest(spec=spec),
                                 pb.CompressRequest(global_decision=pb.GlobalDecision(phase=1))]), timeout=30))
    channel.close()
    assert err.value.code().name == "INVALID_ARGUMENT"
    assert "does not set exchange_global_cuts" in err.value.details()


# ---------------------------------------------------------------- connection age


def test_connection_age_closes_idle_connections_and_lets_calls_finish(start_server):
    import grpc
    srv = start_server(flags=["--max_connection_age_seconds=1"])
    states = []
    channel = grpc.insecure_channel(srv.target)
    channel.subscribe(states.append, try_to_connect=True)
    stub = __import__("bonsai.v1.compressor_pb2_grpc", fromlist=["x"]).CompressorStub(channel)
    stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=10)
    with bonsai.Client(srv.target, timeout=60) as client:
        held = HeldJob(client, ckpt_bytes())  # a call older than the age
        assert held.admitted.wait(30)
        time.sleep(3)  # the age (1 s, with gRPC's jitter) passes for both connections
        model = held.finish()
    assert model, "the call that outlived the connection's age did not finish"
    ready = states.index(grpc.ChannelConnectivity.READY)
    assert grpc.ChannelConnectivity.IDLE in states[ready:], f"the connection was not closed: {states}"
    channel.close()
