#!/usr/bin/env python3
"""Accuracy after pruning: magnitude vs Wanda vs SparseGPT through the real server.

Trains two small models on sklearn's handwritten digits with fixed seeds,
prunes them with bonsai-server (started here on a free loopback port and
stopped at the end), measures test accuracy of each pruned model in torch and
the mean layer reconstruction error ||W-W'||_H^2 / ||W||_H^2, and writes a
Markdown report (its own section of --out: bench/results_doc.py).

    PYTHONPATH=client/python /usr/bin/python3 bench/quality_results.py \
        --server build/bin/bonsai-server --out docs/results.md
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import bonsai
from bonsai import calibration, safetensors_io
from results_doc import write_section

SEED = 0
SPLIT_SEED = 42
TEST_FRACTION = 0.25
EPOCHS = 60
BATCH = 64
LR = 1e-3
CALIB_SAMPLES = 256
CALIB_BATCH = 64
SPARSITIES = (0.5, 0.7, 0.9)
METHODS = ("magnitude", "wanda", "sparsegpt")


# ------------------------------------------------------------------ models

class MLP(nn.Module):
    head = "fc3"

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    head = "fc"

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3)   # 8x8 -> 6x6
        self.conv2 = nn.Conv2d(16, 32, 3)  # 6x6 -> 4x4
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(x.flatten(1))


# ------------------------------------------------------------------ data, training

def load_data():
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # [N, 1, 8, 8] in [0, 1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return (torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te), torch.from_numpy(y_te))


def train(model, x, y):
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def state_numpy(model):
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}


def load_numpy(model, tensors):
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tensors.items()})
    return model


# ------------------------------------------------------------------ metric

def h_error(w, w_pruned, gram) -> float:
    """||W - W'||_H^2 / ||W||_H^2 with ||A||_H^2 = tr(A H A^T); conv flattened to [out, in*kh*kw]."""
    w = w.reshape(w.shape[0], -1).astype(np.float64)
    d = w - w_pruned.reshape(w.shape[0], -1).astype(np.float64)
    h = gram.astype(np.float64)
    # sum((A H) * A) is tr(A H A^T) through one BLAS product: a 3-operand
    # einsum loops in C without BLAS, seconds per transformer layer.
    return float(np.sum((d @ h) * d) / np.sum((w @ h) * w))


# ------------------------------------------------------------------ server

