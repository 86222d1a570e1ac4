"""3D query patches: all-window mean scoring, the patch pool, and greedy non-overlapping picking.

Candidates are query-patch-sized boxes whose origins lie on a grid of stride ``s`` inside each
image (origin = grid index · s; every box lies fully inside its image, as in nnActive's 'valid'
convolution).  Candidate id = offset of the image + flat grid index, so ids are dense integers
over all train+pool images but are never materialised: the pool stores only the labelled ids.

* :func:`box_mean` — mean of a voxel map over every window (separable, O(voxels), never a Python
  loop over positions: one compiled cache-blocked pass when numba is installed, whole-plane numpy
  running sums otherwise).
* :class:`PatchPool` — the ``core.pool.Pool`` contract over those ids, stored sparsely.
* :class:`ImageSelector` — per-image greedy selection without overlap (allowed overlap ``o``)
  with already-annotated voxels and with earlier picks.
"""
from __future__ import annotations

import threading
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
    it is larger.  Separable, O(voxels) whatever the window size — never a loop over windows.

    Numpy input, numba installed (:func:`_box_mean_numba`): one cache-blocked pass — per output
    plane along X a running sum over ``[Y, Z]`` planes (add the plane entering the window, subtract
    the one leaving it), then on that plane, while it sits in cache, a running sum over rows (Y) and
    window sums along each row (Z) by doubling (widths 2, 4, 8, … combined by the bits of the window
    size: contiguous vector operations, no sequential scan), written straight into the output.  The
    map is read about twice and the output written once.  Without numba :func:`_box_mean_numpy`
    computes the same sums with whole-plane numpy operations (three streaming passes plus a scan).
    Torch tensors (CUDA) use cumulative sums along each axis."""
    stride = (stride,) * 3 if isinstance(stride, (int, np.integer)) else tuple(int(v) for v in stride)
    if isinstance(u, torch.Tensor):
        return _box_mean_torch(u, kernel, stride)
    a = np.asarray(u)
    if a.ndim < 3:
        raise ValueError("box_mean needs at least 3 spatial dims")
    kern = _numba_kernel()
    return _box_mean_numpy(a, kernel, stride) if kern is None else _box_mean_numba(a, kernel, stride, kern)


def _prepare(a: np.ndarray, kernel, stride):
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    lead, (X, Y, Z) = a.shape[:-3], a.shape[-3:]
    a = np.ascontiguousarray(a).reshape((-1, X, Y, Z))
    k = [min(int(kk), int(d)) for kk, d in zip(kernel, (X, Y, Z))]
    g = [(d - kk) // ss + 1 for d, kk, ss in zip((X, Y, Z), k, stride)]
    return a, lead, k, g


def _box_mean_numba(a: np.ndarray, kernel, stride, kern) -> np.ndarray:
    a, lead, k, g = _prepare(a, kernel, stride)
    out = np.empty((a.shape[0],) + tuple(g), dtype=np.float32)
    kern(a, k[0], k[1], k[2], stride[0], stride[1], stride[2], np.float32(1.0 / float(np.prod(k))), out)
    return out.reshape(lead + tuple(g))


def _box_mean_planes(a, kx, ky, kz, sx, sy, sz, scale, out):
    """The compiled kernel of :func:`_box_mean_numba` (plain Python here; :func:`_numba_kernel`
    compiles it): ``out[l, i, j, m]`` = ``scale`` · the sum of ``a[l]`` over the window at
    ``(i·sx, j·sy, m·sz)`` of size ``kx × ky × kz``, float32 running sums.  Every inner loop runs
    over a plain ``range`` on array views (no offset indices: numba then needs no negative-index
    check and LLVM vectorises the loop)."""
    L, X, Y, Z = a.shape
    Gx, Gy, Gz = out.shape[1], out.shape[2], out.shape[3]
    a3 = a.reshape(L * X, Y, Z)
    o3 = out.reshape(L * Gx, Gy, Gz)
    nlev = 0
    while (2 << nlev) <= kz:
        nlev += 1
    Zp = ((Z + 15) // 16) * 16          # the Z passes run over whole vectors; the padding is scratch
    R = 3 * Zp
    run = np.empty((Y, Z), np.float32)
    row = np.zeros(R, np.float32)
    W = np.zeros((max(nlev, 1), R), np.float32)
    acc = np.zeros(Zp, np.float32)
    for l in range(L):
        for gx in range(Gx):
            x0 = l * X + gx * sx
            if gx == 0 or sx >= kx:
                src = a3[x0]
                for y in range(Y):
                    rr = run[y]
                    ss = src[y]
                    for z in range(Z):
                        rr[z] = ss[z]
                for t in range(1, kx):
                    src = a3[x0 + t]
                    for y in range(Y):
                        rr = run[y]
                        ss = src[y]
                        for z in range(Z):
                            rr[z] += ss[z]
            else:
                for t in range(sx):
                    ao = a3[x0 - sx + t]
                    ai = a3[x0 - sx + t + kx]
                    for y in range(Y):
                        rr = run[y]
                        po = ao[y]
                        pi = ai[y]
                        for z in range(Z):
                            rr[z] = (rr[z] - po[z]) + pi[z]
            dst = o3[l * Gx + gx]
            for gy in range(Gy):
                y0 = gy * sy
                if gy == 0 or sy >= ky:
                    r0 = run[y0]
                    for z in range(Z):
                        row[z] = r0[z]
                    for t in range(1, ky):
                        rt = run[y0 + t]
                        for z in range(Z):
                            row[z] += rt[z]
                else:
                    for t in range(sy):
                        ro = run[y0 - sy + t]
                        ri = run[y0 - sy + t + ky]
                        for z in range(Z):
                            row[z] = (row[z] - ro[z]) + ri[z]
                # Z: sums over windows of width 2^(b+1) by doubling, then the set bits of kz
                if nlev >= 1:
                    w = W[0]
                    r1 = row[1:]
                    for i in range(Zp):
                        w[i] = row[i] + r1[i]
                for b in range(1, nlev):
                    prev = W[b - 1]
                    ph = prev[1 << b:]
                    w = W[b]
                    for i in range(Zp):
                        w[i] = prev[i] + ph[i]
                off = 0
                first = True
                for b in range(nlev, -1, -1):
                    if (kz >> b) & 1:
                        lv = row[off:] if b == 0 else W[b - 1][off:]
                        if first:
                            for i in range(Zp):
                                acc[i] = lv[i]
                            first = False
                        else:
                            for i in range(Zp):
                                acc[i] += lv[i]
                        off += 1 << b
                drow = dst[gy]
                if sz == 1:
                    for i in range(Gz):
                        drow[i] = acc[i] * scale
                else:
                    for i in range(Gz):
                        drow[i] = acc[i * sz] * scale


_KERNEL: list = []            # [compiled kernel or None], filled on first use
_KERNEL_LOCK = threading.Lock()


def _numba_kernel():
    """The numba-compiled :func:`_box_mean_planes` (compiled once per process, cached on disk by
    numba), or None when numba is not installed (then :func:`_box_mean_numpy` is used)."""
    if not _KERNEL:
        with _KERNEL_LOCK:
            if not _KERNEL:
                try:
                    from numba import njit
                except ImportError:
                    _KERNEL.append(None)
                else:
                    _KERNEL.append(njit(cache=True, nogil=True, boundscheck=False)(_box_mean_planes))
    return _KERNEL[0]


def _box_mean_numpy(a: np.ndarray, kernel, stride) -> np.ndarray:
    """:func:`box_mean` with whole-plane numpy operations (the path without numba):

    1. X: a running sum over whole ``[Y, Z]`` planes (every operation streams a contiguous plane);
    2. Z (the innermost axis): a prefix sum along the rows (torch's cumsum, a tight scan) and one
       shifted difference, written with the Y and X axes swapped so that
    3. Y becomes the outer axis: a running sum over contiguous ``[Gx, Gz]`` planes again, each result
       plane scaled by 1/|window| and written straight into its place in the output.

    No pass walks an outer axis column by column (numpy's cumsum along an outer axis does, and is an
    order of magnitude slower), and the map is read in three streaming passes plus the scan."""
    a, lead, k, g = _prepare(a, kernel, stride)
    X, Y, Z = a.shape[1:]
    L = a.shape[0]
    # 1. X: [L, X, Y, Z] -> [L, Gx, Y, Z]
    sx = _workspace("x", (L, g[0], Y, Z))
    _running_planes(a.transpose(1, 0, 2, 3), sx.transpose(1, 0, 2, 3), k[0], stride[0])
    # 2. Z: prefix sums along rows, differences written as [L, Y, Gx, Gz] (rows keep their Z order)
    c = torch.from_numpy(sx).cumsum_(-1)                # in place: no second map-sized buffer
    sz = _scratch((L, Y, g[0], g[2]), "z")
    dst = torch.from_numpy(sz).transpose(1, 2)          # [L, Gx, Y, Gz] view of it
    kz, st, gz = k[2], stride[2], g[2]
    dst[..., 0] = c[..., kz - 1]
    if gz > 1:   # sum over [o, o + k) = C[o + k − 1] − C[o − 1]
        torch.sub(c[..., kz - 1 + st::st][..., :gz - 1], c[..., st - 1::st][..., :gz - 1], out=dst[..., 1:])
    del c, dst, sx
    # 3. Y: planes sz[:, y] -> out[:, :, y], scaled
    out = np.empty((L, g[0], g[1], g[2]), dtype=np.float32)
    _running_planes(sz.transpose(1, 0, 2, 3), out.transpose(2, 0, 1, 3), k[1], stride[1],
                    scale=np.float32(1.0 / float(np.prod(k))))
    return out.reshape(lead + tuple(g))


_WORKSPACE = threading.local()
_WORKSPACE_MAX = 64 * 2**20   # bytes kept between calls per buffer (larger maps allocate afresh)


def _workspace(name: str, shape) -> np.ndarray:
    """An uninitialised float32 array of ``shape`` backed by a buffer kept between calls (per thread):
    a fresh map-sized array is handed out by the OS page by page, and those page faults cost about as
    much as a pass over the map."""
    shape = tuple(int(v) for v in shape)
    n = int(np.prod(shape))
    if n * 4 > _WORKSPACE_MAX:
        return np.empty(shape, dtype=np.float32)
    bufs = getattr(_WORKSPACE, "bufs", None)
    if bufs is None:
        bufs = _WORKSPACE.bufs = {}
    buf = bufs.get(name)
    if buf is None or len(buf) < n:
        buf = bufs[name] = np.empty(n, dtype=np.float32)
    return buf[:n].reshape(shape)


def _scratch(shape, name: str) -> np.ndarray:
    """A :func:`_workspace` array of ``shape`` whose second-to-last axis is padded (the view hides the
    padding) so that the stride between its planes ``[..., i, :, :]`` is not a multiple of 4 KiB: with
    such a stride (e.g. 128 × 128 float32) the rows of a plane ``[..., :, j, :]`` all map to the same
    cache sets and a plane operation runs ~5× slower."""
    shape = tuple(int(v) for v in shape)
    rows, last = shape[-2], shape[-1]
    pad = 0
    while ((rows + pad) * last * 4) % 4096 < 256 or ((rows + pad) * last * 4) % 4096 > 3840:
        pad += 1
        if pad > 64:
            pad = 0
            break
    return _workspace(name, shape[:-2] + (rows + pad, last))[..., :rows, :]


def _running_planes(src: np.ndarray, dst: np.ndarray, k: int, s: int, scale=None) -> None:
    """``dst[i] = scale · Σ src[i·s : i·s + k]`` along the first axis of both views (float32): a
    running sum, one vectorised plane operation per step (add the plane entering the window, subtract
    the one leaving it), so every step streams whole rows.  ``dst`` may be any strided view."""
    g = dst.shape[0]
    run = np.empty(src.shape[1:], dtype=np.float32)   # the running window sum, contiguous
    np.copyto(run, src[0])
    for j in range(1, k):
        np.add(run, src[j], out=run)
    # every ufunc below writes to memory none of its inputs overlaps (a strided plane of ``dst`` next
    # to the one just read would make numpy copy both to a temporary on every call)
    if scale is None and s == 1:   # the running sum lives in dst itself: two operations per plane
        np.copyto(dst[0], run)
        prev = dst[0]
        for i in range(1, g):             # window [i, i + k) = window i − 1, minus plane i − 1, plus plane i + k − 1
            np.subtract(prev, src[i - 1], out=run)
            np.add(run, src[i + k - 1], out=dst[i])
            prev = dst[i]
        return

    def emit(i):
        if scale is None:
            np.copyto(dst[i], run)
        else:
            np.multiply(run, scale, out=dst[i])

    emit(0)
    tmp = np.empty_like(run)
    for i in range(1, (g - 1) * s + 1):
        np.subtract(run, src[i - 1], out=tmp)
        np.add(tmp, src[i + k - 1], out=run)
        if i % s == 0:
            emit(i // s)


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
