"""Tests across settings: Friedman + Nemenyi (thesis Fig. 8.2, D.2), Kendall's τ between rankings
(Tables 7.2–7.6) and mean ± 95 % CI over settings (Table 8.1).

The tests themselves come from the field's libraries — ``scipy.stats.friedmanchisquare``,
``scikit_posthocs.posthoc_nemenyi_friedman``, ``scipy.stats.kendalltau``,
``scipy.stats.studentized_range`` (critical difference) — and every function returns a ``reason``
instead of a number when a statistic cannot be computed (fewer than 3 methods, one block, …).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .ranks import rank_rows, seed_matrix
from .tidy import SEED_ALL


@dataclass
class FriedmanResult:
    metric: str
    blocks: str                      # "settings" or "setting × seed"
    n_blocks: int
    methods: list[str]
    mean_ranks: pd.Series            # mean rank per method over the blocks (1 = best)
    statistic: float = np.nan
    pvalue: float = np.nan
    nemenyi: pd.DataFrame | None = None  # p-values, methods × methods
    groups: list[list[str]] = field(default_factory=list)  # methods not significantly different
    cd: float = np.nan               # Nemenyi critical difference of mean ranks
    alpha: float = 0.05
    reason: str = ""                 # why the test could not be computed ('' = it was)
    note: str = ""                   # caveats (methods or seeds left out, …)

    def row(self) -> dict:
        return {"metric": self.metric, "blocks": self.blocks, "n_blocks": self.n_blocks,
                "n_methods": len(self.methods), "chi2": self.statistic, "pvalue": self.pvalue,
                "significant": bool(self.pvalue < self.alpha) if np.isfinite(self.pvalue) else None,
                "critical_difference": self.cd,
                "groups": " | ".join(", ".join(g) for g in self.groups), "reason": self.reason, "note": self.note}


def block_matrix(scores: pd.DataFrame, metric: str, blocks: str = "auto") -> tuple[pd.DataFrame, str, str]:
    """blocks × methods values of one metric.  ``blocks="settings"``: one block per setting (the
    methods' seed means); ``"setting × seed"``: one block per seed of every setting, methods paired by
    seed id; ``"auto"``: settings when there are ≥ 2, else setting × seed.  Methods missing in some
    block are left out.  Returns (matrix, blocks kind, note)."""
    sub = scores[scores["metric"] == metric]
    n_settings = sub["setting"].nunique()
    if blocks == "auto":
        blocks = "settings" if n_settings >= 2 else "setting × seed"
    notes = []
    if blocks == "settings":
        M = sub.groupby(["setting", "method"])["value"].mean().unstack("method")
    elif blocks == "setting × seed":
        parts = []
        for s in sorted(sub["setting"].unique()):
            X, note = seed_matrix(sub, s, metric)
            if note:
                notes.append(f"{s}: {note}")
            X.index = [f"{s} · seed {i}" if i != SEED_ALL else s for i in X.index]
            parts.append(X)
        M = pd.concat(parts) if parts else pd.DataFrame()
    else:
        raise ValueError(f"unknown blocks {blocks!r}")
    drop = [m for m in M.columns if M[m].isna().any()]
    if drop:
        notes.append(f"left out (missing in some block): {', '.join(drop)}")
        M = M.drop(columns=drop)
    return M, blocks, "; ".join(notes)


def friedman_nemenyi(scores: pd.DataFrame, metric: str, alpha: float = 0.05, blocks: str = "auto") -> FriedmanResult:
    """Friedman test over blocks, then (when it rejects at ``alpha``) Nemenyi post-hoc p-values and
    the groups of methods that are not significantly different (contiguous in mean-rank order, as the
    brackets of a critical-difference diagram)."""
    sub = scores[scores["metric"] == metric]
    M, kind, note = block_matrix(sub, metric, blocks)
    methods = list(M.columns)
    higher = bool(sub["higher_is_better"].iloc[0]) if len(sub) else True
    mean_r = pd.Series(rank_rows(M.to_numpy(float), higher).mean(0) if len(M) and methods else [],
                       index=methods, dtype=float).sort_values()
    res = FriedmanResult(metric, kind, len(M), methods, mean_r, alpha=alpha, note=note)
    if len(methods) < 3:
        res.reason = f"Friedman/Nemenyi need ≥ 3 methods (have {len(methods)}: {', '.join(methods) or '-'})"
        return res
    if len(M) < 2:
        res.reason = f"Friedman/Nemenyi need ≥ 2 blocks (have {len(M)})"
        return res
    x = M.to_numpy(float)
    if np.all(np.ptp(x, axis=1) == 0):
        res.reason = "every block ties all methods: no ranking to test"
        return res
    with np.errstate(all="ignore"):
        fr = stats.friedmanchisquare(*x.T)
    res.statistic, res.pvalue = float(fr.statistic), float(fr.pvalue)
    k, n = len(methods), len(M)
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    res.cd = float(q * np.sqrt(k * (k + 1) / (6.0 * n)))
    order = list(mean_r.index)
    if not np.isfinite(res.pvalue) or res.pvalue >= alpha:
        res.groups = [order]
        res.note = "; ".join(x for x in (note, f"Friedman p = {res.pvalue:.3g} ≥ {alpha}: no post-hoc test, "
                                                  "all methods in one group") if x)
        return res
    import scikit_posthocs as sp
    res.nemenyi = sp.posthoc_nemenyi_friedman(M.reset_index(drop=True)).loc[methods, methods]
    res.groups = nemenyi_groups(order, res.nemenyi, alpha)
    return res


def nemenyi_groups(order: Sequence[str], pvalues: pd.DataFrame, alpha: float = 0.05) -> list[list[str]]:
    """Maximal runs of methods (in mean-rank order) whose pairwise p-values are all ≥ ``alpha``."""
    order = list(order)
    runs = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and all(pvalues.loc[order[a], order[j + 1]] >= alpha for a in range(i, j + 1)):
            j += 1
        runs.append((i, j))
    maximal = [r for r in runs if not any(o != r and o[0] <= r[0] and r[1] <= o[1] for o in runs)]
    return [order[i:j + 1] for i, j in sorted(set(maximal))]


KENDALL_COLUMNS = ["metric", "key", "a", "b", "scope", "n_methods", "tau", "pvalue", "significant", "reason"]


def kendall_compare(setting_ranks: pd.DataFrame, settings: pd.DataFrame, key: str,
                    values: Sequence | None = None, alpha: float = 0.1) -> pd.DataFrame:
    """Kendall's τ between the method rankings of two groups of experiments that differ in ``key``
    (e.g. query size, patch size, training length, paradigm), two-sided test at ``alpha``.

    ``setting_ranks``: setting-level rows of :func:`core.analysis.ranks.mean_ranks`
    (``group`` = setting); ``settings``: one row per setting with its setting columns.  For every
    pair of values (a, b) of ``key``, settings that agree on every other setting column are matched
    and their rankings compared (one row per match, ``scope`` = the matched setting), and the mean
    rankings over all settings with a vs b are compared (``scope = "mean"``)."""
    rows = []
    if key not in settings:
        return pd.DataFrame([[None, key, None, None, "-", 0, np.nan, np.nan, None,
                              f"no setting column {key!r} (have: {', '.join(settings.columns)})"]],
                            columns=KENDALL_COLUMNS)
    st = setting_ranks[setting_ranks["level"] == "setting"].merge(settings, left_on="group", right_on="setting")
    have = sorted(dict.fromkeys(st[key].dropna().tolist()), key=_natural)
    if values:
        want = [_match(v, have) for v in values]
        missing = [str(v) for v, w in zip(values, want) if w is None]
        if missing:
            return pd.DataFrame([[None, key, None, None, "-", 0, np.nan, np.nan, None,
                                  f"{key}={','.join(missing)} not among the runs (have: {', '.join(map(str, have))})"]],
                                columns=KENDALL_COLUMNS)
        have = want
    if len(have) < 2:
        return pd.DataFrame([[None, key, None, None, "-", 0, np.nan, np.nan, None,
                              f"needs runs with ≥ 2 values of {key} (have: {', '.join(map(str, have)) or '-'})"]],
                            columns=KENDALL_COLUMNS)
    others = [c for c in settings.columns if c not in ("setting", key)]
    for metric, gm in st.groupby("metric", sort=False):
        for a, b in combinations(have, 2):
            A, B = gm[gm[key] == a], gm[gm[key] == b]
            for sa, ga in A.groupby("setting"):
                ctx = ga.iloc[0]
                mb = B
                for c in others:
                    mb = mb[mb[c].map(_plain) == _plain(ctx[c])]
                for sb, gb in mb.groupby("setting"):
                    rows.append([metric, key, a, b, f"{sa} vs {sb}", *_tau_rank(ga, gb, alpha)])
            ma, mb_ = A.groupby("method")["mean_rank"].mean(), B.groupby("method")["mean_rank"].mean()
            rows.append([metric, key, a, b, "mean", *_tau_rank(ma.rename("mean_rank").reset_index(),
                                                               mb_.rename("mean_rank").reset_index(), alpha)])
    return pd.DataFrame(rows, columns=KENDALL_COLUMNS)


def _plain(v) -> str:
    """A setting value as text, missing values (None / NaN) all alike."""
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else str(v)


def _natural(v):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _match(v, have):
    for h in have:
        if str(h) == str(v):
            return h
    return None


def _tau_rank(ga: pd.DataFrame, gb: pd.DataFrame, alpha: float):
    common = sorted(set(ga["method"]) & set(gb["method"]))
    if len(common) < 2:
        return [len(common), np.nan, np.nan, None, f"needs ≥ 2 methods in both groups (have {len(common)})"]
    x = ga.set_index("method").loc[common, "mean_rank"].to_numpy(float)
    y = gb.set_index("method").loc[common, "mean_rank"].to_numpy(float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return [len(common), np.nan, np.nan, None, "a ranking ties all methods: τ undefined"]
    t = stats.kendalltau(x, y)
    return [len(common), float(t.statistic), float(t.pvalue), bool(t.pvalue < alpha), ""]


CI_COLUMNS = ["metric", "method", "mean", "ci_low", "ci_high", "half_width", "n_settings", "n_runs", "reason"]


def mean_ci(scores: pd.DataFrame, metrics: Sequence[str] = ("AUBC", "Final"), level: float = 0.95,
            n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean over settings (of each setting's seed mean) ± a percentile bootstrap CI (Table 8.1).

    The seeds are resampled within each setting (stratified bootstrap: the settings are the fixed
    design, the seeds the noise), which neither ``scipy.stats.bootstrap`` nor another kept library
    offers.  With one seed per setting there is nothing to resample and the CI is reported as such."""
    rng = np.random.default_rng(seed)
    rows = []
    for metric in metrics:
        sub = scores[(scores["metric"] == metric) & (scores["seed"] != SEED_ALL)]
        for m, g in sub.groupby("method"):
            per = [gs["value"].to_numpy(float) for _, gs in g.groupby("setting")]
            mean = float(np.mean([v.mean() for v in per]))
            n_runs = sum(len(v) for v in per)
            if max(len(v) for v in per) < 2:
                rows.append([metric, m, mean, np.nan, np.nan, np.nan, len(per), n_runs, "1 seed per setting: no CI"])
                continue
            draws = stratified_bootstrap(per, lambda xs: np.mean(xs, axis=0), n_boot, rng)
            lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
            rows.append([metric, m, mean, float(lo), float(hi), float((hi - lo) / 2), len(per), n_runs, ""])
    return pd.DataFrame(rows, columns=CI_COLUMNS)


def stratified_bootstrap(groups: Sequence[np.ndarray], combine, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Resample every group's values with replacement (``n_boot`` times), take each group's mean and
    ``combine`` the list of per-group mean vectors ``[n_boot]`` into one ``[n_boot]`` statistic."""
    means = []
    for v in groups:
        v = np.asarray(v, dtype=np.float64)
        idx = rng.integers(0, len(v), size=(n_boot, len(v)))
        means.append(v[idx].mean(axis=1))
    return np.asarray(combine(means), dtype=np.float64)
