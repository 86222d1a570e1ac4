"""Tidy tables from run directories of any domain (pandas in / pandas out).

Three tables carry everything the statistics need:

* ``runs``   — one row per run directory: ``run`` (id), ``path``, ``domain``, ``setting`` (a label),
  the setting columns (dataset, regime, …), ``method``, ``seed``, ``done``, ``n_cycles`` and the
  summed timings ``train_s`` / ``query_s`` / ``eval_s`` plus ``final_train_s`` (last cycle);
* ``curves`` — one row per finished cycle: ``run``, ``setting``, ``method``, ``seed``, ``cycle``,
  ``budget``, ``value`` (the primary metric) and any extra per-cycle metric columns asked for;
* ``scores`` — one row per (setting, method, seed, metric): ``value`` and ``higher_is_better``.
  AUBC and the final value come from the curves; a domain may add more (FG-Eff, the values
  testbed's own rows).  ``seed = -1`` marks a score fitted over all seeds at once (FG-Eff).

What a domain's config means (its primary metric, which keys make a setting) is *not* known here:
the caller passes a ``describe(run) -> RunInfo`` function (``experiments/runs.py`` has the one for
the three domains), so this module stays domain-free.  Runs pair by seed *id*, never by position.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import UserError
from ..metrics import aubc
from ..store import MARKER, load_run

SEED_ALL = -1  # seed id of a score fitted over all seeds of a setting (e.g. FG-Eff)


@dataclass
class RunDir:
    """A realistic-al run directory: its resolved config, finished cycle records and, for
    experiments that write tidy result rows instead of budget curves, ``results.csv``."""
    path: Path
    config: dict
    records: list[dict]
    done: bool
    table: pd.DataFrame | None = None


@dataclass
class RunInfo:
    """What a domain adapter says about one run."""
    domain: str
    method: str | None
    seed: int | None
    setting: dict            # ordered setting columns → value (dataset, regime, …)
    metric: str              # primary metric (curves) or the name of the table kind
    extra_metrics: tuple = ()  # further per-cycle metrics to keep as curve columns
    fingerprint: tuple = ("domain", "dataset", "regime", "paradigm", "imbalance")


@dataclass
class Collection:
    """Everything the report and the decision read, from one homogeneous set of runs."""
    domain: str
    metric: str
    kind: str                       # "curves" (AL budget curves) or "table" (tidy result rows)
    runs: pd.DataFrame
    curves: pd.DataFrame
    scores: pd.DataFrame
    setting_cols: list[str]
    fingerprint_cols: list[str]
    warnings: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)   # free-form extras (e.g. FG-Eff fits)

    @property
    def methods(self) -> list[str]:
        return sorted(self.runs["method"].dropna().unique())

    @property
    def settings(self) -> list[str]:
        return sorted(self.runs["setting"].unique())


def find_runs(paths: Sequence[str | Path]) -> list[RunDir]:
    """Every run directory (``config.json`` with the realistic-al marker) at or below ``paths``.

    A missing path is a ``UserError``; a ``config.json`` of another tool is skipped; a corrupt run
    directory is a ``UserError`` naming it (from :func:`core.store.load_run`)."""
    found: dict[Path, RunDir] = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UserError(f"{p} does not exist")
        cfgs = sorted(p.rglob("config.json")) if p.is_dir() else ([p] if p.name == "config.json" else [])
        for cfg_path in cfgs:
            d = cfg_path.parent.resolve()
            if d in found:
                continue
            try:
                raw = json.loads(cfg_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise UserError(f"corrupt run directory: cannot read config {cfg_path} ({e.__class__.__name__})") from None
            if not isinstance(raw, dict) or MARKER not in raw:
                continue  # another tool's config.json
            config, records = load_run(d)
            table = None
            if (d / "results.csv").exists():
                try:
                    table = pd.read_csv(d / "results.csv")
                except (OSError, ValueError, pd.errors.ParserError) as e:
                    raise UserError(f"corrupt results table {d / 'results.csv'} ({e.__class__.__name__})") from None
            found[d] = RunDir(d, config, records, (d / "DONE").exists(), table)
    return list(found.values())


def setting_label(setting: dict, always: Sequence[str] = ("dataset", "regime", "paradigm"),
                  varying: Iterable[str] = ()) -> str:
    """``dataset/regime/paradigm`` plus ``key=value`` for the other columns that vary."""
    parts = [str(setting[k]) for k in always if setting.get(k) is not None]
    parts += [f"{k}={setting[k]}" for k in varying if k not in always and setting.get(k) is not None]
    return "/".join(parts) or "all"


def collect_curves(runs: Sequence[RunDir], describe: Callable[[RunDir], RunInfo]) -> Collection:
    """Build the ``runs`` and ``curves`` tables (and AUBC / final ``scores``) from run directories
    whose records hold budget curves.  All runs must share one primary metric."""
    if not runs:
        raise UserError("no run directories found")
    infos = [(r, describe(r)) for r in runs]
    _check_one_metric(infos)
    warnings: list[str] = []
    usable = []
    for r, info in infos:
        if not r.records:
            warnings.append(f"{r.path}: no finished cycle yet, skipped")
            continue
        if info.method is None or info.seed is None:
            warnings.append(f"{r.path}: config names no method/seed, skipped")
            continue
        missing = [m for m in (info.metric, *info.extra_metrics) if m not in r.records[0].get("metrics", {})]
        if info.metric in missing:
            raise UserError(f"metric {info.metric!r} not recorded in {r.path} "
                            f"(have: {', '.join(sorted(r.records[0].get('metrics', {})))})")
        usable.append((r, info))
    if not usable:
        raise UserError("no runs with finished cycles under the given paths")
    cols = _setting_columns([i for _, i in usable])
    varying = [c for c in cols if len({json.dumps(i.setting.get(c), default=str) for _, i in usable}) > 1]
    run_rows, curve_rows = [], []
    for k, (r, info) in enumerate(usable):
        label = setting_label(info.setting, varying=varying)
        t = [rec.get("timings", {}) for rec in r.records]
        run_rows.append({"run": k, "path": str(r.path), "domain": info.domain, "setting": label,
                         **{c: info.setting.get(c) for c in cols}, "method": info.method, "seed": int(info.seed),
                         "done": r.done, "n_cycles": len(r.records),
                         "train_s": float(sum(x.get("train_s", 0.0) for x in t)),
                         "query_s": float(sum(x.get("query_s", 0.0) for x in t)),
                         "eval_s": float(sum(x.get("eval_s", 0.0) for x in t)),
                         "final_train_s": float(t[-1].get("train_s", 0.0))})
        for rec in r.records:
            m = rec.get("metrics", {})
            row = {"run": k, "setting": label, "method": info.method, "seed": int(info.seed),
                   "cycle": int(rec.get("cycle", len(curve_rows))), "budget": float(rec["budget"]),
                   "value": _num(m.get(info.metric))}
            row.update({x: _num(m.get(x)) for x in info.extra_metrics})
            curve_rows.append(row)
    runs_df = pd.DataFrame(run_rows)
    dup = runs_df.duplicated(["setting", "method", "seed"], keep=False)
    if dup.any():
        d = runs_df[dup].sort_values(["setting", "method", "seed"])
        raise UserError(f"two runs of the same setting, method and seed: {d['path'].iloc[0]} and {d['path'].iloc[1]} "
                        f"(pass only one of them)")
    curves = pd.DataFrame(curve_rows)
    bad = curves["value"].isna()
    if bad.any():
        warnings.append(f"{int(bad.sum())} cycle(s) without a finite {usable[0][1].metric}, dropped")
        curves = curves[~bad]
    longest = runs_df.groupby("setting")["n_cycles"].transform("max")
    short = runs_df[runs_df["n_cycles"] < longest]
    if len(short):
        warnings.append(f"{len(short)} run(s) with fewer cycles than the longest run of their setting (unfinished?), "
                        f"e.g. {short['path'].iloc[0]}: left out of the AUBC / Final statistics, kept in curves and PPM")
    first = usable[0][1]
    fp = [c for c in first.fingerprint if c == "domain" or c in cols]
    return Collection(domain=first.domain, metric=first.metric, kind="curves", runs=runs_df, curves=curves,
                      scores=curve_scores(curves, runs_df), setting_cols=cols, fingerprint_cols=fp, warnings=warnings)


def curve_scores(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """AUBC and final value of every run's budget curve as ``scores`` rows.

    Partial runs (fewer cycles than the longest run of their setting) are left out of the scores,
    so every AUBC of a setting covers the same budgets; they still count in the PPM."""
    rows = []
    full = curves.groupby("setting")["cycle"].nunique()
    for (s, m, seed), g in curves.sort_values("cycle").groupby(["setting", "method", "seed"]):
        if len(g) < full[s]:
            continue
        v = g["value"].to_numpy(float)
        rows.append({"setting": s, "method": m, "seed": int(seed), "metric": "AUBC", "value": aubc(v), "higher_is_better": True})
        rows.append({"setting": s, "method": m, "seed": int(seed), "metric": "Final", "value": float(v[-1]),
                     "higher_is_better": True})
    out = pd.DataFrame(rows, columns=["setting", "method", "seed", "metric", "value", "higher_is_better"])
    return attach_setting_columns(out, runs)


def attach_setting_columns(scores: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Add the setting columns of ``runs`` (dataset, regime, …) to rows keyed by ``setting``."""
    meta = runs.drop(columns=[c for c in ("run", "path", "method", "seed", "done", "n_cycles", "train_s", "query_s",
                                          "eval_s", "final_train_s") if c in runs]).drop_duplicates("setting")
    keep = [c for c in meta.columns if c not in scores.columns or c == "setting"]
    return scores.merge(meta[keep], on="setting", how="left")


