"""Budget curves, AUBC tables and PPM heat maps from a set of runs (domain-free).

``runs`` everywhere is a list of dicts ``{"method": str, "seed": int, "setting": str,
"budgets": [...], "values": [...]}`` — one budget curve of one metric per run.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from .metrics import PPM, aubc, pairwise_penalty_matrix
from .store import atomic_path, atomic_write_text


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (every plot of the framework)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path, dpi: int = 130, tight: bool = True) -> None:
    """Save ``fig`` atomically (the format follows the suffix) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)


def group_curves(runs: Sequence[dict], notes: list | None = None) -> dict[str, dict[str, np.ndarray]]:
    """setting → method → array[seeds, budgets], rows paired *by seed id*: every method of a setting
    keeps the seeds all its methods ran (sorted), so row k is the same seed for every method
    (curves cut to the shortest common length).  When methods ran different seeds (``--seed-offset``,
    a partial run) the others are left out and a line saying so is appended to ``notes``."""
    acc: dict = defaultdict(lambda: defaultdict(dict))
    for r in runs:
        per = acc[r["setting"]][r["method"]]
        seed = int(r["seed"])
        if seed in per:
            if notes is not None:
                notes.append(f"{r['setting']}: {r['method']} has seed {seed} twice; the first run is used")
            continue
        per[seed] = np.asarray(r["values"], float)
    out: dict = {}
    for s, per in sorted(acc.items()):
        common = sorted(set.intersection(*(set(c) for c in per.values())))
        if notes is not None and any(set(c) != set(common) for c in per.values()):
            ran = "; ".join(f"{m}: {_seeds_text(sorted(c))}" for m, c in sorted(per.items()))
            notes.append(f"{s}: methods ran different seeds ({ran}); pairs use the {len(common)} common seed(s)"
                         + (f" {_seeds_text(common)}" if common else ""))
        out[s] = {}
        for m, curves in per.items():
            rows = [curves[k] for k in common]
            n = min((len(c) for c in rows), default=0)
            out[s][m] = np.stack([c[:n] for c in rows]) if rows else np.zeros((0, 0))
    return out


def _seeds_text(seeds: list) -> str:
    return ",".join(str(k) for k in seeds) if len(seeds) <= 6 else f"{seeds[0]}..{seeds[-1]} ({len(seeds)})"


def summary_rows(runs: Sequence[dict]) -> list[dict]:
    """One row per (setting, method): AUBC and final value, mean ± std (ddof=1) over seeds."""
    rows = []
    by = defaultdict(list)
    for r in runs:
        by[(r["setting"], r["method"])].append(r)
    for (s, m), rs in sorted(by.items()):
        a = np.array([aubc(r["values"]) for r in rs])
        f = np.array([r["values"][-1] for r in rs])
        sd = (lambda x: float(x.std(ddof=1)) if len(x) > 1 else float("nan"))
        rows.append({"setting": s, "method": m, "seeds": len(rs),
                     "final_budget": rs[0]["budgets"][len(rs[0]["values"]) - 1],
                     "aubc_mean": float(a.mean()), "aubc_std": sd(a),
                     "final_mean": float(f.mean()), "final_std": sd(f)})
    return rows


def write_table(rows: Sequence[dict], path_md: Path, metric: str = "metric") -> str:
    """Markdown table (and a CSV beside it); returns the Markdown."""
    fmt = (lambda m, s: f"{m:.4f}" if np.isnan(s) else f"{m:.4f} ± {s:.4f}")
    lines = [f"| setting | method | seeds | final budget | AUBC ({metric}) | final {metric} |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['method']} | {r['seeds']} | {r['final_budget']} | "
                     f"{fmt(r['aubc_mean'], r['aubc_std'])} | {fmt(r['final_mean'], r['final_std'])} |")
    md = "\n".join(lines) + "\n"
    atomic_write_text(path_md, md)
    keys = list(rows[0].keys()) if rows else []
    csv = ",".join(keys) + "\n" + "".join(",".join(str(r[k]) for k in keys) + "\n" for r in rows)
    atomic_write_text(Path(path_md).with_suffix(".csv"), csv)
    return md


