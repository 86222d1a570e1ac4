"""Classification AL benchmark (thesis ch. 5 / app. A): realistic evaluation on CIFAR-style data.

Example (offline default, ~8 min on 2 CPU cores: the three methods side by side after round 0):

    python -m experiments.cifar10 --regime low --dataset fashion_mnist --method random entropy badge --seeds 1 --preset laptop --workers 3

For every method and seed one run directory is written under
``OUT/classification/<dataset>/<regime>/<paradigm>/<method>/seed<k>/`` (resolved config, one JSON line
per cycle); the setting folder ``OUT/classification/<dataset>/<regime>/<paradigm>/`` gets ``curves.png``
(test accuracy vs budget, mean ± std over seeds), ``table.md``/``table.csv`` (AUBC and final metric per
method), ``summary.json`` and, with ≥ 2 methods and ≥ 2 seeds, ``ppm.png`` (pairwise penalty matrix);
shared per-seed stages live beside the methods (``simclr/seed<k>``, ``tuning/seed<k>``, and
``round0/seed<k>``: the round-0 model on the starting budget, trained once and loaded by every
method's run — ``round0-dropout0.5/seed<k>`` for BALD's dropout head).  The runs are
study jobs (``core.study``): ``--executor ray --workers N`` or ``--executor slurm`` runs them in
parallel with the same numbers; finished jobs are never recomputed.  Interrupted?  Rerun with
``--resume``; ``python -m experiments.study status OUT`` lists what is done.

Every training recipe comes from the dataset's entry in ``classification.datasets`` (Tables A.5,
A.7, A.8, A.9); ``--dry-run`` prints the fully resolved configuration and exits.  Ablations:
``--query-size``/``--rounds`` (the Low-label query-size ablation, A.5.2), ``--head linear`` (Table
A.6), ``--retune-at`` (the HP dip study, Table A.26), ``--imbalance`` (Fig. A.5), ``--beta``.
A directory made with different flags is a different run: use another ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from core import query, validate
from core.errors import UserError
from core.store import clean_temp, exclusive, find_runs, load_run
from experiments.common import (Parser, add_common_args, add_executor_args, choice, dir_arg, int_arg, main_guard,
                                out_arg, positive_float, positive_int, print_dry_run, resolve_device, seed_list)

DEFAULT_METHODS = ("random", "entropy", "badge")


def dataset_type(value: str) -> str:
    from classification import datasets
    if value in datasets.names():
        return value
    if value.startswith("folder:") and len(value) > 7:
        # one spelling per folder (folder:PATH/ and folder:PATH are the same run and the same image cache)
        path = os.path.normpath(value.split(":", 1)[1])
        try:
            validate.input_dir(path, "folder dataset")
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return f"folder:{path}"
    raise argparse.ArgumentTypeError(f"unknown dataset {value!r}; valid: {', '.join(datasets.names())}, folder:PATH")


def build_parser() -> Parser:
    from classification.paradigms import NAMES as PARADIGMS
    from classification.regimes import REGIMES
    from classification import query as _registers  # noqa: F401
    methods = query.names("classification")
    from classification.datasets import recipe_table
    p = Parser(prog="python -m experiments.cifar10", description=__doc__,
               epilog="Training recipes of the thesis preset (the laptop/smoke presets keep these HPs and shrink "
                      "epochs, width and batch size; unlisted values are the paradigm's defaults — see --dry-run):\n"
                      + recipe_table())
    p.add_argument("--regime", type=choice(REGIMES, "regime"), default="low",
                   help="label regime of Table A.4: starting budget = query size = 5C / 25C / 100C, "
                        "10 rounds, validation subset 5x the starting budget (default: low)")
    p.add_argument("--dataset", type=dataset_type, default="fashion_mnist",
                   help="fashion_mnist (offline default, Debian package dataset-fashion-mnist), "
                        "fashion_mnist_lt, cifar10, cifar10_lt (rho=50), cifar100, the roll-out sets isic2019 "
                        "(ISIC_2019_Training_GroundTruth.csv + ISIC_2019_Training_Input/) and miotcd (class "
                        "folders), or folder:PATH (ImageFolder layout, your own data) (default: fashion_mnist)")
    p.add_argument("--method", nargs="+", type=choice(methods, "method"), default=list(DEFAULT_METHODS),
                   metavar="M", help=f"query methods, any of: {', '.join(methods)} (default: {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--paradigm", type=choice(PARADIGMS, "paradigm"), default="supervised",
                   help="supervised (ResNet-18 from scratch), selfsl (SimCLR pre-training with lightly, cached "
                        "per dataset and seed, then fine-tuning with an MLP head) or fixmatch (semi-supervised; "
                        "query size 3x the start, 4 rounds) (default: supervised)")
    p.add_argument("--tune", action="store_true",
                   help="tune lr x weight decay (x augmentation) with Optuna on the starting budget and the "
                        "validation subset once per seed (grids of A.4); the best trial is stored and used by "
                        "every cycle and method; an interrupted study resumes")
    p.add_argument("--image-size", type=int_arg(8, 4096), default=None, metavar="PX",
                   help="roll-out/folder data: side length the images are resized to (default: 224 thesis, 32 laptop and smoke)")
    p.add_argument("--cache-dir", type=out_arg, default=None, metavar="DIR",
                   help="SimCLR checkpoints and decoded roll-out images (default: OUT/.cache)")
    p.add_argument("--imbalance", type=choice(("oversample", "weighted_ce"), "imbalance handling"), default=None,
                   help="imbalanced data only (cifar10_lt, isic2019, miotcd, folder:PATH): class-balanced "
                        "oversampling or weighted cross-entropy with sklearn 'balanced' weights (default: the "
                        "paradigm's recipe — oversampling for supervised/selfsl, Tables A.7/A.8; weighted CE for "
                        "fixmatch, Table A.9); an explicit value is recorded in the run config under 'overrides'")
    g = p.add_argument_group("ablations (thesis app. A)")
    g.add_argument("--query-size", type=positive_int("--query-size"), default=None, metavar="N",
                   help="labels per query, independent of the starting budget (Low-label query-size ablation, "
                        "A.5.2: cifar100 50/500/2000, isic2019 10/40/160); without --rounds the regime's final "
                        "budget is kept (as many whole queries as fit)")
    g.add_argument("--rounds", type=positive_int("--rounds", 2), default=None, metavar="R",
                   help="training rounds including the starting one (default: the regime's, Table A.4; A.5.2 "
                        "uses 21 / 10 / 3 for the three query sizes)")
    g.add_argument("--head", type=choice(("mlp", "linear"), "head"), default=None,
                   help="selfsl only: the classification head, 2-layer MLP (thesis) or linear (Table A.6 ablation)")
    g.add_argument("--retune-at", type=positive_int("--retune-at"), nargs="+", default=None, metavar="B",
                   help="re-tune lr x weight decay (Table A.26 grid) when the labelled budget first reaches each B "
                        "(the HP dip study, A.8.1: isic2019 high 7200, miotcd high 7700); the winner trains that "
                        "cycle and the later ones; studies under OUT/.../tuning/seedK/retune/METHOD/")
    g.add_argument("--beta", type=positive_float("--beta"), default=1.0, metavar="B",
                   help="β of the power_* / softrank_* methods (Gumbel noise of scale 1/β; default 1.0, recorded "
                        "in every run config)")
    p.add_argument("--data-dir", type=dir_arg, metavar="DIR", default=None,
                   help="where the data lives: CIFAR as torchvision's python version (DIR/cifar-10-batches-py/); "
                        "Fashion-MNIST *-ubyte(.gz) files (default: the Debian package path)")
    p.add_argument("--download", action="store_true", help="download CIFAR into --data-dir (needs internet)")
    add_common_args(p, "runs")
    add_executor_args(p)
    return p


def resolve(args):
    """(setting, base training config, overrides) of the parsed flags; one-line errors for
    combinations that cannot work."""
    from classification import datasets
    from classification.experiment import Setting
    from classification.paradigms import train_config
    from classification.presets import PRESETS
    preset = PRESETS[args.preset]
    info = datasets.get(args.dataset)
    base_cfg = train_config(args.paradigm, args.dataset, preset, args.regime)
    overrides = {}
    if args.imbalance is not None:
        if not info.imbalanced:
            raise UserError(f"--imbalance applies to imbalanced data (cifar10_lt, fashion_mnist_lt, isic2019, miotcd, "
                            f"folder:PATH); {args.dataset} is balanced")
        overrides["imbalance"] = args.imbalance
        base_cfg = replace(base_cfg, imbalance=args.imbalance)
    if args.head is not None:
        if args.paradigm != "selfsl":
            raise UserError(f"--head chooses the Self-SL classification head (Table A.6); it needs --paradigm selfsl, "
                            f"not {args.paradigm}")
        overrides["head"] = args.head
        base_cfg = replace(base_cfg, head=args.head)
    for flag in ("query_size", "rounds"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if args.paradigm == "fixmatch" and (args.query_size is not None or args.rounds is not None):
        overrides["note"] = "FixMatch's own schedule (query size 3x start, 4 rounds) is replaced"
    cache_dir = Path(args.cache_dir or Path(args.out) / ".cache")
    setting = Setting(args.dataset, args.regime, args.paradigm, preset, args.data_dir, args.download, args.image_size,
                      str(cache_dir / "images"), query_size=args.query_size, rounds=args.rounds)
    return setting, base_cfg, overrides


def variant_tag(args) -> str:
    """Suffix of the regime directory for an ablation run (``low-qs50-r21``, ``high-retune7200``, ...), so
    ablations never collide with the main runs; empty for the thesis protocol."""
    parts = [f"qs{args.query_size}" if args.query_size else "", f"r{args.rounds}" if args.rounds else "",
             f"head-{args.head}" if args.head else "", f"imb-{args.imbalance}" if args.imbalance else "",
             "retune" + "_".join(str(b) for b in sorted(set(args.retune_at))) if args.retune_at else "",
             f"beta{args.beta:g}" if args.beta != 1.0 else ""]
    return "".join(f"-{x}" for x in parts if x)


DOMAIN = "classification"


def setting_dir(args) -> str:
    """``<dataset>/<regime + ablation tag>/<paradigm>``: the setting's folder below ``OUT/classification``."""
    return (f"{args.dataset.replace('folder:', 'folder_').replace('/', '_')}/{args.regime + variant_tag(args)}/"
            f"{args.paradigm}")


