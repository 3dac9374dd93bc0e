"""Every malformed request is refused with a status and a message that helps,
and the server goes on serving: each case is followed by a successful job."""
from __future__ import annotations

import io
import json
import struct
import time

import grpc
import numpy as np
import onnx
import pytest
import torch

import bonsai
import models
from bonsai import safetensors_io
from bonsai.v1 import compressor_pb2 as pb
from expect import assert_compress_works, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def raw_compress(c: bonsai.Client, requests) -> None:
    """Sends the requests exactly as given; raises BonsaiError like the library."""
    try:
        for _ in c.stub.Compress(iter(requests), timeout=60):
            pass
    except grpc.RpcError as err:
        raise bonsai.BonsaiError(err.code(), err.details() or "") from None
    raise AssertionError("the server accepted a malformed stream")


def spec_msg(size: int = None, **kw):
    """A spec declaring one file, "model.safetensors", of `size` bytes (none when None)."""
    kw.setdefault("method", "magnitude")
    kw.setdefault("sparsity", 0.5)
    if size is not None:
        kw["files"] = [pb.FileDeclaration(name="model.safetensors", size_bytes=size)]
    return pb.CompressRequest(spec=pb.CompressionSpec(**kw))


def chunk_msg(data: bytes, file: int = 0):
    return pb.CompressRequest(file_chunk=pb.FileChunk(file=file, data=data))


# ---------------------------------------------------------------- protocol

def test_stream_without_spec_is_invalid_argument(strict_client, mlp_safetensors):
    expect_error(INVALID, lambda: raw_compress(strict_client, [chunk_msg(mlp_safetensors)]), "spec")
    assert_compress_works(strict_client, mlp_safetensors)


def test_empty_stream_is_invalid_argument(strict_client, mlp_safetensors):
    expect_error(INVALID, lambda: raw_compress(strict_client, []), "spec")
    assert_compress_works(strict_client, mlp_safetensors)


def test_spec_after_data_is_invalid_argument(strict_client, mlp_safetensors):
    requests = [chunk_msg(mlp_safetensors[:100]), spec_msg(len(mlp_safetensors)), chunk_msg(mlp_safetensors[100:])]
    expect_error(INVALID, lambda: raw_compress(strict_client, requests), "spec")
    assert_compress_works(strict_client, mlp_safetensors)


def test_second_spec_is_invalid_argument(strict_client, mlp_safetensors):
    n = len(mlp_safetensors)
    requests = [spec_msg(n), chunk_msg(mlp_safetensors[:100]), spec_msg(n), chunk_msg(mlp_safetensors[100:])]
    expect_error(INVALID, lambda: raw_compress(strict_client, requests), "spec")
    assert_compress_works(strict_client, mlp_safetensors)


def test_spec_without_model_is_invalid_argument(strict_client, mlp_safetensors):
    expect_error(INVALID, lambda: raw_compress(strict_client, [spec_msg()]), "files")
    assert_compress_works(strict_client, mlp_safetensors)


def test_spec_declaring_a_file_that_never_comes_is_invalid_argument(strict_client, mlp_safetensors):
    expect_error(INVALID, lambda: raw_compress(strict_client, [spec_msg(len(mlp_safetensors))]),
                 "model.safetensors", "0 of")
    assert_compress_works(strict_client, mlp_safetensors)


def test_upload_shorter_than_declared_is_invalid_argument(strict_client, mlp_safetensors):
    requests = [spec_msg(len(mlp_safetensors) + 1000), chunk_msg(mlp_safetensors)]
    expect_error(INVALID, lambda: raw_compress(strict_client, requests), "model.safetensors", "cut short")
    assert_compress_works(strict_client, mlp_safetensors)


def test_upload_longer_than_declared_is_invalid_argument(strict_client, mlp_safetensors):
    requests = [spec_msg(100), chunk_msg(mlp_safetensors)]
    expect_error(INVALID, lambda: raw_compress(strict_client, requests), "declared", "model.safetensors")
    assert_compress_works(strict_client, mlp_safetensors)


