"""Classification AL benchmark (thesis ch. 5 / app. A): realistic evaluation on CIFAR-style data.

Example (offline default, ~15 min on 2 CPU cores):

    python -m experiments.cifar10 --regime low --dataset fashion_mnist --method random entropy badge --seeds 1

For every method and seed one run directory is written under
``OUT/<dataset>/<regime>/<paradigm>/<method>/seed<k>/`` (resolved config, one JSON line per cycle);
``OUT/<dataset>/<regime>/<paradigm>/`` gets ``curves.png`` (test accuracy vs budget, mean ± std over
seeds), ``table.md``/``table.csv`` (AUBC and final metric per method) and, with ≥ 2 methods and
≥ 2 seeds, ``ppm.png`` (pairwise penalty matrix).  Interrupted?  Rerun with ``--resume``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from core import query as Q
from core import report
from core.errors import UserError
from experiments.common import Parser, Progress, add_common_args, choice, main_guard, resolve_device

DEFAULT_METHODS = ("random", "entropy", "badge")
PARADIGMS = ("supervised",)


def build_parser() -> Parser:
    from classification.data import DATASETS
    from classification.regimes import REGIMES
    methods = Q.names("classification")
    p = Parser(prog="python -m experiments.cifar10", description=__doc__)
    p.add_argument("--regime", type=choice(REGIMES, "regime"), default="low",
                   help="label regime of Table A.4: starting budget = query size = 5C / 25C / 100C, "
                        "10 rounds, validation subset 5x the starting budget (default: low)")
    p.add_argument("--dataset", type=choice(DATASETS, "dataset"), default="fashion_mnist",
                   help="fashion_mnist (offline default, Debian package dataset-fashion-mnist), "
                        "fashion_mnist_lt, cifar10, cifar10_lt (rho=50), cifar100 (default: fashion_mnist)")
    p.add_argument("--method", nargs="+", type=choice(methods, "method"), default=list(DEFAULT_METHODS),
                   metavar="M", help=f"query methods, any of: {', '.join(methods)} (default: {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--paradigm", type=choice(PARADIGMS, "paradigm"), default="supervised",
                   help="training paradigm (default: supervised)")
    p.add_argument("--imbalance", type=choice(("oversample", "weighted_ce"), "imbalance handling"), default="oversample",
                   help="long-tailed data only: class-balanced oversampling (thesis main setting for ST) or "
                        "weighted cross-entropy with sklearn 'balanced' weights (default: oversample)")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="where the data lives: CIFAR as torchvision's python version (DIR/cifar-10-batches-py/); "
                        "Fashion-MNIST *-ubyte(.gz) files (default: the Debian package path)")
    p.add_argument("--download", action="store_true", help="download CIFAR into --data-dir (needs internet)")
    add_common_args(p, "runs/classification")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from classification.experiment import prepare, run_one
    from classification.presets import PRESETS
    from classification.regimes import regime as get_regime

    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = resolve_device(args.device)
    preset = PRESETS[args.preset]
    train_cfg = replace(preset.train, imbalance=args.imbalance)
    reg = get_regime(args.dataset, args.regime, args.paradigm)
    if preset.max_rounds is not None and reg.rounds > preset.max_rounds:
        reg = replace(reg, rounds=preset.max_rounds)
    if args.seeds < 1:
        raise UserError("--seeds must be >= 1")
    methods = list(dict.fromkeys(args.method))
    seeds = [args.seed_offset + k for k in range(args.seeds)]
    root = Path(args.out) / args.dataset / args.regime / args.paradigm

    runs = []
    with Progress(args.quiet) as pr:
        total = pr.task(f"{args.dataset}/{args.regime}: {len(methods)} methods x {len(seeds)} seeds", len(methods) * len(seeds) * reg.rounds)
        for seed in seeds:
            prep = prepare(args.dataset, reg, preset, seed, args.data_dir, args.download)
            cache: dict = {}
            for m in methods:
                desc = f"{m} seed {seed}"

                def progress(msg, _d=desc):
                    if "training" in msg:
                        pr.advance(total, 0, f"{_d}: {msg}")

                records = run_one(prep, m, args.paradigm, preset, train_cfg, root / m / f"seed{seed}",
                                  args.resume, device, cache, progress)
                pr.advance(total, reg.rounds)
                runs.append({"method": m, "seed": seed, "setting": f"{args.dataset}/{args.regime}",
                             "budgets": [r["budget"] for r in records],
                             "values": [r["metrics"][prep.splits.metric] for r in records]})
                pr.log(f"{m} seed {seed}: final {prep.splits.metric} {runs[-1]['values'][-1]:.4f} at budget {runs[-1]['budgets'][-1]}")
    metric = "balanced accuracy" if prep.splits.metric == "balanced_accuracy" else "test accuracy"
    report.plot_curves(runs, root / "curves.png", ylabel=metric)
    md = report.write_table(report.summary_rows(runs), root / "table.md", metric=metric)
    print(md)
    if len(methods) >= 2 and len(seeds) >= 2:
        report.plot_ppm(report.ppm_from_runs(runs), root / "ppm.png")
    print(f"wrote {root / 'curves.png'}, {root / 'table.md'}" + (f", {root / 'ppm.png'}" if len(methods) >= 2 and len(seeds) >= 2 else ""))
    return 0


if __name__ == "__main__":
    main_guard(main)
