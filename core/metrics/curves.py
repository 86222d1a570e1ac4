"""Budget-curve summaries: AUBC and the pairwise penalty matrix (PPM)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import stats


def aubc(values: Sequence[float]) -> float:
    """Area under the budget curve over equally spaced budgets, budget axis normalised to [0, 1]
    (trapezoid with dx = 1/(n−1)); a flat curve at v gives v.  A single point gives that point."""
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError("aubc needs a non-empty 1-D curve")
    if len(y) == 1:
        return float(y[0])
    return float(((y[:-1] + y[1:]) / 2).sum() / (len(y) - 1))


def final_value(values: Sequence[float]) -> float:
    return float(np.asarray(values, dtype=np.float64)[-1])


@dataclass
class PPM:
    """``wins[i, j]``: summed over settings, the share of budgets at which method i is significantly
    better than method j (paired two-sided t-test over seeds).  ``max_value`` = number of settings
    (the largest possible cell).  ``mean_row[j]`` = mean over i ≠ j of ``wins[i, j]``: how often j
    is beaten on average (lower is better)."""
    methods: list[str]
    wins: np.ndarray
    max_value: int
    notes: list[str] = field(default_factory=list)   # e.g. methods ran different seeds (see core.report)

    @property
    def mean_row(self) -> np.ndarray:
        k = len(self.methods)
        if k < 2:
            return np.zeros(k)
        off = self.wins.copy()
        np.fill_diagonal(off, 0.0)
        return off.sum(0) / (k - 1)


def pairwise_penalty_matrix(settings: Mapping[str, Mapping[str, np.ndarray]], alpha: float = 0.05,
                            methods: Sequence[str] | None = None) -> PPM:
    """``settings[s][method]`` is an array ``[n_seeds, n_budgets]`` (seeds in the same order for
    every method, so runs pair by seed).  At every budget of every setting a paired two-sided
    t-test compares each pair; i scores 1/n_budgets against j when p < alpha and mean(i − j) > 0.
    Pairs with fewer than 2 paired seeds are skipped; identical curves (p = NaN) never score."""
    if methods is None:
        methods = sorted({m for per in settings.values() for m in per})
    idx = {m: k for k, m in enumerate(methods)}
    wins = np.zeros((len(methods), len(methods)))
    for per in settings.values():
        for mi, yi in per.items():
            for mj, yj in per.items():
                if mi == mj or mi not in idx or mj not in idx:
                    continue
                a, b = np.atleast_2d(np.asarray(yi, float)), np.atleast_2d(np.asarray(yj, float))
                s, nb = min(len(a), len(b)), min(a.shape[1], b.shape[1])
                if s < 2:
                    continue
                z = a[:s, :nb] - b[:s, :nb]
                with np.errstate(all="ignore"):
                    p = stats.ttest_1samp(z, 0.0, axis=0).pvalue
                better = (z.mean(0) > 0) & (np.nan_to_num(p, nan=1.0) < alpha)
                wins[idx[mi], idx[mj]] += better.sum() / nb
    return PPM(list(methods), wins, len(settings))