def _refused_mid_upload(mlp_safetensors):
    return {
        "more_bytes_than_declared": [spec_msg(100), chunk_msg(mlp_safetensors)],
        "chunk_for_an_undeclared_file": [spec_msg(len(mlp_safetensors)), chunk_msg(mlp_safetensors, file=1)],
        "second_spec": [spec_msg(len(mlp_safetensors)), chunk_msg(mlp_safetensors[:100]),
                        spec_msg(len(mlp_safetensors))],
    }


@pytest.mark.parametrize("case", ["more_bytes_than_declared", "chunk_for_an_undeclared_file", "second_spec"])
def test_upload_refused_mid_stream_frees_its_job_slot_at_once(start_server, mlp_safetensors, case):
    """A job starts at admission and waits for its bytes; when its call is
    refused mid-upload, the job must end with it, not wait out
    --receive_idle_timeout_seconds holding the only worker."""
    srv = start_server(["--max_queued_jobs=0"], workers=1)
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        expect_error(INVALID, lambda: raw_compress(c, _refused_mid_upload(mlp_safetensors)[case]))
        deadline = time.monotonic() + 5
        while True:
            try:
                assert_compress_works(c, mlp_safetensors)
                break
            except bonsai.BonsaiError as err:
                if err.code != EXHAUSTED or time.monotonic() > deadline:
                    raise AssertionError(f"the refused job still holds the worker 5 s later: {err}") from None
                time.sleep(0.2)


# ---------------------------------------------------------------- the spec

@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan")])
def test_sparsity_out_of_range_is_invalid_argument(strict_client, mlp_safetensors, sparsity):
    expect_error(INVALID, lambda: strict_client.compress(mlp_safetensors, sparsity=sparsity), "sparsity")
    assert_compress_works(strict_client, mlp_safetensors)


def test_override_out_of_range_is_invalid_argument(strict_client, mlp_safetensors):
    expect_error(INVALID, lambda: strict_client.compress(mlp_safetensors, overrides={"fc1.weight": 2.0}),
                 "sparsity")
    assert_compress_works(strict_client, mlp_safetensors)


def test_unknown_method_is_invalid_argument(strict_client, mlp_safetensors):
    expect_error(INVALID, lambda: strict_client.compress(mlp_safetensors, method="prune-it-all"), "prune-it-all")
    assert_compress_works(strict_client, mlp_safetensors)


@pytest.mark.parametrize("field", ["include", "exclude"])
def test_bad_regex_is_invalid_argument(strict_client, mlp_safetensors, field):
    expect_error(INVALID, lambda: strict_client.compress(mlp_safetensors, **{field: ["fc(["]}), "fc([")
    assert_compress_works(strict_client, mlp_safetensors)


# ---------------------------------------------------------------- method options
# Specs written straight to the stub: the library cannot send these, so they
# show what any other client meets.

def _refused_spec(c: bonsai.Client, mlp_safetensors: bytes, spec: pb.CompressionSpec):
    """Sends `spec` (declaring the model) and the model; returns the refusal's
    gRPC code, message and bonsai-error-reason."""
    spec.files.append(pb.FileDeclaration(name="model.safetensors", size_bytes=len(mlp_safetensors)))
    requests = [pb.CompressRequest(spec=spec), chunk_msg(mlp_safetensors)]
    with pytest.raises(grpc.RpcError) as info:
        for _ in c.stub.Compress(iter(requests), timeout=60):
            pass
    reason = dict(info.value.trailing_metadata() or ()).get("bonsai-error-reason")
    return info.value.code(), info.value.details(), reason


