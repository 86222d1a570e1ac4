"""Metrics of the uncertainty testbed (ValUES): AUROC, AURC / E-AURC, ACE (+ Platt scaling), NCC, GED.

Domain-free: every function takes plain arrays (numpy or torch; torch is converted) — scores per
image, or per-image pixel maps flattened to ``[N, V]``.  Nothing here knows about segmentation
beyond "a binary mask is a vector of 0/1".

Conventions (see ``uncertainty.md`` §10):

* **AUROC** — label 1 = positive (OoD), score = higher means more likely positive.  One class only
  → NaN (undefined), never an exception.
* **AURC** — area under the selective-risk/coverage curve of a confidence scoring function
  ``confids`` (higher = more confident) with per-sample ``risks``.  We use the step-curve form
  ``AURC = (1/n) Σ_k r_k`` (Geifman et al. 2019), where ``r_k`` is the mean risk of the ``k`` most
  confident samples; tied confidences are resolved by the *expectation over random tie-breaking*
  (inside a tie group every member contributes the group's mean risk).  The optimal AURC uses the
  oracle ``g* = −risk`` and the same formula, i.e. the [R] formula
  ``(1/n) Σ_k (1/k) Σ_{j≤k} r_(j)``.  Hence ``E-AURC = AURC − AURC*`` is exactly 0 for the oracle
  and ≥ 0 for any CSF.  (The reference code integrates AURC with a trapezoid but the optimum with
  this Riemann sum, so its E-AURC can be negative — e.g. risks (0, 1) with the oracle give −0.125.)
* **ACE** — average calibration error, ``(1/M) Σ_m |conf_m − acc_m|`` over the
  M non-empty bins of 20 equal-width bins on ``[0, 1 + 1e-8]``, every bin weighted equally.
  ``correct`` may be soft (the share of raters that agree with the prediction), which equals
  repeating every pixel once per rater as the reference code does.
* **NCC** — normalised cross-correlation ``mean((a−μa)(b−μb)) / (σa σb)`` with population std on
  both sides, so ``NCC(a, a) = 1`` exactly.  A constant map → NaN.
* **NaN / Inf input** is an error (``ValueError`` naming the metric and the argument) — a NaN label
  would otherwise count as positive and a NaN score sort somewhere, giving a plausible number.
  ``nan_policy="propagate"`` returns NaN instead (per row for the row-wise metrics).
* **GED** — squared generalised energy distance with ``d = 1 − Dice`` (foreground Dice; two empty
  masks have Dice 1 so ``d(x, x) = 0``), expectations over all ordered pairs, self-pairs included.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

__all__ = ["auroc", "rc_curve", "aurc", "optimal_aurc", "eaurc", "platt_fit", "platt_apply",
           "ace", "ncc", "dice_matrix", "ged"]


def _np(x, dtype=np.float64) -> np.ndarray:
    try:
        import torch
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x, dtype=dtype)


NAN_POLICIES = ("raise", "propagate")


def _bad(x: np.ndarray, metric: str, arg: str, nan_policy: str, axis=None) -> np.ndarray | bool:
    """Non-finite entries of input ``arg`` of ``metric``: raise (default) or, with ``propagate``,
    return where they are (per row over ``axis``) so the caller can answer NaN there."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, not {nan_policy!r}")
    fin = np.isfinite(x)
    if fin.all():
        return np.zeros(x.shape[:-1] if axis == -1 and x.ndim else (), dtype=bool) if axis is not None else False
    if nan_policy == "raise":
        n = int((~fin).sum())
        raise ValueError(f"{metric}: {arg} contains {n} NaN/Inf value(s) of {x.size}; "
                         "fix the input or pass nan_policy='propagate' to get NaN")
    return ~fin.all(axis) if axis is not None else True


def _clean(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, 0.0)


# ----------------------------------------------------------------------------------------- AUROC
def auroc(scores, labels, nan_policy: str = "raise") -> float:
    """Area under the ROC curve (label 1 = positive; higher score = more positive). NaN if one class.
    Labels must be 0/1 (or bool)."""
    s, y = _np(scores).ravel(), _np(labels).ravel()
    if len(s) != len(y):
        raise ValueError("scores and labels differ in length")
    if _bad(s, "auroc", "scores", nan_policy) | _bad(y, "auroc", "labels", nan_policy):
        return float("nan")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("auroc: labels must be 0/1")
    y = y.astype(bool)
    if y.all() or not y.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, s))


# ------------------------------------------------------------------------------------ AURC/E-AURC
def _sorted_expected_risks(risks: np.ndarray, confids: np.ndarray) -> np.ndarray:
    """Risks ordered by descending confidence, each tie group replaced by its mean risk."""
    order = np.argsort(-confids, kind="stable")
    c, r = confids[order], risks[order]
    new_group = np.r_[True, c[1:] != c[:-1]]
    gid = np.cumsum(new_group) - 1
    means = np.bincount(gid, weights=r) / np.bincount(gid)
    return means[gid]


