"""The relational losses as single loop nests over pairs and triplets, compiled by numba.

Imported only through :mod:`horkd.losses.cpu_kernels`, which converts tensors and picks these
over the eager operations. Each function makes the loss and its closed-form gradient with respect
to the Gram matrices in one pass, the same formulas as ``second_order`` / ``third_order`` (see
the derivations there); nothing of size N^3 is ever stored. Whether a side's gradient is needed
is a compile-time constant of each entry point (``_student`` / ``_both``): as a run-time flag it
keeps LLVM from vectorising the inner loop, which costs about 3x.

Compiled with the fast-math flags that let LLVM reorder and vectorise sums, but not the ones that
assume no NaN or infinity. Non-finite Gram matrices (a diverged student) return a NaN loss at
once, and the caller hands them to the eager operations, which carry the NaN into the loss as
they always did (the trainer then skips the step).

``consts`` carries the scalar settings as an array of the inputs' dtype, so float32 inputs are
computed in float32 (a Python float would promote every operation to float64). Sums over one
row are kept in the inputs' dtype (so they vectorise); the angle term adds its rows in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# consts = [huber delta, coincidence threshold on squared distances, clamp EPS]
DELTA, COINCIDENT, EPS = 0, 1, 2
FAST = ("reassoc", "contract", "arcp", "nsz", "afn")  # no "nnan" / "ninf"


@njit(inline="always", fastmath=set(FAST))
def _finite(g):  # type: ignore[no-untyped-def]
    """Whether no entry is NaN or infinite: one vectorised sum (NaN and inf survive it; a sum
    that overflows says False, which only sends finite input to the eager path)."""
    total = g.dtype.type(0.0)
    for j in range(g.shape[0]):
        row = g[j]
        for k in range(g.shape[1]):
            total += row[k]
    return np.isfinite(total)


@njit(inline="always", fastmath=set(FAST), error_model="numpy")
def _anchor_directions(g, i, inv, half, coincident):  # type: ignore[no-untyped-def]
    """inv[j] = 1 / ||e_j - e_i|| (0 where the points coincide), half[j] = G_ij - G_ii / 2."""
    one, zero = inv.dtype.type(1.0), inv.dtype.type(0.0)
    for j in range(g.shape[0]):
        squared = g[i, i] + g[j, j] - (g[i, j] + g[i, j])
        inv[j] = one / np.sqrt(squared) if squared > coincident else zero
        half[j] = g[i, j] - g[i, i] * inv.dtype.type(0.5)


@njit(inline="always", fastmath=set(FAST), error_model="numpy")
def _angle_anchor(gs, gt, i, a, scratch, grad_s, grad_t, p_s, r_s, p_t, r_t, consts,
                  need_s, need_t):  # type: ignore[no-untyped-def]
    """Sum over (j, k) of huber(cos^S_ijk - cos^T_ijk) at anchor i; accumulates each needed
    side's dL/dnum into its grad block and stores its p_j and r_j (row ``a``)."""
    one, half, zero = gs.dtype.type(1.0), gs.dtype.type(0.5), gs.dtype.type(0.0)
    delta = consts[DELTA]
    inv_s, half_s, inv_t, half_t = scratch[0], scratch[1], scratch[2], scratch[3]
    _anchor_directions(gs, i, inv_s, half_s, consts[COINCIDENT])
    _anchor_directions(gt, i, inv_t, half_t, consts[COINCIDENT])
    n = gs.shape[0]
    total = 0.0
    for j in range(n):
        inv_sj, half_sj, inv_tj, half_tj = inv_s[j], half_s[j], inv_t[j], half_t[j]
        row_s, row_t = gs[j], gt[j]
        out_s, out_t = grad_s[j], grad_t[j]
        loss = dot_s = sum_s = dot_t = sum_t = zero
        for k in range(n):
            cos_s = min(max((row_s[k] - half_sj - half_s[k]) * inv_sj * inv_s[k], -one), one)
            cos_t = min(max((row_t[k] - half_tj - half_t[k]) * inv_tj * inv_t[k], -one), one)
            gap = cos_s - cos_t
            if k == j:  # not a distinct triplet
                gap = zero
            clipped = min(max(gap, -delta), delta)
            loss += clipped * (gap - half * clipped)
            if need_s:
                dot_s += clipped * cos_s
                d_num = clipped * inv_sj * inv_s[k]
                sum_s += d_num
                out_s[k] += d_num
            if need_t:
                dot_t -= clipped * cos_t
                d_num = -clipped * inv_tj * inv_t[k]
                sum_t += d_num
                out_t[k] += d_num
        total += loss
        if need_s:
            p_s[a, j] = dot_s * inv_sj * inv_sj
            r_s[a, j] = sum_s - p_s[a, j]
        if need_t:
            p_t[a, j] = dot_t * inv_tj * inv_tj
            r_t[a, j] = sum_t - p_t[a, j]
    return total


