"""Mean ranks of methods per metric, bootstrapped over seeds (thesis Fig. 7.4, 8.2; Tables C.10–C.14),
and the leave-one-out stability of rankings (app. C.8).

Within a setting, methods are paired by seed id (same seed = same split and starting budget);
rank 1 is the best method (direction from ``higher_is_better``), ties share the average rank
(``scipy.stats.rankdata(method="average")``, the convention of the Friedman test — the authors' code
uses ``min``; average keeps the rank sum constant, so tied methods are not favoured).

* setting level: the mean over bootstrap resamples of the seeds (resampled jointly for all methods)
  of the rank of each method's seed mean; its SE is the bootstrap standard deviation;
* group level (``group_by``, e.g. dataset) and overall: the mean of the setting-level ranks,
  SE = std / √n over settings (with a single setting the bootstrap SE is carried up).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .tidy import SEED_ALL

RANK_COLUMNS = ["metric", "level", "group", "method", "mean_rank", "se", "se_kind", "n_settings", "n_seeds", "reason"]


def rank_rows(values: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Ranks along the last axis (1 = best; ties → average rank)."""
    v = np.asarray(values, dtype=np.float64)
    return stats.rankdata(-v if higher_is_better else v, axis=-1, method="average")


def seed_matrix(scores: pd.DataFrame, setting: str, metric: str) -> tuple[pd.DataFrame, str]:
    """seeds × methods of one setting and metric, restricted to the seeds every method has.

    Returns the matrix and a note on what was dropped ('' when nothing)."""
    g = scores[(scores["setting"] == setting) & (scores["metric"] == metric)]
    m = g.pivot_table(index="seed", columns="method", values="value", aggfunc="mean").sort_index()
    full = m.dropna(axis=0, how="any")
    note = ""
    if len(full) < len(m):
        note = f"{len(m) - len(full)} seed(s) not run by every method left out"
    return full, note


