"""Summary tables in the shape of thesis Table B.4 (+ the downstream tasks), the closing note on
whether the thesis' separation findings reproduce, and the plots (uncertainty-map panels,
risk–coverage curves)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core import metrics as cm
from core.report import pyplot, save_figure

from .measures import UTYPE

MODEL_NAMES = {"softmax": "Determ.", "ttd": "TTD", "ensemble": "Ensemble", "tta": "TTA", "ssn": "SSN"}
ORDER = {m: i for i, m in enumerate(MODEL_NAMES)}
M_ORDER = {"msr": 0, "pe": 1, "ee": 2, "mi": 3, "-": 4, "random": 5}
A_ORDER = {"patch": 0, "threshold": 1, "image": 2, "-": 3}


def example_cases(data) -> tuple[int | None, int | None]:
    """Index of the first ambiguous i.i.d. test case and of the first shifted test case (a shape
    shift if there is one) — the cases shown in the uncertainty-map panels."""
    ti, to = data.splits["test_iid"], data.splits["test_ood"]
    ci = (int(np.flatnonzero(ti.ambiguous)[0]) if ti.ambiguous.any() else 0) if len(ti) else None
    co = None
    if len(to):
        sh = np.flatnonzero(to.shift == "shape")
        co = int(sh[0]) if len(sh) else 0
    return ci, co


# ------------------------------------------------------------------------------------ tables
def _cell(vals: np.ndarray, scale: float = 1.0, nd: int = 2) -> str:
    v = np.asarray(vals, float) * scale
    v = v[~np.isnan(v)]
    if not len(v):
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{nd}f}"
    return f"{v.mean():.{nd}f} ± {v.std(ddof=1):.{nd}f}"


def _sort_keys(df: pd.DataFrame, keys) -> pd.DataFrame:
    order = {"model": ORDER, "measure": M_ORDER, "aggregation": A_ORDER}
    return df.sort_values(list(keys), key=lambda c: c.map(order[c.name]) if c.name in order else c)


def _table(df: pd.DataFrame, keys: list[str], columns: list[tuple[str, dict]], scale=1.0, nd=2) -> str:
    """Markdown table: one row per distinct ``keys`` combination, one column per (title, filter)."""
    if df.empty:
        return "_no results_\n"
    index = _sort_keys(df[keys].drop_duplicates(), keys)
    lines = ["| " + " | ".join([{"model": "PM", "measure": "UM", "utype": "UT", "aggregation": "AGG"}[k] for k in keys]
                                + [c for c, _ in columns]) + " |",
             "|" + "---|" * (len(keys) + len(columns))]
    any_row = False
    for _, key in index.iterrows():
        sub = df
        for k in keys:
            sub = sub[sub[k] == key[k]]
        cells = []
        for _, flt in columns:
            s = sub
            for k, v in flt.items():
                s = s[s[k] == v]
            cells.append(_cell(s["value"].to_numpy(), scale, nd))
        if all(c == "–" for c in cells):
            continue
        any_row = True
        names = [MODEL_NAMES.get(key[k], key[k]) if k == "model" else str(key[k]).upper() if k == "measure" else str(key[k])
                 for k in keys]
        lines.append("| " + " | ".join(names + cells) + " |")
    return "\n".join(lines) + "\n" if any_row else "_no results_\n"


def _means(df: pd.DataFrame) -> pd.Series:
    return df.groupby(["model", "measure", "aggregation", "task", "metric", "split"])["value"].mean()


def separation_checks(df: pd.DataFrame) -> list[dict]:
    """The thesis' separation findings as checks on the seed means: (1) for TTD / Ensemble / TTA
    the EU measure MI separates i.i.d. from shifted cases better than the AU measure EE and above
    chance; (2) their EE correlates better with the rater variance than MI; (3) SSN flips: its MI
    (AU) has the higher NCC and its EE (EU) the higher AUROC."""
    mean = _means(df)

    def g(model, measure, agg, task, metric, split):
        return mean.get((model, measure, agg, task, metric, split), np.nan)

    out = []
    aggs = [a for a in ("patch", "threshold", "image") if (df.aggregation == a).any()]
    for model in ("ttd", "ensemble", "tta"):
        if not (df.model == model).any():
            continue
        for a in aggs:
            mi, ee = g(model, "mi", a, "separation", "auroc", "test"), g(model, "ee", a, "separation", "auroc", "test")
            if not np.isnan(mi) and not np.isnan(ee):
                out.append({"check": "MI tracks epistemic shift", "model": model, "detail": f"AUROC {a}: MI {mi:.2f} vs EE {ee:.2f}",
                            "ok": bool(mi > ee and mi > 0.5)})
        mi, ee = g(model, "mi", "-", "separation", "ncc", "test_iid"), g(model, "ee", "-", "separation", "ncc", "test_iid")
        if not np.isnan(mi) and not np.isnan(ee):
            out.append({"check": "EE tracks rater variance", "model": model, "detail": f"NCC: EE {ee:.2f} vs MI {mi:.2f}",
                        "ok": bool(ee > mi)})
    if (df.model == "ssn").any():
        mi, ee = g("ssn", "mi", "-", "separation", "ncc", "test_iid"), g("ssn", "ee", "-", "separation", "ncc", "test_iid")
        if not np.isnan(mi) and not np.isnan(ee):
            out.append({"check": "SSN flips (MI = AU)", "model": "ssn", "detail": f"NCC: MI {mi:.2f} vs EE {ee:.2f}", "ok": bool(mi > ee)})
        for a in aggs:
            mi, ee = g("ssn", "mi", a, "separation", "auroc", "test"), g("ssn", "ee", a, "separation", "auroc", "test")
            if not np.isnan(mi) and not np.isnan(ee):
                out.append({"check": "SSN flips (EE = EU)", "model": "ssn", "detail": f"AUROC {a}: EE {ee:.2f} vs MI {mi:.2f}",
                            "ok": bool(ee > mi)})
    return out


def _verdict(checks: list[dict], name: str) -> str:
    c = [x for x in checks if x["check"].startswith(name)]
    if not c:
        return "not evaluated"
    k = sum(x["ok"] for x in c)
    return "reproduces" if k == len(c) else ("does not reproduce" if k == 0 else f"partly reproduces ({k}/{len(c)})")


def _skip_text(runner, task: str, part_prefix: str = "") -> str | None:
    """'_skipped: reason; to run it: fix_' for a skipped task (or half-task), else None."""
    plan = getattr(runner, "plan", None)
    for sk in (plan.skipped if plan else []):
        if sk.task == task and (not part_prefix or not sk.part or sk.part.startswith(part_prefix)):
            return f"_skipped: {sk.reason}; to run it: {sk.fix}_\n"
    return None


def _ci_table(ci: pd.DataFrame) -> str:
    if ci is None or ci.empty:
        return "_no intervals_\n"
    lines = ["| PM | UM | AGG | task | metric | split | n | value | 95 % CI |", "|" + "---|" * 9]
    ci = _sort_keys(ci, ["task", "metric", "split", "model", "measure", "aggregation"])
    for _, r in ci.iterrows():
        lines.append(f"| {MODEL_NAMES.get(r.model, r.model)} | {str(r.measure).upper()} | {r.aggregation} | {r.task} | "
                     f"{r.metric} | {r.split} | {int(r.n)} | {r.value:.2f} | [{r.ci_low:.2f}, {r.ci_high:.2f}] |")
    return "\n".join(lines) + "\n"


def summary_markdown(df: pd.DataFrame, runner, wall_s: float, ci: pd.DataFrame | None = None) -> tuple[str, list[dict]]:
    toy = runner._toy
    seeds = sorted(df.seed.unique().tolist()) if len(df) else []
    sep = df[df.task == "separation"]
    am = df[df.task == "am"]
    plan = getattr(runner, "plan", None)
    data = runner.data
    out = [f"# ValUES testbed — {data.name} ({runner.spec.preset} preset)\n",
           f"Seeds {seeds}; models {', '.join(runner.spec.models)}; this invocation took {wall_s / 60:.1f} min.  "
           f"Cells: mean ± std over seeds.  UT = uncertainty type (PU predictive, AU aleatoric, EU epistemic; "
           f"for the SSN MI is AU and EE is EU).\n",
           f"Data: {data.summary()}\n",
           f"Shift measured by the OoD columns: **{getattr(data, 'shift', 'none')}** (results.csv column `shift`).\n"]
    for note in getattr(data, "notes", []):
        out.append(f"- {note}")
    if getattr(data, "notes", []):
        out.append("")
    if plan is not None:
        out.append("## Tasks\n")
        out.append(f"Ran: {', '.join(plan.tasks)}; aggregations: {', '.join(plan.aggregations)}.\n")
        if plan.skipped:
            out.append("Skipped (decided from the data before any job ran):\n")
            for sk in plan.skipped:
                out.append(f"- {sk.line()}")
            out.append("")
        if plan.warnings:
            for w in plan.warnings:
                out.append(f"> ⚠ {w}")
            out.append("")
    out.append("## Table B.4a — NCC with the inter-rater variance (separation Q1/Q2)\n")
    ncc = pd.concat([sep[sep.metric == "ncc"], am[(am.metric == "ncc") & (am.split == "test_ood")]])
    skip = _skip_text(runner, "separation", "NCC") or _skip_text(runner, "am") if ncc.empty else None
    out.append(skip or _table(ncc, ["model", "measure", "utype"],
                              [("i.i.d. (ambiguous cases)", {"task": "separation", "split": "test_iid"}),
                               ("OoD", {"task": "am", "split": "test_ood"})]))
    out.append("\n## Table B.4b — AUROC i.i.d. vs shifted test cases (separation Q3/Q4)\n")
    scenario = getattr(runner.spec, "scenario", "mixed")
    if toy and scenario != "mixed":
        cols = [(f"Toy {scenario}", {"metric": "auroc"}),
                (f"Toy {scenario}, unblurred i.i.d. only", {"metric": "auroc_noamb"})]
    elif toy:
        cols = [("Toy 3a (i.i.d. w/o AU)", {"metric": "auroc_noamb"}), ("Toy 3b (i.i.d. with AU)", {"metric": "auroc"})]
    else:
        cols = [(f"test ({getattr(data, 'shift', 'none')} shift)", {"metric": "auroc"}),
                ("test, unambiguous i.i.d.", {"metric": "auroc_noamb"})]
    b4b = sep[sep.metric != "ncc"]
    out.append((_skip_text(runner, "separation", "AUROC") if b4b.empty else None)
               or _table(b4b, ["model", "measure", "utype", "aggregation"], cols))
    if ci is not None:
        out.append("\n## Small sample — 95 % bootstrap confidence intervals\n")
        shown = ci
        agg = next((a for a in ("patch", "image", "threshold") if (ci.aggregation == a).any()), None)
        if agg is not None:
            shown = ci[ci.aggregation.isin([agg, "-"])]
        out.append("Cases resampled (i.i.d. and shifted separately), the seed mean recomputed on every resample "
                   "(`uncertainty.confidence`).  Differences smaller than these intervals are noise.  "
                   + (f"Shown: the {agg} aggregation; every aggregation is in ci.csv.\n" if agg else "\n"))
        out.append(_ci_table(shown))

    out.append("\n## Downstream tasks (×100)\n\nPer model:\n")
    out.append(_table(df[df.task.isin(["seg", "am"]) & (df.measure == "-")], ["model"],
                      [("Dice i.i.d. ↑", {"task": "seg", "metric": "dice", "split": "test_iid"}),
                       ("Dice OoD ↑", {"task": "seg", "metric": "dice", "split": "test_ood"}),
                       ("GED i.i.d. ↓", {"task": "am", "metric": "ged", "split": "test_iid"}),
                       ("GED OoD ↓", {"task": "am", "metric": "ged", "split": "test_ood"})], scale=100))
    out.append("\nPixel level (per model × measure):\n")
    out.append(_table(df[df.task.isin(["calib", "am"]) & (df.measure != "-")], ["model", "measure", "utype"],
                      [("ACE i.i.d. ↓", {"task": "calib", "split": "test_iid"}), ("ACE OoD ↓", {"task": "calib", "split": "test_ood"}),
                       ("NCC i.i.d. ↑", {"task": "am", "metric": "ncc", "split": "test_iid"}),
                       ("NCC OoD ↑", {"task": "am", "metric": "ncc", "split": "test_ood"})], scale=100))
    out.append("\nImage level (per model × measure × aggregation):\n")
    img = df[df.task.isin(["ood", "fd", "al"]) & (df.aggregation != "-")]
    out.append(_table(img, ["model", "measure", "utype", "aggregation"],
                      [("OoD-D AUROC ↑", {"task": "ood"}),
                       ("AURC i.i.d. ↓", {"metric": "aurc", "split": "test_iid"}), ("AURC OoD ↓", {"metric": "aurc", "split": "test_ood"}),
                       ("E-AURC i.i.d. ↓", {"metric": "eaurc", "split": "test_iid"}), ("E-AURC OoD ↓", {"metric": "eaurc", "split": "test_ood"}),
                       ("AL vs random ↑", {"task": "al", "metric": "improvement"}),
                       ("AL OoD share", {"task": "al", "metric": "ood_share"})], scale=100))
    if data.n_classes > 2:
        per = df[(df.task == "seg") & df.metric.str.startswith("dice:")]
        if len(per):
            out.append("\nDice per class (×100, over the test images where the class occurs; the Dice above is the "
                       "mean over the classes present):\n")
            models = [m for m in MODEL_NAMES if (per.model == m).any()]
            splits = [sp for sp in ("test_iid", "test_ood") if (per.split == sp).any()]
            head = [f"{MODEL_NAMES[m]} {'i.i.d.' if sp == 'test_iid' else 'OoD'}" for m in models for sp in splits]
            lines = ["| class | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
            for name in data.class_names:
                sub = per[per.metric == f"dice:{name}"]
                if sub.empty:
                    continue
                cells = [_cell(sub[(sub.model == m) & (sub.split == sp)]["value"].to_numpy(), 100)
                         for m in models for sp in splits]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            out.append("\n".join(lines) + "\n")
    rnd = df[(df.task == "al") & (df.measure == "random")]
    if len(rnd):
        where = "shifted test set" if getattr(runner, "al_split", "test_ood") == "test_ood" else \
            "i.i.d. test set (the data has no shift)"
        out.append(f"\nAL random baseline: Dice on the {where} after the query "
                   f"{_cell(rnd[rnd.metric == 'dice_after'].drop_duplicates(['seed'])['value'].to_numpy(), 100)} "
                   f"(learner: {runner.al_learner}).\n")

    checks = separation_checks(df)
    out.append("\n## Closing note — do the thesis' separation findings reproduce?\n")
    if not checks:
        sk = _skip_text(runner, "separation")
        out.append(f"No separation results — {sk.strip().strip('_')}\n" if sk else
                   "No separation results (the separation task or the needed measures were not run).\n")
    else:
        for name, claim in (("MI tracks epistemic shift", "ensemble / TTD / TTA: MI (EU) separates shifted from i.i.d. cases better than EE (AU), above chance"),
                            ("EE tracks rater variance", "ensemble / TTD / TTA: EE (AU) correlates better with the rater variance than MI (EU)"),
                            ("SSN flips", "SSN: MI is the AU measure (higher NCC) and EE the EU measure (higher AUROC)")):
            out.append(f"- **{claim}** — {_verdict(checks, name)}:")
            for c in checks:
                if c["check"].startswith(name):
                    out.append(f"  - {MODEL_NAMES[c['model']]}: {c['detail']} {'✓' if c['ok'] else '✗'}")
        out.append("")
    return "\n".join(out) + "\n", checks


# ------------------------------------------------------------------------------------ plots
def _slice(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    while a.ndim > 2:
        a = a[a.shape[0] // 2]
    return a


def plots(runner, arrays: dict) -> list[Path]:
    plt = pyplot()
    paths = []
    seed = runner.spec.seeds[0]
    models = [m for m in runner.spec.models if (seed, m) in arrays]
    ci, co = example_cases(runner.data)
    for tag, split, idx in (("iid", "test_iid", ci), ("ood", "test_ood", co)):
        if idx is None or not models:
            continue
        s = runner.data.splits[split]
        ncol = 2 + max(len(UTYPE[m]) for m in models)
        fig, axes = plt.subplots(len(models), ncol, figsize=(2.1 * ncol, 2.1 * len(models)), squeeze=False)
        for r, m in enumerate(models):
            arr = arrays[(seed, m)]
            ax = axes[r]
            ax[0].imshow(_slice(s.images[idx, 0]), cmap="gray")
            ax[0].contour(_slice(arr[f"seg/{tag}"]), levels=[0.5], colors="r", linewidths=0.8)
            ax[0].set_title("image + prediction" if r == 0 else "", fontsize=8)
            ax[0].set_ylabel(MODEL_NAMES[m], fontsize=9)
            ax[1].imshow(_slice(s.reference_variance()[idx]), cmap="viridis", vmin=0, vmax=0.25)
            ax[1].set_title("rater variance" if r == 0 else "", fontsize=8)
            for j, (meas, ut) in enumerate(UTYPE[m].items()):
                key = f"map/{tag}/{meas}"
                if key in arr:
                    ax[2 + j].imshow(_slice(arr[key]), cmap="magma", vmin=0, vmax=0.5 if meas == "msr" else 0.7)
                ax[2 + j].set_title(f"{meas.upper()} ({ut})", fontsize=8)
            for a in ax:
                a.set_xticks([])
                a.set_yticks([])
            for a in ax[2 + len(UTYPE[m]):]:
                a.axis("off")
        fig.suptitle(f"uncertainty maps, {'ambiguous i.i.d.' if tag == 'iid' else 'shifted (' + str(s.shift[idx]) + ')'} "
                     f"test case {s.ids[idx]}, seed {seed}", fontsize=9)
        p = runner.dir / f"maps_{tag}.png"
        save_figure(fig, p, dpi=110)
        paths.append(p)
    agg = next((a for a in ("patch", "threshold", "image") if a in runner.spec.aggregations), None)
    if agg and models:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, sp in zip(axes, ("test_iid", "test_ood")):
            for m in models:
                arr = arrays[(seed, m)]
                meas = "msr" if m == "softmax" else "pe"
                key = f"score/{sp}/{meas}/{agg}"
                if key not in arr or not len(arr[f"risk/{sp}"]):
                    continue
                risk = arr[f"risk/{sp}"]
                cov, r = cm.rc_curve(risk, -arr[key])
                ax.plot(cov, r, label=f"{MODEL_NAMES[m]} {meas.upper()} (AURC {cm.aurc(risk, -arr[key]):.3f})")
            ax.set_xlabel("coverage")
            ax.set_ylabel("selective risk (1 − Dice)")
            ax.set_title(f"{sp.replace('_', ' ')}, {agg} aggregation, seed {seed}", fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        p = runner.dir / "risk_coverage.png"
        save_figure(fig, p, dpi=110)
        paths.append(p)
    return paths
