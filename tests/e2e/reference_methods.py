"""Independent numpy implementations of bonsai's compression methods.

Written from the papers, not from the server's C++, so that end-to-end tests
can compare what the server returns with what the method should give:

  nm_numpy         N:M semi-structured sparsity (NVIDIA's 2:4 recipe, Mishra et al. 2021)
  structured_numpy output channels with the smallest L1/L2 norm (Li et al. 2017)
  wanda_numpy      Wanda, Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs"
  sparsegpt_numpy  SparseGPT, Frantar & Alistarh 2023, Algorithm 1
  binarize_numpy   BinaryConnect / XNOR-Net, alpha = mean|W| per output channel
  ternarize_numpy  BitNet b1.58 absmean quantizer
  rtn_numpy        round-to-nearest onto a uniform min-max grid per group
  gptq_numpy       GPTQ, Frantar et al. 2022, "GPTQ: Accurate Post-Training
                   Quantization for Generative Pre-trained Transformers"
  sparsegpt_quant_numpy  SparseGPT's joint sparsification and quantization

Every function takes W as a float32 matrix [out, in]: a Linear weight as
stored by PyTorch, an ONNX MatMul/Gemm B transposed, a Conv weight
[out, in, kh, kw] reshaped to [out, in*kh*kw] (PyTorch's unfold order; pass
kernel=kh*kw so N:M groups run over input channels at one kernel position).
`gram` is X^T X of the layer's inputs, [in, in] (in*kh*kw for Conv), summed
over `samples` rows. Nothing here modifies its arguments.

The conventions the server documents and these functions share:
  - N:M keeps the n largest scores of each group of m; ties keep the lower
    index. Input channels that do not fill a last group stay dense.
  - Unstructured selections prune the k = round(sparsity * count) smallest
    scores (round half to even); ties prune the lower index first.
  - SparseGPT's unstructured mask is chosen per column block and prunes
    exactly that block's share of round(sparsity * size), i.e.
    round(s * out * i2) - round(s * out * i1) for block [i1, i2), where the
    paper's reference code prunes every score <= the k-th (one more, plus ties).
  - Reconstruction errors are ||W X^T - W' X^T||^2 / ||W X^T||^2 computed
    as tr(dW H dW^T) / tr(W H W^T).

Requires /usr/bin/python3 with numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "nm_numpy",
    "structured_numpy",
    "wanda_numpy",
    "sparsegpt_numpy",
    "binarize_numpy",
    "ternarize_numpy",
    "quant_grid",
    "quantize",
    "rtn_numpy",
    "gptq_numpy",
    "sparsegpt_quant_numpy",
    "Decisions",
    "reconstruction_error",
    "prune_count",
]

TERNARY_EPS = 1e-5


def prune_count(sparsity: float, count: int) -> int:
    """round(sparsity * count), halves to even, clamped to [0, count]."""
    k = int(np.rint(float(sparsity) * float(count)))
    return min(max(k, 0), count)


def reconstruction_error(w_before: np.ndarray, w_after: np.ndarray, gram: np.ndarray) -> float:
    """||W X^T - W' X^T||^2 / ||W X^T||^2 from H = X^T X, in float64."""
    h = np.asarray(gram, dtype=np.float64)
    w = np.asarray(w_before, dtype=np.float64)
    dw = w - np.asarray(w_after, dtype=np.float64)
    den = float(np.einsum("ij,jk,ik->", w, h, w))
    num = float(np.einsum("ij,jk,ik->", dw, h, dw))
    return num / den if den > 0 else 0.0


def _keep_largest(scores: np.ndarray, n: int) -> np.ndarray:
    """Boolean mask of the n largest along the last axis; ties keep the lower index."""
    order = np.argsort(-scores, axis=-1, kind="stable")
    keep = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return keep


