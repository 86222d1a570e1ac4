"""Run directories of every domain → one tidy :class:`core.analysis.tidy.Collection` (what
``experiments.report`` and ``experiments.decide`` read).

The domain knowledge lives here, not in ``core``: which metric a run is judged by (classification:
``accuracy``, or ``balanced_accuracy`` on the imbalanced roll-out / folder data — the dataset
decides, from ``classification.datasets``; segmentation: ``mean_dice`` plus FG-Eff against the full-data
reference the segmentation CLI stores; the values testbed: its own tidy ``results.csv`` rows), and
which config keys make a setting (dataset, regime, paradigm, preset, query size, patch size,
training length, imbalance).  Paths are never parsed: everything comes from each run's
``config.json``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from core.analysis.tidy import (SEED_ALL, Collection, RunDir, RunInfo, attach_setting_columns, collect_curves,
                                find_runs, setting_label)
from core.errors import UserError

PREFERRED = ("accuracy", "balanced_accuracy", "mean_dice", "dice")
LOWER_IS_BETTER = ("aurc", "eaurc", "ace", "ged")            # values testbed metrics
VALUES_DESCRIPTIVE = ("al/dice_after", "al/rel_change", "al/ood_share")  # not a quality of a method


def _name(v):
    """A config value shown as a setting: dicts by their name / kind / path, lists as AxBxC."""
    if isinstance(v, dict):
        for k in ("name", "kind"):
            if v.get(k) is not None:
                return str(v[k])
        if v.get("path"):
            return Path(str(v["path"])).name
        return json.dumps(v, sort_keys=True)
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v)
    return v


def _regime(cfg: dict) -> dict:
    """The run's regime as a dict with its ``name`` (every domain writes one; older segmentation and
    blobs runs wrote the name alone)."""
    reg = cfg.get("regime")
    return reg if isinstance(reg, dict) else {"name": reg}


def describe(run: RunDir, metric: str | None = None) -> RunInfo:
    """Domain, method, seed, setting columns and primary metric of one run directory."""
    cfg = run.config
    exp = cfg.get("experiment")
    if exp == "classification":
        ds = str(cfg.get("dataset"))
        reg = _regime(cfg)
        train = cfg.get("train", {}) if isinstance(cfg.get("train"), dict) else {}
        info = _dataset_info(ds)
        imbalanced = info.imbalanced if info is not None else None
        setting = {"dataset": ds, "regime": reg.get("name"), "paradigm": cfg.get("paradigm"),
                   "preset": _name(cfg.get("preset")), "query_size": reg.get("query"), "epochs": train.get("epochs"),
                   "imbalance": None if imbalanced is None else ("imbalanced" if imbalanced else "balanced")}
        default = cfg.get("metric") or (info.metric if info is not None else _first_known(run))  # the run's own
        return RunInfo("classification", cfg.get("method"), cfg.get("seed"), setting, metric or default)
    if exp == "segmentation":
        q = cfg.get("query", {}) if isinstance(cfg.get("query"), dict) else {}
        preset = cfg.get("preset", {}) if isinstance(cfg.get("preset"), dict) else {}
        setting = {"dataset": str(cfg.get("dataset")), "regime": _regime(cfg).get("name"), "preset": preset.get("name"),
                   "query_size": q.get("query_size"), "patch_size": _name(q.get("patch")),
                   "epochs": preset.get("iterations")}
        return RunInfo("segmentation", cfg.get("method"), cfg.get("seed"), setting, metric or "mean_dice",
                       extra_metrics=("fg_fraction",) if metric in (None, "mean_dice") else ())
    # another experiment writing budget curves: dataset / regime from the config, first known metric
    setting = {"dataset": _name(cfg.get("dataset")), "regime": _name(_regime(cfg).get("name")),
               "paradigm": cfg.get("paradigm")}
    return RunInfo(str(exp or "unknown"), cfg.get("method"), cfg.get("seed"), setting, metric or _first_known(run))


def _dataset_info(name: str):
    """The classification dataset table's entry (metric, imbalance) — ``None`` for a name it does not know."""
    from classification import datasets
    try:
        return datasets.get(name)
    except UserError:
        return None


