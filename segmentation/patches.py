"""3D query patches: all-window mean scoring, the patch pool, and greedy non-overlapping picking.

Candidates are query-patch-sized boxes whose origins lie on a grid of stride ``s`` inside each
image (origin = grid index · s; every box lies fully inside its image, as in nnActive's 'valid'
convolution).  Candidate id = offset of the image + flat grid index, so ids are dense integers
over all train+pool images but are never materialised: the pool stores only the labelled ids.

* :func:`box_mean` — mean of a voxel map over every window (separable running sums along the
  three axes, O(voxels), never a loop over positions).
* :class:`PatchPool` — the ``core.pool.Pool`` contract over those ids, stored sparsely.
* :class:`ImageSelector` — per-image greedy selection without overlap (allowed overlap ``o``)
  with already-annotated voxels and with earlier picks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from core.errors import UserError
from core.pool import Pool, check_label_request


# ---------------------------------------------------------------------------------------------
# all-window mean
# ---------------------------------------------------------------------------------------------

def box_mean(u, kernel: Sequence[int], stride: Sequence[int] | int = 1):
    """Mean of ``u`` over every ``kernel``-sized window whose origin lies on the ``stride`` grid.

    ``u`` is ``[..., X, Y, Z]``; the result is ``[..., Gx, Gy, Gz]`` with ``G = (D − k) // s + 1``
    and element ``g`` = mean of ``u[..., g·s : g·s + k]`` (same type as the input: numpy in, numpy
    float32 out; a torch tensor stays on its device).  The kernel is truncated to the image where
    it is larger.  Separable: along each axis a running sum (plus the window's entering plane, minus
    its leaving one), so the cost is O(voxels) whatever the window size — never a loop over windows."""
    stride = (stride,) * 3 if isinstance(stride, (int, np.integer)) else tuple(int(v) for v in stride)
    if isinstance(u, torch.Tensor):
        return _box_mean_torch(u, kernel, stride)
    a = np.asarray(u)
    if a.ndim < 3:
        raise ValueError("box_mean needs at least 3 spatial dims")
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    k = [min(int(kk), int(d)) for kk, d in zip(kernel, a.shape[-3:])]
    scale = np.float32(1.0 / float(np.prod(k)))
    # the innermost axis first, while the map is contiguous: a prefix sum along rows (torch's cumsum
    # is a tight scan there) and one shifted difference; then the two outer axes by running sums
    # over whole planes (never numpy's cumsum along an outer axis, which walks column by column).
    # With a coarser grid on the outer axes they go first: each shrinks the map by its stride.
    last_first = stride[0] * stride[1] == 1
    if last_first:
        a = _window_sum_last(a, k[2], stride[2])
    a = _window_sum_planes(a, a.ndim - 3, k[0], stride[0])   # planes a[..., x, :, :]
    a = _window_sum_planes(a, a.ndim - 2, k[1], stride[1])   # planes a[..., :, y, :] (rows contiguous)
    if not last_first:
        a = _window_sum_last(a, k[2], stride[2])
    return np.multiply(a, scale, out=np.empty(a.shape, dtype=np.float32))


def _window_sum_last(a: np.ndarray, k: int, s: int) -> np.ndarray:
    """Sums of ``k`` consecutive elements along the last axis at starts 0, s, 2s, ... (float32)."""
    n = a.shape[-1]
    g = (n - k) // s + 1
    c = torch.cumsum(torch.from_numpy(np.ascontiguousarray(a)), -1)
    out = _scratch(a.shape[:-1] + (g,))
    res = torch.from_numpy(out)
    res[..., 0] = c[..., k - 1]
    if g > 1:   # sum over [o, o + k) = C[o + k − 1] − C[o − 1]
        torch.sub(c[..., k - 1 + s::s][..., :g - 1], c[..., s - 1::s][..., :g - 1], out=res[..., 1:])
    return out


def _scratch(shape) -> np.ndarray:
    """An uninitialised float32 array of ``shape`` whose last axis is padded (the view hides the
    padding) so that the stride between rows of a plane ``[..., :, j, :]`` is not a multiple of
    4 KiB: with such a stride (e.g. 128 × 128 float32) every row of the plane maps to the same cache
    sets and a plane operation runs ~5× slower."""
    shape = tuple(int(v) for v in shape)
    rows, last = shape[-2], shape[-1]
    pad = 0
    while (rows * (last + pad) * 4) % 4096 < 256 or (rows * (last + pad) * 4) % 4096 > 3840:
        pad += 1
        if pad > 64:
            pad = 0
            break
    return np.empty(shape[:-1] + (last + pad,), dtype=np.float32)[..., :last]


def _window_sum_planes(a: np.ndarray, axis: int, k: int, s: int) -> np.ndarray:
    """Sums of ``k`` consecutive elements along ``axis`` (not the innermost) at starts 0, s, 2s, ...
    (float32): a running sum, one vectorised plane operation per step (add the plane entering the
    window, subtract the one leaving it), so every pass streams whole rows.  numpy's own cumsum
    along a non-innermost axis walks the data column by column and is an order of magnitude slower."""
    src = np.moveaxis(a, axis, 0)
    n = src.shape[0]
    g = (n - k) // s + 1
    shape = list(a.shape)
    shape[axis] = g
    out = _scratch(shape)
    dst = np.moveaxis(out, axis, 0)
    # every ufunc below writes to memory none of its inputs overlaps (a strided plane of ``dst`` next
    # to the one just read would make numpy copy both to a temporary on every call)
    run = np.empty(src.shape[1:], dtype=np.float32)   # the running window sum, contiguous
    np.copyto(run, src[0])
    for j in range(1, k):
        np.add(run, src[j], out=run)
    np.copyto(dst[0], run)
    tmp = np.empty_like(run)
    if s == 1:
        prev = dst[0]
        for i in range(1, g):             # window [i, i + k) = window i − 1, minus plane i − 1, plus plane i + k − 1
            np.subtract(prev, src[i - 1], out=tmp)
            np.add(tmp, src[i + k - 1], out=dst[i])
            prev = dst[i]
        return out
    for i in range(1, (g - 1) * s + 1):
        np.subtract(run, src[i - 1], out=tmp)
        np.add(tmp, src[i + k - 1], out=run)
        if i % s == 0:
            np.copyto(dst[i // s], run)
    return out


def _box_mean_torch(t: torch.Tensor, kernel, stride) -> torch.Tensor:
    if t.ndim < 3:
        raise ValueError("box_mean needs at least 3 spatial dims")
    out = t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)
    k = [min(int(kk), int(d)) for kk, d in zip(kernel, out.shape[-3:])]
    for ax, (kk, ss) in enumerate(zip(k, stride)):
        dim = out.ndim - 3 + ax
        n = out.shape[dim]
        c = torch.cumsum(out, dim)
        res = c.narrow(dim, kk - 1, n - kk + 1).clone()
        res.narrow(dim, 1, n - kk).sub_(c.narrow(dim, 0, n - kk))
        if ss > 1:
            res = res.index_select(dim, torch.arange(0, n - kk + 1, ss, device=res.device))
        out = res
    return out / float(np.prod(k))


def box_mean_loop(u: np.ndarray, kernel: Sequence[int], stride: Sequence[int] | int = 1,
                  positions: np.ndarray | None = None) -> np.ndarray:
    """Reference: one explicit window mean per position (slow; tests and the benchmark only).
    With ``positions`` (``[P, 3]`` grid indices) only those are computed."""
    u = np.asarray(u, dtype=np.float64)
    stride = (stride,) * 3 if isinstance(stride, (int, np.integer)) else tuple(stride)
    k = [min(int(kk), int(d)) for kk, d in zip(kernel, u.shape[-3:])]
    grid = [(d - kk) // s + 1 for d, kk, s in zip(u.shape[-3:], k, stride)]
    if positions is None:
        positions = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).reshape(-1, 3)
    out = np.empty(len(positions))
    for i, (a, b, c) in enumerate(positions):
        x, y, z = a * stride[0], b * stride[1], c * stride[2]
        out[i] = u[..., x:x + k[0], y:y + k[1], z:z + k[2]].mean()
    return out


# ---------------------------------------------------------------------------------------------
# the patch pool
# ---------------------------------------------------------------------------------------------

class _UnlabelledView:
    """``pool.unlabelled`` without materialising it: position p ↦ the p-th unlabelled id."""

    def __init__(self, n: int, labelled_sorted: np.ndarray):
        self._n = int(n)
        self._lab = labelled_sorted
        self._shifted = labelled_sorted - np.arange(len(labelled_sorted))

    def __len__(self) -> int:
        return self._n - len(self._lab)

    def __getitem__(self, positions):
        p = np.asarray(positions, dtype=np.int64)
        if ((p < 0) | (p >= len(self))).any():
            raise IndexError("position outside the unlabelled candidates")
        return p + np.searchsorted(self._shifted, p, side="right")

    def contains(self, ids) -> np.ndarray:
        """Which ``ids`` are unlabelled candidates (bool array), without densifying."""
        ids = np.asarray(ids, dtype=np.int64)
        return (ids >= 0) & (ids < self._n) & ~np.isin(ids, self._lab)

    def __array__(self, dtype=None, copy=None):  # dense fallback (small pools only)
        mask = np.ones(self._n, dtype=bool)
        mask[self._lab] = False
        return np.flatnonzero(mask).astype(dtype or np.int64)


class PatchPool(Pool):
    """``core.pool.Pool`` over query-patch candidates (see module docstring), stored sparsely.

    ``shapes`` are the (resampled) image shapes of the train+pool images, ``patch`` the query patch
    size and ``stride`` the candidate-origin grid step, both per axis."""

    def __init__(self, shapes: Sequence[Sequence[int]], patch: Sequence[int], stride: Sequence[int] | int = 1):
        self.shapes = [tuple(int(v) for v in s) for s in shapes]
        self.stride = np.asarray((stride,) * 3 if isinstance(stride, (int, np.integer)) else stride, dtype=np.int64)
        self.patch_req = np.asarray(patch, dtype=np.int64)
        if (self.stride < 1).any() or (self.patch_req < 1).any():
            raise ValueError("patch size and stride must be >= 1")
        self.kernels = np.asarray([np.minimum(self.patch_req, s) for s in self.shapes], dtype=np.int64)
        self.grids = np.asarray([(np.asarray(s) - k) // self.stride + 1 for s, k in zip(self.shapes, self.kernels)],
                                dtype=np.int64)
        sizes = self.grids.prod(1)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._ids = np.zeros(0, dtype=np.int64)
        self._cycles = np.zeros(0, dtype=np.int64)
        self.val_ids = np.zeros(0, dtype=np.int64)
        self.test_ids = np.zeros(0, dtype=np.int64)
        self._mask_cache: dict[int, tuple[int, np.ndarray]] = {}

    # -- Pool contract ------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_images(self) -> int:
        return len(self.shapes)

    @property
    def labelled(self) -> np.ndarray:
        return self._ids.copy()

    @property
    def unlabelled(self) -> _UnlabelledView:
        return _UnlabelledView(len(self), self._ids)

    @property
    def n_labelled(self) -> int:
        return int(len(self._ids))

    @property
    def labelled_at(self) -> np.ndarray:
        """Dense view (-1 / cycle per candidate); O(number of candidates) — avoid on big pools."""
        out = np.full(len(self), -1, dtype=np.int64)
        out[self._ids] = self._cycles
        return out

    def labelled_in(self, cycle: int) -> np.ndarray:
        return self._ids[self._cycles == cycle]

    def label(self, ids, cycle: int) -> None:
        ids = check_label_request(ids, cycle, len(self), lambda i: np.isin(i, self._ids))
        all_ids = np.concatenate([self._ids, ids])
        all_cyc = np.concatenate([self._cycles, np.full(len(ids), cycle, dtype=np.int64)])
        order = np.argsort(all_ids, kind="stable")
        self._ids, self._cycles = all_ids[order], all_cyc[order]

    def state_dict(self) -> dict:
        return {"kind": "patch_pool", "n": len(self), "ids": self._ids.tolist(), "cycles": self._cycles.tolist(),
                "val_ids": [], "test_ids": []}

    def load_state_dict(self, state: dict) -> None:
        try:
            if state.get("kind") != "patch_pool" or int(state["n"]) != len(self):
                raise KeyError("pool geometry differs from this dataset/patch size")
            ids = np.asarray(state["ids"], dtype=np.int64)
            cycles = np.asarray(state["cycles"], dtype=np.int64)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise UserError(f"corrupt or foreign patch-pool state: {e}") from None
        if ids.shape != cycles.shape or (len(ids) and (ids.min() < 0 or ids.max() >= len(self))):
            raise UserError("corrupt patch-pool state: ids/cycles do not match")
        order = np.argsort(ids, kind="stable")
        self._ids, self._cycles = ids[order], cycles[order]
        self._mask_cache.clear()

    # -- geometry -----------------------------------------------------------------------------
    def decode(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(image index [n], origin voxel [n, 3]) of candidate ids."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        img = np.searchsorted(self.offsets, ids, side="right") - 1
        local = ids - self.offsets[img]
        g = self.grids[img]
        gz = local % g[:, 2]
        gy = (local // g[:, 2]) % g[:, 1]
        gx = local // (g[:, 2] * g[:, 1])
        return img, np.stack([gx, gy, gz], 1) * self.stride

    def encode(self, img: int, grid_idx) -> np.ndarray:
        """ids of flat grid indices (or ``[n, 3]`` grid coordinates) in image ``img``."""
        gi = np.asarray(grid_idx, dtype=np.int64)
        if gi.ndim == 2:
            gi = np.ravel_multi_index(tuple(gi.T), tuple(self.grids[img]))
        return self.offsets[img] + gi

    def kernel(self, img: int) -> np.ndarray:
        return self.kernels[img]

    def annotation_mask(self, img: int) -> np.ndarray:
        """Boolean voxel mask of the union of the labelled patches of image ``img`` (cached)."""
        lo, hi = np.searchsorted(self._ids, [self.offsets[img], self.offsets[img + 1]])
        key = int(hi - lo)
        cached = self._mask_cache.get(img)
        if cached is not None and cached[0] == key:
            return cached[1]
        mask = np.zeros(self.shapes[img], dtype=bool)
        k = self.kernels[img]
        for o in self.decode(self._ids[lo:hi])[1]:  # one slice per labelled patch
            mask[o[0]:o[0] + k[0], o[1]:o[1] + k[1], o[2]:o[2] + k[2]] = True
        self._mask_cache[img] = (key, mask)
        return mask

    def snap(self, img: int, centres: np.ndarray) -> np.ndarray:
        """Flat grid indices of patches centred on voxels ``centres [n, 3]`` (clipped into the image,
        origin rounded to the stride grid)."""
        k, s, g = self.kernels[img], self.stride, self.grids[img]
        origin = np.asarray(centres, dtype=np.int64) - k // 2
        gi = np.clip(np.rint(origin / s).astype(np.int64), 0, g - 1)
        return np.ravel_multi_index(tuple(gi.T), tuple(g))


# ---------------------------------------------------------------------------------------------
# per-image greedy selection without overlap
# ---------------------------------------------------------------------------------------------

class ImageSelector:
    """Which candidate origins of one image are still allowed, given the annotated voxels and the
    patches accepted so far in this query.

    A candidate is allowed when the fraction of its voxels that are annotated or already picked is
    ``<= overlap`` (``overlap = 0``: no shared voxel at all).  Accepting a patch updates only the
    grid block it can affect (vectorised slices, never a loop over windows)."""

    def __init__(self, pool: PatchPool, img: int, overlap: float = 0.0):
        if not 0.0 <= overlap < 1.0:
            raise ValueError("allowed overlap must be in [0, 1)")
        self.pool, self.img, self.overlap = pool, int(img), float(overlap)
        self.k = pool.kernels[img]
        self.s = pool.stride
        self.grid = tuple(int(v) for v in pool.grids[img])
        self.mask = pool.annotation_mask(img).copy()
        frac = box_mean(self.mask, self.k, self.s)
        self.valid = frac <= self.overlap + 1e-9
        self.accepted: list[int] = []

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    def valid_flat(self) -> np.ndarray:
        return np.flatnonzero(self.valid.ravel())

    def accept(self, flat: int) -> None:
        g = np.unravel_index(int(flat), self.grid)
        o = np.asarray(g) * self.s
        k, s = self.k, self.s
        self.mask[o[0]:o[0] + k[0], o[1]:o[1] + k[1], o[2]:o[2] + k[2]] = True
        # grid indices whose window intersects the new box: origins in (o − k, o + k)
        lo = np.maximum(-((-(o - k + 1)) // s), 0)  # ceil((o − k + 1) / s)
        hi = np.minimum((o + k - 1) // s, np.asarray(self.grid) - 1)
        sl = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))
        if self.overlap == 0.0:
            self.valid[sl] = False
        else:
            v0 = lo * s
            v1 = hi * s + k
            sub = self.mask[v0[0]:v1[0], v0[1]:v1[1], v0[2]:v1[2]].astype(np.float32)
            frac = box_mean(sub, k, s)
            self.valid[sl] = frac <= self.overlap + 1e-9
        self.valid[g] = False
        self.accepted.append(int(flat))

    def greedy(self, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Accept up to ``n`` allowed candidates in descending score order (Algorithm 1, lines 6–10).
        ``scores`` has the grid's shape.  Returns (flat indices, their scores)."""
        finite = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-1e300, neginf=-1e300, posinf=1e300)
        s = np.where(self.valid, finite, -np.inf).ravel()
        picks, vals = [], []
        for _ in range(int(n)):  # one iteration per accepted patch
            j = int(np.argmax(s))
            if s[j] == -np.inf:
                break
            picks.append(j)
            vals.append(s[j])
            self.accept(j)
            s[~self.valid.ravel()] = -np.inf
        return np.asarray(picks, dtype=np.int64), np.asarray(vals, dtype=np.float64)