def setting_ranks(scores: pd.DataFrame, metric: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per setting: bootstrap mean rank and SE of every method (columns of :data:`RANK_COLUMNS`)."""
    rng = np.random.default_rng(seed)
    rows = []
    sub = scores[scores["metric"] == metric]
    for s in sorted(sub["setting"].unique()):
        X, note = seed_matrix(sub, s, metric)
        methods = list(X.columns)
        higher = bool(sub.loc[sub["setting"] == s, "higher_is_better"].iloc[0])
        if len(methods) == 0:
            continue
        if len(X) == 0:  # no seed shared by all methods: rank the per-method means, no SE
            means = sub[sub["setting"] == s].groupby("method")["value"].mean()
            r = rank_rows(means.to_numpy(), higher)
            for m, v in zip(means.index, r):
                rows.append([metric, "setting", s, m, float(v), np.nan, "none", 1, 0,
                             "no seed shared by all methods: rank of per-method means, no SE"])
            continue
        x = X.to_numpy(float)
        n = len(x)
        if n >= 2 and n_boot > 0:
            idx = rng.integers(0, n, size=(n_boot, n))
            R = rank_rows(x[idx].mean(axis=1), higher)
            mean, se, kind, reason = R.mean(0), R.std(0, ddof=1), "bootstrap", note
        else:
            mean, se, kind = rank_rows(x.mean(0), higher), np.full(len(methods), np.nan), "none"
            reason = "one fit over all seeds: no bootstrap SE" if X.index[0] == SEED_ALL else "1 seed: no bootstrap SE"
            reason = "; ".join(x for x in (reason, note) if x)
        for j, m in enumerate(methods):
            rows.append([metric, "setting", s, m, float(mean[j]), float(se[j]), kind, 1, n, reason])
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


def mean_ranks(scores: pd.DataFrame, metrics: Sequence[str] | None = None, group_by: Sequence[str] = ("dataset",),
               n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Setting-, group- and overall-level mean ranks of every metric (``level`` column:
    ``setting`` / ``+``-joined ``group_by`` keys / ``overall``)."""
    metrics = list(metrics) if metrics is not None else list(dict.fromkeys(scores["metric"]))
    out = []
    for k, metric in enumerate(metrics):
        st = setting_ranks(scores, metric, n_boot=n_boot, seed=seed + k)
        if st.empty:
            continue
        out.append(st)
        meta = scores[["setting", *[c for c in group_by if c in scores]]].drop_duplicates("setting")
        st = st.merge(meta, left_on="group", right_on="setting", how="left")
        keys = [c for c in group_by if c in st]
        levels = []
        if keys:
            lvl = "+".join(keys)
            for gval, g in st.groupby(keys, dropna=False):
                label = "/".join(str(v) for v in (gval if isinstance(gval, tuple) else (gval,)))
                levels.append((lvl, label, g))
        levels.append(("overall", "overall", st))
        for lvl, label, g in levels:
            for m, gm in g.groupby("method"):
                n = len(gm)
                if n >= 2:
                    se, kind = float(gm["mean_rank"].std(ddof=1) / np.sqrt(n)), "settings"
                else:
                    se, kind = float(gm["se"].iloc[0]), gm["se_kind"].iloc[0]
                reason = "" if n >= 2 else gm["reason"].iloc[0]
                out.append(pd.DataFrame([[metric, lvl, label, m, float(gm["mean_rank"].mean()), se, kind, n,
                                          int(gm["n_seeds"].max()), reason]], columns=RANK_COLUMNS))
    if not out:
        return pd.DataFrame(columns=RANK_COLUMNS)
    return pd.concat(out, ignore_index=True)


def leave_one_out(scores: pd.DataFrame, metric: str, unit: str = "seed") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave-one-out rankings (thesis app. C.8).

    ``unit="seed"``: per setting, drop each seed in turn, rank the methods' means over the other
    seeds.  ``unit=<setting column>`` (e.g. ``dataset``): drop each value's settings in turn and rank
    the overall mean of the per-setting seed-mean ranks.  Returns ``(ranks, stability)``:
    ``ranks`` = one row per (scope, left_out, method) with its rank; ``stability`` = one row per
    (scope, left_out) with Kendall's τ between that ranking and the ranking of all data, and a
    ``reason`` where it cannot be computed (fewer than 2 units, fewer than 2 methods)."""
    sub = scores[scores["metric"] == metric]
    rk_rows, st_rows = [], []
    if unit == "seed":
        for s in sorted(sub["setting"].unique()):
            X, _ = seed_matrix(sub, s, metric)
            higher = bool(sub.loc[sub["setting"] == s, "higher_is_better"].iloc[0])
            seeds = [x for x in X.index if x != SEED_ALL]
            if len(seeds) < 2 or X.shape[1] < 2:
                why = "needs ≥ 2 seeds shared by all methods" if len(seeds) < 2 else "needs ≥ 2 methods"
                st_rows.append([metric, unit, s, None, np.nan, np.nan, why])
                continue
            full = rank_rows(X.to_numpy(float).mean(0), higher)
            for left in seeds:
                r = rank_rows(X.drop(index=left).to_numpy(float).mean(0), higher)
                rk_rows += [[metric, unit, s, left, m, float(v)] for m, v in zip(X.columns, r)]
                st_rows.append([metric, unit, s, left, *_tau(full, r)])
    else:
        if unit not in sub:
            st_rows.append([metric, unit, "overall", None, np.nan, np.nan, f"no setting column {unit!r}"])
        else:
            st = _seed_mean_ranks(sub, metric)
            st = st.merge(sub[["setting", unit]].drop_duplicates("setting"), on="setting")
            values = sorted(st[unit].dropna().unique(), key=str)
            full = st.groupby("method")["rank"].mean()
            if len(values) < 2 or len(full) < 2:
                why = f"needs ≥ 2 values of {unit}" if len(values) < 2 else "needs ≥ 2 methods"
                st_rows.append([metric, unit, "overall", None, np.nan, np.nan, why])
            else:
                for left in values:
                    part = st[st[unit] != left].groupby("method")["rank"].mean().reindex(full.index)
                    ok = part.notna().to_numpy()
                    r = rank_rows(part.to_numpy(float)[ok], higher_is_better=False)
                    rk_rows += [[metric, unit, "overall", left, m, float(v)] for m, v in zip(full.index[ok], r)]
                    st_rows.append([metric, unit, "overall", left,
                                    *_tau(rank_rows(full.to_numpy(float)[ok], False), r)])
    ranks = pd.DataFrame(rk_rows, columns=["metric", "unit", "scope", "left_out", "method", "rank"])
    stab = pd.DataFrame(st_rows, columns=["metric", "unit", "scope", "left_out", "tau", "pvalue", "reason"])
    return ranks, stab


def _seed_mean_ranks(sub: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = []
    for s in sorted(sub["setting"].unique()):
        X, _ = seed_matrix(sub, s, metric)
        if X.empty:
            continue
        higher = bool(sub.loc[sub["setting"] == s, "higher_is_better"].iloc[0])
        rows += [{"setting": s, "method": m, "rank": float(v)}
                 for m, v in zip(X.columns, rank_rows(X.to_numpy(float).mean(0), higher))]
    return pd.DataFrame(rows, columns=["setting", "method", "rank"])


def _tau(a, b) -> tuple[float, float, str]:
    if len(a) < 2:
        return np.nan, np.nan, "needs ≥ 2 methods"
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan, np.nan, "a ranking ties all methods: τ undefined"
    t = stats.kendalltau(a, b)
    return float(t.statistic), float(t.pvalue), ""
