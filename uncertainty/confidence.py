"""95 % bootstrap confidence intervals of the image-level results, for runs on few cases.

A run whose evaluated groups hold fewer than ``support.SMALL_N`` cases gets, next to its tables,
percentile-bootstrap intervals (``scipy.stats.bootstrap``) over the *cases*: the cases are resampled
(stratified: i.i.d. and shifted cases separately, as the AUROC needs both), every seed's metric is
computed on the resample and the seeds are averaged — so an interval says how much the seed-mean
in the table could move with another draw of equally few cases.  Seeds share the cases, so they
are not resampled.

Covered: Dice per model and test set (``seg``), the AUROC of the separation study (i.i.d. vs
shifted test cases) and of OoD detection (i.i.d. vs shifted pool), and AURC per test set (``fd``),
per model × measure × aggregation.  Pixel-level ACE / NCC and the AL improvement (one retrain per
query) get no interval.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from core import metrics as cm
from core import seeds

N_RESAMPLES = 2000
N_RESAMPLES_AURC = 500
CI_COLUMNS = ["model", "measure", "aggregation", "task", "metric", "split", "n", "value", "ci_low", "ci_high"]


def _boot(data: tuple, stat, vectorized: bool, n_resamples: int, seed: int) -> tuple[float, float]:
    from scipy.stats import bootstrap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(data, stat, vectorized=vectorized, paired=False, n_resamples=n_resamples, batch=200,
                        method="percentile", confidence_level=0.95, random_state=seeds.rng(seed, "bootstrap"))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _auroc_rows(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUROC along the last axis (ties count ½): neg [..., n0], pos [..., n1] → [...]."""
    from scipy.stats import rankdata
    n0, n1 = neg.shape[-1], pos.shape[-1]
    r = rankdata(np.concatenate([neg, pos], -1), axis=-1)
    return (r[..., n0:].sum(-1) - n1 * (n1 + 1) / 2) / (n0 * n1)


def auroc_ci(neg: np.ndarray, pos: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(seed-mean AUROC, low, high) for scores ``neg[S, n0]`` (label 0) and ``pos[S, n1]`` (label 1)."""
    neg, pos = np.atleast_2d(neg), np.atleast_2d(pos)
    point = float(_auroc_rows(neg, pos).mean())

    def stat(i0, i1, axis=-1):
        return _auroc_rows(neg[:, i0.astype(np.int64)], pos[:, i1.astype(np.int64)]).mean(0)
    lo, hi = _boot((np.arange(neg.shape[1]), np.arange(pos.shape[1])), stat, True, N_RESAMPLES, seed)
    return point, lo, hi


def mean_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(seed-mean of the case mean, low, high) for ``values[S, n]``."""
    v = np.atleast_2d(values)

    def stat(i, axis=-1):
        return v[:, i.astype(np.int64)].mean(-1).mean(0)
    lo, hi = _boot((np.arange(v.shape[1]),), stat, True, N_RESAMPLES, seed)
    return float(v.mean()), lo, hi


def aurc_ci(risk: np.ndarray, score: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(seed-mean AURC, low, high) for risks and aggregated uncertainty scores ``[S, n]`` (confidence = −score)."""
    risk, score = np.atleast_2d(risk), np.atleast_2d(score)

    def one(i):
        return float(np.mean([cm.aurc(risk[s, i], -score[s, i]) for s in range(len(risk))]))

    def stat(i, axis=-1):
        return one(i.astype(np.int64))
    lo, hi = _boot((np.arange(risk.shape[1]),), stat, False, N_RESAMPLES_AURC, seed)
    return one(np.arange(risk.shape[1])), lo, hi


def intervals(arrays: dict, seeds_: list, models: list, measures: dict, aggregations: list, tasks: list,
              pool_ood: np.ndarray, auroc_split: bool) -> pd.DataFrame:
    """CI rows for every (model, measure, aggregation) of a finished run.  ``arrays[(seed, model)]``
    are the evaluation arrays (``score/<split>/<measure>/<agg>``, ``risk/<split>``); ``measures``
    maps a model to its measures."""
    rows = []

    def add(model, measure, agg, task, metric, split, n, res):
        rows.append({"model": model, "measure": measure, "aggregation": agg, "task": task, "metric": metric,
                     "split": split, "n": n, "value": res[0], "ci_low": res[1], "ci_high": res[2]})

    for m in models:
        arr = [arrays[(s, m)] for s in seeds_]
        risks = {sp: np.stack([a[f"risk/{sp}"] for a in arr]) for sp in ("test_iid", "test_ood")}
        if "seg" in tasks:
            for sp, r in risks.items():
                if r.shape[1]:
                    add(m, "-", "-", "seg", "dice", sp, r.shape[1], mean_ci(1 - r))
        for meas in measures[m]:
            for a in aggregations:
                def sc(sp):
                    return np.stack([x[f"score/{sp}/{meas}/{a}"] for x in arr])
                if "separation" in tasks and auroc_split and risks["test_ood"].shape[1]:
                    s_i, s_o = sc("test_iid"), sc("test_ood")
                    add(m, meas, a, "separation", "auroc", "test", s_i.shape[1] + s_o.shape[1], auroc_ci(s_i, s_o))
                if "ood" in tasks and pool_ood.any() and (~pool_ood).any():
                    p = sc("pool")
                    add(m, meas, a, "ood", "auroc", "pool", p.shape[1], auroc_ci(p[:, ~pool_ood], p[:, pool_ood]))
                if "fd" in tasks:
                    for sp, r in risks.items():
                        if r.shape[1] >= 2:
                            add(m, meas, a, "fd", "aurc", sp, r.shape[1], aurc_ci(r, sc(sp)))
    return pd.DataFrame(rows, columns=CI_COLUMNS)
