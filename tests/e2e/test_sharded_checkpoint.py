"""A Hugging Face checkpoint folder in, a folder out: the shards pruned as one
model (torch's masks over all shards' tensors), the index valid and
consistent, every other file byte for byte; a folder whose index disagrees
with its shards is refused, naming the file or tensor."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import grpc
import numpy as np
import pytest

import bonsai
import hf_checkpoint as hf
from bonsai.v1 import compressor_pb2 as pb
from expect import expect_error
from test_cli import run_cli

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PASSED_THROUGH = ["config.json", "tokenizer.json"]


@pytest.fixture(scope="module")
def tensors():
    return hf.make_tensors(seed=3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tensors):
    path = tmp_path_factory.mktemp("hf") / "tiny-llm"
    hf.write_checkpoint(path, tensors)
    return path


def _selected(tensors, names=None):
    return {n: tensors[n].values for n in (names or hf.SELECTED)}


def _check_masks(out, tensors, keep):
    """Pruned where torch prunes, kept values unchanged (bit for bit)."""
    for name, mask in keep.items():
        np.testing.assert_array_equal(out[name] != 0, mask, err_msg=f"{name}: mask differs from torch")
        np.testing.assert_array_equal(out[name][mask].view(np.uint32),
                                      tensors[name].values[mask].view(np.uint32), err_msg=name)


def _check_untouched(out, tensors, names):
    for name in names:
        np.testing.assert_array_equal(out[name].view(np.uint32), tensors[name].values.view(np.uint32),
                                      err_msg=f"{name} should be unchanged")


def _check_index_consistent(index, stored_in, headers):
    """Every stored tensor is in the shard the index says, the index lists
    nothing else, and total_size is the sum of the tensors' bytes."""
    assert index["weight_map"] == stored_in
    assert index["metadata"]["total_size"] == hf.stored_bytes(headers)


def _check_report_files(report, src, out):
    """report.files: every file of the job, with its role, sizes and the SHA-256 of what was written."""
    roles = {f.name: f.role for f in report.files}
    expected_roles = {**{s: "model" for s in hf.SHARDS}, hf.INDEX: "index",
                      **{n: "other" for n in PASSED_THROUGH}}
    assert roles == expected_roles
    for f in report.files:
        written = hf.file_bytes(out, f.name)
        assert f.bytes_in == os.path.getsize(os.path.join(src, f.name)), f.name
        assert f.bytes_out == len(written), f.name
        assert f.sha256 == hashlib.sha256(written).hexdigest(), f.name
    assert report.totals.model_bytes_in == sum(os.path.getsize(os.path.join(src, n))
                                               for n in hf.relative_files(src))


# ---------------------------------------------------------------- pruning across shards

def test_global_magnitude_over_all_shards_matches_torch_global_unstructured(client, folder, tensors, tmp_path):
    out_dir = tmp_path / "pruned"
    result = client.compress(str(folder), method="magnitude", sparsity=0.5, scope="global",
                             output_path=str(out_dir))
    assert result.model is None and result.files is None and result.output_path == str(out_dir)
    assert hf.relative_files(out_dir) == hf.relative_files(folder)  # same names, no .part file left

    out, stored_in, headers = hf.read_output(out_dir)
    keep = hf.torch_global_keep(_selected(tensors), 0.5)
    _check_masks(out, tensors, keep)
    total = sum(m.size for m in keep.values())
    assert sum(int((~m).sum()) for m in keep.values()) == round(0.5 * total)
    _check_untouched(out, tensors, [n for n in tensors if n not in keep])
    # Global, not per shard and not per tensor: the shares differ.
    shares = [1 - keep[n].mean() for n in hf.SELECTED]
    assert max(shares) - min(shares) > 0.2, shares
    for name, t in tensors.items():  # every tensor stays in its shard, in its dtype
        assert headers[t.shard][name]["dtype"] == t.dtype, name

    index = json.loads((out_dir / hf.INDEX).read_text())
    _check_index_consistent(index, stored_in, headers)
    assert (out_dir / hf.INDEX).read_bytes() == (folder / hf.INDEX).read_bytes()  # nothing renamed: as sent
    for name in PASSED_THROUGH:
        assert (out_dir / name).read_bytes() == (folder / name).read_bytes(), name

    _check_report_files(result.report, folder, out_dir)
    assert {t.name: t.file for t in result.report.tensors if t.name in keep} == \
        {n: tensors[n].shard for n in keep}
    assert result.report.totals.prunable_params == total
    assert result.report.totals.nonzero_after == sum(int(m.sum()) for m in keep.values())


