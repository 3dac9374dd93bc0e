"""The Python client's own promises, against the real server: files and file
objects stream through, output files appear only verified, progress is
reported, refusals at admission are retried before any model byte is sent,
and the spec carries every option."""
from __future__ import annotations

import hashlib

import grpc
import pytest

import bonsai
from bonsai.v1 import compressor_pb2 as pb
from held_job import HeldJob

FAST_RETRY = bonsai.RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)


def test_output_path_receives_the_verified_model_and_result_model_is_none(client, mlp_safetensors,
                                                                           tmp_path):
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    src.write_bytes(mlp_safetensors)
    events, uploaded, downloaded = [], [], []
    result = client.compress(str(src), method="magnitude", sparsity=0.5, output_path=str(out),
                             progress=events.append,
                             upload_progress=lambda n, t: uploaded.append((n, t)),
                             download_progress=lambda n, t: downloaded.append((n, t)))
    written = out.read_bytes()
    assert result.model is None
    assert [(f.name, f.role) for f in result.report.files] == [("in.safetensors", "model")]
    assert hashlib.sha256(written).hexdigest() == result.report.files[0].sha256 == result.sha256
    assert result.report.files[0].bytes_out == len(written)
    assert result.report.files[0].bytes_in == len(mlp_safetensors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors", "out.safetensors"]  # no .part left
    assert result.bytes_in == len(mlp_safetensors)
    assert uploaded[-1] == (len(mlp_safetensors), len(mlp_safetensors))
    assert downloaded[-1] == (len(written), len(mlp_safetensors))  # received, total in
    stages = [e.stage for e in events]
    assert pb.STAGE_COMPRESSING in stages and pb.STAGE_SERIALIZING in stages


def test_file_objects_and_paths_give_the_same_output(client, mlp_safetensors, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(mlp_safetensors)
    from_bytes = client.compress(mlp_safetensors, method="magnitude", sparsity=0.3).model
    with open(path, "rb") as f:
        assert client.compress(f, method="magnitude", sparsity=0.3).model == from_bytes
    with open(path, "rb") as f:
        assert client.inspect(f).total_bytes == len(mlp_safetensors)


def test_refusal_at_admission_is_retried_and_then_reported(start_server, mlp_safetensors):
    srv = start_server(["--max_queued_jobs=0"], workers=1)
    with bonsai.Client(srv.target, timeout=60, retry=FAST_RETRY) as holder:
        held = HeldJob(holder, mlp_safetensors)
        try:
            assert held.admitted.wait(30), "the held job was never admitted"
            with bonsai.Client(srv.target, timeout=60, retry=FAST_RETRY) as client:
                with pytest.raises(bonsai.BonsaiError) as info:
                    client.compress(mlp_safetensors, method="magnitude", sparsity=0.5)
                assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "busy" in info.value.message
        finally:
            held.release.set()
            held.thread.join(60)
        with bonsai.Client(srv.target, timeout=60, retry=FAST_RETRY) as client:
            assert client.compress(mlp_safetensors, method="magnitude", sparsity=0.5).model


def test_spec_carries_every_option():
    spec = bonsai.client.specs.compression_spec(
        method="sparsegpt", sparsity=0.5, scope="global", include=["a"], exclude=["b"], include_only=True,
        overrides={"w": 0.25}, options={"n": 2, "m": 4, "block_size": 64, "dampening": 0.05, "bits": 4,
                                        "group_size": 0, "symmetric": True},
        rules=[{"regex": "conv", "method": "structured", "sparsity": 0.3, "scope": "layer", "name": "convs",
                "options": {"norm": "l1", "structured_mode": "physical"}}],
        output="packed", files=[pb.FileDeclaration(name="a.safetensors", size_bytes=123),
                                pb.FileDeclaration(name="b/c.json", size_bytes=7)],
        calibration_size_bytes=45)
    assert spec.scope == pb.SCOPE_GLOBAL and spec.output == pb.OUTPUT_MODE_PACKED
    assert spec.options == pb.MethodOptions(sparsegpt=pb.SparseGptOptions(
        block_size=64, dampening=0.05, nm=pb.NmOptions(n=2, m=4),
        quant=pb.QuantOptions(bits=4, group_size=0, symmetric=True)))
    assert spec.rules[0].options == pb.MethodOptions(structured=pb.StructuredOptions(
        norm=pb.NORM_L1, mode=pb.STRUCTURED_MODE_PHYSICAL))
    assert spec.rules[0].tensor_regex == "conv" and spec.rules[0].scope == pb.SCOPE_LAYER
    assert spec.sparsity_overrides["w"] == 0.25 and spec.calibration_size_bytes == 45
    assert [(f.name, f.size_bytes) for f in spec.files] == [("a.safetensors", 123), ("b/c.json", 7)]
    with pytest.raises(TypeError):
        bonsai.client.specs.method_options("nm", {"bogus": 1})


def test_each_methods_flat_options_go_into_its_own_message():
    """The library keeps its flat option names; each lands in the method's
    message, and a method without options sends none."""
    method_options = bonsai.client.specs.method_options
    assert method_options("nm", {"n": 2, "m": 4}) == pb.MethodOptions(nm=pb.NmOptions(n=2, m=4))
    assert method_options("wanda", {"n": 2, "m": 4}) == pb.MethodOptions(
        wanda=pb.WandaOptions(nm=pb.NmOptions(n=2, m=4)))
    assert method_options("ternarize", {"per_channel": True}) == pb.MethodOptions(
        ternarize=pb.TernarizeOptions(per_channel=True))
    assert method_options("rtn", {"bits": 8, "symmetric": True}) == pb.MethodOptions(
        rtn=pb.QuantOptions(bits=8, symmetric=True))
    assert method_options("gptq", {"bits": 3, "act_order": True, "dampening": 0.1}) == pb.MethodOptions(
        gptq=pb.GptqOptions(quant=pb.QuantOptions(bits=3), act_order=True, dampening=0.1))
    # Present even when every value is a proto3 default: the method's message was asked for.
    assert method_options("ternarize", {"per_channel": False}).HasField("ternarize")
    assert method_options("magnitude", {}) == pb.MethodOptions()
    assert method_options("binarize", {"bits": None}) == pb.MethodOptions()


def test_a_rules_unread_option_is_invalid_spec_naming_the_rule():
    rules = [{"regex": "fc", "method": "magnitude", "sparsity": 0.5, "name": "mlp"},
             {"regex": "conv", "method": "nm", "options": {"n": 2, "m": 4, "bits": 4}}]
    with pytest.raises(bonsai.InvalidSpec, match=r"rule\[1\]: method 'nm' does not read option 'bits'"):
        bonsai.client.specs.compression_spec(
            method="", sparsity=0.0, scope=None, include=(), exclude=(), include_only=False, overrides=None,
            options=None, rules=rules, output=None, files=[], calibration_size_bytes=None)
