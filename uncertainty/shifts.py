"""Synthetic distribution shifts for data that has none (``--shift``): the shifted test set and the
shifted half of the unlabelled pool are built from held-out i.i.d. cases.

A real dataset without a declared shift (no ``values.ood`` in ``dataset.json``) supports no OoD
detection and no AUROC of the separation study.  ``--shift NAME`` adds one, in the spirit of the toy
data's shifts (``uncertainty.md`` §7.1: the toy's grey-value shift scales the object intensity):

=============  ===============================================================================
``intensity``  non-linear contrast change: per case and channel the intensities are min-max
               rescaled to [0, 1] and raised to γ = exp(±U(ln 1.8, ln 2.5)) (random sign: darker or
               brighter mid-tones, γ ∈ [0.4, 0.56] ∪ [1.8, 2.5]).  A linear scaling would be undone by
               the per-case z-scoring, γ is not.
``noise``      additive Gaussian noise with σ ~ U(0.8, 1.2) image standard deviations (the training
               augmentation adds at most σ = √0.1 ≈ 0.32, so this is well outside it).
``blur``       Gaussian blur with σ ~ U(1.5, 2.5) voxels (at the testbed resolution) on every
               spatial axis.
``resolution`` loss of resolution: block-average down-sampling by 3 per spatial axis, then linear
               up-sampling back to the grid (a thick-slice / low-field acquisition).
=============  ===============================================================================

Every shifted image is z-scored again per case and channel, as the loader does; the labels are
unchanged (none of the transforms moves an object).

**Paired design.**  The shifted test set holds shifted copies of the i.i.d. test cases, and the
shifted half of the pool shifted copies of the i.i.d. pool cases (ids ``<case>~<shift>``).  Every
shifted case is held out from training, and i.i.d. and shifted cases differ only by the transform,
not by anatomy or difficulty — the AUROC measures whether a measure sees the shift.  With the few
cases of a small dataset this doubles the cases each AUROC rests on (an unpaired split would halve
them).  The draws follow ``seeds.rng(data seed, "shift", transform index, split index)``.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from core import seeds
from core.errors import UserError

SHIFTS = {
    "intensity": "non-linear contrast change (gamma 1.8-2.5 or its inverse, per case)",
    "noise": "additive Gaussian noise, sigma 0.8-1.2 image std",
    "blur": "Gaussian blur, sigma 1.5-2.5 voxels",
    "resolution": "3x block-average down-sampling, linear up-sampling",
}


def _zscore(x: np.ndarray) -> np.ndarray:
    """Per case and channel, over the spatial axes."""
    ax = tuple(range(2, x.ndim))
    mu, sd = x.mean(ax, keepdims=True), x.std(ax, keepdims=True)
    return ((x - mu) / np.where(sd > 0, sd, 1)).astype(np.float32)


def transform(images: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """Apply shift ``name`` to ``images[N, Cin, *S]`` (z-scored); returns z-scored float32."""
    x = np.asarray(images, dtype=np.float32)
    n, dim = len(x), x.ndim - 2
    if n == 0:
        return x.copy()
    per_case = (n,) + (1,) * (x.ndim - 1)
    if name == "intensity":
        ax = tuple(range(2, x.ndim))
        lo, hi = x.min(ax, keepdims=True), x.max(ax, keepdims=True)
        u = (x - lo) / np.where(hi > lo, hi - lo, 1)
        g = np.exp(rng.uniform(np.log(1.8), np.log(2.5), n) * rng.choice([-1.0, 1.0], n)).reshape(per_case)
        y = u ** g
    elif name == "noise":
        sd = rng.uniform(0.8, 1.2, n).reshape(per_case)
        y = x + sd * rng.standard_normal(x.shape, dtype=np.float32)
    elif name == "blur":
        from scipy.ndimage import gaussian_filter
        sig = rng.uniform(1.5, 2.5, n)
        y = np.stack([gaussian_filter(x[i], sigma=(0,) + (float(sig[i]),) * dim, mode="nearest") for i in range(n)])
    elif name == "resolution":
        import torch
        import torch.nn.functional as F
        t = torch.as_tensor(x)
        pool = F.avg_pool2d if dim == 2 else F.avg_pool3d
        small = pool(t, kernel_size=3, stride=3, ceil_mode=True)
        y = F.interpolate(small, size=x.shape[2:], mode="bilinear" if dim == 2 else "trilinear",
                          align_corners=False).numpy()
    else:
        raise UserError(f"unknown shift {name!r}; valid: {', '.join(SHIFTS)}")
    return _zscore(np.asarray(y, dtype=np.float32))


def apply(data, name: str, seed: int = 0):
    """``data`` (a :class:`uncertainty.data.SegData` without shifted cases) with ``test_ood`` = shifted
    copies of ``test_iid`` and the pool extended by shifted copies of its i.i.d. cases."""
    from .data import Split
    if name not in SHIFTS:
        raise UserError(f"unknown shift {name!r}; valid: {', '.join(SHIFTS)}")
    sp = dict(data.splits)
    if sp["test_ood"].ood.any() or len(sp["test_ood"]) or sp["pool"].ood.any():
        raise UserError(f"{data.name} already has shifted (OoD) cases (values.ood in dataset.json); --shift builds "
                        "a shift only for data without one — drop --shift, or the values.ood list")
    k = list(SHIFTS).index(name)

    def shifted(split, idx: int):
        imgs = transform(split.images, name, seeds.rng(seed, "shift", k, idx))
        return Split(imgs, split.raters.copy(), np.ones(len(split), bool), split.ambiguous.copy(),
                     np.full(len(split), name, dtype="<U12"), [f"{i}~{name}" for i in split.ids])

    pool_iid = sp["pool"]
    sp["test_ood"] = shifted(sp["test_iid"], 0)
    sp["pool"] = Split.concat([pool_iid, shifted(pool_iid, 1)])
    return replace(data, splits=sp, name=f"{data.name}+{name}")