def _check(risks, confids, metric: str = "aurc", nan_policy: str = "raise"):
    r, c = _np(risks).ravel(), _np(confids).ravel()
    if len(r) != len(c) or len(r) == 0:
        raise ValueError("risks and confids must be non-empty and of equal length")
    bad = _bad(r, metric, "risks", nan_policy) | _bad(c, metric, "confids", nan_policy)
    return r, c, bad


def rc_curve(risks, confids, nan_policy: str = "raise") -> tuple[np.ndarray, np.ndarray]:
    """Risk–coverage curve: ``coverage[k] = k/n`` and the expected selective risk of the ``k`` most
    confident samples (k = 1..n), ties resolved by expectation."""
    r, c, bad = _check(risks, confids, "rc_curve", nan_policy)
    n = len(r)
    k = np.arange(1, n + 1)
    if bad:
        return k / n, np.full(n, np.nan)
    return k / n, np.cumsum(_sorted_expected_risks(r, c)) / k


def aurc(risks, confids, nan_policy: str = "raise") -> float:
    """Area under the risk–coverage curve (step form, see module doc). Lower is better."""
    _check(risks, confids, "aurc", nan_policy)
    return float(rc_curve(risks, confids, nan_policy)[1].mean())


def optimal_aurc(risks, nan_policy: str = "raise") -> float:
    r = _np(risks).ravel()
    if _bad(r, "optimal_aurc", "risks", nan_policy):
        return float("nan")
    return float((np.cumsum(np.sort(r)) / np.arange(1, len(r) + 1)).mean())


def eaurc(risks, confids, nan_policy: str = "raise") -> float:
    """Excess AURC over the oracle CSF (``g* = −risk``); ≥ 0, 0 for the oracle."""
    _check(risks, confids, "eaurc", nan_policy)
    return aurc(risks, confids, nan_policy) - optimal_aurc(risks, nan_policy)


# ------------------------------------------------------------------------------ Platt + ACE
def platt_fit(scores, targets, mask=None, iters: int = 50, nan_policy: str = "raise") -> tuple[np.ndarray, np.ndarray]:
    """Platt scaling, one fit per row: ``P(correct) = sigmoid(a·s + b)`` for scores ``[N, V]``
    (1-D input = one row) and (soft) targets in [0, 1]; ``mask`` excludes entries (ignore label).

    Vectorised Newton–Raphson on the cross-entropy with Platt's smoothed targets
    ``t+ = (N+ + 1)/(N+ + 2)``, ``t− = 1/(N− + 2)`` (as sklearn's ``_sigmoid_calibration``).
    Returns ``(a[N], b[N])``."""
    s = np.atleast_2d(_np(scores))
    t = np.atleast_2d(_np(targets))
    w = np.ones_like(s) if mask is None else np.atleast_2d(_np(mask)).astype(np.float64)
    bad = (_bad(s, "platt_fit", "scores", nan_policy, -1) | _bad(t, "platt_fit", "targets", nan_policy, -1)
           | _bad(w, "platt_fit", "mask", nan_policy, -1))
    s, t, w = _clean(s), _clean(t), _clean(w)
    npos = (t * w).sum(1, keepdims=True)
    nneg = ((1 - t) * w).sum(1, keepdims=True)
    hi, lo = (npos + 1) / (npos + 2), 1 / (nneg + 2)
    tt = t * hi + (1 - t) * lo
    # centre/scale the scores per row for a well-conditioned Newton step, then map back
    mu = (s * w).sum(1, keepdims=True) / np.maximum(w.sum(1, keepdims=True), 1)
    sd = np.sqrt(((s - mu) ** 2 * w).sum(1, keepdims=True) / np.maximum(w.sum(1, keepdims=True), 1))
    sd = np.where(sd > 0, sd, 1.0)
    z = (s - mu) / sd
    A = np.zeros(len(s))
    B = np.log((npos[:, 0] + 1) / (nneg[:, 0] + 1))
    for _ in range(iters):
        p = expit(A[:, None] * z + B[:, None])
        g = (p - tt) * w
        h = np.maximum(p * (1 - p), 1e-12) * w
        gA, gB = (g * z).sum(1), g.sum(1)
        hAA, hAB, hBB = (h * z * z).sum(1) + 1e-9, (h * z).sum(1), h.sum(1) + 1e-9
        det = hAA * hBB - hAB ** 2
        dA = (hBB * gA - hAB * gB) / det
        dB = (hAA * gB - hAB * gA) / det
        A, B = A - dA, B - dB
        if max(np.abs(dA).max(), np.abs(dB).max()) < 1e-10:
            break
    a = A / sd[:, 0]
    b = B - a * mu[:, 0]
    return np.where(bad, np.nan, a), np.where(bad, np.nan, b)


def platt_apply(scores, a: float, b: float, nan_policy: str = "raise") -> np.ndarray:
    x = _np(scores)
    _bad(x, "platt_apply", "scores", nan_policy)
    _bad(_np([a, b]), "platt_apply", "parameters a, b", nan_policy)
    return np.where(np.isfinite(x) & np.isfinite(a) & np.isfinite(b), expit(a * x + b), np.nan)