def test_layer_scope_across_shards_matches_torch_l1_unstructured_in_memory(client, folder, tensors):
    result = client.compress(str(folder), method="magnitude", sparsity=0.6, scope="layer")
    assert result.model is None
    assert sorted(result.files) == hf.relative_files(folder)
    out, stored_in, headers = hf.read_output(result.files)
    keep = hf.torch_layer_keep(_selected(tensors), 0.6)
    _check_masks(out, tensors, keep)
    for name, mask in keep.items():
        assert int((~mask).sum()) == round(0.6 * mask.size), name
        assert result.tensor(name).file == tensors[name].shard
    _check_untouched(out, tensors, [n for n in tensors if n not in keep])
    _check_index_consistent(json.loads(result.files[hf.INDEX]), stored_in, headers)
    for name in PASSED_THROUGH:
        assert result.files[name] == (folder / name).read_bytes()


def test_recipe_rules_apply_across_shards(client, folder, tensors, tmp_path):
    attn = [n for n in hf.SELECTED if ".self_attn." in n]
    mlp = [n for n in hf.SELECTED if ".mlp." in n]
    assert len({tensors[n].shard for n in attn}) == 2 and len({tensors[n].shard for n in mlp}) == 2
    rules = [{"regex": r"\.self_attn\.", "method": "magnitude", "sparsity": 0.3, "scope": "global", "name": "attn"},
             {"regex": r"\.mlp\.", "method": "magnitude", "sparsity": 0.7, "scope": "layer"}]
    out_dir = tmp_path / "recipe"
    result = client.compress(str(folder), method="", rules=rules, output_path=str(out_dir))
    out, stored_in, headers = hf.read_output(out_dir)
    keep = {**hf.torch_global_keep(_selected(tensors, attn), 0.3), **hf.torch_layer_keep(_selected(tensors, mlp), 0.7)}
    _check_masks(out, tensors, keep)
    _check_untouched(out, tensors, [n for n in tensors if n not in keep])
    assert {n: result.tensor(n).rule for n in keep} == {**{n: "attn" for n in attn}, **{n: "rule[1]" for n in mlp}}
    _check_index_consistent(json.loads((out_dir / hf.INDEX).read_text()), stored_in, headers)


def test_packed_output_index_names_the_packed_parts(client, folder, tensors, tmp_path):
    out_dir = tmp_path / "packed"
    result = client.compress(str(folder), method="magnitude", sparsity=0.5, scope="global", output="packed",
                             output_path=str(out_dir))
    assert hf.relative_files(out_dir) == hf.relative_files(folder)
    out, stored_in, headers = hf.read_output(out_dir)
    keep = hf.torch_global_keep(_selected(tensors), 0.5)
    _check_masks(out, tensors, keep)
    _check_untouched(out, tensors, [n for n in tensors if n not in keep])

    index = json.loads((out_dir / hf.INDEX).read_text())
    _check_index_consistent(index, stored_in, headers)
    packed = [n for n in keep if n not in stored_in]
    assert packed, f"no tensor was packed: {sorted(stored_in)}"
    for name in packed:  # its parts, in its own shard
        parts = [k for k in index["weight_map"] if k.startswith(name + ".")]
        assert parts and all(index["weight_map"][k] == tensors[name].shard for k in parts), (name, parts)
    assert index["metadata"]["total_size"] < hf.index_json(tensors)["metadata"]["total_size"]
    _check_report_files(result.report, folder, out_dir)
    assert result.report.totals.packed_bytes < result.report.totals.dense_bytes


# ---------------------------------------------------------------- an index that disagrees

def test_shard_missing_from_the_upload_is_invalid_argument(strict_client, folder, tmp_path):
    broken = tmp_path / "missing-shard"
    shutil.copytree(folder, broken)
    os.unlink(broken / hf.SHARDS[2])
    out_dir = tmp_path / "out"
    expect_error(INVALID, lambda: strict_client.compress(str(broken), output_path=str(out_dir)),
                 hf.SHARDS[2], hf.INDEX)
    assert not out_dir.exists()