@pytest.mark.parametrize("method,options,named", [
    ("magnitude", pb.MethodOptions(structured=pb.StructuredOptions(norm=pb.NORM_L1)),
     "method 'magnitude' does not read options.structured (StructuredOptions, the options of method "
     "'structured'); it takes no options"),
    ("nm", pb.MethodOptions(sparsegpt=pb.SparseGptOptions(nm=pb.NmOptions(n=2, m=4))),
     "method 'nm' does not read options.sparsegpt (SparseGptOptions, the options of method 'sparsegpt'); "
     "its own go in options.nm (NmOptions)"),
    ("gptq", pb.MethodOptions(rtn=pb.QuantOptions(bits=4)),
     "method 'gptq' does not read options.rtn (QuantOptions"),
])
def test_another_methods_options_message_is_invalid_spec_naming_both(strict_client, mlp_safetensors,
                                                                     method, options, named):
    spec = pb.CompressionSpec(method=method, sparsity=0.5, options=options)
    code, message, reason = _refused_spec(strict_client, mlp_safetensors, spec)
    assert (code, reason) == (INVALID, "INVALID_SPEC")
    assert named in message
    assert_compress_works(strict_client, mlp_safetensors)


def test_a_rules_options_for_another_method_are_invalid_spec_naming_the_rule(strict_client, mlp_safetensors):
    spec = pb.CompressionSpec(rules=[
        pb.Rule(tensor_regex="fc1", method="magnitude", sparsity=0.5),
        pb.Rule(tensor_regex="fc2", method="wanda", sparsity=0.5, name="second",
                options=pb.MethodOptions(nm=pb.NmOptions(n=2, m=4)))])
    code, message, reason = _refused_spec(strict_client, mlp_safetensors, spec)
    assert (code, reason) == (INVALID, "INVALID_SPEC")
    assert message.startswith("second: method 'wanda' does not read options.nm (NmOptions")
    assert "its own go in options.wanda (WandaOptions)" in message


def test_an_older_clients_flat_options_are_invalid_spec_not_dropped(strict_client, mlp_safetensors):
    # MethodOptions field 8 was `bits` before each method had its own message:
    # read as nothing, sparsegpt would prune without the quantization asked for.
    flat_bits_4 = pb.MethodOptions.FromString(b"\x40\x04")
    spec = pb.CompressionSpec(method="sparsegpt", sparsity=0.5, options=flat_bits_4)
    code, message, reason = _refused_spec(strict_client, mlp_safetensors, spec)
    assert (code, reason) == (INVALID, "INVALID_SPEC")
    assert "options carry fields this server does not know (options.8)" in message
    assert "update the client" in message


# ---------------------------------------------------------------- limits

@pytest.fixture
def small_server(start_server):
    return start_server(["--max_model_bytes=1048576"])


def test_model_declared_over_max_model_bytes_is_resource_exhausted(small_server, mlp_safetensors):
    big = safetensors_io.dumps({"w.weight": np.ones((512, 1024), np.float32)})  # 2 MiB
    with bonsai.Client(small_server.target, timeout=60) as c:  # retries on: it must not retry this
        expect_error(EXHAUSTED, lambda: c.compress(big), "max_model_bytes")
        assert_compress_works(c, mlp_safetensors)


class _Unsized(io.RawIOBase):
    """A stream with no size and no seek, so the spec cannot declare a size."""

    def __init__(self, data: bytes):
        self._inner = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        return self._inner.readinto(buffer)