def _first_known(run: RunDir) -> str:
    have = run.records[0].get("metrics", {}) if run.records else {}
    m = next((k for k in PREFERRED if k in have), None)
    if m is None and run.records:
        raise UserError(f"no known metric in {run.path}; pass --metric (have: {', '.join(sorted(have))})")
    return m or "-"


def is_table_run(run: RunDir) -> bool:
    """A run that writes tidy result rows (the values testbed) instead of budget curves."""
    return run.table is not None and {"value", "seed", "metric"} <= set(run.table.columns) and not run.records


def load(paths: Sequence[str], metric: str | None = None, require_curves: bool = False) -> Collection:
    """All run directories below ``paths`` as one Collection (one domain, one metric)."""
    runs = find_runs(paths)
    if not runs:
        raise UserError(f"no realistic-al run directories (config.json + state.json) under {', '.join(map(str, paths))}")
    tables = [r for r in runs if is_table_run(r)]
    curves = [r for r in runs if not is_table_run(r)]
    if tables and curves:
        raise UserError(f"runs of different metrics mixed: values-testbed results ({tables[0].path}) and AL budget "
                        f"curves ({curves[0].path}) — analyse one domain at a time")
    if tables:
        if require_curves:
            raise UserError(f"{tables[0].path} holds values-testbed results (one AL query step, no budget curve): "
                            "the annotation reduction r needs AL budget curves (classification or segmentation runs)")
        return _values_collection(tables, metric)
    col = collect_curves(curves, lambda r: describe(r, metric))
    if col.domain == "segmentation" and "fg_fraction" in col.curves:
        _add_fgeff(col, curves)
    return col


# ------------------------------------------------------------------------------------ segmentation

def full_data_key(data_key, plan: dict, preset: dict, seeding=None, backend=None) -> str:
    """Key of the full-data reference of a segmentation setting: data, network plan, preset and, when
    recorded, the seeding version and a non-default training backend decide it."""
    key = {"data": data_key, "plan": plan, "preset": preset}
    if seeding is not None:
        key["seeding"] = seeding
    if backend not in (None, "monai"):  # monai keys stay as before the backends existed
        key["backend"] = backend
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def full_data_name(data_key, plan: dict, preset: dict, seeding=None, backend=None) -> str:
    """File name of that reference; the segmentation CLI writes it to ``<out>/<dataset>/full_data/``."""
    return f"{preset.get('name', '')}-{full_data_key(data_key, plan, preset, seeding, backend)}.json"


def _full_data_path(run: RunDir) -> Path | None:
    """The full-data reference of this run's data, plan and preset in a ``full_data`` folder beside
    or above the run directory."""
    cfg = run.config
    preset = cfg.get("preset") if isinstance(cfg.get("preset"), dict) else {}
    name = full_data_name(cfg.get("data_key"), cfg.get("plan"), preset, cfg.get("seeding"), cfg.get("backend"))
    for parent in run.path.parents:
        if (parent / "full_data" / name).exists():
            return parent / "full_data" / name
    return None