def ace(confidences, correct, n_bins: int = 20, mask=None, nan_policy: str = "raise") -> np.ndarray:
    """Average calibration error per row of ``[N, V]`` confidences in [0, 1] and (soft) correctness.
    Bins: ``n_bins`` equal-width on ``[0, 1 + 1e-8]``; mean over non-empty bins.  Returns ``[N]``
    (a scalar array for 1-D input)."""
    c = _np(confidences)
    one = c.ndim == 1
    c = np.atleast_2d(c)
    y = np.atleast_2d(_np(correct))
    w = np.ones_like(c) if mask is None else np.atleast_2d(_np(mask)).astype(np.float64)
    if c.shape != y.shape:
        raise ValueError("confidences and correct differ in shape")
    bad = (_bad(c, "ace", "confidences", nan_policy, -1) | _bad(y, "ace", "correct", nan_policy, -1)
           | _bad(w, "ace", "mask", nan_policy, -1))
    c, y, w = _clean(c), _clean(y), _clean(w)
    n = len(c)
    edges_w = (1 + 1e-8) / n_bins
    b = np.clip((c / edges_w).astype(np.int64), 0, n_bins - 1)
    idx = (np.arange(n)[:, None] * n_bins + b).ravel()
    cnt = np.bincount(idx, weights=w.ravel(), minlength=n * n_bins).reshape(n, n_bins)
    sc = np.bincount(idx, weights=(c * w).ravel(), minlength=n * n_bins).reshape(n, n_bins)
    sy = np.bincount(idx, weights=(y * w).ravel(), minlength=n * n_bins).reshape(n, n_bins)
    nonempty = cnt > 0
    gap = np.abs(sc - sy) / np.where(nonempty, cnt, 1)
    with np.errstate(invalid="ignore"):
        out = (gap * nonempty).sum(1) / nonempty.sum(1)
    out = np.where(bad, np.nan, out)
    return out[0] if one else out


# ------------------------------------------------------------------------------------------ NCC
def ncc(a, b, nan_policy: str = "raise") -> np.ndarray:
    """Normalised cross-correlation per row of ``[N, V]`` maps (1-D input → scalar). NaN where a
    map is constant."""
    x, y = _np(a), _np(b)
    one = x.ndim == 1
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    if x.shape != y.shape:
        raise ValueError("maps differ in shape")
    bad = _bad(x, "ncc", "a", nan_policy, -1) | _bad(y, "ncc", "b", nan_policy, -1)
    x, y = _clean(x), _clean(y)
    xc = x - x.mean(1, keepdims=True)
    yc = y - y.mean(1, keepdims=True)
    den = np.sqrt((xc ** 2).mean(1) * (yc ** 2).mean(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, (xc * yc).mean(1) / np.where(den > 0, den, 1), np.nan)
    out = np.where(bad, np.nan, out)
    return out[0] if one else out


# ------------------------------------------------------------------------------------------ GED
def dice_matrix(A, B, nan_policy: str = "raise") -> np.ndarray:
    """Foreground Dice between every mask of ``A[..., K, V]`` and every mask of ``B[..., L, V]``
    → ``[..., K, L]``; two empty masks have Dice 1."""
    a, b = _np(A, np.float32), _np(B, np.float32)
    bad_a, bad_b = _bad(a, "dice_matrix", "A", nan_policy, -1), _bad(b, "dice_matrix", "B", nan_policy, -1)
    a, b = _clean(a), _clean(b)
    out = _dice_matrix(a, b)
    return np.where(np.asarray(bad_a)[..., :, None] | np.asarray(bad_b)[..., None, :], np.nan, out)


def _dice_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = a @ np.swapaxes(b, -1, -2)
    sa, sb = a.sum(-1)[..., :, None], b.sum(-1)[..., None, :]
    den = sa + sb
    return np.where(den > 0, 2 * inter / np.where(den > 0, den, 1), 1.0).astype(np.float64)


def ged(refs, samples, nan_policy: str = "raise") -> np.ndarray:
    """Squared generalised energy distance with ``d = 1 − Dice`` between reference masks
    ``[..., N, V]`` and predicted masks ``[..., M, V]`` (all ordered pairs, self-pairs included)."""
    r, s = _np(refs, np.float32), _np(samples, np.float32)
    bad = (np.asarray(_bad(r, "ged", "refs", nan_policy, -1)).any(-1)
           | np.asarray(_bad(s, "ged", "samples", nan_policy, -1)).any(-1))
    r, s = _clean(r), _clean(s)
    cross = (1 - _dice_matrix(r, s)).mean((-1, -2))
    rr = (1 - _dice_matrix(r, r)).mean((-1, -2))
    ss = (1 - _dice_matrix(s, s)).mean((-1, -2))
    return np.where(bad, np.nan, 2 * cross - rr - ss)
