"""Turning scores or embeddings into a batch of distinct candidate positions.

Score-based: ``topk``, ``power`` (log score + Gumbel(0, 1/β) noise), ``softrank`` (−log rank + noise),
``stratified`` (per-stratum quotas, ClaSP-style).  Set-based: ``kcenter_greedy`` (Core-Set) and
``kmeanspp_badge`` (BADGE k-means++ seeding on the factorised gradient embedding
``g = (p − onehot(ŷ)) ⊗ h``; memory O(N·(C+D)), never O(N·C·D)).

Every stochastic function takes a ``numpy.random.Generator`` so the same seed gives the same picks.
Heavy lifting is torch mat-vec products on whatever device the inputs live on; on the host the greedy
loops run with one BLAS thread (``core.threads.small_products``: a thread barrier per small mat-vec
costs more than the product).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .threads import small_products

LOG_EPS = 1e-12


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_n(n: int, size: int):
    if n < 0 or n > size:
        raise ValueError(f"cannot select {n} from {size} candidates")


def topk(scores, n: int) -> np.ndarray:
    """Positions of the ``n`` largest scores, highest first; ties broken by lower position."""
    s = _np(scores).astype(np.float64, copy=False)
    _check_n(n, len(s))
    order = np.argsort(-s, kind="stable")
    return order[:n].astype(np.int64)


def gumbel(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Gumbel(0, 1/β) noise."""
    if beta <= 0:
        raise ValueError("beta must be > 0")
    return rng.gumbel(loc=0.0, scale=1.0 / beta, size=size)


def power(scores, n: int, rng: np.random.Generator, beta: float = 1.0) -> np.ndarray:
    """Power acquisition: top-k of ``log(score) + Gumbel(0, 1/β)``.  β → ∞ is top-k, β → 0 random."""
    s = _np(scores).astype(np.float64, copy=False)
    _check_n(n, len(s))
    return topk(np.log(np.maximum(s, LOG_EPS)) + gumbel(rng, len(s), beta), n)


def softrank(scores, n: int, rng: np.random.Generator, beta: float = 1.0) -> np.ndarray:
    """Softrank acquisition: top-k of ``−log(rank) + Gumbel(0, 1/β)`` with rank 1 = highest score."""
    s = _np(scores)
    _check_n(n, len(s))
    rank = np.empty(len(s), dtype=np.float64)
    rank[np.argsort(-s, kind="stable")] = np.arange(1, len(s) + 1)
    return topk(-np.log(rank) + gumbel(rng, len(s), beta), n)


def stratified(scores: Sequence, quotas: Sequence[int]) -> np.ndarray:
    """Take the top ``quotas[k]`` of ``scores[k]`` for each stratum in order, skipping positions an
    earlier stratum already took (all score arrays index the same candidates)."""
    if len(scores) != len(quotas):
        raise ValueError("one quota per score array")
    size = len(_np(scores[0]))
    _check_n(int(sum(quotas)), size)
    taken = np.zeros(size, dtype=bool)
    out = []
    for s, q in zip(scores, quotas):
        for pos in topk(s, size):
            if q == 0:
                break
            if not taken[pos]:
                taken[pos] = True
                out.append(pos)
                q -= 1
    return np.asarray(out, dtype=np.int64)


def _t(x, device=None, dtype=torch.float32) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device or t.device, dtype=dtype)


def _sqnorm(x: torch.Tensor) -> torch.Tensor:
    """Row-wise squared norms without an N×D temporary."""
    return torch.linalg.vector_norm(x, dim=1).square_()


