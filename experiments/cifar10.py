"""Classification AL benchmark (thesis ch. 5 / app. A): realistic evaluation on CIFAR-style data.

Example (offline default, ~15 min on 2 CPU cores):

    python -m experiments.cifar10 --regime low --dataset fashion_mnist --method random entropy badge --seeds 1

For every method and seed one run directory is written under
``OUT/<dataset>/<regime>/<paradigm>/<method>/seed<k>/`` (resolved config, one JSON line per cycle);
``OUT/<dataset>/<regime>/<paradigm>/`` gets ``curves.png`` (test accuracy vs budget, mean ± std over
seeds), ``table.md``/``table.csv`` (AUBC and final metric per method) and, with ≥ 2 methods and
≥ 2 seeds, ``ppm.png`` (pairwise penalty matrix).  Interrupted?  Rerun with ``--resume``.

Every training recipe comes from the dataset's entry in ``classification.datasets`` (Tables A.5,
A.7, A.8, A.9); ``--dry-run`` prints the fully resolved configuration and exits.  Ablations:
``--query-size``/``--rounds`` (the Low-label query-size ablation, A.5.2), ``--head linear`` (Table
A.6), ``--retune-at`` (the HP dip study, Table A.26), ``--imbalance`` (Fig. A.5), ``--beta``.
A directory made with different flags is a different run: use another ``--out``.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from core import query, report, validate
from core.errors import UserError
from core.store import clean_temp, exclusive, find_runs, load_run
from experiments.common import (Parser, Progress, add_common_args, choice, dir_arg, int_arg, main_guard, out_arg,
                                positive_float, positive_int, print_dry_run, resolve_device, seed_list)

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
                   help="roll-out/folder data: side length the images are resized to (default: 224 thesis, 64 laptop, 32 smoke)")
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
    add_common_args(p, "runs/classification")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from classification.experiment import Retune, describe, prepare, run_one
    seeds = seed_list(args.seed_offset, args.seeds)
    setting, base_cfg, overrides = resolve(args)
    preset = setting.preset
    methods = list(dict.fromkeys(args.method))
    root = (Path(args.out) / args.dataset.replace("folder:", "folder_").replace("/", "_")
            / (args.regime + variant_tag(args)) / args.paradigm)
    cache_dir = Path(args.cache_dir or Path(args.out) / ".cache")
    extra0 = {"overrides": overrides} if overrides else {}
    # resolved without reading any image: every impossible combination fails here, before any work
    plan = describe(setting, base_cfg, methods, seeds, args.beta, extra0, args.retune_at or ())
    if args.dry_run:
        return print_dry_run({**plan, "tune": args.tune, "out": str(root), "device": args.device})
    device = resolve_device(args.device)

    with Progress(args.quiet) as pr:
        total = None
        for seed in seeds:
            prep = prepare(setting, seed)
            reg = prep.regime
            if total is None:
                total = pr.task(f"{args.dataset}/{args.regime}: {len(methods)} methods x {len(seeds)} seeds",
                                len(methods) * len(seeds) * reg.rounds, lines=True)
            cfg, extra, ckpt = base_cfg, dict(extra0), None
            if args.paradigm == "selfsl":
                from classification.selfsl import pretrain_config, pretrain_splits
                ckpt = pretrain_splits(prep.splits, pretrain_config(args.dataset, preset.name), seed, device,
                                       cache_dir / "simclr", images=prep.pool_data.images, progress=pr.log)
                extra["pretrained"] = {k: ckpt.get(k) for k in ("tag", "seed", "n_images", "arch", "config", "knn_history")}
            if args.tune:
                from classification.experiment import fit_fn_for, train_seed
                from classification.tuning import apply_params, tune
                fit_fn = fit_fn_for(prep, prep.start_ids, train_seed(seed, 0), device, ckpt)
                params, best_path = tune(args.paradigm, fit_fn, cfg, root / "tuning" / f"seed{seed}",
                                         key={"dataset": args.dataset, "regime": args.regime, "seed": seed,
                                              "preset": preset.name}, seed=seed, progress=pr.log)
                cfg = apply_params(cfg, params)
                extra["tuned"] = {"params": params, "study": str(best_path)}
                pr.log(f"seed {seed}: tuned {params} (study: {best_path})")
            cache: dict = {}
            for m in methods:
                desc = f"{m} seed {seed}"

                def progress(msg, _d=desc):
                    if "training" in msg:
                        pr.advance(total, 0, f"{_d}: {msg}")

                retune = (Retune(tuple(args.retune_at), root / "tuning" / f"seed{seed}" / "retune" / m)
                          if args.retune_at else None)
                records = run_one(prep, m, cfg, root / m / f"seed{seed}", resume=args.resume, device=device,
                                  beta=args.beta, round0_cache=cache, progress=progress, pretrained=ckpt,
                                  extra_config=extra, retune=retune)
                pr.advance(total, reg.rounds)
                pr.log(f"{m} seed {seed}: final {prep.splits.metric} {records[-1]['metrics'][prep.splits.metric]:.4f} "
                       f"at budget {records[-1]['budget']}")
    # the tables cover every run of this setting under --out (also those another process wrote into it)
    with exclusive(root / ".table.lock", f"the tables in {root}", wait=True):
        clean_temp(root)  # tables of a killed report
        runs = setting_runs(root, {"experiment": "classification", "dataset": prep.splits.name,
                                   "paradigm": args.paradigm, "preset": preset.name, "metric": prep.splits.metric},
                            args.regime, prep.splits.metric)
        metric = "balanced accuracy" if prep.splits.metric == "balanced_accuracy" else "test accuracy"
        report.plot_curves(runs, root / "curves.png", ylabel=metric)
        md = report.write_table(report.summary_rows(runs), root / "table.md", metric=metric)
        with_ppm = len({r["method"] for r in runs}) >= 2 and len({r["seed"] for r in runs}) >= 2
        notes = []
        if with_ppm:
            ppm = report.ppm_from_runs(runs)
            report.plot_ppm(ppm, root / "ppm.png")
            notes = ppm.notes
    print(md)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {root / 'curves.png'}, {root / 'table.md'}" + (f", {root / 'ppm.png'}" if with_ppm else ""))
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