def curve_matrices(curves: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(setting, method) → seeds × budgets matrix (index = seed ids, columns = budgets), all at once."""
    out = {}
    for (s, m), g in curves.groupby(["setting", "method"], sort=True):
        out[(s, m)] = g.groupby(["seed", "budget"])["value"].mean().unstack("budget").sort_index()
    return out


def paired(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Align two seeds × budgets matrices on their common seed ids and budgets (complete cells only)."""
    seeds = sorted(set(a.index) & set(b.index))
    budgets = sorted(set(a.columns) & set(b.columns))
    if not seeds or not budgets:
        return np.empty((0, 0)), np.empty((0, 0)), [], []
    x = a.to_numpy(float)[np.ix_(a.index.get_indexer(seeds), a.columns.get_indexer(budgets))]
    y = b.to_numpy(float)[np.ix_(b.index.get_indexer(seeds), b.columns.get_indexer(budgets))]
    ok = ~(np.isnan(x).any(axis=0) | np.isnan(y).any(axis=0))
    return x[:, ok], y[:, ok], seeds, [c for c, k in zip(budgets, ok) if k]


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return np.nan
    return f if np.isfinite(f) else np.nan


def _setting_columns(infos: Sequence[RunInfo]) -> list[str]:
    cols: list[str] = []
    for i in infos:
        for c in i.setting:
            if c not in cols:
                cols.append(c)
    return cols


def _check_one_metric(infos) -> None:
    by: dict[str, list] = {}
    for r, i in infos:
        by.setdefault(f"{i.domain}:{i.metric}", []).append(r.path)
    if len(by) > 1:
        parts = [f"{k} ({len(v)} run(s), e.g. {v[0]})" for k, v in sorted(by.items())]
        raise UserError("runs of different metrics mixed: " + "; ".join(parts) +
                        " — analyse one domain / metric at a time")
