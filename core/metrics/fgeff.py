"""FG-Eff: foreground efficiency, the decay rate γ of eq. C.1 (thesis §C.4).

    y(t) = (ŷ(t̂0) − ŷ_full) · exp(−γ · (t − t̂0)) + ŷ_full                       (C.1)

``t`` is the fraction of the train+pool foreground voxels that is annotated (t ∈ [0, 1]), ``y`` the
performance (mean Dice) at that point of an AL curve, ``t̂0`` the annotated-foreground fraction of
the starting budget, ``ŷ(t̂0)`` the mean performance there and ``ŷ_full`` the performance of a model
trained on the whole train+pool set for the same training length.  Only γ is fitted (least squares
over every (seed, cycle) point of one query method); the other three are estimated beforehand.

As in the reference implementation, ``t̂0`` is the smallest ``t`` of the whole setting (all
methods) and ``ŷ(t̂0)`` the mean ``y`` of the rows at that ``t`` (:func:`setting_anchor`), so every
method of a setting is fitted against the same anchor.  Higher γ = closer to full-data performance
per unit of annotated foreground.  The ``variance`` returned is curve_fit's ``pcov[0, 0]`` (what
the thesis prints as ``±``), not a spread over seeds.  Domain-free: plain arrays in, floats out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class FGEffFit:
    gamma: float
    variance: float
    t0: float
    y0: float
    y_full: float
    n_points: int


def fg_eff_curve(t, gamma: float, t0: float, y0: float, y_full: float) -> np.ndarray:
    """Eq. C.1 evaluated at ``t``."""
    t = np.asarray(t, dtype=np.float64)
    return (y0 - y_full) * np.exp(-gamma * (t - t0)) + y_full


def setting_anchor(t_all: Sequence[float], y_all: Sequence[float], atol: float = 1e-12) -> tuple[float, float]:
    """(t̂0, ŷ(t̂0)): the smallest annotated-foreground fraction over every row of a setting and the
    mean performance of the rows at it."""
    t = np.asarray(t_all, dtype=np.float64).ravel()
    y = np.asarray(y_all, dtype=np.float64).ravel()
    if t.shape != y.shape or len(t) == 0:
        raise ValueError("setting_anchor needs equally long, non-empty t and y")
    t0 = float(t.min())
    return t0, float(y[np.abs(t - t0) <= atol].mean())


def fit_fg_eff(t, y, *, t0: float, y0: float, y_full: float, gamma0: float = 10.0) -> FGEffFit:
    """Least-squares fit of γ in eq. C.1 to the points ``(t, y)`` with ``t0, y0, y_full`` fixed.

    Returns NaN for γ when the fit is undefined (fewer than 2 points, or ``y0 == y_full`` so the
    curve does not depend on γ)."""
    from scipy.optimize import curve_fit

    t = np.asarray(t, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if t.shape != y.shape:
        raise ValueError("t and y must have the same length")
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    nan = FGEffFit(float("nan"), float("nan"), float(t0), float(y0), float(y_full), int(len(t)))
    if len(t) < 2 or not np.isfinite([t0, y0, y_full]).all() or abs(y0 - y_full) < 1e-12 or np.ptp(t) == 0:
        return nan

    def model(tt, gamma):
        return fg_eff_curve(tt, gamma, t0, y0, y_full)

    try:
        with np.errstate(over="ignore", invalid="ignore"):
            popt, pcov = curve_fit(model, t, y, p0=[gamma0], maxfev=20000)
    except (RuntimeError, ValueError):
        return nan
    var = float(pcov[0, 0]) if np.isfinite(pcov).all() else float("inf")
    return FGEffFit(float(popt[0]), var, float(t0), float(y0), float(y_full), int(len(t)))


def fg_eff_setting(curves: dict, y_full: float) -> dict[str, FGEffFit]:
    """Fit every method of one setting against a shared anchor.

    ``curves[method]`` is a list of ``(t_values, y_values)`` pairs, one per seed (the cycles of a
    run).  Returns method → :class:`FGEffFit`."""
    t_all = np.concatenate([np.asarray(t, float) for runs in curves.values() for t, _ in runs])
    y_all = np.concatenate([np.asarray(y, float) for runs in curves.values() for _, y in runs])
    t0, y0 = setting_anchor(t_all, y_all)
    out = {}
    for m, runs in curves.items():
        t = np.concatenate([np.asarray(tt, float) for tt, _ in runs])
        y = np.concatenate([np.asarray(yy, float) for _, yy in runs])
        out[m] = fit_fg_eff(t, y, t0=t0, y0=y0, y_full=y_full)
    return out
