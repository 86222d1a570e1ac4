"""The thesis' statistics from any set of runs of one domain, in one self-contained report.html.

    python -m experiments.report runs/classification/fashion_mnist/low/supervised
    python -m experiments.report runs/segmentation --group-by dataset --compare patch_size
    python -m experiments.report runs/values/toy2d_laptop --out /tmp/values_report
    python -m experiments.report runs/segmentation/phantoms/low --scores 0     # + why the first query picked what it did

Every run directory (``config.json`` + ``state.json``, or the values testbed's ``results.csv``) below
the given paths is read; settings, methods and seeds come from each run's config, never from paths.
Runs pair by seed id.  Written to ``--out`` (default: the first path):

* ``curves.png``, ``table.md`` / ``table.csv`` — budget curves, AUBC and final metric per method;
* ``ppm.png`` / ``ppm.csv`` — pairwise penalty matrix (share of budgets where row beats column,
  paired two-sided t-test, α = 0.05), mean over settings, with the mean row;
* ``winlose.png`` / ``winlose.csv`` — win / lose / tie shares against Random and the strongest random
  baseline (thesis Fig. 7.3, 8.4);
* ``ranks.png`` / ``ranks.csv`` — mean rank ± SE per metric (AUBC, Final, FG-Eff), bootstrapped over
  seeds per setting, aggregated to ``--group-by`` level and overall, with Nemenyi brackets (Fig. 8.2);
* ``cd.png``, ``friedman.csv``, ``nemenyi.csv`` — Friedman test + Nemenyi post-hoc (α = 0.05);
* ``ci.csv`` — mean ± 95 % CI of AUBC and Final over all settings (Table 8.1);
* ``kendall.csv`` — Kendall's τ between the rankings of two groups of experiments (two-sided, α = 0.1;
  ``--compare KEY[=A,B]``, or every setting column that varies);
* ``loo.csv`` — leave-one-seed-out (and leave-one-``--group-by``-value-out) ranking stability (app. C.8);
* ``fgeff.png`` / ``fgeff.csv`` — segmentation: Dice vs annotated foreground with the fitted eq. C.1;
* ``r.png`` — annotation reduction r per budget against the baseline (``experiments.decide`` adds
  the priced verdict and decision.md);
* ``scores_cycleK.png`` (``--scores K``) — per run, the score distribution of cycle K's query (pool
  histogram and the scores of the best picks, from the query summary stored with each cycle);
* ``report.html`` — all of the above in one file (figures inline, sortable tables, no network).

A statistic that cannot be computed (Nemenyi with < 3 methods, a CI from one seed, …) is reported
with its reason, never as a number.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import math
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from core.analysis import decision as dec
from core.analysis import html, plots, ppm as ppm_mod, ranks as ranks_mod, significance as sig
from core.analysis.tidy import Collection, find_runs
from core.errors import UserError
from core.store import atomic_write_text, clean_temp, exclusive
from experiments.common import Parser, main_guard, out_arg
from experiments.runs import load

CURVE_METRICS = ("AUBC", "Final", "FG-Eff")


# --------------------------------------------------------------------------------------- CLI

def add_analysis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run directories or folders containing them (one domain)")
    p.add_argument("--metric", default=None,
                   help="per-cycle metric to judge by (default: accuracy, balanced_accuracy on roll-out/folder data, "
                        "mean_dice for segmentation); for the values testbed one task/metric, e.g. ood/auroc")
    p.add_argument("--out", type=out_arg, default=None, metavar="DIR", help="output folder (default: the first path)")
    p.add_argument("--group-by", default="dataset", metavar="K1,K2",
                   help="intermediate level for the mean ranks between setting and overall (setting columns, "
                        "comma-separated; default: dataset)")
    p.add_argument("--baseline", default=None, metavar="METHOD",
                   help="reference for r and win/lose (default: random, else the only random_* method)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of PPM, Friedman/Nemenyi and the "
                                                             "one-sided E[r] > 0 test (default 0.05)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--friedman-blocks", choices=("auto", "settings", "seeds"), default="auto",
                   help="blocks of the Friedman test: settings, every seed of every setting, or auto = settings "
                        "when there are ≥ 2, else seeds (default)")


def build_parser() -> Parser:
    p = Parser(prog="python -m experiments.report", description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 1)[1])
    add_analysis_args(p)
    p.add_argument("--compare", action="append", default=[], metavar="KEY[=A,B]",
                   help="Kendall's τ between the method rankings of runs that differ in KEY (a setting column: "
                        "query_size, patch_size, epochs, paradigm, regime, …), optionally only values A and B; "
                        "repeatable (default: every setting column that varies)")
    p.add_argument("--kendall-alpha", type=float, default=0.1, help="α of the two-sided Kendall test (default 0.1)")
    p.add_argument("--scores", type=int, default=None, metavar="CYCLE",
                   help="also plot the score distribution of cycle CYCLE's query (0 = the first query, -1 = the "
                        "last) of every run to scores_cycleCYCLE.png")
    g = p.add_argument_group("decision section (optional; experiments.decide makes the full decision report)")
    add_cost_args(g, required=False)
    return p


def add_cost_args(g, required: bool) -> None:
    g.add_argument("--label-cost", type=float, default=None, required=required, metavar="EUR",
                   help="cost of one label (c_annotation of eq. 4.1), e.g. 2.5")
    g.add_argument("--gpu-hour", type=float, default=None, required=required, metavar="EUR",
                   help="price of one hour of the compute the runs measured (train + query time)")
    g.add_argument("--overhead", type=float, default=0.0, metavar="EUR",
                   help="fixed AL overhead: engineering, infrastructure, delay (default 0)")
    g.add_argument("--target-metric", type=float, default=None, metavar="Y",
                   help="also report r at this performance level (labels Random needs to reach Y minus labels the "
                        "method needs)")


def validate(args, col: Collection) -> None:
    if not 0 < args.alpha < 1:
        raise UserError("--alpha must be in (0, 1)")
    if getattr(args, "kendall_alpha", 0.1) <= 0 or getattr(args, "kendall_alpha", 0.1) >= 1:
        raise UserError("--kendall-alpha must be in (0, 1)")
    if not 1 <= args.bootstrap <= 100_000:
        raise UserError("--bootstrap must be between 1 and 100000")
    for flag in ("label_cost", "gpu_hour", "overhead"):
        v = getattr(args, flag, None)
        if v is not None and (not math.isfinite(v) or v < 0):
            raise UserError(f"--{flag.replace('_', '-')} must be a finite number ≥ 0")
    t = getattr(args, "target_metric", None)
    if t is not None and not math.isfinite(t):
        raise UserError("--target-metric must be a finite number")
    keys = group_keys(args)
    bad = [k for k in keys if k not in col.setting_cols]
    if bad:
        raise UserError(f"--group-by {','.join(bad)}: not a setting column (have: {', '.join(col.setting_cols)})")
    for c in getattr(args, "compare", []):
        k = c.split("=", 1)[0]
        if k not in col.setting_cols:
            raise UserError(f"--compare {k}: not a setting column (have: {', '.join(col.setting_cols)})")


def group_keys(args) -> list[str]:
    return [k.strip() for k in (args.group_by or "").split(",") if k.strip()]


def resolve_baseline(col: Collection, name: str | None, required: bool) -> str | None:
    methods = col.methods
    if name is not None:
        if name not in methods:
            raise UserError(f"--baseline {name}: no runs of it (methods: {', '.join(methods)})")
        return name
    if "random" in methods:
        return "random"
    rnd = [m for m in methods if ppm_mod.is_random_baseline(m)]
    if len(rnd) == 1:
        return rnd[0]
    if required:
        raise UserError(f"no 'random' runs to compare against; pass --baseline (methods: {', '.join(methods)})")
    return None


def score_panels(paths: Sequence[str], cycle: int) -> list[tuple[str, dict]]:
    """(label, query summary) of cycle ``cycle`` (−1: the last query) of every run below ``paths``."""
    panels = []
    for run in sorted(find_runs(paths), key=lambda r: str(r.path)):
        queried = [r for r in run.records if r.get("query")]
        if "method" not in run.config or not queried:
            continue
        rec = queried[-1] if cycle == -1 else next((r for r in queried if r.get("cycle") == cycle), None)
        if rec is not None:
            panels.append((f"{run.config['method']} seed {run.config.get('seed', 0)} (cycle {rec['cycle']})", rec["query"]))
    return panels


# ------------------------------------------------------------------------------------ analysis

class Analysis:
    """Every statistic of the report for one Collection (computed once, written by :func:`write`)."""

    def __init__(self, col: Collection, args, costs: dec.Costs | None = None, baseline_required: bool = False):
        self.col, self.args = col, args
        self.group_by = group_keys(args)
        self.alpha = args.alpha
        self.notes: list[str] = list(col.warnings)
        sc = col.scores
        self.metrics = [m for m in CURVE_METRICS if m in set(sc["metric"])] if col.kind == "curves" \
            else list(dict.fromkeys(sc["metric"]))
        blocks = {"auto": "auto", "settings": "settings", "seeds": "setting × seed"}[args.friedman_blocks]
        # ranks, Friedman / Nemenyi, CIs, leave-one-out, Kendall
        self.ranks = ranks_mod.mean_ranks(sc, self.metrics, group_by=self.group_by, n_boot=args.bootstrap, seed=args.seed)
        self.friedman = OrderedDict((m, sig.friedman_nemenyi(sc, m, alpha=self.alpha, blocks=blocks)) for m in self.metrics)
        ci_metrics = [m for m in ("AUBC", "Final") if m in self.metrics] if col.kind == "curves" else self.metrics
        self.ci = sig.mean_ci(sc, ci_metrics, n_boot=max(args.bootstrap, 200), seed=args.seed)
        loo_r, loo_s = [], []
        for m in self.metrics:
            for unit in ["seed", *self.group_by[:1]]:
                r, s = ranks_mod.leave_one_out(sc, m, unit)
                loo_r.append(r)
                loo_s.append(s)
        self.loo_ranks = pd.concat(loo_r, ignore_index=True) if loo_r else pd.DataFrame()
        self.loo = pd.concat(loo_s, ignore_index=True) if loo_s else pd.DataFrame()
        self.kendall = self._kendall(getattr(args, "compare", []), getattr(args, "kendall_alpha", 0.1))
        # curve-only statistics: PPM, win/lose, decision
        self.ppms, self.share, self.count = {}, pd.DataFrame(), pd.DataFrame()
        self.winlose = pd.DataFrame(columns=ppm_mod.WINLOSE_COLUMNS)
        self.baseline, self.strongest, self.decision = None, None, None
        self.costs = costs or dec.Costs()
        if col.kind == "curves":
            self.ppms = ppm_mod.setting_ppms(col.curves, alpha=self.alpha)
            self.share, self.count = ppm_mod.aggregate(self.ppms)
            self.baseline = resolve_baseline(col, getattr(args, "baseline", None), baseline_required)
            refs = []
            if "random" in col.methods:
                refs.append("random")
            self.strongest = ppm_mod.strongest_baseline(self.share) if len(self.share) else None
            if self.strongest and self.strongest not in refs:
                refs.append(self.strongest)
            if self.baseline and self.baseline not in refs:
                refs.append(self.baseline)
            if refs:
                self.winlose = pd.concat([ppm_mod.win_lose_tie(self.ppms, r) for r in refs], ignore_index=True)
            if self.baseline is not None:
                self.decision = dec.decide(col.curves, col.runs, col.fingerprint_cols, self.baseline, self.costs,
                                           alpha=self.alpha, n_boot=max(args.bootstrap, 200), seed=args.seed,
                                           ppms=self.ppms)

    def _kendall(self, compare: Sequence[str], alpha: float) -> pd.DataFrame:
        st = self.ranks[self.ranks["level"] == "setting"] if len(self.ranks) else self.ranks
        meta = self.col.scores[["setting", *self.col.setting_cols]].drop_duplicates("setting")
        wanted = []
        for c in compare:
            k, _, vals = c.partition("=")
            wanted.append((k, [v for v in vals.split(",") if v] or None))
        if not wanted:
            wanted = [(k, None) for k in self.col.setting_cols if meta[k].astype(str).nunique() > 1]
        if not wanted:
            return pd.DataFrame([[None, "-", None, None, "-", 0, np.nan, np.nan, None,
                                  "no setting column varies across the runs (pass --compare KEY=A,B with runs of both)"]],
                                columns=sig.KENDALL_COLUMNS)
        if st.empty:
            return pd.DataFrame([[None, k, None, None, "-", 0, np.nan, np.nan, None, "no ranks"] for k, _ in wanted],
                                columns=sig.KENDALL_COLUMNS)
        return pd.concat([sig.kendall_compare(st, meta, k, v, alpha=alpha) for k, v in wanted], ignore_index=True)


# ------------------------------------------------------------------------------------- outputs

def _runs_for_plots(col: Collection) -> list[dict]:
    out = []
    for (s, m, seed), g in col.curves.sort_values("cycle").groupby(["setting", "method", "seed"]):
        out.append({"setting": s, "method": m, "seed": int(seed),
                    "budgets": [int(b) if float(b).is_integer() else b for b in g["budget"]],
                    "values": g["value"].tolist()})
    return out


def _friedman_table(an: Analysis) -> pd.DataFrame:
    return pd.DataFrame([fr.row() for fr in an.friedman.values()])


def _nemenyi_long(an: Analysis) -> pd.DataFrame:
    rows = []
    for m, fr in an.friedman.items():
        if fr.nemenyi is None:
            continue
        for a in fr.methods:
            for b in fr.methods:
                if a < b:
                    p = float(fr.nemenyi.loc[a, b])
                    rows.append({"metric": m, "method_a": a, "method_b": b, "pvalue": p, "significant": p < fr.alpha})
    return pd.DataFrame(rows, columns=["metric", "method_a", "method_b", "pvalue", "significant"])


def _ppm_table(an: Analysis) -> pd.DataFrame:
    if an.share.empty:
        return pd.DataFrame()
    t = an.share.copy()
    for m in t.index:
        t.loc[m, m] = np.nan
    t.loc["mean (beaten)"] = ppm_mod.mean_row(an.share)
    t.index.name = "winner \\ loser"
    return t.reset_index()


def _csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, (df if df is not None else pd.DataFrame()).to_csv(index=False))


def write(an: Analysis, out: Path, title: str | None = None) -> list[str]:
    """Write every figure and table of ``an`` to ``out`` and the self-contained report.html."""
    col, written = an.col, []
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, bytes] = {}

    def csv(name, df):
        _csv(df, out / name)
        written.append(name)

    if col.kind == "curves":
        from core import report as core_report
        from core.metrics import PPM
        runs = _runs_for_plots(col)
        core_report.plot_curves(runs, out / "curves.png", ylabel=col.metric)
        figs["curves"] = (out / "curves.png").read_bytes()
        rows = core_report.summary_rows(runs)
        an.table_df = pd.DataFrame(rows)
        an.table_md = core_report.write_table(rows, out / "table.md", metric=col.metric)
        written += ["curves.png", "table.md", "table.csv"]
        if len(an.share) >= 2 and (an.count.to_numpy() > 0).any():
            sh = an.share.fillna(0.0)
            core_report.plot_ppm(PPM(list(sh.index), sh.to_numpy(float), 1), out / "ppm.png",
                                 title=f"PPM, mean share of budgets over {len(an.ppms)} setting(s)")
            figs["ppm"] = (out / "ppm.png").read_bytes()
            written.append("ppm.png")
        csv("ppm.csv", _ppm_table(an))
        figs["winlose"] = plots.plot_winlose(an.winlose, out / "winlose.png")
        written.append("winlose.png")
        csv("winlose.csv", an.winlose)
        fg = col.notes.get("fgeff")
        if fg:
            figs["fgeff"] = plots.plot_fgeff(col.curves, fg, out / "fgeff.png")
            written.append("fgeff.png")
            rows = []
            for s, info in fg.items():
                for m, f in info.get("fits", {}).items():
                    rows.append({"setting": s, "method": m, "fg_eff": f.gamma, "fit_variance": f.variance, "t0": f.t0,
                                 "y0": f.y0, "y_full": f.y_full, "points": f.n_points})
                if "fits" not in info:
                    rows.append({"setting": s, "reason": info.get("reason")})
            csv("fgeff.csv", pd.DataFrame(rows))
        if an.decision is not None and len(an.decision.budgets):
            figs["r"] = plots.plot_reduction(an.decision.budgets, out / "r.png")
            written.append("r.png")
    figs["ranks"] = plots.plot_ranks(an.ranks, an.friedman, out / "ranks.png")
    figs["cd"] = plots.plot_cd(an.friedman, out / "cd.png")
    written += ["ranks.png", "cd.png"]
    csv("ranks.csv", an.ranks)
    csv("friedman.csv", _friedman_table(an))
    csv("nemenyi.csv", _nemenyi_long(an))
    csv("ci.csv", an.ci)
    csv("kendall.csv", an.kendall)
    csv("loo.csv", an.loo)
    page = render_html(an, figs, title)
    atomic_write_text(out / "report.html", page)
    written.append("report.html")
    for name in OUTPUTS:  # a figure or table of an earlier report that this one could not make is stale
        if name not in written and (out / name).is_file():
            (out / name).unlink()
    return written


OUTPUTS = ("curves.png", "table.md", "table.csv", "ppm.png", "ppm.csv", "winlose.png", "winlose.csv", "fgeff.png",
           "fgeff.csv", "r.png", "ranks.png", "cd.png", "ranks.csv", "friedman.csv", "nemenyi.csv", "ci.csv",
           "kendall.csv", "loo.csv", "report.html")


# ---------------------------------------------------------------------------------------- HTML

def _verdict_class(v: str) -> str:
    return "good" if v.startswith("use AL") or v.startswith("AL reduces") else ("bad" if v.startswith("do not") else "neutral")


def render_html(an: Analysis, figs: dict, title: str | None = None) -> str:
    col = an.col
    H = html
    n_runs = len(col.runs)
    seeds = sorted(col.runs["seed"].unique()) if n_runs else []
    sub = (f"{col.domain} · metric: {col.metric} · {n_runs} run(s) · {len(col.settings)} setting(s) · "
           f"{len(col.methods)} method(s) · seeds {', '.join(map(str, seeds))} · generated "
           f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    secs = []
    na_curves = "not computable: the values testbed records no AL budget curves (one query step per seed)"
    # overview
    ov = [H.para("Settings, methods and seeds come from each run's config.json; runs pair by seed id."),
          "<h3>Key findings</h3>" + H.bullets(key_findings(an))]
    if n_runs:
        wide = col.runs["method"].nunique() > 8 and col.runs["method"].nunique() > col.runs["setting"].nunique()
        grid = col.runs.pivot_table(index="method" if wide else "setting", columns="setting" if wide else "method",
                                    values="seed", aggfunc="nunique").astype("Int64")
        if "n_cycles" in col.runs and not wide:
            cyc = col.runs.groupby("setting")["n_cycles"].agg(["min", "max"])
            grid["cycles"] = [f"{a}" if a == b else f"{a}–{b}" for a, b in zip(cyc["min"], cyc["max"])]
        what = "seeds per method (rows) and setting (columns)" if wide else "seeds per setting (rows) and method (columns)"
        tab = H.table(grid.reset_index(), what)
        ov.append(H.details(what, tab) if len(grid) > 12 else tab)
    if an.notes:
        ov.append("<h3>Warnings</h3>" + H.bullets(an.notes, "warn"))
    runs_tab = H.table(col.runs.drop(columns=[c for c in ("run",) if c in col.runs]).rename(columns={"path": "run directory"}))
    ov.append(f"<details><summary>all {n_runs} run(s)</summary>{runs_tab}</details>")
    secs.append(H.section("overview", "Overview", ov))
    # curves
    if col.kind == "curves":
        secs.append(H.section("curves", "Budget curves", [
            H.figure(figs["curves"], "budget curves", f"test {col.metric} vs labelled budget, mean ± std over seeds"),
            H.table(getattr(an, "table_df", pd.DataFrame()),
                    "AUBC and final value per setting and method (mean ± std over seeds)")]))
    else:
        secs.append(H.section("curves", "Budget curves", [H.para(na_curves, "na")]))
    # ranks
    overall = an.ranks[an.ranks["level"] != "setting"] if len(an.ranks) else an.ranks
    secs.append(H.section("ranks", "Mean ranks", [
        H.para("Rank 1 = best. Per setting: mean over bootstrap resamples of the seeds (jointly for all methods) of the "
               "rank of each method's seed mean, SE = bootstrap std; aggregated to "
               f"{'+'.join(an.group_by) or 'no'} level and overall as the mean over settings (SE = std/√n over "
               "settings). Ties share the average rank."),
        H.figure(figs["ranks"], "mean ranks", "overall mean rank ± SE per metric with Nemenyi groups"),
        H.table(overall, "aggregated mean ranks"),
        H.details("per setting", H.table(an.ranks[an.ranks["level"] == "setting"] if len(an.ranks) else an.ranks,
                                          "per setting"))]))
    # Friedman / Nemenyi
    fparts = [H.para(f"Friedman test over blocks, then Nemenyi post-hoc at α = {an.alpha} (scipy / scikit-posthocs). "
                     "Groups = methods whose pairwise differences are not significant."),
              H.figure(figs["cd"], "critical difference diagrams", "critical-difference diagrams"),
              H.table(_friedman_table(an), "Friedman tests")]
    nl = _nemenyi_long(an)
    if len(nl):
        fparts.append(H.table(nl, "Nemenyi p-values"))
    secs.append(H.section("friedman", "Friedman / Nemenyi", fparts))
    # PPM + win/lose
    if col.kind == "curves":
        pp = [H.para(f"Share of budgets at which the row method is significantly better than the column method "
                     f"(paired two-sided t-test over shared seed ids, α = {an.alpha}), mean over the settings where "
                     "both ran; bottom row = how often each method is beaten on average.")]
        if "ppm" in figs:
            pp.append(H.figure(figs["ppm"], "pairwise penalty matrix"))
        else:
            pp.append(H.para("not computable: needs ≥ 2 methods with ≥ 2 shared seeds", "na"))
        pp.append(H.table(_ppm_table(an), "PPM (share of budgets)"))
        secs.append(H.section("ppm", "Pairwise penalty matrix", pp))
        wl = [H.para("Win / lose / tie shares from the PPM against Random and against the strongest random baseline "
                     f"(least often beaten{': ' + an.strongest if an.strongest else ''})."),
              H.figure(figs["winlose"], "win lose tie"), H.table(an.winlose, "win / lose / tie")]
        secs.append(H.section("winlose", "Win / lose / tie", wl))
    else:
        secs.append(H.section("ppm", "Pairwise penalty matrix", [H.para(na_curves, "na")]))
        secs.append(H.section("winlose", "Win / lose / tie", [H.para(na_curves, "na")]))
    # CI
    secs.append(H.section("ci", "Mean ± 95 % CI", [
        H.para("Mean over settings of each setting's seed mean; 95 % percentile bootstrap CI with the seeds resampled "
               "within each setting (Table 8.1)."), H.table(an.ci, "mean ± 95 % CI")]))
    # Kendall
    secs.append(H.section("kendall", "Kendall's τ between rankings", [
        H.para("τ between the method rankings of experiments that differ in one setting key, matched on all others, "
               "and between their mean rankings; two-sided test, significant at the α shown in the CLI (default 0.1)."),
        H.table(an.kendall, "Kendall's τ")]))
    # LOO
    lo = [H.para("Leave one seed out per setting (and one value of the first --group-by key out of the overall "
                 "ranking): τ between each leave-one-out ranking and the ranking on all data.")]
    if len(an.loo):
        lo.append(H.table(an.loo, "ranking stability"))
        if len(an.loo_ranks):
            summ = an.loo_ranks.groupby(["metric", "unit", "scope", "method"])["rank"].agg(["mean", "min", "max", "count"])
            lo.append(H.details("leave-one-out ranks", H.table(summ.reset_index(),
                                "leave-one-out ranks (mean, min, max over the left-out units)")))
    secs.append(H.section("loo", "Leave-one-out stability", lo))
    # query scores (--scores)
    if getattr(an, "score_figure", None):
        name, png = an.score_figure
        secs.append(H.section("scores", "Query scores", [
            H.para("Per run, the histogram of the pool's scores in one cycle's query and the scores of the best picks "
                   "(from the query summary stored with the cycle)."), H.figure(png, name)]))
    # FG-Eff
    if "fgeff" in figs:
        secs.append(H.section("fgeff", "FG-Eff", [
            H.para("Mean Dice against the fraction of annotated foreground voxels (all seeds and cycles) with the fitted "
                   "eq. C.1; γ = FG-Eff (higher = closer to the full-data Dice per annotated foreground)."),
            H.figure(figs["fgeff"], "FG-Eff fits")]))
    # decision: second (after the overview) when priced by experiments.decide, else last
    dsec = H.section("decision", "Decision (thesis ch. 4)", _decision_parts(an, figs))
    priced = an.costs.label_cost is not None and an.costs.gpu_hour is not None and an.decision is not None
    secs.insert(1, dsec) if priced else secs.append(dsec)
    t = title or f"realistic-al report — {col.domain}"
    return H.page(t, sub, secs)


def _decision_parts(an: Analysis, figs: dict) -> list[str]:
    H = html
    if an.col.kind != "curves":
        return [H.para("not computable: the decision needs AL budget curves (the annotation reduction r is measured "
                       "along them); the values testbed has one query step per seed", "na")]
    d = an.decision
    if d is None:
        return [H.para("not computable: no baseline (Random) among the methods; pass --baseline", "na")]
    parts = [H.para(f"r = labels {d.baseline} needs to reach the method's performance minus the labels the method "
                    "used (median over the budgets after the start; bootstrap CI over seeds). Cost model eq. 4.1: "
                    "C_AL − C_baseline = −r·c_annotation + c_overhead, overhead from the runs' own train + query "
                    "timings.")]
    if len(d.verdicts):
        for v in d.verdicts.to_dict("records"):
            parts.append(f"<p class='verdict {_verdict_class(v['verdict'])}'>{H.esc(v['fingerprint'])}: "
                         f"{H.esc(v['verdict'])}</p>" + H.para(v["because"], "note"))
    if d.notes:
        parts.append(H.bullets(d.notes, "warn"))
    if d.costs.label_cost is None or d.costs.gpu_hour is None:
        parts.append(H.para("No prices given: run python -m experiments.decide … --label-cost EUR --gpu-hour EUR "
                            "for the cost verdict.", "note"))
    if "r" in figs:
        parts.append(H.figure(figs["r"], "annotation reduction", "r per budget (hollow: censored, r ≥ shown)"))
    fpt = d.fingerprints
    if len(fpt):
        first = ["fingerprint", "method", "evidence", "E_r", "r_pct", "ci_low", "ci_high", "p_greater", "p_less",
                 "ppm_lose", "ppm_win", "overhead_h", "overhead_eur", "saving_eur", "saving_eur_ci_low",
                 "saving_eur_ci_high", "n_seeds", "n_settings", "lower_bound", "reason"]
        fpt = fpt[[c for c in first if c in fpt]]
    parts.append(H.table(fpt, "per fingerprint and method (E_r in labels, r_pct in % of the budget; ppm_lose = share of "
                              "budgets significantly below the baseline)"))
    parts.append(H.details("per setting and method", H.table(d.settings, "per setting and method")))
    if len(d.budgets):
        parts.append(H.details("r per budget", H.table(d.budgets, "r per budget (flag 1 = censored: r ≥ value; "
                                                                  "−1 = level at/below the start)")))
    return parts


# ----------------------------------------------------------------------------------------- main

def output_dir(args) -> Path:
    """Where the report goes: ``--out``, else the first path, which must then be a folder."""
    if args.out is None and not Path(args.paths[0]).is_dir():
        raise UserError(f"{args.paths[0]} is not a folder; pass --out DIR for the report")
    return Path(args.out or args.paths[0])


@contextlib.contextmanager
def writing(out: Path):
    """Write the report's files under the output folder's table lock (shared with the CLIs' tables),
    after removing the temporary files of a killed writer."""
    with exclusive(out / ".table.lock", f"the tables in {out}", wait=True):
        clean_temp(out)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    col = load(args.paths, args.metric)
    validate(args, col)
    out = output_dir(args)
    panels = None
    if args.scores is not None:
        if args.scores < -1:
            raise UserError("--scores takes a cycle >= 0 or -1 (the last query)")
        panels = score_panels(args.paths, args.scores)
        if not panels:
            raise UserError(f"no run below {', '.join(args.paths)} stored a query summary for cycle {args.scores} "
                            "(runs written before query summaries were stored have none)")
    costs = dec.Costs(args.label_cost, args.gpu_hour, args.overhead, args.target_metric)
    an = Analysis(col, args, costs)
    with writing(out):
        if panels:
            from core import report as core_report
            name = f"scores_cycle{'last' if args.scores == -1 else args.scores}.png"
            core_report.plot_score_distribution(panels, out / name, title=f"query scores, cycle {args.scores}")
            an.score_figure = (name, (out / name).read_bytes())
        files = write(an, out)
        if panels:
            files.insert(0, an.score_figure[0])
    print(summary_text(an))
    print(f"wrote {', '.join(files)} to {out}")
    return 0


def key_findings(an: Analysis) -> list[str]:
    """Plain sentences: best method per metric, the Friedman results, the verdicts."""
    out = []
    ov = an.ranks[an.ranks["level"] == "overall"] if len(an.ranks) else an.ranks
    for m in an.metrics:
        g = ov[ov["metric"] == m].sort_values("mean_rank")
        fr = an.friedman.get(m)
        if g.empty:
            continue
        best = g.iloc[0]
        se = f" ± {best['se']:.2f}" if np.isfinite(best["se"]) else ""
        text = (f"{m}: best mean rank {best['method']} ({best['mean_rank']:.2f}{se} over {int(best['n_settings'])} "
                f"setting(s)); ")
        if fr is None or fr.reason:
            text += f"Friedman not computable ({fr.reason if fr else 'no data'})"
        else:
            text += f"Friedman p = {fr.pvalue:.3g} over {fr.n_blocks} blocks ({fr.blocks})"
            if fr.nemenyi is not None:
                top = next((g for g in fr.groups if best["method"] in g), [best["method"]])
                more = f" (+{len(top) - 6} more)" if len(top) > 6 else ""
                text += (f"; Nemenyi: {best['method']} is not significantly different from "
                         + (", ".join(m for m in top[:6] if m != best["method"]) + more if len(top) > 1 else "none")
                         + f" ({len(fr.groups)} group(s))")
        out.append(text)
    if len(an.winlose):
        for r in an.winlose[an.winlose["wins"].notna()].to_dict("records"):
            out.append(f"{r['method']} vs {r['reference']}: wins {100 * r['wins']:.0f} %, loses {100 * r['losses']:.0f} %, "
                       f"ties {100 * r['ties']:.0f} % of budgets")
    if an.decision is not None:
        for v in an.decision.verdicts.to_dict("records"):
            out.append(f"decision {v['fingerprint']}: {v['verdict']}")
    return out or ["no statistic computable from these runs"]


def summary_text(an: Analysis) -> str:
    """A few lines for the terminal: table (curves), overall ranks, Friedman, verdicts."""
    lines = []
    if getattr(an, "table_md", None):
        lines.append(an.table_md.rstrip())
    ov = an.ranks[an.ranks["level"] == "overall"] if len(an.ranks) else an.ranks
    for m in an.metrics:
        g = ov[ov["metric"] == m].sort_values("mean_rank")
        if len(g):
            shown = ", ".join(f"{r.method} {r.mean_rank:.2f}" for r in g.head(6).itertuples())
            lines.append(f"mean rank {m}: {shown}" + (f", … ({len(g)} methods)" if len(g) > 6 else ""))
        fr = an.friedman.get(m)
        if fr is not None:
            lines.append(f"  Friedman {m}: " + (f"not computable ({fr.reason})" if fr.reason else
                                                f"chi2 = {fr.statistic:.3g}, p = {fr.pvalue:.3g} ({fr.n_blocks} blocks: {fr.blocks})"))
    if an.decision is not None:
        for v in an.decision.verdicts.to_dict("records"):
            lines.append(f"decision {v['fingerprint']}: {v['verdict']} — {v['because']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main_guard(main)