# ============================================================================== jobs (run in any process)
# The round-0 model (the starting budget: the same for every method of a seed) is a job of its own per
# (setting, seed, round-0 training config) — ``<setting>/round0/seed<k>`` (``round0-dropout0.5`` for
# BALD's dropout head) — that every method's run loads, under any executor.  Only where round 0 itself
# is re-tuned (--retune-at at the starting budget) each run trains it, shared per process as before.
# Data are kept per process: the jobs of a seed that run in one process load them once.
_PREPARED: dict = {}
_ROUND0: dict = {}
_CHECKED: set = set()   # datasets the driver has read once (their files are valid)


def _prepared(setting, seed: int):
    from classification.experiment import prepare
    key = (repr(setting), seed)
    if key not in _PREPARED:
        if len(_PREPARED) >= 2:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[key] = prepare(setting, seed)
    return _PREPARED[key]


def _round0_cache(setting, seed: int) -> dict:
    """The round-0 models of one (setting, seed) (``ClassificationRun``'s cache); older seeds are dropped."""
    key = (repr(setting), seed)
    if key not in _ROUND0:
        _ROUND0.clear()
        _ROUND0[key] = {}
    return _ROUND0[key]


def _pretrained(ctx: dict, prep, seed: int) -> dict:
    """The seed's SimCLR checkpoint (trained by its job; from the cache here)."""
    from classification.selfsl import pretrain_config, pretrain_splits
    return pretrain_splits(prep.splits, pretrain_config(ctx["setting"].dataset, ctx["setting"].preset.name), seed,
                           ctx["device"], ctx["cache_dir"] / "simclr", images=prep.pool_data.images)


