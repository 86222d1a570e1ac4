"""Figures of the analysis: ranks.png (mean rank ± SE with Nemenyi brackets, Fig. 8.2), cd.png
(critical-difference diagrams via ``scikit_posthocs``), winlose.png (Fig. 7.3 / 8.4), fgeff.png
(Dice vs annotated foreground with the fitted eq. C.1), r.png (annotation reduction per budget).

Every function writes its PNG (``core.report.save_figure``, atomic) and returns the bytes for the
self-contained report.  A panel whose statistic could not be computed shows the reason instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..report import pyplot, save_figure


def _plt():
    return pyplot()


def finish(fig, path: Path, dpi: int = 110) -> bytes:
    """Save ``fig`` to ``path`` (atomically, closed afterwards) and return the PNG bytes for the report."""
    save_figure(fig, Path(path), dpi=dpi)
    return Path(path).read_bytes()


def _grid(plt, n: int, w: float, h: float, ncol_max: int = 4):
    """Figure with ``n`` panels in rows of at most ``ncol_max`` (unused panels hidden)."""
    ncol = max(1, min(ncol_max, n))
    nrow = int(np.ceil(max(n, 1) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(w * ncol, h * nrow), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, list(axes.flat)


def _reason_panel(ax, title: str, text: str) -> None:
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, "not computable:\n" + _wrap(text), ha="center", va="center", fontsize=9, color="0.3",
            transform=ax.transAxes)


def _wrap(text: str, width: int = 48) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width))


def plot_ranks(ranks: pd.DataFrame, friedman: Mapping, path: Path, level: str = "overall") -> bytes:
    """One panel per metric: mean rank ± SE per method at ``level`` (lower = better), with the
    Nemenyi groups (methods not significantly different) as brackets on the right."""
    plt = _plt()
    metrics = list(dict.fromkeys(ranks["metric"])) or ["-"]
    ncol = min(3, len(metrics))
    nrow = int(np.ceil(len(metrics) / ncol))
    k = max(1, ranks["method"].nunique())
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, (0.42 * k + 1.6) * nrow), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_axis_off()
    for ax, metric in zip(axes.flat, metrics):
        g = ranks[(ranks["metric"] == metric) & (ranks["level"] == level)].sort_values("mean_rank")
        if g.empty:
            _reason_panel(ax, metric, "no ranks")
            continue
        y = np.arange(len(g))[::-1]
        se = g["se"].to_numpy(float)
        ax.errorbar(g["mean_rank"], y, xerr=np.where(np.isfinite(se), se, 0.0), fmt="o", color="C0", capsize=3)
        ax.set_yticks(y, g["method"])
        ax.set_xlabel("mean rank (1 = best)")
        lo = 1.0
        hi = max(float(g["mean_rank"].max() + np.nan_to_num(se, nan=0.0).max()), len(g))
        ax.set_xlim(lo - 0.3, hi + 0.9)
        ax.grid(axis="x", alpha=0.3)
        fr = friedman.get(metric)
        sub = f"{int(g['n_settings'].max())} setting(s)"
        if fr is not None:
            if fr.reason:
                sub += "; Friedman n/a"
            else:
                sub += f"; Friedman p = {fr.pvalue:.3g}"
                pos = {m: yy for m, yy in zip(g["method"], y)}
                groups = [grp for grp in fr.groups if len(grp) > 1 and all(m in pos for m in grp)]
                for j, grp in enumerate(groups):
                    ys = [pos[m] for m in grp]
                    x = hi + 0.25 + 0.18 * j
                    ax.plot([x, x], [min(ys) - 0.2, max(ys) + 0.2], color="k", lw=2)
        ax.set_title(f"{metric}\n({sub})", fontsize=10)
    fig.suptitle("Mean rank ± SE; brackets: Nemenyi groups (α = 0.05, not significantly different)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_size_inches()[1]))
    return finish(fig, path)


def plot_cd(friedman: Mapping, path: Path) -> bytes:
    """Critical-difference diagrams (``scikit_posthocs.critical_difference_diagram``), one per metric."""
    import scikit_posthocs as sp
    plt = _plt()
    items = list(friedman.items()) or [("-", None)]
    fig, axes = plt.subplots(len(items), 1, figsize=(8, 2.6 * len(items)), squeeze=False)
    for ax, (metric, fr) in zip(axes[:, 0], items):
        if fr is None or fr.reason:
            _reason_panel(ax, str(metric), fr.reason if fr is not None else "no data")
            continue
        if fr.nemenyi is not None:
            sig = fr.nemenyi
        else:  # Friedman did not reject: no pair differs
            sig = pd.DataFrame(1.0, index=fr.methods, columns=fr.methods)
        sp.critical_difference_diagram(fr.mean_ranks, sig, ax=ax, alpha=fr.alpha,
                                       cd=fr.cd if np.isfinite(fr.cd) else None)
        ax.set_title(f"{metric}: {fr.n_blocks} blocks ({fr.blocks}), Friedman p = {fr.pvalue:.3g}, "
                     f"CD = {fr.cd:.2f}", fontsize=10, pad=36)
    fig.tight_layout()
    return finish(fig, path)


def plot_winlose(table: pd.DataFrame, path: Path) -> bytes:
    """Stacked bars of win / tie / lose shares of every method against each reference."""
    plt = _plt()
    refs = list(dict.fromkeys(table["reference"])) if len(table) else []
    fig, axes = plt.subplots(1, max(1, len(refs)), figsize=(5.2 * max(1, len(refs)),
                                                           0.45 * max(2, table["method"].nunique() if len(table) else 2) + 1.5),
                             squeeze=False)
    if not refs:
        _reason_panel(axes[0, 0], "win / lose / tie", "no reference method (Random) among the runs")
    for ax, ref in zip(axes[0], refs):
        g = table[(table["reference"] == ref) & table["wins"].notna()].sort_values("wins")
        if g.empty:
            _reason_panel(ax, f"vs {ref}", "; ".join(sorted(set(table.loc[table['reference'] == ref, 'reason']))))
            continue
        y = np.arange(len(g))
        w, t, l = (g[c].to_numpy(float) for c in ("wins", "ties", "losses"))
        ax.barh(y, w, color="#2e7d32", label="win")
        ax.barh(y, t, left=w, color="#bdbdbd", label="tie")
        ax.barh(y, l, left=w + t, color="#c62828", label="lose")
        for yy, a, c in zip(y, w, l):
            ax.text(0.01, yy, f"{100 * a:.0f}%", va="center", fontsize=8, color="white")
            ax.text(0.99, yy, f"{100 * c:.0f}%", va="center", ha="right", fontsize=8, color="white")
        ax.set_yticks(y, g["method"])
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of budgets (PPM, paired t-test, α = 0.05)")
        ax.set_title(f"vs {ref} ({int(g['n_settings'].max())} setting(s))", fontsize=10)
        ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.08), ncol=3, frameon=False)
    fig.tight_layout()
    return finish(fig, path)


def plot_fgeff(curves: pd.DataFrame, fits: Mapping, path: Path) -> bytes:
    """Per setting: mean Dice vs annotated foreground fraction (every seed and cycle) with the
    fitted eq. C.1 curve of each method and the full-data reference."""
    from ..metrics import fg_eff_curve
    plt = _plt()
    settings = sorted(fits) or ["-"]
    fig, axes = _grid(plt, len(settings), 5.5, 4)
    for ax, s in zip(axes, settings):
        info = fits.get(s, {})
        if "fits" not in info:
            _reason_panel(ax, s, info.get("reason", "no FG-Eff"))
            continue
        c = curves[curves["setting"] == s]
        for k, (m, g) in enumerate(c.groupby("method")):
            col = f"C{k}"
            ax.scatter(100 * g["fg_fraction"], g["value"], s=14, color=col, alpha=0.7)
            f = info["fits"].get(m)
            label = m
            if f is not None and np.isfinite(f.gamma):
                t = np.linspace(f.t0, max(g["fg_fraction"].max(), f.t0 + 1e-6), 100)
                ax.plot(100 * t, fg_eff_curve(t, f.gamma, f.t0, f.y0, f.y_full), color=col)
                label = f"{m} (γ = {f.gamma:.1f})"
            ax.plot([], [], color=col, marker="o", label=label)
        ax.axhline(info["y_full"], color="k", ls="--", lw=1, label=f"full data ({info['y_full']:.3f})")
        ax.set_xlabel("annotated foreground voxels (%)")
        ax.set_ylabel("mean Dice")
        ax.set_title(f"FG-Eff — {s}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return finish(fig, path)


def plot_reduction(budgets: pd.DataFrame, path: Path) -> bytes:
    """Annotation reduction r per budget and setting (censored points hollow)."""
    plt = _plt()
    settings = sorted(budgets["setting"].unique()) if len(budgets) else ["-"]
    fig, axes = _grid(plt, len(settings), 5.5, 3.8)
    for ax, s in zip(axes, settings):
        g = budgets[budgets["setting"] == s] if len(budgets) else budgets
        if g.empty:
            _reason_panel(ax, s, "no budget after the start shared with the baseline")
            continue
        for k, (m, gm) in enumerate(g.groupby("method")):
            ok = gm["flag"] == 0
            ax.plot(gm["budget"][ok], gm["r"][ok], marker="o", color=f"C{k}", label=m)
            cens = gm["flag"] == 1
            if cens.any():
                ax.scatter(gm["budget"][cens], gm["r"][cens], facecolors="none", edgecolors=f"C{k}",
                           label=f"{m}: r ≥ (censored)")
        ax.axhline(0, color="k", lw=1)
        ax.set_xlabel("budget (labels)")
        ax.set_ylabel("r = labels saved vs the baseline")
        ax.set_title(s, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return finish(fig, path)