def test_model_of_unknown_size_is_refused_before_any_call(small_server, mlp_safetensors):
    """Sizes are exact and required: a stream that cannot tell its size is
    refused by the client; the server never sees an undeclared upload."""
    big = safetensors_io.dumps({"w.weight": np.ones((512, 1024), np.float32)})
    with bonsai.Client(small_server.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        with pytest.raises(ValueError, match="size"):
            c.compress(_Unsized(big))
        assert_compress_works(c, mlp_safetensors)


def test_bytes_past_a_small_declared_size_are_invalid_argument(small_server, mlp_safetensors):
    """A small declaration cannot smuggle in an upload over --max_model_bytes."""
    big = safetensors_io.dumps({"w.weight": np.ones((512, 1024), np.float32)})
    with bonsai.Client(small_server.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        requests = [spec_msg(100)] + [chunk_msg(big[i:i + (1 << 20)]) for i in range(0, len(big), 1 << 20)]
        expect_error(INVALID, lambda: raw_compress(c, requests), "declared")
        assert_compress_works(c, mlp_safetensors)


def test_chunk_over_max_chunk_bytes_is_invalid_argument(strict_client, mlp_safetensors):
    limit = strict_client.capabilities().limits.max_chunk_bytes
    requests = [spec_msg(limit + 1), chunk_msg(b"\0" * (limit + 1))]
    expect_error(INVALID, lambda: raw_compress(strict_client, requests), "chunk")
    assert_compress_works(strict_client, mlp_safetensors)


# ---------------------------------------------------------------- not a model

def _torch_save(obj, zip_format: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


def _safetensors_with_header(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _good_safetensors() -> bytes:
    return safetensors_io.dumps({"a.weight": np.ones((4, 4), np.float32), "b.weight": np.ones((4, 8), np.float32)})


def _bad_models():
    good = _good_safetensors()
    header_len = struct.unpack_from("<Q", good)[0]
    f32 = lambda shape, begin, end: {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}  # noqa: E731
    cases = {
        "random_bytes": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "text": b"this is a README, not a model\n" * 20,
        "torch_save_zip": _torch_save(models.build_mlp().state_dict(), True),
        "torch_save_legacy_pickle": _torch_save(models.build_mlp().state_dict(), False),
        "safetensors_shorter_than_its_length_prefix": good[:5],
        "safetensors_header_length_past_the_end": struct.pack("<Q", 1 << 40) + good[8:],
        "safetensors_header_cut_short": good[:8 + header_len // 2],
        "safetensors_data_cut_short": good[:-10],
        "safetensors_header_not_json": struct.pack("<Q", 16) + b"{not json here!}" + b"\0" * 64,
        "safetensors_offsets_past_the_data": _safetensors_with_header({"a": f32([4, 4], 0, 128)}, b"\0" * 64),
        "safetensors_offsets_disagree_with_shape": _safetensors_with_header({"a": f32([4, 4], 0, 32)}, b"\0" * 32),
        "safetensors_overlapping_tensors": _safetensors_with_header(
            {"a": f32([2, 4], 0, 32), "b": f32([2, 4], 16, 48)}, b"\0" * 48),
        "safetensors_unknown_dtype": _safetensors_with_header(
            {"a": {"dtype": "F7", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 16),
    }
    return cases


BAD_MODELS = _bad_models()
HINTS = {"torch_save_zip": "safetensors", "torch_save_legacy_pickle": "safetensors"}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_bytes_are_invalid_argument(strict_client, mlp_safetensors, case):
    words = (HINTS[case],) if case in HINTS else ()
    expect_error(INVALID, lambda: strict_client.compress(BAD_MODELS[case]), *words)
    assert_compress_works(strict_client, mlp_safetensors)


def _onnx_with_wrong_raw_data_length(onnx_bytes: bytes) -> bytes:
    model = onnx.load_from_string(onnx_bytes)
    init = next(i for i in model.graph.initializer if i.name == "fc1.weight")
    init.raw_data = init.raw_data[:-12]
    return model.SerializeToString()


def _onnx_with_external_data(onnx_bytes: bytes) -> bytes:
    model = onnx.load_from_string(onnx_bytes)
    init = next(i for i in model.graph.initializer if i.name == "fc1.weight")
    length = len(init.raw_data)
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(length))):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def test_onnx_with_wrong_raw_data_length_is_invalid_argument(strict_client, mlp_onnx, mlp_safetensors):
    expect_error(INVALID, lambda: strict_client.compress(_onnx_with_wrong_raw_data_length(mlp_onnx)), "fc1.weight")
    assert_compress_works(strict_client, mlp_safetensors)


def test_onnx_with_external_data_is_invalid_argument(strict_client, mlp_onnx, mlp_safetensors):
    expect_error(INVALID, lambda: strict_client.compress(_onnx_with_external_data(mlp_onnx)), "external")
    assert_compress_works(strict_client, mlp_safetensors)


def test_truncated_onnx_is_invalid_argument(strict_client, mlp_onnx, mlp_safetensors):
    expect_error(INVALID, lambda: strict_client.compress(mlp_onnx[: len(mlp_onnx) // 2]))
    assert_compress_works(strict_client, mlp_safetensors)


# ---------------------------------------------------------------- inspect and calibration

def test_inspect_over_max_model_bytes_is_resource_exhausted(small_server, mlp_safetensors):
    big = safetensors_io.dumps({"w.weight": np.ones((512, 1024), np.float32)})
    with bonsai.Client(small_server.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        expect_error(EXHAUSTED, lambda: c.inspect(big), "max_model_bytes")
        assert c.inspect(mlp_safetensors).total_params > 0


def test_inspect_spec_after_data_is_invalid_argument(strict_client, mlp_safetensors):
    """Inspect's spec declares the files, so it may only come first."""
    def call(requests):
        try:
            return strict_client.stub.Inspect(iter(requests), timeout=60)
        except grpc.RpcError as err:
            raise bonsai.BonsaiError(err.code(), err.details() or "") from None
    files = [pb.FileDeclaration(name="model.safetensors", size_bytes=len(mlp_safetensors))]

    def chunk(data):
        return pb.InspectRequest(file_chunk=pb.FileChunk(file=0, data=data))
    assert call([pb.InspectRequest(spec=pb.InspectSpec(files=files)), chunk(mlp_safetensors)]).total_params > 0
    requests = [chunk(mlp_safetensors[:100]), pb.InspectRequest(spec=pb.InspectSpec(files=files)),
                chunk(mlp_safetensors[100:])]
    expect_error(INVALID, lambda: call(requests), "spec")
    assert strict_client.inspect(mlp_safetensors).total_params > 0


def test_calibration_over_max_calibration_bytes_is_resource_exhausted(start_server, mlp_safetensors):
    srv = start_server(["--max_calibration_bytes=1000"])
    calib = safetensors_io.dumps({"fc1.weight.gram": np.eye(32, dtype=np.float32)})
    with bonsai.Client(srv.target, timeout=60) as c:
        expect_error(EXHAUSTED, lambda: c.compress(mlp_safetensors, method="wanda", calibration=calib),
                     "max_calibration_bytes")
        assert_compress_works(c, mlp_safetensors)


def test_calibration_that_is_not_safetensors_is_invalid_argument(strict_client, mlp_safetensors):
    expect_error(INVALID, lambda: strict_client.compress(mlp_safetensors, method="wanda",
                                                         calibration=b"not calibration data" * 10),
                 "safetensors")
    assert_compress_works(strict_client, mlp_safetensors)


def test_calibration_of_wrong_dimension_is_invalid_argument(strict_client, mlp_safetensors):
    calib = safetensors_io.dumps({"fc1.weight.gram": np.eye(7, dtype=np.float32),
                                  "fc1.weight.samples": np.array([10], np.int64)})
    expect_error(INVALID, lambda: strict_client.compress(mlp_safetensors, method="wanda", include=["fc1"],
                                                         include_only=True, calibration=calib), "fc1.weight")
    assert_compress_works(strict_client, mlp_safetensors)


def test_method_needing_calibration_without_it_is_invalid_argument(strict_client, mlp_safetensors):
    expect_error(INVALID, lambda: strict_client.compress(mlp_safetensors, method="sparsegpt"), "calibration")
    assert_compress_works(strict_client, mlp_safetensors)