def _pretrained_meta(ckpt: dict) -> dict:
    return {k: ckpt.get(k) for k in ("tag", "seed", "n_images", "arch", "config", "knn_history")}


def simclr_job(ctx: dict, run) -> dict:
    """Shared stage: SimCLR pre-training of one seed (cached by dataset, seed, config and images)."""
    seed = int(run.config["seed"])
    meta = _pretrained_meta(_pretrained(ctx, _prepared(ctx["setting"], seed), seed))
    from core.store import atomic_write_json
    atomic_write_json(run.dir / "pretrained.json", meta)
    return {"tag": meta["tag"], "n_images": meta["n_images"]}


def tuning_job(ctx: dict, run) -> dict:
    """Shared stage: Optuna grid of lr × weight decay (× augmentation) on the starting budget of one seed."""
    from classification.experiment import fit_fn_for, train_seed
    from classification.tuning import tune
    s, seed = ctx["setting"], int(run.config["seed"])
    prep = _prepared(s, seed)
    ckpt = _pretrained(ctx, prep, seed) if s.paradigm == "selfsl" else None
    fit_fn = fit_fn_for(prep, prep.start_ids, train_seed(seed, 0), ctx["device"], ckpt)
    params, _ = tune(s.paradigm, fit_fn, ctx["base_cfg"], run.dir,
                     key={"dataset": s.dataset, "regime": s.regime, "seed": seed, "preset": s.preset.name}, seed=seed)
    return {"params": params}


