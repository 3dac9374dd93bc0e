"""Runs an ONNX model in a real runtime: onnxruntime-node, driven through node.

deploy/install-deps.sh installs onnxruntime-node into .cache/onnxruntime.
`run_onnx(model_bytes, {name: ndarray}) -> {name: ndarray}`. Tensors travel
as base64 of their raw little-endian bytes, so nothing is lost in JSON.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ORT_DIR = os.path.join(REPO, ".cache", "onnxruntime", "node_modules", "onnxruntime-node")
RUN_TIMEOUT = 120

_TYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64", np.dtype(np.int64): "int64",
          np.dtype(np.int32): "int32", np.dtype(np.bool_): "bool", np.dtype(np.uint8): "uint8",
          np.dtype(np.float16): "float16"}
_NUMPY = {v: k for k, v in _TYPES.items()}

_SCRIPT = r"""
const ort = require(process.argv[2]);
const fs = require('fs');
const ARRAYS = {float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array,
                uint8: Uint8Array, bool: Uint8Array, float16: Uint16Array};
(async () => {
  const request = JSON.parse(fs.readFileSync(process.argv[4], 'utf8'));
  const options = process.argv[6] ? JSON.parse(fs.readFileSync(process.argv[6], 'utf8')) : {};
  const session = await ort.InferenceSession.create(process.argv[3], options);
  const feeds = {};
  for (const [name, t] of Object.entries(request)) {
    const raw = Buffer.from(t.data, 'base64');
    const Ctor = ARRAYS[t.type];
    const copy = new Uint8Array(raw.length); copy.set(raw);
    feeds[name] = new ort.Tensor(t.type, new Ctor(copy.buffer, 0, raw.length / Ctor.BYTES_PER_ELEMENT), t.dims);
  }
  const results = await session.run(feeds);
  const out = {};
  for (const [name, t] of Object.entries(results)) {
    const d = t.data;
    out[name] = {type: t.type, dims: t.dims.map(Number),
                 data: Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('base64')};
  }
  fs.writeFileSync(process.argv[5], JSON.stringify(out));
})().catch(e => { console.error(String(e && e.stack || e)); process.exit(3); });
"""


class RuntimeMissing(RuntimeError):
    pass


def check_runtime() -> None:
    if shutil.which("node") is None:
        raise RuntimeMissing("node is not installed; run deploy/install-deps.sh")
    if not os.path.isdir(ORT_DIR):
        raise RuntimeMissing(f"onnxruntime-node is missing ({ORT_DIR}); run deploy/install-deps.sh")


def run_onnx(model_bytes: bytes, inputs: dict, session_options: dict = None) -> dict:
    """`session_options`: onnxruntime-node's InferenceSession options, e.g.
    {"graphOptimizationLevel": "basic"}."""
    check_runtime()
    with tempfile.TemporaryDirectory(prefix="bonsai-ort-") as tmp:
        paths = {k: os.path.join(tmp, k) for k in ("model.onnx", "in.json", "out.json", "run.js", "options.json")}
        with open(paths["options.json"], "w") as f:
            json.dump(session_options or {}, f)
        with open(paths["model.onnx"], "wb") as f:
            f.write(model_bytes)
        request = {}
        for name, value in inputs.items():
            array = np.ascontiguousarray(value)
            request[name] = {"type": _TYPES[array.dtype], "dims": list(array.shape),
                             "data": base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode()}
        with open(paths["in.json"], "w") as f:
            json.dump(request, f)
        with open(paths["run.js"], "w") as f:
            f.write(_SCRIPT)
        proc = subprocess.run(["node", paths["run.js"], ORT_DIR, paths["model.onnx"], paths["in.json"], paths["out.json"],
                               paths["options.json"]],
                              capture_output=True, text=True, timeout=RUN_TIMEOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"onnxruntime-node failed ({proc.returncode}): {proc.stderr.strip()[-4000:]}")
        with open(paths["out.json"]) as f:
            response = json.load(f)
    outputs = {}
    for name, t in response.items():
        dtype = _NUMPY[t["type"]].newbyteorder("<")
        outputs[name] = np.frombuffer(base64.b64decode(t["data"]), dtype=dtype).reshape(t["dims"]).astype(dtype.newbyteorder("="))
    return outputs
