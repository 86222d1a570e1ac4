"""Aggregation strategies (C3, ``uncertainty.md`` §6): pixel map → one score per image.

* ``image``     — sum over all pixels;
* ``patch``     — max over all fully-inside windows of size ``10^D`` (stride 1) of the window sum
  (box filter via ``avg_pool``, never a Python loop over windows);
* ``threshold`` — mean of the pixels ``≥ λ`` (0 when none), λ fitted on validation maps as the
  ``1 − α`` quantile of all validation uncertainty values, α = mean predicted foreground share
  over all validation images and prediction samples (one λ per prediction model × measure × seed).

All functions take a batch ``u[N, *S]`` (numpy or torch) and return ``float64`` numpy ``[N]``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

AGGREGATIONS = ("image", "patch", "threshold")
PATCH = 10


def _t(u) -> torch.Tensor:
    return torch.as_tensor(np.asarray(u) if not isinstance(u, torch.Tensor) else u).double()


def image_sum(u) -> np.ndarray:
    t = _t(u)
    return t.flatten(1).sum(1).numpy()


def patch_max(u, window: int = PATCH) -> np.ndarray:
    t = _t(u)
    dim = t.ndim - 1
    w = min([window] + list(t.shape[1:]))  # images smaller than the window: one window = whole extent
    pool = F.avg_pool2d if dim == 2 else F.avg_pool3d
    sums = pool(t.unsqueeze(1), kernel_size=w, stride=1) * (w ** dim)
    return sums.flatten(1).amax(1).numpy()


def threshold_mean(u, lam: float) -> np.ndarray:
    t = _t(u).flatten(1)
    m = t >= lam
    cnt = m.sum(1)
    s = (t * m).sum(1)
    return torch.where(cnt > 0, s / cnt.clamp_min(1), torch.zeros_like(s)).numpy()


def fit_threshold(u_val, fg_fraction: float) -> float:
    """λ = quantile(all validation values, 1 − α) with α the mean predicted foreground share."""
    q = float(np.clip(1.0 - fg_fraction, 0.0, 1.0))
    return float(np.quantile(np.asarray(_t(u_val).flatten()), q))


def aggregate(u, how: str, lam: float | None = None) -> np.ndarray:
    if how == "image":
        return image_sum(u)
    if how == "patch":
        return patch_max(u)
    if how == "threshold":
        if lam is None:
            raise ValueError("threshold aggregation needs λ (fit it on validation maps)")
        return threshold_mean(u, lam)
    raise ValueError(how)