def _add_fgeff(col: Collection, runs: list[RunDir]) -> None:
    """FG-Eff (eq. C.1) per setting and method, as ``scores`` rows with ``seed = -1``."""
    from core import metrics
    by_path = {str(r.path): r for r in runs}
    fits, rows = {}, []
    for s, g in col.runs.groupby("setting"):
        ref = None
        for p in g["path"]:
            ref = _full_data_path(by_path[p])
            if ref is not None:
                break
        if ref is None:
            col.warnings.append(f"{s}: no full-data reference found (the segmentation CLI writes full_data/"
                                "<preset>-<key>.json unless --no-full-data): FG-Eff not computed")
            fits[s] = {"reason": "no full-data reference (run experiments.segmentation without --no-full-data)"}
            continue
        try:
            y_full = float(json.loads(ref.read_text())["mean_dice"])
        except (OSError, ValueError, KeyError, TypeError):
            col.warnings.append(f"{ref}: unreadable full-data reference, FG-Eff not computed")
            fits[s] = {"reason": f"unreadable full-data reference {ref}"}
            continue
        c = col.curves[col.curves["setting"] == s].dropna(subset=["fg_fraction"])
        per = {m: [(gs["fg_fraction"].to_numpy(float), gs["value"].to_numpy(float))
                   for _, gs in gm.sort_values("cycle").groupby("seed")] for m, gm in c.groupby("method")}
        res = metrics.fg_eff_setting(per, y_full)
        fits[s] = {"y_full": y_full, "reference": str(ref), "fits": res}
        for m, f in res.items():
            if np.isfinite(f.gamma):
                rows.append({"setting": s, "method": m, "seed": SEED_ALL, "metric": "FG-Eff", "value": f.gamma,
                             "higher_is_better": True})
    col.notes["fgeff"] = fits
    if rows:
        add = attach_setting_columns(pd.DataFrame(rows), col.runs)
        col.scores = pd.concat([col.scores, add], ignore_index=True)


# ------------------------------------------------------------------------------------ values testbed

def _values_collection(runs: list[RunDir], metric: str | None) -> Collection:
    """The values testbed's tidy rows as ``scores``: method = model/measure/aggregation, metric =
    task/metric, setting = dataset/split (lower-is-better metrics flagged)."""
    frames, run_rows = [], []
    for k, r in enumerate(runs):
        t = r.table.copy()
        ds = str(_name(r.config.get("dataset")))
        t["metric"] = t["task"].astype(str) + "/" + t["metric"].astype(str)
        t = t[~t["metric"].isin(VALUES_DESCRIPTIVE) & np.isfinite(pd.to_numeric(t["value"], errors="coerce"))]
        parts = [t[c].astype(str) for c in ("model", "measure", "aggregation") if c in t]
        t["method"] = ["/".join(p for p in ps if p not in ("-", "nan", "")) for ps in zip(*parts)]
        t["dataset"], t["split"] = ds, t["split"].astype(str) if "split" in t else "-"
        t["preset"] = r.config.get("preset")
        t["setting"] = [setting_label({"dataset": ds, "split": sp}, always=("dataset", "split")) for sp in t["split"]]
        t["higher_is_better"] = ~t["metric"].str.split("/").str[-1].isin(LOWER_IS_BETTER)
        t["value"] = t["value"].astype(float)
        t["seed"] = t["seed"].astype(int)
        frames.append(t[["setting", "dataset", "split", "preset", "method", "seed", "metric", "value", "higher_is_better"]])
        for (s, m, seed), _ in t.groupby(["setting", "method", "seed"]):
            run_rows.append({"run": k, "path": str(r.path), "domain": "values", "setting": s, "dataset": ds,
                             "split": s.split("/")[-1], "preset": r.config.get("preset"), "method": m, "seed": seed,
                             "done": r.done})
    scores = pd.concat(frames, ignore_index=True)
    if metric is not None:
        if metric not in set(scores["metric"]):
            raise UserError(f"metric {metric!r} not in the values results (have: {', '.join(sorted(set(scores['metric'])))})")
        scores = scores[scores["metric"] == metric]
    scores = scores.groupby(["setting", "dataset", "split", "preset", "method", "seed", "metric", "higher_is_better"],
                            as_index=False)["value"].mean()
    return Collection(domain="values", metric=metric or "task/metric rows of results.csv", kind="table", runs=pd.DataFrame(run_rows),
                      curves=pd.DataFrame(columns=["run", "setting", "method", "seed", "cycle", "budget", "value"]),
                      scores=scores, setting_cols=["dataset", "split", "preset"],
                      fingerprint_cols=["domain", "dataset"])
