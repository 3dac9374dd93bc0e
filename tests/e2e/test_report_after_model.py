"""The output streams before the report that vouches for it, so the client
keeps nothing until the report has confirmed every file: a byte changed on
the way, a chunk or the report lost, or a server killed mid-download leave
no output file and no temporary file behind.

A relay between the real client and the real server (relay_proxy) changes
what the server sent; the server and the client are the real ones.
"""
from __future__ import annotations

import json
import os

import grpc
import numpy as np
import pytest

import bonsai
import hf_checkpoint as hf
from bonsai import safetensors_io
from bonsai.errors import IntegrityError
from relay_proxy import RelayProxy, drop_last_chunk_of, drop_report, flip_one_byte

MiB = 1 << 20


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tiny-llm"
    hf.write_checkpoint(path, hf.make_tensors(seed=4))
    return path


def _names(folder) -> list:
    """The job's files in the order the client declares them (sorted walk)."""
    return hf.relative_files(folder)


def _leftovers(root) -> list:
    """Every file under `root` (there should be none at all)."""
    return hf.relative_files(root) if os.path.exists(root) else []


def _client(target):
    return bonsai.Client(target, timeout=120, retry=bonsai.NO_RETRY)


def test_the_relay_alone_changes_nothing(server, folder, tmp_path):
    """The control: through an honest relay the job succeeds, same bytes as direct."""
    direct = tmp_path / "direct"
    relayed = tmp_path / "relayed"
    with _client(server.target) as c:
        c.compress(str(folder), sparsity=0.5, scope="global", output_path=str(direct))
    with RelayProxy(server.target, lambda i, r: r) as proxy, _client(proxy.target) as c:
        result = c.compress(str(folder), sparsity=0.5, scope="global", output_path=str(relayed))
        assert proxy.tampered == 0
    assert hf.relative_files(relayed) == hf.relative_files(folder)
    for name in hf.relative_files(folder):
        assert (relayed / name).read_bytes() == (direct / name).read_bytes(), name
    assert len(result.report.files) == len(_names(folder))


@pytest.mark.parametrize("victim", [hf.SHARDS[0], hf.SHARDS[2], hf.INDEX, "config.json", "tokenizer.json"])
def test_a_flipped_byte_in_any_file_fails_the_job_and_leaves_no_file(server, folder, tmp_path, victim):
    out = tmp_path / "work" / "pruned"
    with RelayProxy(server.target, flip_one_byte(_names(folder).index(victim), offset=37)) as proxy, \
            _client(proxy.target) as c:
        with pytest.raises(IntegrityError) as info:
            c.compress(str(folder), sparsity=0.5, output_path=str(out))
        assert proxy.tampered == 1
    assert victim in info.value.message and "SHA-256" in info.value.message
    assert info.value.code == grpc.StatusCode.DATA_LOSS
    assert not out.exists()
    assert _leftovers(tmp_path) == []  # no .part file either


def test_a_flipped_byte_in_a_single_file_leaves_the_folder_as_it_was(server, mlp_safetensors, tmp_path):
    src = tmp_path / "in" / "mlp.safetensors"
    src.parent.mkdir()
    src.write_bytes(mlp_safetensors)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine\n")
    with RelayProxy(server.target, flip_one_byte(0, offset=4000)) as proxy, _client(proxy.target) as c:
        with pytest.raises(IntegrityError):
            c.compress(str(src), sparsity=0.5, output_path=str(out_dir / "mlp.safetensors"))
    with RelayProxy(server.target, flip_one_byte(0, offset=4000)) as proxy, _client(proxy.target) as c:
        with pytest.raises(IntegrityError):  # in memory: no bytes handed back either
            c.compress(mlp_safetensors, sparsity=0.5)
    assert sorted(os.listdir(out_dir)) == ["notes.txt"]


def test_a_lost_report_fails_the_job_and_leaves_no_file(server, folder, tmp_path):
    out = tmp_path / "pruned"
    with RelayProxy(server.target, drop_report) as proxy, _client(proxy.target) as c:
        with pytest.raises(bonsai.BonsaiError) as info:
            c.compress(str(folder), sparsity=0.5, output_path=str(out))
    assert "report" in info.value.message
    assert _leftovers(tmp_path) == []


def test_a_lost_last_chunk_fails_the_job_and_leaves_no_file(server, tmp_path):
    rng = np.random.default_rng(8)
    src = tmp_path / "two-chunks.safetensors"
    safetensors_io.write(src, {"w.weight": rng.standard_normal((768, 1024), dtype=np.float32)})  # 3 MiB
    out = tmp_path / "out" / "pruned.safetensors"
    with RelayProxy(server.target, drop_last_chunk_of(0)) as proxy, _client(proxy.target) as c:
        with pytest.raises(IntegrityError) as info:
            c.compress(str(src), sparsity=0.5, output_path=str(out))
    assert "pruned.safetensors" in info.value.message or "two-chunks.safetensors" in info.value.message
    assert _leftovers(tmp_path / "out") == []
    assert not out.parent.exists()


# ---------------------------------------------------------------- a server killed mid-download

def _big_checkpoint(folder, shard_mib: int = 48):
    """Two F32 shards of `shard_mib` MiB each, their index and a config.json."""
    rng = np.random.default_rng(9)
    rows = shard_mib * MiB // (4 * 1024)
    os.makedirs(folder)
    weight_map, total = {}, 0
    for i, shard in enumerate(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]):
        name = f"model.layers.{i}.mlp.up_proj.weight"
        values = rng.standard_normal((rows, 1024), dtype=np.float32)
        safetensors_io.write(os.path.join(folder, shard), {name: values})
        weight_map[name] = shard
        total += values.nbytes
    with open(os.path.join(folder, hf.INDEX), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf.CONFIG, f)
    return total


@pytest.mark.timeout(600)
@pytest.mark.parametrize("shape", ["file", "folder"])
def test_a_server_killed_mid_download_leaves_no_output(start_server, tmp_path, shape):
    spool = tmp_path / "spool"
    spool.mkdir()
    srv = start_server([f"--spool_dir={spool}"])
    src = tmp_path / "src"
    total = _big_checkpoint(src)
    model = src if shape == "folder" else src / "model-00001-of-00002.safetensors"
    out = tmp_path / "out" / ("pruned" if shape == "folder" else "pruned.safetensors")
    received = []

    def kill_at_first_chunk(done, _total):
        received.append(done)
        if len(received) == 1:
            srv.kill()

    with _client(srv.target) as c:
        with pytest.raises(bonsai.BonsaiError) as info:
            c.compress(str(model), sparsity=0.5, output_path=str(out), download_progress=kill_at_first_chunk)
    assert not isinstance(info.value, IntegrityError) or "report" in info.value.message
    assert received and received[-1] < total, "the download was not cut short"
    assert _leftovers(tmp_path / "out") == []
    assert not (tmp_path / "out").exists()
    assert os.listdir(spool) == []  # unlinked spool files vanish with the process