def _prune_smallest(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k smallest of a 1-D array; ties prune the lower index."""
    order = np.argsort(scores, kind="stable")
    prune = np.zeros(scores.shape, dtype=bool)
    prune[order[:k]] = True
    return prune


def _nm_prune_mask(scores: np.ndarray, n: int, m: int, kernel: int = 1) -> np.ndarray:
    """Prune mask of N:M over [out, in*kernel] scores, groups along input channels."""
    out, cols = scores.shape
    if cols % kernel:
        raise ValueError(f"{cols} columns are not a multiple of kernel={kernel}")
    channels = cols // kernel
    s = scores.reshape(out, channels, kernel)
    prune = np.zeros(s.shape, dtype=bool)
    grouped = channels // m * m
    if grouped:
        # [out, groups, m, kernel] -> [out, groups, kernel, m]: one group per last axis
        g = s[:, :grouped, :].reshape(out, grouped // m, m, kernel).transpose(0, 1, 3, 2)
        keep = _keep_largest(g, n)
        prune[:, :grouped, :] = (~keep).transpose(0, 1, 3, 2).reshape(out, grouped, kernel)
    return prune.reshape(out, cols)


def nm_numpy(w: np.ndarray, n: int, m: int, kernel: int = 1) -> np.ndarray:
    """Keep the n largest |w| of every m consecutive input channels (per kernel position)."""
    w = np.asarray(w, dtype=np.float32)
    out = w.copy()
    out[_nm_prune_mask(np.abs(w), n, m, kernel)] = 0.0
    return out


def structured_numpy(w: np.ndarray, fraction: float, norm: str = "l2"):
    """Zero the round(fraction * out) output channels with the smallest norm.

    Returns (W', removed channel indices ascending). Ties remove the lower
    index first; at least one channel is kept.
    """
    w = np.asarray(w, dtype=np.float32)
    w64 = w.astype(np.float64)
    norms = np.abs(w64).sum(axis=1) if norm == "l1" else np.sqrt((w64 * w64).sum(axis=1))
    norms = norms.astype(np.float32)
    k = min(prune_count(fraction, w.shape[0]), w.shape[0] - 1)
    removed = np.sort(np.argsort(norms, kind="stable")[:k])
    out = w.copy()
    out[removed, :] = 0.0
    return out, removed


def wanda_numpy(w: np.ndarray, gram: np.ndarray, sparsity: float = 0.0, n: int = 0, m: int = 0,
                kernel: int = 1):
    """Wanda: score |W_ij| * ||X_j||_2, compared within each output row.

    ||X_j||_2 = sqrt(H_jj). Unstructured: each row loses round(sparsity * in)
    weights. With n and m: N:M on the scores. Returns (W', reconstruction error).
    """
    w = np.asarray(w, dtype=np.float32)
    h = np.asarray(gram, dtype=np.float32)
    feature_norm = np.sqrt(np.maximum(np.diag(h), np.float32(0))).astype(np.float32)
    scores = (np.abs(w) * feature_norm[None, :]).astype(np.float32)
    if m:
        prune = _nm_prune_mask(scores, n, m, kernel)
    else:
        k = prune_count(sparsity, w.shape[1])
        prune = np.stack([_prune_smallest(row, k) for row in scores]) if w.shape[0] else scores > 0
    out = w.copy()
    out[prune] = 0.0
    return out, reconstruction_error(w, out, gram)


def _inverse_upper_cholesky(h: np.ndarray) -> np.ndarray:
    """Upper U with H^-1 = U^T U (float64 internally, float32 result)."""
    h64 = h.astype(np.float64)
    lower = np.linalg.cholesky(h64)
    lower_inv = np.linalg.inv(lower)
    h_inv = lower_inv.T @ lower_inv
    return np.linalg.cholesky(h_inv).T.astype(np.float32)


def sparsegpt_numpy(w: np.ndarray, gram: np.ndarray, samples: int, sparsity: float = 0.0,
                    n: int = 0, m: int = 0, blocksize: int = 128, percdamp: float = 0.01,
                    kernel: int = 1):
    """SparseGPT, Algorithm 1: OBS updates column by column inside blocks of
    `blocksize` columns, lazy batch update of the columns right of a block.

    H = gram / samples; inputs with H_jj = 0 get H_jj = 1 and zero weights;
    lambda = percdamp * mean(diag H) is added to the diagonal. Unstructured:
    each block prunes its share of the smallest w^2 / [H^-1]_jj^2 (with
    [H^-1]_jj read from the Cholesky factor, as in the paper). N:M: every
    group's mask is chosen when the sweep reaches its first column, from the
    already updated weights. For Conv with N:M the columns are swept in
    (kernel position, input channel) order so a group is m input channels at
    one kernel position. Returns (W', reconstruction error).
    """
    w_in = np.asarray(w, dtype=np.float32)
    rows, cols = w_in.shape
    channels = cols // kernel
    if m and kernel > 1:
        order = np.array([ch * kernel + k for k in range(kernel) for ch in range(channels)])
        group_channels = channels
    else:
        order = np.arange(cols)
        group_channels = cols
    if m:
        blocksize = max(blocksize, m)
    wk = w_in[:, order].copy()
    h = (np.asarray(gram, dtype=np.float32)[np.ix_(order, order)]
         / np.float32(max(int(samples), 1))).astype(np.float32)

    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    wk[:, dead] = 0.0
    damp = percdamp * float(np.mean(np.diag(h).astype(np.float64)))
    h[np.diag_indices(cols)] += np.float32(damp)
    u = _inverse_upper_cholesky(h)

    grouped = group_channels // m * m if m else 0

    def starts_group(p):
        ch = p % group_channels
        return ch < grouped and ch % m == 0

    i1 = 0
    while i1 < cols:
        i2 = min(i1 + blocksize, cols)
        if m and i2 < cols:  # no group may straddle two blocks
            ch = i2 % group_channels
            if ch < grouped:
                i2 -= ch % m
        count = i2 - i1
        w1 = wk[:, i1:i2].copy()
        q1 = np.zeros_like(w1)
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        diag1 = np.diag(u1)
        prune1 = np.zeros(w1.shape, dtype=bool)
        if not m:
            scores = (w1 * w1 / (diag1 * diag1)[None, :]).astype(np.float32)
            k = prune_count(sparsity, rows * i2) - prune_count(sparsity, rows * i1)
            prune1 = _prune_smallest(scores.reshape(-1), k).reshape(w1.shape)
        for j in range(count):
            if m and starts_group(i1 + j):
                g = w1[:, j:j + m]
                scores = (g * g / (diag1[j:j + m] * diag1[j:j + m])[None, :]).astype(np.float32)
                prune1[:, j:j + m] = ~_keep_largest(scores, n)
            col = w1[:, j]
            q = np.where(prune1[:, j], np.float32(0), col)
            err = ((col - q) / diag1[j]).astype(np.float32)
            q1[:, j] = q
            err1[:, j] = err
            w1[:, j:] -= np.outer(err, u1[j, j:]).astype(np.float32)
        wk[:, i1:i2] = q1
        wk[:, i2:] -= (err1 @ u[i1:i2, i2:]).astype(np.float32)
        i1 = i2

    out = np.empty_like(wk)
    out[:, order] = wk
    return out, reconstruction_error(w_in, out, gram)


def binarize_numpy(w: np.ndarray):
    """W' = alpha * sign(W), alpha = mean|W| per output row, sign(0) = +1.

    Returns (W', alpha per row)."""
    w = np.asarray(w, dtype=np.float32)
    alpha = np.abs(w.astype(np.float64)).mean(axis=1).astype(np.float32)
    out = np.where(w < 0, -alpha[:, None], alpha[:, None]).astype(np.float32)
    return out, alpha


def ternarize_numpy(w: np.ndarray, per_channel: bool = False, eps: float = TERNARY_EPS):
    """W' = gamma * RoundClip(W / (gamma + eps), -1, 1), gamma = mean|W|
    (of the tensor, or of each output row with per_channel). Rounding is half
    to even. Returns (W', gammas: one, or one per row)."""
    w = np.asarray(w, dtype=np.float32)
    w64 = w.astype(np.float64)
    if per_channel:
        gamma = np.abs(w64).mean(axis=1, keepdims=True)
    else:
        gamma = np.full((1, 1), np.abs(w64).mean() if w.size else 0.0)
    t = np.clip(np.rint(w64 / (gamma + eps)), -1, 1)
    out = (t.astype(np.float32) * gamma.astype(np.float32)).astype(np.float32)
    return out, gamma.reshape(-1).astype(np.float32)


# ----------------------------------------------------------------- quantization
#
# The grid (bonsai's server/methods/quant_grid.h states the same rule): a
# group of weights along a row's reduction axis gets a scale and an integer
# zero point, every weight one of 2^bits codes q, and the output is the
# dequantized scale * (q - zero). All in float32, rounding half to even:
#   lo = min(0, min w), hi = max(0, max w)
#   asymmetric: scale = (hi - lo) / (2^b - 1), zero = clip(rint(-lo / scale), 0, 2^b - 1)
#   symmetric:  scale = max(-lo, hi) / (2^(b-1) - 1), zero = 2^(b-1)
#   a scale of 0 becomes 1
#   q = clip(rint(w / scale) + zero, 0, 2^b - 1)
# Groups are `group_size` consecutive columns of [out, in] (in*kh*kw for a
# Conv weight, in unfold order); 0, or a size >= in, is one group per row; a
# size that does not divide `in` leaves a shorter last group.


def quant_grid(lo, hi, bits: int, symmetric: bool):
    """(scale, zero) float32 arrays from lo = min(0, min w), hi = max(0, max w)."""
    lo = np.asarray(lo, dtype=np.float32)
    hi = np.asarray(hi, dtype=np.float32)
    if symmetric:
        half = np.float32(2 ** (bits - 1))
        scale = (np.maximum(-lo, hi) / (half - np.float32(1))).astype(np.float32)
        zero = np.full(scale.shape, half, dtype=np.float32)
    else:
        max_code = np.float32(2 ** bits - 1)
        scale = ((hi - lo) / max_code).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
    if not symmetric:
        zero = np.clip(np.rint(-lo / scale), np.float32(0), max_code).astype(np.float32)
    return scale, zero


def quantize(w, scale, zero, bits: int):
    """scale * (clip(rint(w / scale) + zero, 0, 2^b - 1) - zero) in float32."""
    w = np.asarray(w, dtype=np.float32)
    max_code = np.float32(2 ** bits - 1)
    q = np.clip(np.rint(w / scale) + zero, np.float32(0), max_code).astype(np.float32)
    return (scale * (q - zero)).astype(np.float32)


def _group_width(group_size: int, cols: int) -> int:
    return group_size if 0 < group_size < cols else cols


def rtn_numpy(w: np.ndarray, bits: int, group_size: int = 128, symmetric: bool = False) -> np.ndarray:
    """Round-to-nearest: each group onto its own grid. Exact in float32."""
    w = np.asarray(w, dtype=np.float32)
    out = np.empty_like(w)
    width = _group_width(group_size, w.shape[1])
    for c0 in range(0, w.shape[1], width):
        g = w[:, c0:c0 + width]
        lo = np.minimum(g.min(axis=1), np.float32(0))
        hi = np.maximum(g.max(axis=1), np.float32(0))
        scale, zero = quant_grid(lo, hi, bits, symmetric)
        out[:, c0:c0 + width] = quantize(g, scale[:, None], zero[:, None], bits)
    return out


@dataclass
class Decisions:
    """What following another implementation's rounding found (see gptq_numpy)."""
    weights: int = 0        # quantized weights compared
    differ: int = 0         # whose code differs from this reference's own choice
    unexplained: int = 0    # of those, farther than the slack from a rounding boundary
    off_grid: int = 0       # followed values that are not on this reference's grid
    mask_differs: int = 0   # pruned here but not zero there
    needed: float = 0.0     # the largest distance from a boundary among differing codes, in units of
                            # each row's sum magnitude (see _obs_quantize): the `slack` they needed
    widest: float = 0.0     # the largest slack allowed, in weight units


def _inverse_upper_cholesky64(h: np.ndarray) -> np.ndarray:
    """Upper U with H^-1 = U^T U, in float64."""
    lower_inv = np.linalg.inv(np.linalg.cholesky(h))
    return np.linalg.cholesky(lower_inv.T @ lower_inv).T


def _obs_quantize(w, gram, samples, order, *, bits, group_size, symmetric, percdamp, blocksize,
                  sparsity=0.0, n=0, m=0, group_channels=None, follow=None, slack=0.0):
    """The OBS sweep of GPTQ and SparseGPT with quantization, in float64 and
    without lazy batching: each column's update reaches every later column at
    once (the papers' blocks only reorder those additions; blocks still fix
    which columns share an unstructured mask's quota).

    A group's grid is chosen when the sweep first reaches one of its columns,
    from the current values of all of its columns.

    With `follow` (another implementation's output, [out, in]) the sweep
    takes that output's code of every weight instead of its own, and counts
    in a Decisions whether each code is the one this reference would choose,
    or one that a weight moved by at most the slack would get (and, for an
    asymmetric zero point, -lo / scale moved as far). An output computed in
    float32 is so checked decision by decision, without one rounding that
    went the other way spreading into every later column. Every current
    weight is a sum w_0 - sum_i E_i U_ij of up to d terms, so the slack of
    row r is `slack` * (max_j |w_0,rj| + max_j sum_i |E_ri U_ij|): the form
    of the classic bound d u sum |x_i| on a float32 sum's error.
    """
    w_in = np.asarray(w, dtype=np.float32)
    rows, cols = w_in.shape
    wk = w_in[:, order].astype(np.float64)
    h = np.asarray(gram, dtype=np.float64)[np.ix_(order, order)] / max(int(samples), 1)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    wk[:, dead] = 0.0
    h[np.diag_indices(cols)] += percdamp * np.mean(np.diag(h))
    u = _inverse_upper_cholesky64(h)
    diag = np.diag(u)

    width = _group_width(group_size, cols)
    group_of = order // width
    groups = (cols + width - 1) // width
    scale = np.ones((rows, groups), dtype=np.float32)
    zero = np.zeros((rows, groups), dtype=np.float32)
    zero_step = np.zeros((rows, groups))  # the other zero point within slack: -1, +1 or 0
    touched = np.zeros(groups, dtype=bool)
    max_code = 2 ** bits - 1
    followed = None if follow is None else np.asarray(follow, dtype=np.float64)[:, order]
    relative_slack = float(slack)
    scale_of_row = np.abs(wk).max(axis=1)  # max |w_0| of each row, then + max sum |E U|
    magnitude = np.zeros((rows, cols)) if follow is not None else None  # sum_i |E_i U_ij|
    slack = relative_slack * scale_of_row
    decisions = Decisions()

    group_channels = group_channels or cols
    grouped = group_channels // m * m if m else 0
    prune = np.zeros((rows, cols), dtype=bool)
    if m:
        blocksize = max(blocksize, m)

    i1 = 0
    while i1 < cols:
        i2 = min(i1 + blocksize, cols)
        if m and i2 < cols:  # no N:M group may straddle two blocks
            ch = i2 % group_channels
            if ch < grouped:
                i2 -= ch % m
        if not m and sparsity > 0:
            w1 = wk[:, i1:i2].astype(np.float32)
            d1 = diag[i1:i2].astype(np.float32)
            scores = (w1 * w1 / (d1 * d1)[None, :]).astype(np.float32)
            k = prune_count(sparsity, rows * i2) - prune_count(sparsity, rows * i1)
            prune[:, i1:i2] = _prune_smallest(scores.reshape(-1), k).reshape(rows, i2 - i1)
        for p in range(i1, i2):
            ch = p % group_channels
            if m and ch < grouped and ch % m == 0:
                g = wk[:, p:p + m].astype(np.float32)
                d1 = diag[p:p + m].astype(np.float32)
                scores = (g * g / (d1 * d1)[None, :]).astype(np.float32)
                prune[:, p:p + m] = ~_keep_largest(scores, n)
            gi = group_of[p]
            if magnitude is not None:
                slack = relative_slack * (scale_of_row + magnitude.max(axis=1))
                decisions.widest = max(decisions.widest, float(slack.max()))
            if not touched[gi]:
                current = wk[:, group_of == gi].astype(np.float32)
                lo = np.minimum(current.min(axis=1), np.float32(0))
                hi = np.maximum(current.max(axis=1), np.float32(0))
                scale[:, gi], zero[:, gi] = quant_grid(lo, hi, bits, symmetric)
                if not symmetric:
                    x = -lo.astype(np.float64) / scale[:, gi]
                    near = np.abs(x - np.floor(x) - 0.5) <= 2 * slack / scale[:, gi]
                    zero_step[:, gi] = np.where(near, np.where(np.rint(x) > x, -1, 1), 0)
                touched[gi] = True
            col = wk[:, p]
            s = scale[:, gi].astype(np.float64)
            z = zero[:, gi].astype(np.float64)
            t = col / s
            code = np.clip(np.rint(t) + z, 0, max_code) - z
            if followed is not None:
                code = _follow(code, t, s, z, zero_step[:, gi], followed[:, p], slack, prune[:, p],
                               max_code, decisions, slack / relative_slack if relative_slack else 1.0)
            q = np.where(prune[:, p], 0.0, s * code)
            err = (col - q) / u[p, p]
            wk[:, p] = q
            wk[:, p + 1:] -= np.outer(err, u[p, p + 1:])
            if magnitude is not None:
                magnitude[:, p + 1:] += np.outer(np.abs(err), np.abs(u[p, p + 1:]))
        i1 = i2

    out = np.empty((rows, cols), dtype=np.float32)
    out[:, order] = wk.astype(np.float32)
    error = reconstruction_error(w_in, out, gram)
    return (out, error) if follow is None else (out, error, decisions)


def _follow(code, t, s, z, zero_step, followed, slack, pruned, max_code, decisions, unit):
    """The followed output's codes where they are on this grid, counted."""
    kept = ~pruned
    decisions.mask_differs += int(np.sum(pruned & (followed != 0)))
    theirs = np.rint(followed / s)
    # The other grid's scale is within 2 slack / (2^b - 1) of this one's, so
    # its code k lies within 2 slack |k| / ((2^b - 1) s) <= 2 slack / s of
    # followed / s.
    on_grid = np.abs(followed / s - theirs) <= 2 * slack / s + 1e-4
    decisions.off_grid += int(np.sum(kept & ~on_grid))
    use = kept & on_grid
    differ = use & (theirs != code)
    decisions.weights += int(np.sum(kept))
    decisions.differ += int(np.sum(differ))
    if differ.any():
        boundary = np.minimum(theirs, code) + 0.5  # in units of t, where rounding changes
        needed = np.abs(t - boundary) * s / unit
        decisions.needed = max(decisions.needed, float(np.max(needed[differ])))
        delta = slack / s
        explained = np.zeros_like(differ)
        for zz in (z, z + zero_step):
            low = np.clip(np.rint(t - delta) + zz, 0, max_code) - zz
            high = np.clip(np.rint(t + delta) + zz, 0, max_code) - zz
            explained |= (theirs >= low) & (theirs <= high)
        decisions.unexplained += int(np.sum(differ & ~explained))
    return np.where(use, theirs, code)


def gptq_numpy(w: np.ndarray, gram: np.ndarray, samples: int, bits: int, group_size: int = 128,
               symmetric: bool = False, act_order: bool = False, percdamp: float = 0.01,
               follow=None, slack=0.0):
    """GPTQ, Algorithm 1 of the paper: columns are quantized one at a time
    (in order of decreasing H_jj with act_order, ties to the lower column);
    each weight's rounding error, divided by [H^-1]_jj read from the upper
    Cholesky factor U of H^-1, is subtracted times row j of U from the row's
    weights not yet quantized. H = gram / samples, dead inputs (H_jj = 0) get
    H_jj = 1 and zero weights, lambda = percdamp * mean(diag H).

    Groups stay those of the natural layout (group of column c is
    c // group_size) under act_order; a group's grid is chosen when the sweep
    first reaches one of its columns, from the current values of all its
    columns. Returns (W', reconstruction error); with `follow`, also the
    Decisions (see _obs_quantize).
    """
    cols = np.asarray(w).shape[1]
    if act_order:
        order = np.argsort(-np.diag(np.asarray(gram, dtype=np.float32)), kind="stable")
    else:
        order = np.arange(cols)
    return _obs_quantize(w, gram, samples, order, bits=bits, group_size=group_size,
                         symmetric=symmetric, percdamp=percdamp, blocksize=cols, follow=follow,
                         slack=slack)


def sparsegpt_quant_numpy(w: np.ndarray, gram: np.ndarray, samples: int, bits: int,
                          sparsity: float = 0.0, n: int = 0, m: int = 0, group_size: int = 128,
                          symmetric: bool = False, blocksize: int = 128, percdamp: float = 0.01,
                          kernel: int = 1, follow=None, slack=0.0):
    """SparseGPT's joint mode: the masks of sparsegpt_numpy (each block's
    share of the smallest w^2 / U_jj^2, or N:M per group when the sweep
    reaches it, from current weights; Conv N:M in (kernel position, channel)
    order), pruned weights set to 0 and kept ones quantized as in gptq_numpy
    (groups along the natural columns), every error spread by the OBS update.
    Returns (W', reconstruction error); with `follow`, also the Decisions.
    """
    cols = np.asarray(w).shape[1]
    channels = cols // kernel
    if m and kernel > 1:
        order = np.array([ch * kernel + k for k in range(kernel) for ch in range(channels)])
        group_channels = channels
    else:
        order = np.arange(cols)
        group_channels = cols
    return _obs_quantize(w, gram, samples, order, bits=bits, group_size=group_size,
                         symmetric=symmetric, percdamp=percdamp, blocksize=blocksize,
                         sparsity=sparsity, n=n, m=m, group_channels=group_channels,
                         follow=follow, slack=slack)