class Server:
    """bonsai-server on 127.0.0.1 with an OS-chosen port; metrics off."""

    def __init__(self, binary, workers=2):
        self.proc = subprocess.Popen(
            [binary, "--listen=127.0.0.1:0", "--metrics_listen=", f"--workers={workers}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        self.lines = []
        self.target = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r"ready on (\S+):(\d+)", line)
                if m and not ready.is_set():
                    self.target = f"127.0.0.1:{m.group(2)}"
                    ready.set()
            ready.set()
        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(60) or self.target is None:
            self.stop()
            raise RuntimeError("bonsai-server did not become ready:\n" + "".join(self.lines))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# ------------------------------------------------------------------ experiment

def settings():
    for s in SPARSITIES:
        yield f"{int(round(s * 100))}%", s, None
    yield "2:4", None, {"n": 2, "m": 4}


def run_model(name, model, data, client, workdir):
    x_tr, y_tr, x_te, y_te = data
    t0 = time.time()
    train(model, x_tr, y_tr)
    dense_acc = accuracy(model, x_te, y_te)
    print(f"[{name}] trained in {time.time() - t0:.1f}s, dense test accuracy {dense_acc:.4f}", flush=True)

    dense = state_numpy(model)
    model_path = os.path.join(workdir, f"{name}.safetensors")
    safetensors_io.write(model_path, dense)
    calib_path = os.path.join(workdir, f"{name}.calib.safetensors")
    batches = [x_tr[i:i + CALIB_BATCH] for i in range(0, CALIB_SAMPLES, CALIB_BATCH)]
    stats = calibration.collect_gram(model, batches)
    calibration.write_calibration(calib_path, stats)

    exclude = [rf"^{model.head}\."]
    pruned_names = [k for k in dense if k.endswith(".weight") and not k.startswith(model.head + ".")]
    rows = {"dense": {m: (dense_acc, 0.0, None) for m in METHODS}}
    notes = []
    for label, sparsity, nm in settings():
        rows[label] = {}
        for method in METHODS:
            kwargs = dict(exclude=exclude)
            if nm is not None:
                kwargs["method"] = "nm" if method == "magnitude" else method
                kwargs["options"] = dict(nm)
            else:
                kwargs["method"] = method
                kwargs["sparsity"] = sparsity
                if method == "magnitude":
                    kwargs["scope"] = "layer"
            if method != "magnitude":
                kwargs["calibration"] = calib_path
            result = client.compress(model_path, **kwargs)
            out = safetensors_io.loads(result.model)
            acc = accuracy(load_numpy(model, out), x_te, y_te)
            mine = {k: h_error(dense[k], out[k], stats[k].gram) for k in pruned_names}
            reported = {t.name: t for t in result.report.tensors}
            touched = [k for k in pruned_names if k in reported]
            if method == "magnitude":
                err = float(np.mean([mine[k] for k in pruned_names]))
            else:
                err = float(np.mean([reported[k].reconstruction_error for k in touched]))
                for k in touched:
                    r = reported[k].reconstruction_error
                    if not np.isclose(r, mine[k], rtol=1e-3, atol=1e-6):
                        notes.append(f"{name} {method} {label} {k}: server reconstruction_error {r:.6g}, "
                                     f"recomputed from the Gram matrix {mine[k]:.6g}")
            sp = {k: float(np.mean(out[k] == 0)) for k in pruned_names}
            head_changed = not np.array_equal(out[f"{model.head}.weight"], dense[f"{model.head}.weight"])
            if head_changed:
                notes.append(f"{name} {method} {label}: excluded head {model.head}.weight was changed")
            for k in pruned_names:
                t = reported.get(k)
                if t is not None and t.note:
                    notes.append(f"{name} {kwargs['method']} {label} {k}: server note \"{t.note}\"")
            rows[label][method] = (acc, err, sp)
            print(f"[{name}] {label:>4} {method:<9} acc {acc:.4f}  err {err:.4g}  "
                  f"sparsity {', '.join(f'{k}={v:.3f}' for k, v in sp.items())}", flush=True)
        load_numpy(model, dense)
    return dense_acc, rows, pruned_names, notes


def verdicts(name, rows):
    out = []
    for label in [l for l, _, _ in settings()]:
        mag, sgpt = rows[label]["magnitude"][0], rows[label]["sparsegpt"][0]
        diff = (sgpt - mag) * 100
        held = sgpt >= mag
        out.append((label, held, diff, mag, sgpt))
    return out


def markdown(results, command, elapsed):
    n_tr = results["data"][0]
    n_te = results["data"][1]
    lines = [
        "# Pruning quality: magnitude vs Wanda vs SparseGPT",
        "",
        f"Produced by `{command}` "
        "(under a minute here; a rerun gives the same file). Every number below comes from the real "
        "`bonsai-server`, started by the script on a free 127.0.0.1 port and stopped at the end; "
        "the pruned safetensors it returns are loaded back into the torch model and evaluated.",
        "",
        "## Set-up",
        "",
        f"- **Data**: `sklearn.datasets.load_digits` (8×8 grey images, 10 classes, pixels / 16), "
        f"stratified `train_test_split(test_size={TEST_FRACTION}, random_state={SPLIT_SEED})`: "
        f"{n_tr} train, {n_te} test images.",
        "- **Models**: MLP 64→256→128→10 (ReLU); CNN Conv2d(1→16, 3×3) → ReLU → Conv2d(16→32, 3×3) → ReLU "
        "→ flatten (512) → Linear(512→10). No padding.",
        f"- **Training**: `torch.manual_seed({SEED})`, Adam lr {LR}, {EPOCHS} epochs, minibatch {BATCH}, "
        "shuffled with a seeded generator; cross-entropy.",
        f"- **Calibration**: `bonsai.calibration.collect_gram` on the first {CALIB_SAMPLES} training images "
        f"(batches of {CALIB_BATCH}), written with `write_calibration`; Wanda and SparseGPT get this file.",
        "- **Pruning**: magnitude with `scope=\"layer\"` at 50/70/90 %; for 2:4, method `nm` "
        "(`options={n: 2, m: 4}`) stands for magnitude and Wanda/SparseGPT get the same options "
        "(sparsity ignored). SparseGPT with the server's default `block_size` and `dampening`.",
        "- **Excluded**: the classifier head (`fc3.weight` of the MLP, `fc.weight` of the CNN) stays dense, "
        "as in the Wanda and SparseGPT papers (they keep the LM head dense); passed as "
        "`exclude=[r\"^fc3\\.\"]` / `exclude=[r\"^fc\\.\"]`. Biases are never pruned.",
        "- **Error column**: mean over the pruned layers of ‖W−W′‖²_H / ‖W‖²_H with ‖A‖²_H = tr(A H Aᵀ), "
        "H the calibration Gram matrix (conv weights flattened to [out, in·kh·kw]). For Wanda and "
        "SparseGPT it is the report's `reconstruction_error` (the same quantity, "
        "‖WX−W′X‖²/‖WX‖²); for magnitude the script computes it from the Gram matrices.",
        "- **Accuracy**: top-1 on the test split, in %.",
        "",
    ]
    for name in ("MLP", "CNN"):
        dense_acc, rows, pruned, _ = results[name]
        lines += [f"## {name}", "",
                  f"Pruned: {', '.join('`' + k + '`' for k in pruned)}. Dense accuracy {dense_acc * 100:.2f} %.", "",
                  "| setting | magnitude acc | Wanda acc | SparseGPT acc | magnitude err | Wanda err | SparseGPT err |",
                  "|---|---|---|---|---|---|---|"]
        for label in ["dense"] + [l for l, _, _ in settings()]:
            r = rows[label]
            accs = " | ".join(f"{r[m][0] * 100:.2f}" for m in METHODS)
            errs = " | ".join("0" if label == "dense" else f"{r[m][1]:.4f}" for m in METHODS)
            lines.append(f"| {label} | {accs} | {errs} |")
        lines.append("")
        # achieved sparsity per layer, to show what the server actually did
        lines += ["Achieved sparsity per pruned layer (magnitude / Wanda / SparseGPT):", ""]
        for label in [l for l, _, _ in settings()]:
            parts = []
            for k in pruned:
                parts.append(f"`{k}` " + " / ".join(f"{rows[label][m][2][k]:.3f}" for m in METHODS))
            lines.append(f"- {label}: " + "; ".join(parts))
        lines.append("")

    lines += ["## Did SparseGPT match or beat magnitude?", "",
              "The expectation in the issue: *SparseGPT at least as accurate as magnitude at every point and "
              "clearly better at 70 % and beyond.*", ""]
    for name in ("MLP", "CNN"):
        v = verdicts(name, results[name][1])
        parts = []
        for label, held, diff, mag, sgpt in v:
            parts.append(f"{label}: {'held' if held else '**did not hold**'} "
                         f"({sgpt * 100:.2f} vs {mag * 100:.2f}, {diff:+.2f} points)")
        lines.append(f"- **{name}**: " + "; ".join(parts) + ".")
    lines.append("")
    lines.append(results["summary"])
    lines.append("")
    notes = results["MLP"][3] + results["CNN"][3]
    lines += ["## Notes from the run", ""]
    if not any("recomputed" in n for n in notes):
        lines.append("- The script recomputes ‖W−W′‖²_H / ‖W‖²_H from the Gram matrices for the Wanda and "
                     "SparseGPT outputs too; it agreed with the server's `reconstruction_error` for every "
                     "tensor (relative tolerance 1e-3).")
    lines.append("- Wanda prunes round(sparsity · row length) weights in each output row, so a layer's "
                 "sparsity can differ slightly from the target (most visibly `conv1.weight`, rows of 9).")
    lines.append("- N:M groups of a Conv weight run over input channels at one kernel position; "
                 "`conv1` has one input channel, so at 2:4 all three methods leave it dense (the server "
                 "says so in the report's note) and the CNN's 2:4 row prunes only `conv2`. Its error (0) "
                 "is still in the CNN 2:4 mean.")
    lines += [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def summary(results):
    """Plain-language paragraph, built from the numbers (so it stays true on a rerun)."""
    sentences = []
    for name in ("MLP", "CNN"):
        v = verdicts(name, results[name][1])
        failed = [l for l, held, *_ in v if not held]
        clearly = [l for l, held, diff, *_ in v if l in ("70%", "90%") and diff >= 1.0]
        n_test = results["data"][1]
        if not failed:
            s = f"For the {name}, SparseGPT was at least as accurate as magnitude at every point"
        else:
            s = f"For the {name}, the expectation did not hold at " + ", ".join(
                f"{l} (SparseGPT {round((mag - sgpt) * n_test)} test image(s) worse than magnitude)"
                for l, held, diff, mag, sgpt in v if not held)
        s += "; it was clearly better (≥ 1 point) at " + (", ".join(clearly) if clearly else "neither 70 % nor 90 %")
        sentences.append(s + ".")
        rows = results[name][1]
        labels = [l for l, _, _ in settings()]
        lowest = [l for l in labels if rows[l]["sparsegpt"][1] <= min(rows[l]["magnitude"][1], rows[l]["wanda"][1])]
        if lowest == labels:
            sentences.append(f"Its layer reconstruction error was the lowest of the three methods at every point.")
        else:
            sentences.append(f"Its layer reconstruction error was the lowest of the three methods only at "
                             f"{', '.join(lowest) or 'no point'}.")
        wanda_wins = [l for l in labels if rows[l]["wanda"][0] > rows[l]["sparsegpt"][0]]
        if wanda_wins:
            sentences.append(f"Lower error did not always mean higher accuracy: Wanda beat SparseGPT on accuracy "
                             f"at {', '.join(wanda_wins)} despite a higher error.")
    sentences.append(
        "The claim comes from billion-parameter language models; these are tiny models on an easy, "
        "nearly separable dataset with a few hundred calibration images, where a dense model is over-parameterised "
        "and even crude pruning loses little until high sparsity, so the large-model effect need not show. "
        "Differences of one or two test images (0.22 points each) are noise. The reconstruction-error "
        "columns are the quantity SparseGPT actually minimises and are the more direct comparison of the methods.")
    return " ".join(sentences)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="build/bin/bonsai-server")
    ap.add_argument("--out", default="docs/results.md")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    data = load_data()
    start = time.time()
    server = Server(os.path.abspath(args.server), args.workers)
    print(f"bonsai-server ready on {server.target}", flush=True)
    results = {"data": (len(data[0]), len(data[2]))}
    try:
        with bonsai.Client(server.target, timeout=600) as client, tempfile.TemporaryDirectory() as workdir:
            torch.manual_seed(SEED)
            results["MLP"] = run_model("MLP", MLP(), data, client, workdir)
            torch.manual_seed(SEED)
            results["CNN"] = run_model("CNN", CNN(), data, client, workdir)
    finally:
        rc = server.stop()
        print(f"bonsai-server stopped (exit {rc})", flush=True)
    results["summary"] = summary(results)
    command = ("PYTHONPATH=client/python /usr/bin/python3 bench/quality_results.py "
               f"--server {args.server} --out {args.out}")
    text = markdown(results, command, time.time() - start)
    write_section(args.out, "digits_quality", text)  # bench/lm_quality.py owns another section
    print(f"wrote the digits_quality section of {args.out}")
    print(results["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
