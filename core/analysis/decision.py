"""Will AL pay off?  The decision of thesis ch. 4 (eqs. 4.1–4.2) from a set of AL runs.

    C_AL − C_baseline = −r · c_annotation + c_AL-overhead                              (4.1)
    use AL if E_fingerprint[C_AL] < E_fingerprint[C_baseline]                          (4.2)

**Annotation reduction r.**  For every budget b of a method (after the starting budget) take the
performance y = its mean curve at b and ask how many labels Random needs to reach y:
``r_b = B_random(y) − B_method(y)``, where ``B_X(y)`` is the first budget at which X's mean curve
(over seeds) reaches y, linearly interpolated between cycles.  For a monotone method curve
``B_method(y) = b`` and this is "labels Random needs to reach the method's performance at b, minus
b"; measuring both sides on their own curves keeps r exactly 0 for identical curves even where the
curves dip.  A level above Random's best point is *censored* (r ≥ its lower bound, counted apart);
a level at or below the method's start is uninformative and skipped.  A setting's r is the median
of its uncensored r_b (in labels, and as % of b; the median because near the flat end of a curve a
little noise is a large horizontal distance), with a percentile bootstrap CI over seeds (seed ids
resampled jointly for the method and Random: same seed = same split and starting budget).

**Evidence E[r] > 0** per fingerprint (domain, dataset, regime, paradigm, imbalance): one-sided
one-sample t-test (``scipy.stats.ttest_1samp``) of the per-seed r (method seed k against Random
seed k) over all settings of the fingerprint; the mirrored test gives evidence for E[r] < 0.

**Overhead** c_AL-overhead = (train + query time of all AL cycles − the one final training a Random
project needs anyway) from the runs' own timings, in hours × ``gpu_hour`` + ``overhead`` (fixed, EUR).
Evaluation time is simulation-only and not counted.  **Risk**: the PPM lose share against Random.

**Verdict** per fingerprint: *use AL (method X)* when some method has E[r] > 0 supported (p < α)
and a positive expected net saving r · c_annotation − c_overhead (X = the largest saving);
*do not use AL* when every method either has E[r] < 0 supported or, with E[r] > 0 supported, would
not pay even at the upper CI bound of r; *no evidence* otherwise.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .tidy import curve_matrices, paired

OK, RIGHT, LEFT = 0, 1, -1


def crossing(budgets: np.ndarray, curves: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First budget at which each curve reaches each level, linearly interpolated.

    ``budgets [n]`` ascending, ``curves [..., n]``, ``levels [..., L]`` → ``(b [..., L], flag [..., L])``
    with flag 0 = reached, 1 = never reached (b = last budget: a lower bound), −1 = reached at the first
    budget already (b = first budget: an upper bound)."""
    b = np.asarray(budgets, dtype=np.float64)
    c = np.asarray(curves, dtype=np.float64)[..., None, :]          # [..., 1, n]
    y = np.asarray(levels, dtype=np.float64)[..., :, None]          # [..., L, 1]
    ge = c >= y                                                     # [..., L, n]
    reached = ge.any(-1)
    k = np.argmax(ge, axis=-1)                                      # first index with c >= y
    km1 = np.maximum(k - 1, 0)
    ck = np.take_along_axis(np.broadcast_to(c, ge.shape), k[..., None], -1)[..., 0]
    ckm1 = np.take_along_axis(np.broadcast_to(c, ge.shape), km1[..., None], -1)[..., 0]
    yy = y[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(ck > ckm1, (yy - ckm1) / (ck - ckm1), 1.0)
    out = b[km1] + np.clip(frac, 0.0, 1.0) * (b[k] - b[km1])
    flag = np.where(~reached, RIGHT, np.where(k == 0, LEFT, OK))
    out = np.where(~reached, b[-1], np.where(k == 0, b[0], out))
    return out, flag


def reduction(budgets: np.ndarray, method: np.ndarray, random: np.ndarray):
    """Per-budget annotation reduction of mean curves ``method [..., n]`` vs ``random [..., n]``.

    Returns ``(r [..., n-1], flag [..., n-1])`` for the budgets after the start; flag 0 = value,
    1 = right-censored (lower bound), −1 = level at/below the method's start (uninformative)."""
    m = np.asarray(method, dtype=np.float64)
    levels = m[..., 1:]
    bm, fm = crossing(budgets, m, levels)
    br, fr = crossing(budgets, random, levels)
    r = br - bm
    flag = np.where(fm == LEFT, LEFT, np.where(fr == RIGHT, RIGHT, OK))
    return r, flag


def summarise(r: np.ndarray, flag: np.ndarray, budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median r over uncensored budgets, median r / b in %, status) along the last axis; where
    every budget is right-censored the median of the lower bounds is returned with status 1;
    status −1 = no informative budget (NaN).  The median, not the mean: near the flat end of a
    budget curve a small performance noise is a large horizontal distance."""
    b = np.broadcast_to(np.asarray(budgets, dtype=np.float64)[1:], np.shape(r))
    ok, right = flag == OK, flag == RIGHT
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices → NaN, handled below
        med_ok = np.nanmedian(np.where(ok, r, np.nan), axis=-1)
        pct_ok = np.nanmedian(np.where(ok, 100.0 * r / b, np.nan), axis=-1)
        med_r = np.nanmedian(np.where(right, r, np.nan), axis=-1)
        pct_r = np.nanmedian(np.where(right, 100.0 * r / b, np.nan), axis=-1)
    has_ok, has_r = ok.any(-1), right.any(-1)
    status = np.where(has_ok, OK, np.where(has_r, RIGHT, LEFT))
    med = np.where(has_ok, med_ok, np.where(has_r, med_r, np.nan))
    pct = np.where(has_ok, pct_ok, np.where(has_r, pct_r, np.nan))
    return med, pct, status


@dataclass
class Costs:
    label_cost: float | None = None   # EUR per label (c_annotation)
    gpu_hour: float | None = None     # EUR per hour of the measured compute
    overhead: float = 0.0             # fixed AL overhead in EUR (engineering, delay)
    target: float | None = None       # optional target metric value


@dataclass
class Decision:
    baseline: str
    alpha: float
    costs: Costs
    budgets: pd.DataFrame       # setting, method, budget, level, r, flag
    settings: pd.DataFrame      # one row per (setting, method)
    fingerprints: pd.DataFrame  # one row per (fingerprint, method)
    verdicts: pd.DataFrame      # one row per fingerprint
    notes: list[str] = field(default_factory=list)


def decide(curves: pd.DataFrame, runs: pd.DataFrame, fingerprint_cols: Sequence[str], baseline: str,
           costs: Costs, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
           ppms: dict | None = None) -> Decision:
    """The ch. 4 decision for every method against ``baseline`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    fp_cols = [c for c in fingerprint_cols if c in runs]
    meta = runs.drop_duplicates("setting").set_index("setting")
    b_rows, s_rows, draws, per_seed = [], [], {}, {}
    mats = curve_matrices(curves)
    by_run = {k: g for k, g in runs.groupby(["setting", "method"])}
    for s in sorted(curves["setting"].unique()):
        methods = sorted(m for (ss, m) in mats if ss == s)
        if baseline not in methods:
            continue
        R = mats[(s, baseline)]
        for m in methods:
            if m == baseline:
                continue
            row = {"setting": s, **{c: meta.loc[s, c] for c in fp_cols}, "method": m, "baseline": baseline}
            x, y, seeds, budgets = paired(mats[(s, m)], R)
            if len(budgets) < 2 or not seeds:
                row["reason"] = f"no cycles shared with {baseline} after the start"
                s_rows.append(row)
                continue
            bud = np.asarray(budgets, float)
            r, flag = reduction(bud, x.mean(0), y.mean(0))
            mean, pct, status = summarise(r, flag, bud)
            b_rows += [{"setting": s, "method": m, "budget": bb, "level": lv, "r": rr, "flag": int(f)}
                       for bb, lv, rr, f in zip(bud[1:], x.mean(0)[1:], r, flag)]
            if status == LEFT:
                row["reason"] = (f"{m} never rises above its starting performance: no level to compare "
                                 f"(r undefined)")
            row.update(n_seeds=len(seeds), r=float(mean), r_pct=float(pct), r_status=int(status),
                       n_budgets=int(len(r)), n_censored=int((flag == 1).sum()), n_uninformative=int((flag == -1).sum()))
            if costs.target is not None:
                bt, ft = crossing(bud, np.stack([x.mean(0), y.mean(0)]), np.array([[costs.target], [costs.target]]))
                row["target_budget_method"] = float(bt[0, 0]) if ft[0, 0] != RIGHT else np.nan
                row["target_budget_random"] = float(bt[1, 0]) if ft[1, 0] != RIGHT else np.nan
                row["r_target"] = row["target_budget_random"] - row["target_budget_method"]
                if ft[0, 0] == RIGHT:
                    row["target_note"] = f"{m} does not reach {costs.target}"
                elif ft[1, 0] == RIGHT:
                    row["r_target"] = float(bud[-1] - bt[0, 0])
                    row["target_note"] = f"{baseline} does not reach {costs.target}: r ≥ {row['r_target']:.0f}"
            # bootstrap over seed ids (jointly) and the paired per-seed r for the test
            if len(seeds) >= 2:
                idx = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
                rb, fb = reduction(bud, x[idx].mean(1), y[idx].mean(1))
                d, _, _ = summarise(rb, fb, bud)
                draws[(s, m)] = d
                lo, hi = np.nanquantile(d, [(1 - level) / 2, (1 + level) / 2]) if np.isfinite(d).any() else (np.nan, np.nan)
                row.update(r_ci_low=float(lo), r_ci_high=float(hi))
            else:
                row["reason"] = "1 shared seed: no CI, no test"
            rk, fk = reduction(bud, x, y)
            per_seed[(s, m)] = summarise(rk, fk, bud)[0]
            # overhead from the runs' own timings
            rm, rr_ = by_run.get((s, m), runs.iloc[0:0]), by_run.get((s, baseline), runs.iloc[0:0])
            over_s = max(0.0, float((rm["train_s"] + rm["query_s"]).mean() - rr_["final_train_s"].mean()))
            row["overhead_h"] = over_s / 3600.0
            if ppms is not None and s in ppms and m in ppms[s].index:
                W = ppms[s]
                row["ppm_win"], row["ppm_lose"] = float(W.loc[m, baseline]), float(W.loc[baseline, m])
            s_rows.append(row)
    settings = pd.DataFrame(s_rows)
    fps, verdicts = _fingerprints(settings, draws, per_seed, fp_cols, costs, alpha, level, baseline)
    notes = []
    if "n_seeds" in settings and settings["n_seeds"].min() < 4:
        k = int(settings["n_seeds"].min())
        notes.append(f"{k} seed(s) shared with {baseline} in some setting: the bootstrap over seeds has only "
                     f"{math.comb(2 * k - 1, k)} distinct resamples, so its CI is coarse, and the one-sided t-test "
                     f"has {k - 1} degree(s) of freedom per setting — more seeds sharpen both")
    return Decision(baseline, alpha, costs, pd.DataFrame(b_rows), settings, fps, verdicts, notes)


def _fingerprints(settings: pd.DataFrame, draws: dict, per_seed: dict, fp_cols, costs: Costs, alpha, level,
                  baseline: str = "random"):
    rows, verdicts = [], []
    if settings.empty:
        return pd.DataFrame(), pd.DataFrame()
    keyed = settings.groupby(fp_cols, dropna=False, sort=True) if fp_cols else [((), settings)]
    for key, g in keyed:
        key = key if isinstance(key, tuple) else (key,)
        fp = dict(zip(fp_cols, key))
        label = "/".join(str(v) for v in key if v is not None and v == v)
        frows = []
        for m, gm in g.groupby("method"):
            gm = gm[gm["r"].notna()] if "r" in gm else gm.iloc[0:0]
            row = {"fingerprint": label, **fp, "method": m, "n_settings": len(gm)}
            if gm.empty:
                why = g.loc[g["method"] == m, "reason"].dropna() if "reason" in g else []
                row["reason"] = "; ".join(sorted(set(why))) or "r not computable"
                frows.append(row)
                continue
            row["E_r"] = float(gm["r"].mean())
            row["r_pct"] = float(gm["r_pct"].mean())
            row["lower_bound"] = bool((gm["r_status"] == RIGHT).any())
            ds = [draws[(s, m)] for s in gm["setting"] if (s, m) in draws]
            if len(ds) == len(gm):
                d = np.mean(ds, axis=0)
                if np.isfinite(d).any():
                    row["ci_low"], row["ci_high"] = (float(v) for v in np.nanquantile(d, [(1 - level) / 2, (1 + level) / 2]))
            ks = np.concatenate([per_seed[(s, m)] for s in gm["setting"]])
            ks = ks[np.isfinite(ks)]
            row["n_seeds"] = int(len(ks))
            if len(ks) >= 2:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # constant r (identical curves) → NaN, handled
                    pg = stats.ttest_1samp(ks, 0.0, alternative="greater").pvalue
                    pl = stats.ttest_1samp(ks, 0.0, alternative="less").pvalue
                row["p_greater"] = float(pg) if np.isfinite(pg) else (0.0 if ks.mean() > 0 else 1.0)
                row["p_less"] = float(pl) if np.isfinite(pl) else (0.0 if ks.mean() < 0 else 1.0)
            else:
                row["reason"] = "fewer than 2 seeds with an r: no test"
            if row.get("p_greater", 1.0) < alpha:
                row["evidence"] = "E[r] > 0 supported"
            elif row.get("p_less", 1.0) < alpha:
                row["evidence"] = "E[r] < 0 supported"
            else:
                row["evidence"] = "no evidence"
            if "ppm_lose" in gm:
                row["ppm_lose"] = float(gm["ppm_lose"].mean())
                row["ppm_win"] = float(gm["ppm_win"].mean())
            row["overhead_h"] = float(gm["overhead_h"].mean())
            if costs.gpu_hour is not None:
                row["overhead_eur"] = row["overhead_h"] * costs.gpu_hour + costs.overhead
            if costs.label_cost is not None and "overhead_eur" in row:
                row["saving_eur"] = row["E_r"] * costs.label_cost - row["overhead_eur"]
                if "ci_high" in row:
                    row["saving_eur_ci_low"] = row["ci_low"] * costs.label_cost - row["overhead_eur"]
                    row["saving_eur_ci_high"] = row["ci_high"] * costs.label_cost - row["overhead_eur"]
            frows.append(row)
        rows += frows
        verdicts.append({"fingerprint": label, **fp, **_verdict(frows, costs, alpha, baseline)})
    return pd.DataFrame(rows), pd.DataFrame(verdicts)


def _verdict(rows: list[dict], costs: Costs, alpha: float, baseline: str = "random") -> dict:
    priced = costs.label_cost is not None and costs.gpu_hour is not None
    sup = [r for r in rows if r.get("evidence") == "E[r] > 0 supported"]
    tested = [r for r in rows if "evidence" in r]
    if not tested:
        return {"verdict": "no evidence", "method": None,
                "because": "; ".join(sorted({r.get("reason", "") for r in rows} - {""})) or "r not computable"}
    if not priced:
        if sup:
            best = max(sup, key=lambda r: r["E_r"])
            return {"verdict": "AL reduces labels (no prices given)", "method": best["method"],
                    "because": _evidence_text(best, alpha, baseline) + "; pass --label-cost and --gpu-hour for the cost verdict"}
        return {"verdict": "no evidence", "method": None,
                "because": "no method has E[r] > 0 supported at α = %g" % alpha}
    pay = [r for r in sup if r.get("saving_eur", -np.inf) > 0]
    if pay:
        best = max(pay, key=lambda r: r["saving_eur"])
        return {"verdict": f"use AL ({best['method']})", "method": best["method"],
                "because": _evidence_text(best, alpha, baseline) + f"; expected saving {best['saving_eur']:.2f} EUR "
                           f"(= {best['E_r']:.0f} labels × {costs.label_cost:g} EUR − overhead {best['overhead_eur']:.2f} EUR)"}
    against = []
    for r in tested:
        if r["evidence"] == "E[r] < 0 supported":
            against.append(f"{r['method']}: needs more labels than {baseline} for the same performance "
                           f"(E[r] = {r['E_r']:.0f}, p = {r['p_less']:.3g})")
        elif r["evidence"] == "E[r] > 0 supported" and r.get("saving_eur_ci_high", r.get("saving_eur", 0.0)) <= 0:
            against.append(f"{r['method']}: saves labels but not money even at the CI's upper bound "
                           f"({r.get('saving_eur_ci_high', r.get('saving_eur')):.2f} EUR)")
    if len(against) == len(tested):
        return {"verdict": "do not use AL", "method": None, "because": "; ".join(against)}
    best = max(tested, key=lambda r: r.get("E_r", -np.inf))
    why = _evidence_text(best, alpha, baseline)
    if best.get("evidence") == "E[r] > 0 supported":
        why += f"; but the expected saving {best.get('saving_eur', np.nan):.2f} EUR is not positive"
    return {"verdict": "no evidence", "method": None, "because": why}


def _evidence_text(r: dict, alpha: float, baseline: str = "random") -> str:
    ci = f", {100 * 0.95:.0f} % CI [{r['ci_low']:.0f}, {r['ci_high']:.0f}]" if "ci_low" in r else ""
    p = f", one-sided t-test p = {r['p_greater']:.3g}" if "p_greater" in r else ""
    lb = f" (lower bound: above {baseline}'s best)" if r.get("lower_bound") else ""
    risk = f"; significantly below {baseline} at {100 * r['ppm_lose']:.0f} % of budgets (PPM)" if "ppm_lose" in r else ""
    return (f"{r['method']}: E[r] = {r['E_r']:.0f} labels{lb} ({r['r_pct']:.0f} % of budget{ci}{p}, "
            f"n = {r.get('n_seeds', 0)} seed(s) over {r['n_settings']} setting(s)){risk}")