def test_tensor_the_index_puts_in_another_shard_is_invalid_argument(strict_client, folder, tensors, tmp_path):
    moved = "model.layers.0.mlp.up_proj.weight"
    assert tensors[moved].shard == hf.SHARDS[1]
    index = hf.index_json(tensors)
    index["weight_map"][moved] = hf.SHARDS[0]
    broken = tmp_path / "wrong-index"
    hf.write_checkpoint(broken, tensors, index=index)
    out_dir = tmp_path / "out"
    expect_error(INVALID, lambda: strict_client.compress(str(broken), output_path=str(out_dir)),
                 moved, hf.SHARDS[0], hf.SHARDS[1])
    assert not out_dir.exists()


# ---------------------------------------------------------------- the CLI and inspect

def test_cli_compresses_a_folder_into_a_folder(server, folder, tensors, tmp_path):
    out_dir = tmp_path / "cli-out"
    proc = run_cli("--target", server.target, "compress", str(folder), "-o", str(out_dir), "--method", "magnitude",
                   "--sparsity", "0.5", "--scope", "global", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert hf.relative_files(out_dir) == hf.relative_files(folder)
    out, _, _ = hf.read_output(out_dir)
    _check_masks(out, tensors, hf.torch_global_keep(_selected(tensors), 0.5))
    for name in PASSED_THROUGH + [hf.INDEX]:
        assert (out_dir / name).read_bytes() == (folder / name).read_bytes(), name
    assert hf.SHARDS[0] in proc.stdout or "q_proj" in proc.stdout  # the report table


def test_inspect_of_the_folder_lists_every_tensor_with_its_file_and_zeros_unknown(client, server, folder,
                                                                                 tensors):
    info = client.inspect(str(folder))
    assert info.format == "safetensors"
    assert {t.name: t.file for t in info.tensors} == {n: t.shard for n, t in tensors.items()}
    for t in info.tensors:
        assert not t.zeros_known, t.name  # only the shards' headers were sent
        assert t.selected == (t.name in hf.SELECTED), t.name
        assert t.dtype == tensors[t.name].dtype and list(t.shape) == list(tensors[t.name].values.shape)
    assert info.total_params == sum(t.values.size for t in tensors.values())
    assert info.selected_params == sum(tensors[n].values.size for n in hf.SELECTED)

    proc = run_cli("--target", server.target, "inspect", str(folder), "--json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)["tensors"]
    assert {t["name"]: t["file"] for t in listed} == {n: t.shard for n, t in tensors.items()}
    assert not any(t.get("zeros_known") for t in listed)


# ---------------------------------------------------------------- a slow, steady upload

@pytest.mark.timeout(120)
def test_a_steady_file_by_file_upload_is_not_taken_for_a_stall(start_server, folder, tensors):
    """The protocol lets a client send the files one after another. While it
    sends a byte every 50 ms, the upload has not stalled, even though the
    job waits a while for a file whose turn has not come (the next shard's
    header, the index): --receive_idle_timeout_seconds is about the upload."""
    srv = start_server(["--receive_idle_timeout_seconds=1"])
    names = hf.relative_files(folder)
    contents = [(folder / n).read_bytes() for n in names]

    def requests():
        yield pb.CompressRequest(spec=pb.CompressionSpec(
            method="magnitude", sparsity=0.5, scope=pb.SCOPE_GLOBAL,
            files=[pb.FileDeclaration(name=n, size_bytes=len(c)) for n, c in zip(names, contents)]))
        for index, data in enumerate(contents):
            for start in range(0, len(data), 128):
                yield pb.CompressRequest(file_chunk=pb.FileChunk(file=index, data=data[start:start + 128]))
                time.sleep(0.05)

    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        try:
            responses = list(c.stub.Compress(requests(), timeout=60))
        except grpc.RpcError as err:
            pytest.fail(f"a steady upload was refused: {err.code().name}: {err.details()}")
    assert responses[-1].WhichOneof("payload") == "report"
    out = {}
    for r in responses:
        if r.WhichOneof("payload") == "file_chunk":
            out[names[r.file_chunk.file]] = out.get(names[r.file_chunk.file], b"") + r.file_chunk.data
    values, _, _ = hf.read_output(out)
    _check_masks(values, tensors, hf.torch_global_keep(_selected(tensors), 0.5))
