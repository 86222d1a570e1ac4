"""The testbed on the study layer (``core.study``): train → predict → evaluate → AL, per seed and model.

Its jobs: one trained net per (seed, kind, k) (det0..4, ttd0, ssn0), one evaluation per
(seed, model), and — planned once the evaluations exist, because the query sets come from their
scores — one AL retrain per distinct (seed, query set).  Any executor of ``core.executors`` runs
them (``--executor serial|ray|slurm``; ``--workers N`` = Ray with N workers); every job seeds itself,
so the numbers do not depend on where or in which order jobs ran.

Run directory (``--out``/``<dataset>_<preset>``), one job directory each::

    config.json                       protocol (data + training config), realistic-al marker
    seed<s>/net_<kind><k>/net.pt      trained nets, cached per seed
    seed<s>/eval_<model>/eval.csv     rows of every task but AL for (seed, model)
    seed<s>/eval_<model>/eval.npz     aggregated scores, risks and two example maps (AL, plots)
    seed<s>/al_<key>/al.json          Dice on the shifted test set after one AL query (per query set)
    results.csv  summary.md  maps_iid.png  maps_ood.png  risk_coverage.png
    tasks.json                        the tasks that ran, the skipped ones with reason and fix, the shift
    ci.csv                            95 % bootstrap CIs (only when an evaluated group has few cases)

Before any job the data decides the tasks (``uncertainty.support``): raters → NCC / GED, shifted
cases → OoD detection / AUROC; the rest always runs.  Skipped tasks are logged (one line each,
saying what to add to ``dataset.json``) and listed in ``summary.md`` and ``tasks.json``.

Every file is written atomically; a rerun with ``--resume`` runs only the jobs that are not done
(status from the job directories: ``python -m experiments.study status OUT``) and produces the
same numbers as an uninterrupted run.

Active learning (``uncertainty.md`` §7.2, §10.4): rank the pool (i.i.d. + shifted) by the
aggregated uncertainty, add the top 50 % to the training set, retrain from scratch with the same
seed, measure Dice on the shifted test set (the i.i.d. test set when the data has no shift: plain
AL on an i.i.d. pool); ``improvement = C_method − C_random`` with
``C = (Dice_after − Dice_before) / Dice_before`` and a random 50 % query as baseline.  Only PU and
EU measures are queried (as in the thesis).  The learner that is retrained is the prediction model
itself (``al_learner = "pm"``, thesis preset) or, to fit a laptop, the plain backbone
(``"backbone"``: one softmax U-Net, shared by all query sets; identical query sets are trained
once).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core import seeds
from core.errors import UserError
from core.store import RunStore, atomic_write, atomic_write_json, atomic_write_text
from core.study import Job, JobRun, job_state

from . import confidence, report, shifts, support
from .aggregation import AGGREGATIONS
from .cityscapes import GTACSConfig
from .data import SPLITS, MSDConfig, SegData, Split, ToyConfig, load_msd, make_toy
from .lidc import LIDCConfig
from .measures import MEASURES, UTYPE
from .models import MODELS, TrainConfig, build_model, load_net, nets_needed, save_net, train_net
from .studies import TASKS, evaluate, label_spec, predict_split

RESULT_COLUMNS = ["model", "measure", "utype", "aggregation", "task", "metric", "split", "seed", "value"]
# results.csv adds a last column ``shift``: what the shifted cases are (none | toy | dataset | lidc-tex |
# lidc-mal | gta-cs | intensity | noise | blur | resolution), so every table says which shift it measured

# ------------------------------------------------------------------------------------ presets
PRESETS = {
    # the thesis protocol (GPU scale): 150 epochs, Adam 3e-4, 4+4 U-Net blocks, 200 training cases
    "thesis": {
        "toy2d": ToyConfig(dim=2, size=64, blur_sigma=4.0),
        "toy3d": ToyConfig(dim=3, size=64, blur_sigma=8.0),
        "msd": MSDConfig(size=64),
        "lidc": LIDCConfig(size=64),
        # 25 % of 1024×1912 is 256×478; 480 so that the U-Net's four poolings divide the width
        "gta": GTACSConfig(height=256, width=480),
        "train": TrainConfig(channels=(8, 16, 32, 64, 128), features=16, epochs=150, lr=3e-4, ssn_warmup_epochs=5),
        "al_learner": "pm",
        "al_aggregations": list(AGGREGATIONS),
    },
    # same protocol, CPU scale: fewer epochs (higher lr to compensate; the SSN, whose loss trains only
    # through the best of M samples, gets twice as many), 3-level U-Net, bf16 training, AL retrains the
    # backbone only; 3D volumes 32^3 with fewer cases
    "laptop": {
        "toy2d": ToyConfig(dim=2, size=64, blur_sigma=4.0),
        "toy3d": ToyConfig(dim=3, size=32, blur_sigma=8.0, n_train=80, n_val=20, n_test_iid=12, n_test_ood=12,
                           n_pool_iid=20, n_pool_ood=20),
        "msd": MSDConfig(size=48),
        "lidc": LIDCConfig(size=32, fraction=0.25),
        "gta": GTACSConfig(height=64, width=120, max_train=160, max_test=40, max_pool=40),
        "train": TrainConfig(channels=(8, 16, 32, 64), features=16, epochs=30, lr=1e-3, ssn_warmup_epochs=5,
                             ssn_epochs=60, bf16=True),
        "al_learner": "backbone",
        "al_aggregations": ["patch"],   # the thesis' choice for localised structures; one retrain per query set
    },
    # tiny, for tests: seconds
    "smoke": {
        "toy2d": ToyConfig(dim=2, size=32, n_train=12, n_val=6, n_test_iid=3, n_test_ood=6, n_pool_iid=4, n_pool_ood=4),
        "toy3d": ToyConfig(dim=3, size=16, n_train=8, n_val=4, n_test_iid=2, n_test_ood=3, n_pool_iid=4, n_pool_ood=4),
        "msd": MSDConfig(size=24),
        "lidc": LIDCConfig(size=16),
        "gta": GTACSConfig(height=32, width=60, n_raters=3, max_train=8, max_test=4, max_pool=4),
        "train": TrainConfig(channels=(4, 8, 16), features=4, epochs=2, batch_size=4, lr=1e-3, ssn_warmup_epochs=1,
                             ensemble_size=2, ttd_passes=3, ssn_train_samples=3, ssn_test_samples=3),
        "al_learner": "backbone",
        "al_aggregations": ["patch"],
    },
}


REAL_DATASETS = ("lidc-tex", "lidc-mal", "gta-cs", "brain", "brain-lr")


def dataset_kind(dataset: str) -> str:
    """toy2d | toy3d | lidc | gta | brain (the generated real-anatomy MSD folder) | msd (a folder)."""
    if dataset in ("toy2d", "toy3d"):
        return dataset
    if dataset in ("brain", "brain-lr"):
        return "brain"
    if dataset in ("lidc-tex", "lidc-mal"):
        return "lidc"
    if dataset == "gta-cs":
        return "gta"
    return "msd"


def load_dataset(spec: "RunSpec", log=print) -> tuple[SegData, dict, str]:
    """(data, data-config dict for the protocol, short tag for the run directory).  ``spec.scenario``:
    the toy data's separation-study scenario (``uncertainty.data.SCENARIOS``; ``mixed`` = all
    tasks); ``spec.shift`` adds a synthetic shift (``uncertainty.shifts``) to data that has none."""
    p = PRESETS[spec.preset]
    kind = dataset_kind(spec.dataset)
    classes = spec.classes or ("per-class" if kind == "gta" else "merged")
    if spec.shift and kind not in ("msd", "brain"):
        raise UserError(f"--shift builds a shift for MSD/nnU-Net folders without one; {spec.dataset} has its own "
                        "shifted cases")
    if classes != "merged" and kind in ("toy2d", "toy3d", "lidc"):
        raise UserError(f"--classes {classes}: {spec.dataset} has one foreground class")
    if spec.scenario != "mixed" and kind not in ("toy2d", "toy3d"):
        raise UserError("--scenario selects a toy-data scenario; it needs --dataset toy2d or toy3d")
    if kind in ("toy2d", "toy3d"):
        cfg = replace(p[kind], scenario=spec.scenario)
        tag = kind if spec.scenario == "mixed" else f"{kind}-s{spec.scenario}"
        return make_toy(cfg), {"kind": kind, **cfg.to_dict()}, tag
    if kind == "lidc":
        from .lidc import load_lidc
        cfg = p["lidc"]
        feature = spec.dataset.split("-")[1]
        data, info = load_lidc(feature, spec.data_dir, Path(spec.out) / "data", cfg, download=spec.download, log=log)
        src = str(Path(spec.data_dir or "data").resolve())
        return data, {"kind": spec.dataset, "data_dir": src, **info, **cfg.to_dict()}, spec.dataset
    if kind == "gta":
        from .cityscapes import load_gta_cs
        cfg = p["gta"]
        data, info = load_gta_cs(spec.data_dir, cfg, download=spec.download, log=log, classes=classes)
        src = str(Path(spec.data_dir or "data").resolve())
        return data, {"kind": spec.dataset, "data_dir": src, **info, **cfg.to_dict()}, spec.dataset
    path = Path(spec.dataset)
    if kind == "brain":     # segmentation.realdata: 20 single-rater MSD cases of real anatomy, 5 (10) classes
        from segmentation.realdata import write_brain_dataset
        root = Path(spec.data_dir) if spec.data_dir else Path(spec.out) / "data"
        path = write_brain_dataset(root / spec.dataset, n=20, lateral=spec.dataset == "brain-lr")
    cfg = replace(p["msd"], classes=classes)
    data = load_msd(path, cfg, log=log)
    info = {"kind": "msd", "path": str(path.resolve()), **cfg.to_dict()}
    tag = path.resolve().name + ("-perclass" if classes == "per-class" else "")
    if spec.shift:
        data = shifts.apply(data, spec.shift, seed=cfg.seed)
        data.shift = spec.shift
        data.notes.append(f"shift: --shift {spec.shift} — {shifts.SHIFTS[spec.shift]}; the shifted test set and the "
                          "shifted half of the pool are shifted copies of the held-out i.i.d. test / pool cases")
        info["shift"] = spec.shift
        tag += f"-{spec.shift}"
    return data, info, tag


@dataclass
class RunSpec:
    dataset: str
    preset: str = "laptop"
    models: list = field(default_factory=lambda: list(MODELS))
    measures: list = field(default_factory=lambda: list(MEASURES))
    aggregations: list = field(default_factory=lambda: list(AGGREGATIONS))
    tasks: list = field(default_factory=lambda: list(TASKS))
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    device: str = "cpu"
    out: Path = Path("runs/values")
    resume: bool = False
    epochs: int | None = None          # override the preset's epochs
    al_learner: str | None = None      # override the preset's AL learner
    al_aggregations: list | None = None  # override the preset's aggregations used for AL queries
    workers: int = 1                   # informational: concurrency is the executor's (experiments.values)
    threads: int = 1                   # torch threads per job on CPU
    plots: bool = True
    scenario: str = "mixed"            # toy data: separation-study scenario (1, 2, 3a, 3b) or mixed
    classes: str | None = None         # merged | per-class; None: per-class for gta-cs, else merged
    shift: str | None = None           # synthetic shift for data without one (uncertainty.shifts)
    data_dir: str | None = None        # raw releases of LIDC-IDRI / GTA5 + Cityscapes
    download: bool = False             # fetch what can be fetched of them (never without it)


def train_config(spec: RunSpec) -> TrainConfig:
    """The preset's training config with the spec's overrides (epochs; fp32 on GPUs)."""
    tc = PRESETS[spec.preset]["train"]
    if spec.epochs is not None:
        tc = replace(tc, epochs=spec.epochs, ssn_epochs=None,
                     ssn_warmup_epochs=min(tc.ssn_warmup_epochs, max(spec.epochs - 1, 0)))
    if spec.device != "cpu":
        tc = replace(tc, bf16=False)       # bf16 autocast is the CPU speed-up; GPUs run fp32
    return tc


def al_aggregations(spec: RunSpec, allowed=None) -> list:
    """The aggregations whose rankings become AL queries (``allowed``: those the data supports)."""
    ok = spec.aggregations if allowed is None else allowed
    return [a for a in (spec.al_aggregations or PRESETS[spec.preset]["al_aggregations"]) if a in ok]


def _net_seed(seed: int, kind: str, k: int) -> int:
    return seeds.derive(seed, f"net:{kind}", k)


def _save_npz(path: Path, arrays: dict) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True)


def _read_piece(path: Path, read):
    """``read(path)`` of a finished piece; a damaged one (truncated, garbage) is one ``UserError``
    naming it and how to recover (the piece is recomputed once it is deleted)."""
    try:
        return read(path)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 — numpy / pandas / torch / json raise many kinds on a damaged file
        raise UserError(f"damaged result file {path} ({e.__class__.__name__}); delete it and rerun with --resume "
                        "to recompute it") from None


def _load_npz(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _rows_csv(rows: list[dict]) -> str:
    return pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(index=False)


class Runner:
    """Runs a :class:`RunSpec`.  Work is split into study jobs (:class:`ValuesDomain`) — train one
    net, evaluate one (seed, model), retrain for one AL query set — that each write their own
    directory atomically; ``run(executor)`` executes them with any ``core.executors`` executor (the
    results do not depend on the scheduling: every job seeds itself) and then writes the tables."""

    def __init__(self, spec: RunSpec, progress=None, log=print, _worker_data=None):
        self.spec, self.log, self.pr = spec, log, progress
        self._t0 = time.time()
        if _worker_data is not None:
            self.data, data_cfg, tag = _worker_data
        else:
            self.data, data_cfg, tag = load_dataset(spec, log=log)
        self._loaded = (self.data, data_cfg, tag)
        kind = dataset_kind(spec.dataset)
        # which tasks the data supports — decided here, before any job (support.py); an empty plan
        # is a one-line error and nothing is written
        self.plan = support.plan(self.data, spec.tasks, spec.aggregations, kind=kind)
        if _worker_data is None:
            for line in self.data.notes:
                log(line)
            for sk in self.plan.skipped:
                log(sk.line())
            for w in self.plan.warnings:
                log(f"warning: {w}")
        self.tc = replace(train_config(spec), ignore_index=self.data.ignore_index, flip_axes=self.data.flip_axes)
        if kind == "gta":       # thesis B.3.2: SSN rank 10 on GTA5/Cityscapes (5 on the toy data and LIDC)
            self.tc = replace(self.tc, ssn_rank=10)
        self.labels = label_spec(self.data)
        self.al_learner = spec.al_learner or PRESETS[spec.preset]["al_learner"]
        self.al_aggs = al_aggregations(spec, self.plan.aggregations)
        self.al_split = self.plan.al_split
        self.dir = Path(spec.out) / f"{tag}_{spec.preset}"
        self.config = {"dataset": data_cfg, "train": self.tc.to_dict(), "al_learner": self.al_learner, "seeding": seeds.SEEDING,
                       "preset": spec.preset, "n_classes": self.data.n_classes}
        self._toy = spec.dataset in ("toy2d", "toy3d")
        self.store = None
        if _worker_data is None:
            self.store = RunStore(self.dir, self.config, resume=spec.resume)
            if self.store.pool_state is None and not (self.dir / "state.json").exists():
                self.store.save_extra({"layout": "study"})   # marks the directory as holding a run (--resume)

    def eval_models(self) -> list[str]:
        """Models to evaluate: the requested ones plus the backbone baseline when AL retrains it."""
        sp = self.spec
        extra = ["softmax"] if self.want_al() and self.al_learner != "pm" and "softmax" not in sp.models else []
        return list(sp.models) + extra

    def want_al(self) -> bool:
        return "al" in self.plan.tasks and self._al_possible()

    def net_path(self, seed: int, kind: str, k: int) -> Path:
        return self.dir / f"seed{seed}" / f"net_{kind}{k}" / "net.pt"

    def eval_paths(self, seed: int, model: str) -> tuple[Path, Path]:
        d = self.dir / f"seed{seed}" / f"eval_{model}"
        return d / "eval.csv", d / "eval.npz"

    def al_path(self, seed: int, key: str) -> Path:
        return self.dir / f"seed{seed}" / f"al_{key}" / "al.json"

    # ---------------------------------------------------------------------------- jobs
    def _load_or_train(self, seed: int, kind: str, k: int, path: Path, split: Split | None = None):
        d = self.data
        if path.exists():
            return _read_piece(path, lambda p: load_net(kind, p, d.dim, d.in_channels, d.n_classes, self.tc,
                                                        self.spec.device))
        sp = split if split is not None else d.splits["train"]
        net = train_net(kind, sp.images, sp.raters, d.dim, d.n_classes, self.tc, _net_seed(seed, kind, k),
                        device=self.spec.device)
        save_net(net, path)
        return net

    def job_train(self, seed: int, kind: str, k: int) -> None:
        self._load_or_train(seed, kind, k, self.net_path(seed, kind, k))

    def _nets(self, seed: int, model: str) -> dict:
        return {(kind, k): self._load_or_train(seed, kind, k, self.net_path(seed, kind, k))
                for kind, k in nets_needed(model, self.tc)}

    def job_eval(self, seed: int, name: str) -> None:
        csv, npz = self.eval_paths(seed, name)
        if csv.exists() and npz.exists():
            return
        from .measures import measures_for
        model = build_model(name, self._nets(seed, name), self.tc, self.spec.device, seed)
        preds = {}
        for sp in ("val", "test_iid", "test_ood", "pool"):
            model.reset_rng(seeds.derive(seed, "predict", SPLITS.index(sp)))
            preds[sp] = predict_split(model, self.data.splits[sp], measures_for(name), batch=self.tc.eval_batch,
                                      labels=self.labels)
        rows, extras = evaluate(name, self.data.splits, preds, seed, self.labels, self.data.class_names)
        arr = {f"risk/{sp}": v for sp, v in extras["risk"].items()}
        for sp, per in extras["scores"].items():
            for m, per_a in per.items():
                for a, v in per_a.items():
                    arr[f"score/{sp}/{m}/{a}"] = v
        ci, co = report.example_cases(self.data)
        for m in preds["test_iid"].maps:
            if ci is not None:
                arr[f"map/iid/{m}"] = preds["test_iid"].maps[m][ci]
            if co is not None:
                arr[f"map/ood/{m}"] = preds["test_ood"].maps[m][co]
        if ci is not None:
            arr["seg/iid"] = preds["test_iid"].seg[ci]
        if co is not None:
            arr["seg/ood"] = preds["test_ood"].seg[co]
        for sp in ("test_iid", "test_ood"):
            d = preds[sp].dice
            arr[f"dice/{sp}"] = np.array([float(np.mean(d)) if len(d) else np.nan])
        csv.parent.mkdir(parents=True, exist_ok=True)
        _save_npz(npz, arr)
        atomic_write_text(csv, _rows_csv(rows))

    def _al_key(self, learner: str, q) -> str:
        ids = ",".join(str(int(i)) for i in np.sort(q))
        return hashlib.sha1(f"{learner}|{ids}".encode()).hexdigest()[:16]

    def job_al(self, seed: int, learner: str, q: list) -> None:
        """Retrain ``learner`` (a prediction model, or ``softmax`` for the backbone learner) on
        train ∪ pool[q] and store its Dice on the shifted test set (on the i.i.d. test set when the
        data has no shift)."""
        key = self._al_key(learner, q)
        path = self.al_path(seed, key)
        if path.exists():
            return
        q = np.asarray(q, dtype=np.int64)
        split = Split.concat([self.data.splits["train"], self.data.splits["pool"].subset(q)])
        kinds = nets_needed(learner, self.tc)
        tmp = {(kind, k): path.with_name(f".{key}_{kind}{k}.pt") for kind, k in kinds}
        nets = {kk: self._load_or_train(seed, kk[0], kk[1], p, split=split) for kk, p in tmp.items()}
        model = build_model(learner, nets, self.tc, self.spec.device, seed)
        model.reset_rng(seeds.derive(seed, "predict", len(SPLITS)))
        p = predict_split(model, self.data.splits[self.al_split], [], batch=self.tc.eval_batch, labels=self.labels)
        atomic_write_json(path, {"learner": learner, "queried": [int(i) for i in np.sort(q)],
                                 f"dice_{self.al_split}": float(np.mean(p.dice))})
        for f in tmp.values():  # the retrained nets are only needed for this number
            f.unlink(missing_ok=True)

    # ---------------------------------------------------------------------------- AL rows
    def _al_plan(self, seed: int, name: str, arr: dict) -> list[tuple]:
        """[(measure, aggregation, query ids)] incl. ("random", "-", ids) first."""
        pool = self.data.splits["pool"]
        n_q = len(pool) // 2
        rng = seeds.rng(seed, "al")
        plan = [("random", "-", rng.permutation(len(pool))[:n_q])]
        for m, t in UTYPE[name].items():
            if t in ("PU", "EU") and m in self.spec.measures:
                for a in self.al_aggs:
                    plan.append((m, a, np.argsort(-arr[f"score/pool/{m}/{a}"], kind="stable")[:n_q]))
        return plan

    def _al_possible(self) -> bool:
        pool = self.data.splits["pool"]
        return bool(len(pool) >= 2 and len(self.data.splits[self.al_split]) and self.al_aggs)

    def _al_rows(self, seed: int, name: str, arr: dict, base_arr: dict) -> list[dict]:
        pool = self.data.splits["pool"]
        learner = name if self.al_learner == "pm" else "softmax"
        split = self.al_split
        before = float((arr if self.al_learner == "pm" else base_arr)[f"dice/{split}"][0])
        rows, c_rand = [], None

        def add(measure, agg, metric, value):
            rows.append({"model": name, "measure": measure, "utype": UTYPE[name].get(measure, "-"),
                         "aggregation": agg, "task": "al", "metric": metric, "split": split, "seed": seed,
                         "value": float(value)})
        for m, a, q in self._al_plan(seed, name, arr):
            d = _read_piece(self.al_path(seed, self._al_key(learner, q)),
                            lambda p: float(json.loads(p.read_text())[f"dice_{split}"]))
            c = (d - before) / before
            add(m, a, "dice_after", d)
            add(m, a, "rel_change", c)
            if m == "random":
                c_rand = c
            else:
                add(m, a, "improvement", c - c_rand)
                if pool.ood.any():
                    add(m, a, "ood_share", float(pool.ood[q].mean()))
        return rows

    # ---------------------------------------------------------------------------- main
    def run(self, executor=None, threads: int | None = None) -> dict:
        """Run every job that is not done with ``executor`` (default: serially in this process),
        then write results.csv, summary.md and the plots; returns them (see :meth:`finish`)."""
        from core.executors import SerialExecutor
        from core.study import Study, StudyFailed
        domain = ValuesDomain(self, Path(self.spec.out))
        try:
            res = Study(Path(self.spec.out), [domain]).run(executor or SerialExecutor(), progress=self.pr,
                                                           threads=threads if threads is not None else self.spec.threads)
        finally:
            self.store.close()   # the run directory's lock
        if not res.ok:
            raise StudyFailed(res)
        return self.result

    def finish(self) -> dict:
        """Driver side, all jobs done: collect every (seed, model) and AL row, write the outputs."""
        sp = self.spec
        arrays, all_rows = {}, []
        for s in sp.seeds:
            for m in self.eval_models():
                csv, npz = self.eval_paths(s, m)
                arrays[(s, m)] = _read_piece(npz, _load_npz)
                if m in sp.models:
                    all_rows += _read_piece(csv, lambda p: pd.read_csv(p)[RESULT_COLUMNS].to_dict("records"))
        if self.want_al():
            for s in sp.seeds:
                for m in sp.models:
                    all_rows += self._al_rows(s, m, arrays[(s, m)], arrays.get((s, "softmax")))
        df = pd.DataFrame(all_rows, columns=RESULT_COLUMNS)
        plan = self.plan
        df = df[df.model.isin(sp.models) & df.task.isin(plan.tasks)
                & (df.measure.isin(list(sp.measures) + ["-", "random"]))
                & (df.aggregation.isin(list(plan.aggregations) + ["-"]))]
        if not plan.ncc:    # the NCC half of the separation study was skipped (support.plan)
            df = df[~((df.task == "separation") & (df.metric == "ncc"))]
        df = df.sort_values(["task", "metric", "split", "model", "measure", "aggregation", "seed"]).reset_index(drop=True)
        df["shift"] = self.data.shift   # which shift the OoD numbers measured (none | toy | dataset | noise | ...)
        atomic_write_text(self.dir / "results.csv", df.to_csv(index=False))
        atomic_write_json(self.dir / "tasks.json", {**plan.to_dict(), "shift": self.data.shift, "notes": self.data.notes})
        out = {"dir": self.dir, "results": df, "plan": plan}
        ci = None
        if plan.small:      # few cases: 95 % bootstrap intervals next to the tables
            from .measures import measures_for
            ci = confidence.intervals(arrays, list(sp.seeds), list(sp.models),
                                      {m: [x for x in measures_for(m) if x in sp.measures] for m in sp.models},
                                      list(plan.aggregations), list(plan.tasks), self.data.splits["pool"].ood,
                                      plan.auroc)
            atomic_write_text(self.dir / "ci.csv", ci.to_csv(index=False))
            out["ci"] = ci
        md, checks = report.summary_markdown(df, self, time.time() - self._t0, ci=ci)
        atomic_write_text(self.dir / "summary.md", md)
        out["summary"], out["checks"] = md, checks
        if sp.plots:
            out["plots"] = report.plots(self, arrays)
        self.store.finish()
        self.result = out
        return out


# ------------------------------------------------------------------------------------ the study domain
_NET_ORDER = {"ssn": 0, "ttd": 1, "det": 2}   # slow kinds first, for a balanced pool of workers


class ValuesDomain:
    """The testbed's jobs for ``core.study``: nets per seed → evaluations per (seed, model) → AL
    retrains per (seed, query set), the last planned once the evaluation they rank by is done."""

    def __init__(self, runner: Runner, root: Path):
        self.r, self.root = runner, Path(root)
        self.prefix = runner.dir.resolve().relative_to(self.root.resolve()).as_posix()
        self.name = f"values/{self.prefix}"
        self.protocol = {k: runner.config[k] for k in ("dataset", "train", "seeding")}

    def _name(self, path: Path) -> str:
        return path.parent.resolve().relative_to(self.root.resolve()).as_posix()

    def context(self):
        return (self.r.spec, self.r._loaded)

    def jobs(self) -> list[Job]:
        r, sp = self.r, self.r.spec
        tag = self.prefix
        nets = sorted({(s, kind, k) for s in sp.seeds for m in r.eval_models() for kind, k in nets_needed(m, r.tc)},
                      key=lambda x: (_NET_ORDER[x[1]], x[0], x[2]))
        jobs = [Job(self._name(r.net_path(s, kind, k)), "train", values_job,
                    {"protocol": self.protocol, "job": "train", "seed": s, "net": kind, "k": k},
                    label=f"{tag} seed{s} train {kind}{k}", outputs=("net.pt",)) for s, kind, k in nets]
        evals = {}
        for s in sp.seeds:
            for m in r.eval_models():
                deps = tuple(self._name(r.net_path(s, kind, k)) for kind, k in nets_needed(m, r.tc))
                evals[(s, m)] = Job(self._name(r.eval_paths(s, m)[0]), "eval", values_job,
                                    {"protocol": self.protocol, "job": "eval", "seed": s, "model": m}, deps=deps,
                                    label=f"{tag} seed{s} evaluate {m}", outputs=("eval.csv", "eval.npz"))
        jobs += list(evals.values())
        if r.want_al():   # query sets come from the evaluations' pool scores: planned once a seed's exist
            al = {}
            for s in sp.seeds:
                if any(job_state(self.root, evals[(s, m)].name).status != "done" for m in sp.models):
                    continue
                for m in sp.models:
                    learner = m if r.al_learner == "pm" else "softmax"
                    arr = {k: v for k, v in _read_piece(r.eval_paths(s, m)[1], _load_npz).items()
                           if k.startswith("score/pool/")}
                    for _, _, q in r._al_plan(s, m, arr):
                        key = r._al_key(learner, q)   # the set decides the key; the ranking order is the
                        name = self._name(r.al_path(s, key))   # training order (the last model's wins)
                        al[name] = Job(name, "al", values_job,
                                       {"protocol": self.protocol, "job": "al", "seed": s, "learner": learner,
                                        "queried": [int(i) for i in q]},
                                       label=f"{tag} seed{s} AL retrain {learner} {key[:6]}", outputs=("al.json",))
            jobs += list(al.values())
        return jobs

    def finish(self, result) -> None:
        self.r.finish()


def values_job(context, run: JobRun):
    """Study job function (any process): train one net, evaluate one model or retrain for one query set."""
    spec, loaded = context
    r = Runner(spec, progress=None, log=lambda *a: None, _worker_data=loaded)
    c = run.config
    if c["job"] == "train":
        r.job_train(c["seed"], c["net"], c["k"])
    elif c["job"] == "eval":
        r.job_eval(c["seed"], c["model"])
    elif c["job"] == "al":
        r.job_al(c["seed"], c["learner"], c["queried"])
    else:  # pragma: no cover - the domain declares only these
        raise ValueError(f"unknown values job {c['job']!r}")
