"""An .onnx file whose weights live in a data file beside it: the client
uploads both, the pruned model comes back in the same layout (every
location in the graph still valid), and the input files are never touched."""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import bonsai
from expect import expect_error, torch_masks
import grpc

DATA = "mlp.onnx.data"


def _save_with_external_data(onnx_bytes: bytes, folder, name: str = "mlp.onnx", location: str = DATA):
    model = onnx.load_from_string(onnx_bytes)
    onnx.save_model(model, str(folder / name), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return folder / name


def _external_locations(path) -> set:
    model = onnx.load(str(path), load_external_data=False)
    return {e.value for init in model.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL
            for e in init.external_data if e.key == "location"}


def _digests(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def src(tmp_path, mlp_onnx):
    folder = tmp_path / "src"
    folder.mkdir()
    path = _save_with_external_data(mlp_onnx, folder)
    assert _external_locations(path) == {DATA}
    return path


def test_onnx_with_external_data_is_pruned_in_the_same_layout(client, mlp, src, tmp_path):
    before = _digests(src.parent)
    out = tmp_path / "out" / "pruned.onnx"
    result = client.compress(str(src), method="magnitude", sparsity=0.6, scope="global", output_path=str(out))
    assert sorted(p.name for p in out.parent.iterdir()) == [DATA, "pruned.onnx"]
    # In the order they were sent: each file as soon as it is final.
    assert sorted((f.name, f.role) for f in result.report.files) == [("mlp.onnx", "model"), (DATA, "external_data")]
    for f in result.report.files:
        written = out.read_bytes() if f.role == "model" else (out.parent / DATA).read_bytes()
        assert f.sha256 == hashlib.sha256(written).hexdigest(), f.name
    assert _external_locations(out) == {DATA}
    onnx.checker.check_model(str(out), full_check=True)
    pruned = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    for name, keep in torch_masks(mlp, 0.6, "global").items():
        np.testing.assert_array_equal(pruned[name] != 0, keep, err_msg=f"{name}: mask differs from torch")
    np.testing.assert_array_equal(pruned["fc1.bias"], mlp.fc1.bias.detach().numpy())
    assert _digests(src.parent) == before


def test_a_missing_data_file_is_refused_by_the_client_before_any_call(strict_client, src):
    (src.parent / DATA).unlink()
    with pytest.raises(FileNotFoundError, match=DATA):
        strict_client.compress(str(src), output_path=str(src.parent / "pruned.onnx"))


def test_an_onnx_uploaded_without_its_data_file_is_invalid_argument(strict_client, src):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, lambda: strict_client.compress(src.read_bytes()), DATA)


def test_output_beside_the_input_never_overwrites_the_input_data_file(client, src):
    """A new name for the .onnx beside the original: its data file has the
    original's name, so writing it there would replace the original's
    weights with pruned ones. Either the client refuses, or it leaves the
    input files as they were."""
    before = _digests(src.parent)
    out = src.parent / "mlp-pruned.onnx"
    try:
        client.compress(str(src), method="magnitude", sparsity=0.6, output_path=str(out))
    except (ValueError, FileExistsError, bonsai.BonsaiError):
        pass  # refusing is fine
    after = _digests(src.parent)
    assert {n: after.get(n) for n in before} == before, "the input model's files were changed"