@njit(inline="always", error_model="numpy")
def _finish_angle_grad(blocks, anchors, p, r, scale):  # type: ignore[no-untyped-def]
    """dL/dG from the per-thread dL/dnum blocks and each anchor's p, r (see third_order)."""
    grad = blocks[0].copy()
    for b in range(1, blocks.shape[0]):
        grad += blocks[b]
    for a in range(anchors.shape[0]):
        i = anchors[a]
        for j in range(grad.shape[0]):
            grad[i, j] -= 2 * r[a, j]
            grad[i, i] += r[a, j]
            grad[j, j] -= p[a, j]
    return grad * scale


@njit(inline="always")
def _blocks(n, m):  # type: ignore[no-untyped-def]
    """How many ranges the anchors are split into (each with its own N x N gradient buffer):
    up to 4, as many threads can share the work, fewer when the buffers would pass 2^24 floats
    in all. Never the number of threads: that sets the order of the float sums, so the result
    would change with the thread count (several processes would disagree with one, and a
    resumed run with its original). Splitting the rows j instead needs no buffers but was 1.8x
    slower (each row streams every anchor's directions)."""
    return max(1, min(m, 4, (1 << 24) // (n * n)))


@njit(inline="always", error_model="numpy")
def _angle(gs, gt, anchors, consts, need_s, need_t):  # type: ignore[no-untyped-def]
    n, m = gs.shape[0], anchors.shape[0]
    if not (_finite(gs) and _finite(gt)):
        return np.nan, np.zeros((0, n), gs.dtype), np.zeros((0, n), gs.dtype)
    blocks = _blocks(n, m)
    grad_blocks_s = np.zeros((blocks if need_s else 1, n, n), gs.dtype)
    grad_blocks_t = np.zeros((blocks if need_t else 1, n, n), gs.dtype)
    p_s, r_s = np.zeros((m, n), gs.dtype), np.zeros((m, n), gs.dtype)
    p_t, r_t = np.zeros((m, n), gs.dtype), np.zeros((m, n), gs.dtype)
    totals = np.zeros(blocks)
    for b in prange(blocks):  # a block: a range of anchors and its own grad buffer
        scratch = np.empty((4, n), gs.dtype)
        out_s = grad_blocks_s[b if need_s else 0]
        out_t = grad_blocks_t[b if need_t else 0]
        total = 0.0
        for a in range(b * m // blocks, (b + 1) * m // blocks):
            total += _angle_anchor(gs, gt, anchors[a], a, scratch, out_s, out_t,
                                   p_s, r_s, p_t, r_t, consts, need_s, need_t)
        totals[b] = total
    count = m * (n - 1) * (n - 2)
    scale = gs.dtype.type(1.0 / count)
    grad_s = _finish_angle_grad(grad_blocks_s, anchors, p_s, r_s, scale) if need_s else p_s[:0]
    grad_t = _finish_angle_grad(grad_blocks_t, anchors, p_t, r_t, scale) if need_t else p_t[:0]
    return totals.sum() / count, grad_s, grad_t


@njit(parallel=True, fastmath=set(FAST), error_model="numpy", cache=True)
def angle_student(gs, gt, anchors, consts):  # type: ignore[no-untyped-def]
    """(loss, dL/dG_student, empty) of the angle loss at ``anchors``."""
    return _angle(gs, gt, anchors, consts, True, False)


@njit(parallel=True, fastmath=set(FAST), error_model="numpy", cache=True)
def angle_both(gs, gt, anchors, consts):  # type: ignore[no-untyped-def]
    """(loss, dL/dG_student, dL/dG_teacher) of the angle loss at ``anchors``."""
    return _angle(gs, gt, anchors, consts, True, True)


@njit(inline="always", fastmath=set(FAST), error_model="numpy")
def _distances(g, eps):  # type: ignore[no-untyped-def]
    """||e_j - e_k|| (diagonal 0) and their clamped mean over the off-diagonal pairs."""
    n = g.shape[0]
    d = np.empty((n, n), g.dtype)
    zero = g.dtype.type(0.0)
    total = zero
    for j in range(n):
        row, g_jj = g[j], g[j, j]
        for k in range(n):
            value = np.sqrt(max(g_jj + g[k, k] - (row[k] + row[k]), eps))
            d[j, k] = value if k != j else zero
            total += d[j, k]
    return d, max(total / g.dtype.type(n * (n - 1)), eps)


@njit(inline="always", fastmath=set(FAST), error_model="numpy")
def _distance_grad(grad_q, dot, d, mean, eps):  # type: ignore[no-untyped-def]
    """dL/dG from dL/dq for q = d / mean(d), as second_order._gram_grad: dL/dsq_jk enters
    G_jk with -2 and G_jj, G_kk with +1 (coincident points and the diagonal pass nothing)."""
    n = d.shape[0]
    zero = d.dtype.type(0.0)
    shift = dot / d.dtype.type(n * (n - 1))
    grad = np.empty((n, n), d.dtype)
    rows = np.zeros(n, d.dtype)
    cols = np.zeros(n, d.dtype)
    for j in range(n):
        row_q, row_d, out = grad_q[j], d[j], grad[j]
        for k in range(n):
            dist = row_d[k]
            grad_sq = (row_q[k] - shift) / mean / max(dist + dist, eps)
            grad_sq = grad_sq if dist * dist > eps else zero
            out[k] = -(grad_sq + grad_sq)
            rows[j] += grad_sq
            cols[k] += grad_sq
    for j in range(n):
        grad[j, j] += rows[j] + cols[j]
    return grad


@njit(inline="always", fastmath=set(FAST), error_model="numpy")
def _distance(gs, gt, consts, lo, hi, need_s, need_t):  # type: ignore[no-untyped-def]
    """Rows ``lo..hi`` of the loss (a process's share; 0..n: all) and their gradient; the
    distances' mean, the normaliser, is always over every pair."""
    n = gs.shape[0]
    if not (_finite(gs) and _finite(gt)):
        return np.nan, np.zeros((0, n), gs.dtype), np.zeros((0, n), gs.dtype)
    delta, eps = consts[DELTA], consts[EPS]
    half, zero = gs.dtype.type(0.5), gs.dtype.type(0.0)
    per_pair = gs.dtype.type(1.0 / (n * (n - 1)))
    d_s, mean_s = _distances(gs, eps)
    d_t, mean_t = _distances(gt, eps)
    grad_q = np.zeros((n, n), gs.dtype)
    total = dot_s = dot_t = zero
    for j in range(lo, hi):
        row_s, row_t, out = d_s[j], d_t[j], grad_q[j]
        for k in range(n):
            q_s, q_t = row_s[k] / mean_s, row_t[k] / mean_t
            gap = q_s - q_t
            clipped = min(max(gap, -delta), delta)
            total += clipped * (gap - half * clipped)
            out[k] = clipped * per_pair
            dot_s += out[k] * q_s
            dot_t += out[k] * q_t
    grad_s = _distance_grad(grad_q, dot_s, d_s, mean_s, eps) if need_s else grad_q[:0]
    grad_t = _distance_grad(-grad_q, -dot_t, d_t, mean_t, eps) if need_t else grad_q[:0]
    return total * per_pair, grad_s, grad_t


@njit(fastmath=set(FAST), error_model="numpy", cache=True)
def distance_student(gs, gt, consts, lo, hi):  # type: ignore[no-untyped-def]
    """(loss, dL/dG_student, empty) of the normalised-distance loss (rows lo..hi)."""
    return _distance(gs, gt, consts, lo, hi, True, False)


@njit(fastmath=set(FAST), error_model="numpy", cache=True)
def distance_both(gs, gt, consts, lo, hi):  # type: ignore[no-untyped-def]
    """(loss, dL/dG_student, dL/dG_teacher) of the normalised-distance loss (rows lo..hi)."""
    return _distance(gs, gt, consts, lo, hi, True, True)
