"""The files of a model, as a job carries them.

A model is one file (ONNX or safetensors, a path, bytes or a file object), a
folder (a Hugging Face checkpoint: *.safetensors shards, the index, config
and tokenizer files), or an .onnx file whose tensors keep their data in
files beside it. Each file travels under its path relative to the model's
folder; the output comes back as the same files under the same names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

from bonsai.streaming import ByteSource, ModelInput


@dataclass
class ModelFile:
    name: str           # relative path, '/'-separated
    source: ByteSource
    header_only: bool = False


def _onnx_data_files(path: str) -> List[str]:
    """The external data files an .onnx file names, relative to its folder."""
    try:
        import onnx  # python3-onnx; only needed for ONNX with external data
        from onnx.external_data_helper import _get_all_tensors
    except ImportError:  # pragma: no cover - Debian's python3-onnx is a dependency
        return []
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # not ONNX after all: the server will say what it is
        return []
    locations = []
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in locations:
                locations.append(entry.value)
    return locations


def is_folder(model: ModelInput) -> bool:
    """Whether `model` names a folder (a sharded checkpoint), not a file or bytes."""
    return isinstance(model, (str, os.PathLike)) and os.path.isdir(os.fspath(model))


def collect(model: ModelInput) -> List[ModelFile]:
    """The files to upload for `model` (see the module's docstring)."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if os.path.isdir(path):
            files = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if name.startswith("."):
                        continue  # .git, editor files, our own .part files
                    full = os.path.join(root, name)
                    rel = os.path.relpath(full, path).replace(os.sep, "/")
                    files.append(ModelFile(rel, ByteSource(full)))
            if not files:
                raise ValueError(f"the folder {path} holds no files")
            return files
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such model file or folder: {path}")
        files = [ModelFile(os.path.basename(path), ByteSource(path))]
        if path.endswith(".onnx"):
            folder = os.path.dirname(os.path.abspath(path))
            for location in _onnx_data_files(path):
                data = os.path.normpath(os.path.join(folder, location))
                if not os.path.isfile(data):
                    raise FileNotFoundError(
                        f"{path} keeps tensor data in {location!r}, which is not beside it ({data})")
                files.append(ModelFile(location.replace(os.sep, "/"), ByteSource(data)))
        return files
    source = ByteSource(model)
    if source.size is None:
        raise ValueError("the model's size must be known (a path, bytes or a seekable file)")
    return [ModelFile("model", source)]


def _check_parent(path: str, what: str) -> None:
    """The folders that will hold `path` exist or can be made (missing ones
    are created, and removed again if the job fails); the error names the
    user's path, not a temporary file written beside it."""
    parent = os.path.dirname(os.path.abspath(path))
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"{what} {parent} cannot be made: {existing} is a file (for {path})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write into {existing} (for {path}): permission denied")


def output_paths(files: List[ModelFile], model: ModelInput, output_path) -> Optional[List[str]]:
    """Where each output file goes, or None to keep the output in memory.

    A folder in gives a folder out (same relative names); a file in gives
    `output_path` for it and its data files beside `output_path`.
    """
    if output_path is None:
        return None
    out = os.fspath(output_path)
    if is_folder(model):
        if os.path.exists(out) and not os.path.isdir(out):
            raise NotADirectoryError(f"the model is a folder, so the output must be one too: {out} is a file")
        _check_parent(out, "the output folder's parent")
        return [os.path.join(out, *f.name.split("/")) for f in files]
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        raise IsADirectoryError(f"the model is a file, so the output must be a file path: {out} is a folder")
    _check_parent(out, "the output's folder")
    folder = os.path.dirname(os.path.abspath(out))
    paths = [out] + [os.path.join(folder, *f.name.split("/")) for f in files[1:]]
    # The .onnx names its data files, so they keep their names beside the
    # output: beside the input, that would overwrite the input's own data.
    if isinstance(model, (str, os.PathLike)):
        source = os.path.dirname(os.path.abspath(os.fspath(model)))
        for f, path in zip(files[1:], paths[1:]):
            original = os.path.join(source, *f.name.split("/"))
            if os.path.exists(path) and os.path.samefile(path, original):
                raise FileExistsError(
                    f"the output's data file {path} would overwrite the input's ({f.name} keeps its name, "
                    f"since the .onnx file names it); write the output into another folder")
    return paths
