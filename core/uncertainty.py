"""Uncertainty measures on probability tensors, shared by every domain.

Shapes follow a suffix convention: ``probs_N_M_C`` (N candidates, M MC samples or ensemble
members, C classes) for classification, ``probs_M_C_XYZ`` for voxel-wise maps.  Every function
takes ``sample_dim`` and ``class_dim`` so both layouts use the same code; the defaults are the
classification layout ``[..., M, C]``.

All entropies are in nats.  Inputs may be ``numpy`` arrays or ``torch`` tensors; the output has the
input's type.  Probabilities are clamped at ``eps`` inside the logarithm, so exact zeros contribute
``0 · log 0 = 0`` as the limit demands.
"""
from __future__ import annotations

import numpy as np
import torch

EPS = 1e-12


def _as_tensor(probs):
    if isinstance(probs, torch.Tensor):
        return probs, False
    return torch.as_tensor(np.asarray(probs)), True


def _back(t: torch.Tensor, was_numpy: bool):
    return t.numpy() if was_numpy else t


def _entropy(p: torch.Tensor, class_dim: int) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(EPS))).sum(dim=class_dim)


def entropy(probs, class_dim: int = -1):
    """Shannon entropy of a categorical distribution along ``class_dim``."""
    p, was_np = _as_tensor(probs)
    return _back(_entropy(p, class_dim), was_np)


def _norm_dims(ndim: int, sample_dim: int, class_dim: int) -> tuple[int, int]:
    s, c = sample_dim % ndim, class_dim % ndim
    if s == c:
        raise ValueError("sample_dim and class_dim must differ")
    return s, c


def predictive_entropy(probs, sample_dim: int = -2, class_dim: int = -1):
    """PE = H[ E_m p(y|x, θ_m) ]: entropy of the sample-averaged prediction (total uncertainty)."""
    p, was_np = _as_tensor(probs)
    s, c = _norm_dims(p.ndim, sample_dim, class_dim)
    mean = p.mean(dim=s)
    return _back(_entropy(mean, c - (1 if c > s else 0)), was_np)


def expected_entropy(probs, sample_dim: int = -2, class_dim: int = -1):
    """EE = E_m H[p(y|x, θ_m)]: mean entropy of the samples (aleatoric part)."""
    p, was_np = _as_tensor(probs)
    s, c = _norm_dims(p.ndim, sample_dim, class_dim)
    ent = _entropy(p, c)
    return _back(ent.mean(dim=s - (1 if s > c else 0)), was_np)


def mutual_information(probs, sample_dim: int = -2, class_dim: int = -1):
    """MI = PE − EE (BALD, epistemic part).  Clamped at 0 against round-off; MI ≥ 0 exactly."""
    p, was_np = _as_tensor(probs)
    pe = predictive_entropy(p, sample_dim, class_dim)
    ee = expected_entropy(p, sample_dim, class_dim)
    return _back((pe - ee).clamp_min(0.0), was_np)


def max_softmax(probs, sample_dim: int | None = -2, class_dim: int = -1):
    """Max-softmax confidence of the (sample-averaged) prediction.  ``1 - max_softmax`` is the
    classic softmax-response uncertainty.  Pass ``sample_dim=None`` for a plain ``[..., C]`` tensor."""
    p, was_np = _as_tensor(probs)
    if sample_dim is None:
        return _back(p.amax(dim=class_dim), was_np)
    s, c = _norm_dims(p.ndim, sample_dim, class_dim)
    mean = p.mean(dim=s)
    return _back(mean.amax(dim=c - (1 if c > s else 0)), was_np)


def decomposition(probs, sample_dim: int = -2, class_dim: int = -1) -> dict:
    """All three measures at once (the sample mean is computed once)."""
    p, was_np = _as_tensor(probs)
    s, c = _norm_dims(p.ndim, sample_dim, class_dim)
    mean = p.mean(dim=s)
    pe = _entropy(mean, c - (1 if c > s else 0))
    ee = _entropy(p, c).mean(dim=s - (1 if s > c else 0))
    mi = (pe - ee).clamp_min(0.0)
    return {k: _back(v, was_np) for k, v in {"pe": pe, "ee": ee, "mi": mi}.items()}