def _sq_dists_chunked(x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """min_j ||x_i − y_j||² for every i, in row chunks so memory stays O(chunk · |y|)."""
    out = torch.empty(len(x), dtype=x.dtype, device=x.device)
    ysq = _sqnorm(y)
    for a in range(0, len(x), chunk):
        xc = x[a:a + chunk]
        d = _sqnorm(xc)[:, None] + ysq[None] - 2 * xc @ y.T
        out[a:a + chunk] = d.amin(1).clamp_min_(0)
    return out


def _host(x: torch.Tensor):
    """CPU tensors become (zero-copy) numpy arrays, others stay torch tensors on their device."""
    return x.detach().numpy() if x.device.type == "cpu" else x


def _gram_row(m, j: int) -> np.ndarray:
    """``m @ m[j]`` as float64 numpy: one mat-vec per greedy step.  The per-step elementwise work
    then runs in numpy on the host — torch's parallel elementwise kernels on ~10^4–10^5 values pay a
    thread barrier each, which dominates on a busy 2-core machine."""
    if isinstance(m, np.ndarray):
        return (m @ m[j]).astype(np.float64)
    return (m @ m[j]).double().cpu().numpy()


@small_products()
def kcenter_greedy(features, labelled_features, n: int, rng: np.random.Generator | None = None,
                   return_scores: bool = False):
    """Greedy k-center (Sener & Savarese): repeatedly take the candidate farthest from its nearest
    centre (labelled points and earlier picks).  With no labelled points the first centre is drawn
    with ``rng`` (position 0 without one).  ``return_scores``: also return the squared distance of
    each pick to its nearest centre when it was picked (0 for a drawn first centre) and the squared
    distance of every candidate to the labelled set (``(picks, pick_d2, pool_d2)``)."""
    x = _t(features)
    _check_n(n, len(x))
    picks: list[int] = []
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return (empty, np.zeros(0), np.zeros(len(x))) if return_scores else empty
    lab = None if labelled_features is None else _t(labelled_features, device=x.device)
    if lab is None or len(lab) == 0:
        first = int(rng.integers(len(x))) if rng is not None else 0
        picks.append(first)
        lab = x[first:first + 1]
    d = _sq_dists_chunked(x, lab).double().cpu().numpy()
    pool_d2 = d.copy() if return_scores else None
    vals = [0.0] * len(picks)
    xsq = _sqnorm(x).double().cpu().numpy()
    xm = _host(x)
    d[picks] = -1.0
    while len(picks) < n:
        j = int(np.argmax(d))
        picks.append(j)
        vals.append(float(d[j]))
        new = np.maximum(xsq + xsq[j] - 2 * _gram_row(xm, j), 0.0)
        np.minimum(d, new, out=d)
        d[j] = -1.0  # never re-picked, even when duplicates make every distance 0
    picks_a = np.asarray(picks, dtype=np.int64)
    return (picks_a, np.asarray(vals), pool_d2) if return_scores else picks_a


def badge_factors(probs, h) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of the BADGE embedding: ``a = p − onehot(argmax p)`` [N, C] and ``h`` [N, D];
    the embedding is the row-wise outer product ``a ⊗ h`` (never materialised)."""
    p = _t(probs)
    a = p.clone()
    a[torch.arange(len(p), device=p.device), p.argmax(1)] -= 1.0
    return a, _t(h, device=p.device)


def badge_dense(probs, h) -> torch.Tensor:
    """Dense [N, C·D] embedding — for tests and the benchmark reference only."""
    a, hh = badge_factors(probs, h)
    return (a[:, :, None] * hh[:, None, :]).reshape(len(a), -1)


_DRAW_BLOCK = 512    # rows per partial sum of the D² draw
_RUN_BLOCK = 8       # rows per candidate block of the pruned BADGE step (one uint64 of a bool mask)
_RUN_GAP = 2         # candidate runs closer than this many blocks are read as one run


class _D2Sampler:
    """Inverse-CDF draws ∝ D² over blocks of :data:`_DRAW_BLOCK` rows: a cumulative sum over the block
    sums picks the block, one over that block's rows picks the row, so a draw reads ~N/512 + 512
    values instead of all N, and after a step only the blocks holding changed rows are summed again.
    The dense reference and the factorised path share it (same D² → same picks)."""

    def __init__(self, d2: np.ndarray):
        self.n = len(d2)
        self.nb = -(-self.n // _DRAW_BLOCK)
        self.buf = np.zeros(self.nb * _DRAW_BLOCK)
        self.d2 = self.buf[:self.n]          # the D² of every row (callers update it in place)
        self.d2[:] = d2
        self.blocks = self.buf.reshape(self.nb, _DRAW_BLOCK)
        self.sums = self.blocks.sum(1)

    def refresh(self, rows=None):
        """Sum again the blocks holding ``rows`` (all blocks when None) after their D² changed."""
        if rows is None:
            self.sums = self.blocks.sum(1)
        elif len(rows):
            mark = np.zeros(self.nb, dtype=bool)
            mark[np.asarray(rows) // _DRAW_BLOCK] = True
            if mark.sum() * 2 > self.nb:   # most blocks: one pass (the same per-block sums)
                self.sums = self.blocks.sum(1)
            else:
                b = np.flatnonzero(mark)
                self.sums[b] = self.blocks[b].sum(1)

    def draw(self, rng: np.random.Generator):
        """A row drawn ∝ D² with one ``rng.random()``; None (and no draw) when every D² is 0."""
        cb = np.cumsum(self.sums)
        total = cb[-1]
        if not np.isfinite(total) or total <= 0:
            return None
        r = rng.random() * total
        b = min(int(np.searchsorted(cb, r, side="right")), self.nb - 1)
        r -= cb[b - 1] if b else 0.0
        row = self.blocks[b]
        i = int(np.searchsorted(np.cumsum(row), r, side="right"))
        if i >= _DRAW_BLOCK or row[i] <= 0:   # round-off at the top of a block: its last positive row
            pos = np.flatnonzero(row > 0)
            if len(pos) == 0:
                return int(np.flatnonzero(self.d2 > 0)[-1])
            i = int(pos[-1])
        return b * _DRAW_BLOCK + i


@small_products()
def kmeanspp_badge(probs, h, n: int, rng: np.random.Generator, dense: bool = False, return_scores: bool = False):
    """BADGE k-means++ seeding on ``g_i = a_i ⊗ h_i``.

    ``||g_i − g_j||² = |a_i|²|h_i|² + |a_j|²|h_j|² − 2 (a_i·a_j)(h_i·h_j)``, so the distance of all
    points to one centre costs two mat-vec products (O(N·(C+D))).  The first centre is the
    max-norm point; each next one is drawn ∝ D², where D is the distance to the nearest *chosen*
    centre (no phantom centre at the origin).  Chosen points have D = 0 and cannot be drawn again;
    if every remaining D² is 0 (identical embeddings) the rest is drawn uniformly.
    ``dense=True`` runs the same algorithm on the materialised embedding (reference only).
    ``return_scores``: also return each pick's D² when it was drawn (the first: its squared norm) and
    every candidate's squared embedding norm (``(picks, pick_d2, norms2)``).

    Host path (numpy inputs or CPU tensors), exact pruning per step: the bound
    ``|h_i·h_j| ≤ |h_i||h_j|`` (and ``h_i·h_j ≥ 0`` when every feature is ≥ 0, e.g. after a ReLU)
    gives ``||g_i − g_j||² ≥ |g_i|² + |g_j|² − 2·f(a_i·a_j)·|h_i||h_j|`` (f = max(·, 0), else |·|)
    from the cheap N×C product alone; rows whose bound is ≥ their D² keep it (a 1e-5 relative margin
    covers round-off, so the result is the unpruned one), and the N×D mat-vec — the memory-bound
    part — reads only the remaining rows (~5 % on BADGE embeddings).  Rows are kept sorted by
    (predicted class, runner-up class, |g|²), where those rows form a few contiguous runs that the
    mat-vec streams (a gather of scattered rows is latency-bound, ~3× slower per byte).  The D² draw reads block sums
    (:class:`_D2Sampler`), and only the blocks of changed rows are summed again."""
    a, hh = (t.detach() for t in badge_factors(probs, h))
    N = len(a)
    _check_n(n, N)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return (empty, np.zeros(0), np.zeros(N)) if return_scores else empty
    host = a.device.type == "cpu" and not dense
    if dense:
        g = (a[:, :, None] * hh[:, None, :]).reshape(N, -1)
        sq = _sqnorm(g).double().cpu().numpy()
        gm = _host(g)

        def step(j, sampler):
            np.minimum(sampler.d2, np.maximum(sq + sq[j] - 2 * _gram_row(gm, j), 0.0), out=sampler.d2)
            sampler.d2[j] = 0.0
            sampler.refresh()
    elif not host:   # device tensors: full mat-vecs on the device
        sq = (_sqnorm(a) * _sqnorm(hh)).double().cpu().numpy()
        am, hm = _host(a), _host(hh)

        def step(j, sampler):
            new = np.maximum(sq + sq[j] - 2 * _gram_row(am, j) * _gram_row(hm, j), 0.0)
            np.minimum(sampler.d2, new, out=sampler.d2)
            sampler.d2[j] = 0.0
            sampler.refresh()
    else:
        # rows sorted by (predicted class, runner-up class, |g|²): a new centre can only move rows with
        # a_i·a_j > 0 — nearly all of its own predicted class, most often sharing its runner-up too —
        # and of large norm, so after the sort they lie in a few contiguous runs, and the N×D mat-vec
        # streams those runs instead of gathering scattered rows (a gather is latency-bound: 4 GB/s)
        an = a.numpy()
        hsq = _sqnorm(hh)
        sq_o = (_sqnorm(a) * hsq).double().numpy()
        cls = np.argsort(an, 1)                              # [:, 0] = ŷ (a = p − 1 there), [:, -1] = runner-up
        perm = np.lexsort((sq_o, cls[:, -1], cls[:, 0]))
        inv = np.empty(N, dtype=np.int64)
        inv[perm] = np.arange(N)
        hp = np.take(hh.numpy(), perm, axis=0)               # sorted copy of h (np.take: 3× faster than [perm])
        apT = np.ascontiguousarray(np.take(an, perm, axis=0).T)   # C×N: a_j @ apT streams rows (fast gemv)
        sqp = sq_o[perm]
        hn = hsq.sqrt_().numpy()[perm]                       # float32 |h_i|
        nonneg = bool(hh.min() >= 0) if hh.numel() else True
        keep = 1.0 - 1e-5
        nblk = -(-N // _RUN_BLOCK)
        npad = nblk * _RUN_BLOCK
        # (1 − 1e-5)|g_i|² − D²_i per row, sorted order, float32: its round-off (~1e-7 of |g_i|² or D²_i)
        # only matters where D²_i ≲ |g_i|² + |g_j|², far inside the 1e-5 margin; padding rows never pass
        thr = np.full(npad, -np.inf, dtype=np.float32)
        thr[N:] = np.inf
        d2p = np.full(N, np.inf)                             # D², sorted order (the sampler keeps the original)
        bound = np.zeros(npad, dtype=np.float32)
        mask = np.empty(npad, dtype=bool)
        blk = np.zeros(nblk + 2, dtype=np.int8)              # candidate blocks, zero-padded at both ends
        gh_buf = np.empty(N, dtype=np.float32)

        def step(jo, sampler):
            j = int(inv[jo])
            ga = an[jo] @ apT
            # candidates: 2·f(a_i·a_j)|h_i||h_j| > (1 − 1e-5)(|g_i|² + |g_j|²) − D²_i
            b = bound[:N]
            np.maximum(ga, 0.0, out=b) if nonneg else np.abs(ga, out=b)
            np.multiply(b, hn, out=b)
            b *= 2.0 * float(hn[j])
            np.subtract(bound, thr, out=bound)
            np.greater(bound, keep * sqp[j], out=mask)
            # blocks of _RUN_BLOCK = 8 rows holding a candidate (one uint64 per block), then runs of such
            # blocks, merged across gaps of up to _RUN_GAP blocks (a call costs more than a few rows)
            blk[1:-1] = mask.view(np.uint64) != 0
            edges = np.flatnonzero(blk[1:] != blk[:-1])
            starts, ends = edges[0::2], edges[1::2]
            if len(starts) > 1:
                gap = starts[1:] - ends[:-1] > _RUN_GAP
                starts = starts[np.concatenate(([True], gap))]
                ends = ends[np.concatenate((gap, [True]))]
            starts = (starts * _RUN_BLOCK).tolist()
            ends = np.minimum(ends * _RUN_BLOCK, N).tolist()
            hj = hp[j]
            m = 0
            for s0, e0 in zip(starts, ends):
                np.dot(hp[s0:e0], hj, out=gh_buf[m:m + e0 - s0])
                m += e0 - s0
            rows = (np.concatenate([np.arange(s0, e0) for s0, e0 in zip(starts, ends)]) if len(starts) > 1
                    else np.arange(starts[0], ends[0]) if starts else np.zeros(0, dtype=np.int64))
            new = sqp[rows] + sqp[j] - 2.0 * ga[rows].astype(np.float64) * gh_buf[:m]
            lower = new < d2p[rows]
            ch = rows[lower]
            d2p[ch] = np.maximum(new[lower], 0.0)
            d2p[j] = 0.0
            thr[ch] = keep * sqp[ch] - d2p[ch]
            thr[j] = keep * sqp[j]
            cho = perm[ch]
            sampler.d2[cho] = d2p[ch]
            sampler.d2[jo] = 0.0
            sampler.refresh(np.append(cho, jo))
        sq = sq_o

    chosen = np.zeros(N, dtype=bool)
    j = int(np.argmax(sq))
    picks = [j]
    vals = [float(sq[j])]
    chosen[j] = True
    sampler = _D2Sampler(np.full(N, np.inf))   # no centre yet: every row is computed in the first step
    step(j, sampler)
    sampler.refresh()
    while len(picks) < n:
        j = sampler.draw(rng)
        if j is None:
            rest = np.flatnonzero(~chosen)
            extra = rng.choice(rest, size=n - len(picks), replace=False)
            picks.extend(int(e) for e in extra)
            vals.extend([0.0] * len(extra))
            break
        if chosen[j]:  # only reachable through round-off at the very top of the CDF
            j = int(np.flatnonzero(sampler.d2 > 0)[-1])
        picks.append(j)
        vals.append(float(sampler.d2[j]))
        chosen[j] = True
        step(j, sampler)
    picks_a = np.asarray(picks, dtype=np.int64)
    return (picks_a, np.asarray(vals), sq) if return_scores else picks_a


# ---------------------------------------------------------------------------------------------
# Noise schedules (appended for ClaSP PE; domain-free)
# ---------------------------------------------------------------------------------------------

def exponential_schedule(steps: int, beta0: float = 1.0, beta_max: float = 100.0) -> np.ndarray:
    """``steps`` values from β0 to βmax, equally spaced on a log scale:
    β(t) = exp((1 − t/T)·ln β0 + (t/T)·ln βmax), t = 0..T, T = steps − 1 (eq. D.4).
    ``exponential_schedule(5) == [1, 3.1623, 10, 31.623, 100]``."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if beta0 <= 0 or beta_max <= 0:
        raise ValueError("beta values must be > 0")
    if steps == 1:
        return np.asarray([float(beta0)])
    return float(beta0) * (float(beta_max) / float(beta0)) ** np.linspace(0.0, 1.0, steps)


def sigmoid_schedule(steps: int, beta0: float = 1.0, beta_max: float = 100.0, temperature: float = 2.0) -> np.ndarray:
    """``steps`` values from β0 to βmax along a sigmoid: s = σ(x / T) for x = linspace(−6, 6, steps),
    rescaled linearly so that the first value is β0 and the last βmax (the schedule ablation of the
    ClaSP reference code: "smooth" T = 2, "sharp" T = 0.5; thesis ch. 8 footnote)."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if beta0 <= 0 or beta_max <= 0 or temperature <= 0:
        raise ValueError("beta values and the temperature must be > 0")
    if steps == 1:
        return np.asarray([float(beta0)])
    s = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, steps) / float(temperature)))
    return float(beta0) + (float(beta_max) - float(beta0)) * (s - s[0]) / (s[-1] - s[0])


SCHEDULES = {
    "exponential": exponential_schedule,
    "sigmoid_smooth": lambda steps, b0=1.0, bm=100.0: sigmoid_schedule(steps, b0, bm, 2.0),
    "sigmoid_sharp": lambda steps, b0=1.0, bm=100.0: sigmoid_schedule(steps, b0, bm, 0.5),
}


def scheduled_beta(t: int, horizon: int, beta0: float = 1.0, beta_max: float = 100.0,
                   schedule: str = "exponential") -> float:
    """β for query ``t`` (0-based) of a schedule (:data:`SCHEDULES`) that reaches βmax at ``t = horizon``;
    later queries keep βmax (thesis §D.5).  With 5 AL loops (4 queries) and ``horizon = 4`` the
    exponential schedule gives β = 1, 3.16, 10, 31.6, as the reference implementation does."""
    if t < 0:
        raise ValueError("t must be >= 0")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown β schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if horizon <= 0:
        return float(beta_max)
    return float(SCHEDULES[schedule](horizon + 1, beta0, beta_max)[min(int(t), horizon)])