def plot_curves(runs: Sequence[dict], path: Path, ylabel: str, xlabel: str = "labelled budget",
                title: str | None = None) -> None:
    """Budget curves: mean ± std over seeds, one panel per setting."""
    plt = pyplot()
    settings = sorted({r["setting"] for r in runs})
    ncol = min(4, len(settings))  # rows of at most 4 panels
    nrow = -(-len(settings) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 4 * nrow), squeeze=False)
    for ax in axes.flat[len(settings):]:
        ax.set_axis_off()
    for ax, s in zip(axes.flat, settings):
        by = defaultdict(list)
        for r in runs:
            if r["setting"] == s:
                by[r["method"]].append(r)
        for m, rs in sorted(by.items()):
            n = min(len(r["values"]) for r in rs)
            y = np.stack([np.asarray(r["values"][:n], float) for r in rs])
            x = np.asarray(rs[0]["budgets"][:n], float)
            mu = y.mean(0)
            line, = ax.plot(x, mu, marker="o", ms=3, label=f"{m} (n={len(rs)})")
            if len(rs) > 1:
                sd = y.std(0, ddof=1)
                ax.fill_between(x, mu - sd, mu + sd, color=line.get_color(), alpha=0.2)
        ax.set_title(title or s)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_ppm(ppm: PPM, path: Path, title: str = "Pairwise penalty matrix") -> None:
    """Heat map: row i, column j = share of budgets where i significantly beats j (summed over
    settings, max = number of settings); bottom row = mean over the other methods of each column."""
    plt = pyplot()
    k = len(ppm.methods)
    data = np.vstack([ppm.wins, ppm.mean_row[None]])
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.5, 1.0 * (k + 1) + 1.5))
    im = ax.imshow(data, cmap="Reds", vmin=0, vmax=max(ppm.max_value, 1e-9))
    for i in range(k + 1):
        for j in range(k):
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(k), ppm.methods, rotation=45, ha="right")
    ax.set_yticks(range(k + 1), ppm.methods + ["mean"])
    ax.set_xlabel("j (loser)")
    ax.set_ylabel("i (winner)")
    ax.axhline(k - 0.5, color="black", lw=1)
    ax.set_title(f"{title} (max = {ppm.max_value})")
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_figure(fig, path)


def ppm_from_runs(runs: Sequence[dict]) -> PPM:
    """The PPM of a set of runs, methods paired by seed id (see ``group_curves``); ``ppm.notes`` says
    when methods ran different seeds."""
    notes: list = []
    ppm = pairwise_penalty_matrix(group_curves(runs, notes))
    ppm.notes = notes
    return ppm


def plot_score_distribution(panels: Sequence[tuple[str, dict]], path: Path, title: str | None = None) -> None:
    """Why these candidates were picked: per run (one panel each), the histogram of the pool's
    scores in one cycle's query and the scores of the best picks (red ticks) — from the bounded
    query summaries stored with the cycle records (``QueryResult.summary``)."""
    plt = pyplot()
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False, layout="constrained")
    for ax, (label, q) in zip(axes.ravel(), panels):
        detail = q.get("detail", {})
        score = detail.get("score")
        pool, picked = q.get("pool"), q.get("picked", {})
        if score is None and not pool:   # random placement: nothing was scored
            ax.text(0.5, 0.5, f"{detail.get('rule', '?')}: no score", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if pool:
            edges, counts = np.asarray(pool["hist"]["edges"], float), np.asarray(pool["hist"]["counts"], float)
            ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="0.7", label=f"pool ({pool['n']})")
        top = [v for v in picked.get("scores", []) if v is not None]
        if top:
            ymax = ax.get_ylim()[1] if pool else 1.0
            ax.vlines(top, 0, ymax * 0.25, color="tab:red", lw=1, label=f"picked (best {len(top)} of {q.get('n')})")
        extra = f", β = {detail['beta']:.3g}" if isinstance(detail.get("beta"), (int, float)) else ""
        ax.set_title(f"{label}: {detail.get('rule', '?')}{extra}", fontsize=9)
        ax.set_xlabel(score or "score")
        ax.set_ylabel("candidates")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
