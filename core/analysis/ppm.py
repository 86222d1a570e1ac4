"""Pairwise penalty matrix per setting with runs paired by seed id, its aggregate with the mean row
(thesis Fig. 7.2, 8.3) and win/lose/tie shares against a reference (Fig. 7.3, 8.4).

``wins[i, j]`` of one setting = share of the budgets at which method i is significantly better than
j (paired two-sided t-test over the seeds both ran, α = 0.05; :func:`core.metrics.pairwise_penalty_matrix`).
The aggregate is the mean over the settings where both methods ran (a share in [0, 1]); the mean row
is, per column, the mean over the other methods (how often a method is beaten).  Against a
reference r, method m wins ``wins[m, r]``, loses ``wins[r, m]`` and ties the rest.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..metrics import pairwise_penalty_matrix
from .tidy import curve_matrices, paired


def setting_ppms(curves: pd.DataFrame, alpha: float = 0.05) -> dict[str, pd.DataFrame]:
    """setting → methods × methods DataFrame of win shares (NaN where a pair shares < 2 seeds)."""
    out = {}
    all_mats = curve_matrices(curves)
    for s in sorted(curves["setting"].unique()):
        mats = {m: x for (ss, m), x in all_mats.items() if ss == s}
        methods = sorted(mats)
        W = pd.DataFrame(np.nan, index=methods, columns=methods)
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                x, y, seeds, budgets = paired(mats[a], mats[b])
                if len(seeds) < 2 or not budgets:
                    continue
                with warnings.catch_warnings():  # identical budgets (the shared start) → NaN p, no score
                    warnings.simplefilter("ignore", RuntimeWarning)
                    p = pairwise_penalty_matrix({s: {a: x, b: y}}, alpha=alpha, methods=[a, b])
                W.loc[a, b], W.loc[b, a] = p.wins[0, 1], p.wins[1, 0]
        out[s] = W
    return out


def aggregate(ppms: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean win share over the settings where both methods were compared, number of such settings)."""
    methods = sorted({m for W in ppms.values() for m in W.index})
    total = pd.DataFrame(0.0, index=methods, columns=methods)
    count = pd.DataFrame(0, index=methods, columns=methods)
    for W in ppms.values():
        ok = W.notna()
        total = total.add(W.where(ok, 0.0), fill_value=0.0)
        count = count.add(ok.astype(int), fill_value=0)
    share = total / count.where(count > 0)
    return share, count.astype(int)


def mean_row(share: pd.DataFrame) -> pd.Series:
    """Per column j: mean over i ≠ j of ``share[i, j]`` (how often j is beaten on average)."""
    off = share.copy()
    for m in off.index:
        off.loc[m, m] = np.nan
    return off.mean(axis=0, skipna=True)


WINLOSE_COLUMNS = ["method", "reference", "wins", "losses", "ties", "n_settings", "reason"]


def win_lose_tie(ppms: dict[str, pd.DataFrame], reference: str) -> pd.DataFrame:
    """Mean win / lose / tie shares of every method against ``reference`` over the settings where
    both were compared."""
    rows = []
    methods = sorted({m for W in ppms.values() for m in W.index if m != reference})
    for m in methods:
        w, l = [], []
        for W in ppms.values():
            if m in W.index and reference in W.index and np.isfinite(W.loc[m, reference]):
                w.append(W.loc[m, reference])
                l.append(W.loc[reference, m])
        if not w:
            rows.append([m, reference, np.nan, np.nan, np.nan, 0,
                         f"never compared with {reference} (needs ≥ 2 shared seeds in a setting)"])
            continue
        wm, lm = float(np.mean(w)), float(np.mean(l))
        rows.append([m, reference, wm, lm, 1.0 - wm - lm, len(w), ""])
    return pd.DataFrame(rows, columns=WINLOSE_COLUMNS)


def is_random_baseline(name: str) -> bool:
    """Default rule for baselines: methods named ``random`` or ``random_*`` (Random, Random 33 % FG…)."""
    return name == "random" or name.startswith("random_")


def strongest_baseline(share: pd.DataFrame, is_baseline: Callable[[str], bool] = is_random_baseline,
                       exclude: Sequence[str] = ()) -> str | None:
    """The baseline that is beaten least often (lowest mean-row value; ties → most wins)."""
    cands = [m for m in share.index if is_baseline(m) and m not in exclude]
    if not cands:
        return None
    mr = mean_row(share)
    off = share.copy()
    for m in off.index:
        off.loc[m, m] = np.nan
    wins = off.mean(axis=1, skipna=True)
    return min(cands, key=lambda m: (np.nan_to_num(mr[m], nan=np.inf), -np.nan_to_num(wins[m], nan=0.0), m))