def _tuned(ctx: dict, seed: int):
    """(training config, tuning record or None): the setting's config with the seed's tuned
    hyper-parameters (--tune; written by its tuning job)."""
    from classification.tuning import apply_params
    cfg = ctx["base_cfg"]
    if not ctx["tune"]:
        return cfg, None
    best = ctx["root"] / ctx["prefix"] / "tuning" / f"seed{seed}" / "best.json"
    try:
        params = json.loads(best.read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{best} is missing or damaged; rerun with --resume to tune again") from None
    return apply_params(cfg, params), {"params": params, "study": str(best)}


def method_dropout(method: str, base_dropout: float) -> float:
    """The dropout a method's model trains with (BALD's head: 0.5): its round-0 model's one difference."""
    from classification import query as _registers  # noqa: F401  (the classification methods)
    return float(query.get("classification", method).model.get("dropout", base_dropout))


def round0_name(prefix: str, seed: int, dropout: float, base_dropout: float) -> str:
    """The round-0 job of a seed (one per round-0 training config: the dropout of the method's head)."""
    tag = "round0" if dropout == float(base_dropout) else f"round0-dropout{dropout:g}"
    return f"{prefix}/{tag}/seed{seed}"


def round0_job(ctx: dict, run) -> dict:
    """Shared stage: the round-0 model of one seed (the paradigm's training on the starting budget, after
    SimCLR / tuning), trained once and saved for every method whose round-0 training config it is."""
    from classification.experiment import train_round0
    import torch
    s, seed = ctx["setting"], int(run.config["seed"])
    prep = _prepared(s, seed)
    cfg, _ = _tuned(ctx, seed)
    cfg = replace(cfg, dropout=float(run.config["dropout"]))
    ckpt = _pretrained(ctx, prep, seed) if s.paradigm == "selfsl" else None
    meta = train_round0(prep, cfg, run.dir, ctx["device"], ckpt, extra={"threads": torch.get_num_threads()})
    return {prep.splits.metric: meta["metrics"][prep.splits.metric], "budget": meta["budget"]}


def run_job(ctx: dict, run) -> dict:
    """One (method, seed) AL run, resumable from its last committed cycle; round 0 is loaded from the
    seed's round-0 job (a dependency) unless round 0 is re-tuned."""
    from classification.experiment import Retune, run_one
    s, seed, m = ctx["setting"], int(run.config["seed"]), run.config["method"]
    prep = _prepared(s, seed)
    extra, ckpt = dict(ctx["extra"]), None
    import torch
    extra["threads"] = torch.get_num_threads()   # the job's count (core.threads policy, applied by the study layer)
    if s.paradigm == "selfsl":
        ckpt = _pretrained(ctx, prep, seed)
        extra["pretrained"] = _pretrained_meta(ckpt)
    cfg, tuned = _tuned(ctx, seed)
    if tuned is not None:
        extra["tuned"] = tuned
    tuning = ctx["root"] / ctx["prefix"] / "tuning" / f"seed{seed}"
    retune = Retune(tuple(ctx["retune_at"]), tuning / "retune" / m) if ctx["retune_at"] else None
    round0 = None
    if ctx["round0"]:
        base = float(ctx["base_cfg"].dropout)
        name = round0_name(ctx["prefix"], seed, method_dropout(m, base), base)
        round0 = run.deps[name]   # a dependency: done before this job starts
    records = run_one(prep, m, cfg, run.dir, resume=True, device=ctx["device"], beta=ctx["beta"],
                      round0_cache=_round0_cache(s, seed), pretrained=ckpt, extra_config=extra, retune=retune,
                      on_start=run.resumed, on_cycle=run.on_cycle, round0=round0)
    return {"final": records[-1]["metrics"][prep.splits.metric], "budget": records[-1]["budget"]}


# ============================================================================== the domain (driver side)
class ClassificationDomain:
    """One classification setting (dataset × regime × paradigm, with its ablation flags) as study jobs:
    per seed SimCLR pre-training (selfsl) and Optuna tuning (--tune), then one AL run per (method, seed);
    ``finish`` writes the setting's curves.png, table.md/.csv, ppm.png and summary.json."""

    def __init__(self, args, root: Path, plan: dict, setting, base_cfg, overrides: dict, device: str):
        self.root = Path(root)
        self.prefix = f"{DOMAIN}/{setting_dir(args)}"
        self.setting, self.base_cfg, self.device = setting, base_cfg, device
        self.methods = list(dict.fromkeys(args.method))
        self.seeds = seed_list(args.seed_offset, args.seeds)
        self.tune, self.retune_at, self.beta = bool(args.tune), list(args.retune_at or ()), args.beta
        self.extra = {"overrides": overrides} if overrides else {}
        self.cache_dir = Path(args.cache_dir or Path(args.out) / ".cache")
        self.rounds = int(plan["regime"]["rounds"])
        # round 0 as one job per seed (and round-0 config), unless --retune-at re-tunes round 0 itself
        self.round0 = not any(int(b) <= int(plan["regime"]["budgets"][0]) for b in self.retune_at)
        self.metric = plan["dataset_facts"]["metric"]
        self.metric_label = "bacc" if self.metric == "balanced_accuracy" else "acc"
        # what defines the numbers (the content key); where data and caches live does not
        st = setting
        self.identity = {"dataset": st.dataset, "regime": st.regime, "paradigm": st.paradigm,
                         "preset": asdict(st.preset), "image_size": st.image_size, "query_size": st.query_size,
                         "rounds": st.rounds, "train": asdict(base_cfg), "overrides": overrides}
        self.label = f"{args.dataset}/{args.regime + variant_tag(args)}" + (
            f"/{args.paradigm}" if args.paradigm != "supervised" else "")
        self.report: dict = {}

    @property
    def name(self) -> str:
        """Unique per experiment: two entries of a study may run other methods in one setting."""
        return f"{self.prefix}[{','.join(self.methods)}]"

    def context(self) -> dict:
        return {"setting": self.setting, "base_cfg": self.base_cfg, "device": self.device, "extra": self.extra,
                "cache_dir": self.cache_dir, "tune": self.tune, "retune_at": self.retune_at, "beta": self.beta,
                "root": self.root, "prefix": self.prefix, "round0": self.round0}

    def run_name(self, method: str, seed: int) -> str:
        return f"{self.prefix}/{method}/seed{seed}"

    def jobs(self) -> list:
        from core.study import Job
        out = []
        for seed in self.seeds:   # seeds outer, methods inner: the order of the runs before the study layer
            deps: tuple = ()
            if self.setting.paradigm == "selfsl":
                from classification.selfsl import pretrain_config
                name = f"{self.prefix}/simclr/seed{seed}"
                out.append(Job(name, "pretrain", simclr_job,
                               {"setting": self.identity, "seed": seed,
                                "simclr": asdict(pretrain_config(self.setting.dataset, self.setting.preset.name))},
                               label=f"{self.label} SimCLR seed{seed}", outputs=("pretrained.json",)))
                deps += (name,)
            if self.tune:
                name = f"{self.prefix}/tuning/seed{seed}"
                out.append(Job(name, "tune", tuning_job, {"setting": self.identity, "seed": seed}, deps=deps,
                               label=f"{self.label} tuning seed{seed}", outputs=("best.json",)))
                deps += (name,)
            round0: dict = {}   # dropout -> job name (one round-0 model per training config)
            if self.round0:
                from classification.experiment import ROUND0_META, ROUND0_WEIGHTS
                base = float(self.base_cfg.dropout)
                for p in dict.fromkeys(method_dropout(m, base) for m in self.methods):
                    round0[p] = name = round0_name(self.prefix, seed, p, base)
                    out.append(Job(name, "round0", round0_job,
                                   {"setting": self.identity, "seed": seed, "dropout": p, "tune": self.tune},
                                   deps=deps, label=f"{self.label} round 0" + (f" (dropout {p:g})" if p != base else "")
                                   + f" seed{seed}", outputs=(ROUND0_WEIGHTS, ROUND0_META), shared=True,
                                   metric=self.metric, metric_label=self.metric_label))
            for m in self.methods:
                # the round-0 job orders the run but stays out of its key: it only spares the run the
                # training of the same model (finished runs of before it stay valid)
                r0 = (round0[method_dropout(m, float(self.base_cfg.dropout))],) if round0 else ()
                out.append(Job(self.run_name(m, seed), "run", run_job,
                               {"setting": self.identity, "method": m, "seed": seed, "beta": self.beta,
                                "tune": self.tune, "retune_at": self.retune_at}, deps=deps + r0, unkeyed=r0,
                               units=self.rounds, metric=self.metric,
                               metric_label=self.metric_label, label=f"{self.label}/{m} seed{seed}",
                               outputs=("DONE",)))
        return out

    def finish(self, result) -> None:
        """Tables and figures of every run of this setting under --out (also those another process wrote)."""
        from core import report
        from core.store import atomic_write_json
        root = self.root / self.prefix
        cfg, _ = load_run(self.root / self.run_name(self.methods[0], self.seeds[0]))
        with exclusive(root / ".table.lock", f"the tables in {root}", wait=True):
            clean_temp(root)  # tables of a killed report
            runs = setting_runs(root, {"experiment": "classification", "dataset": cfg["dataset"],
                                       "paradigm": self.setting.paradigm, "preset": self.setting.preset.name,
                                       "metric": cfg["metric"]}, self.setting.regime, cfg["metric"])
            metric = "balanced accuracy" if cfg["metric"] == "balanced_accuracy" else "test accuracy"
            report.plot_curves(runs, root / "curves.png", ylabel=metric)
            rows = report.summary_rows(runs)
            md = report.write_table(rows, root / "table.md", metric=metric)
            with_ppm = len({r["method"] for r in runs}) >= 2 and len({r["seed"] for r in runs}) >= 2
            summary = {"domain": DOMAIN, "setting": setting_dir_of(self.prefix), "dataset": cfg["dataset"],
                       "regime": self.setting.regime, "paradigm": self.setting.paradigm,
                       "preset": self.setting.preset.name, "metric": cfg["metric"], "rows": rows}
            notes = []
            if with_ppm:
                ppm = report.ppm_from_runs(runs)
                report.plot_ppm(ppm, root / "ppm.png")
                notes = ppm.notes
                summary["ppm"] = {"methods": ppm.methods, "wins": ppm.wins.tolist(), "max_value": ppm.max_value}
            atomic_write_json(root / "summary.json", summary)
        self.report = {"md": md, "notes": notes, "files": ["curves.png", "table.md", "table.csv"]
                       + (["ppm.png"] if with_ppm else []) + ["summary.json"], "dir": root}


def setting_dir_of(prefix: str) -> str:
    return prefix.split("/", 1)[1]


def domains(args, root: Path) -> list:
    """The flags as study domains (``python -m experiments.study``): one per setting."""
    from classification.experiment import describe
    seeds = seed_list(args.seed_offset, args.seeds)
    setting, base_cfg, overrides = resolve(args)
    methods = list(dict.fromkeys(args.method))
    # resolved without reading any image: every impossible combination fails here, before any work
    plan = describe(setting, base_cfg, methods, seeds, args.beta, {"overrides": overrides} if overrides else {},
                    args.retune_at or ())
    dom = ClassificationDomain(args, root, plan, setting, base_cfg, overrides, resolve_device(args.device))
    # the first seed's data in the driver: a broken data folder is one line (exit 2) before any job, and
    # the serial executor's jobs reuse what is loaded here (not needed when every run is finished)
    checked = (args.dataset, args.data_dir, args.preset, args.image_size)
    if checked not in _CHECKED and not all((Path(root) / j.name / ".job" / "done.json").exists() for j in dom.jobs()):
        _prepared(setting, seeds[0])
        _CHECKED.add(checked)   # once per dataset: a study file's other settings read the same files
    return [dom]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from classification.experiment import describe
    out = Path(args.out)
    if args.dry_run:
        seeds = seed_list(args.seed_offset, args.seeds)
        setting, base_cfg, overrides = resolve(args)
        plan = describe(setting, base_cfg, list(dict.fromkeys(args.method)), seeds, args.beta,
                        {"overrides": overrides} if overrides else {}, args.retune_at or ())
        return print_dry_run({**plan, "tune": args.tune, "out": str(out / DOMAIN / setting_dir(args)),
                              "device": args.device})
    from experiments.study import run_domains
    doms = domains(args, out)
    run_domains(doms, args, out, lock="jobs")
    for d in doms:
        rep = d.report
        print(rep["md"])
        for note in rep["notes"]:
            print(f"note: {note}")
        print(f"wrote {', '.join(str(rep['dir'] / f) for f in rep['files'])}")
    return 0


def setting_runs(root: Path, match: dict, regime: str, metric: str) -> list[dict]:
    """One budget curve of ``metric`` per run directory of the setting found below ``root``."""
    runs = []
    for run_dir, cfg in find_runs(root, match):
        if (cfg.get("regime") or {}).get("name") != regime:
            continue
        _, records = load_run(run_dir)
        if records:
            runs.append({"method": cfg["method"], "seed": cfg["seed"], "setting": f"{match['dataset']}/{regime}",
                         "budgets": [r["budget"] for r in records], "values": [r["metrics"][metric] for r in records]})
    return runs


if __name__ == "__main__":
    main_guard(main)
