"""ValUES-style uncertainty testbed (thesis chapter 6): separation study + downstream tasks.

Examples::

    python -m experiments.values --dataset toy2d --preset laptop
    python -m experiments.values --dataset toy2d --models ensemble tta --measures pe mi --tasks separation ood
    python -m experiments.values --dataset /data/Task04_Hippocampus --preset laptop --seeds 1
    python -m experiments.values --dataset toy2d --preset smoke --out /tmp/v --resume

Writes below ``--out``/``<dataset>_<preset>``: ``results.csv`` (tidy: model × measure ×
aggregation × task × metric × split × seed), ``summary.md`` (Table B.4 shape, downstream tables,
closing note on the separation findings), ``maps_iid.png`` / ``maps_ood.png`` (uncertainty maps
of every model for one case) and ``risk_coverage.png``.  Checkpoints and per-seed/per-model
results are cached, so ``--resume`` continues an interrupted run.

A dataset path must hold an MSD / nnU-Net raw layout (``dataset.json``, ``imagesTr``,
``labelsTr``); several raters per case as ``labelsTr/<case>_NN.nii.gz``; shifted (OoD) cases
listed under ``dataset.json["values"]["ood"]``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from experiments.common import Parser, Progress, add_common_args, choice, main_guard, resolve_device

from uncertainty.aggregation import AGGREGATIONS
from uncertainty.measures import MEASURES
from uncertainty.models import MODELS
from uncertainty.studies import TASKS


def build_parser() -> Parser:
    p = Parser(prog="python -m experiments.values", description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 1)[1])
    g = p.add_argument_group("testbed")
    g.add_argument("--dataset", required=True, metavar="toy2d|toy3d|PATH",
                   help="toy2d / toy3d (seeded synthetic data with 3 raters and grey/shape/border shifts) or an "
                        "MSD / nnU-Net-layout folder")
    g.add_argument("--models", nargs="+", type=choice(MODELS, "model"), default=list(MODELS), metavar="M",
                   help=f"prediction models (default: all): {', '.join(MODELS)}")
    g.add_argument("--measures", nargs="+", type=choice(MEASURES, "measure"), default=list(MEASURES), metavar="U",
                   help="uncertainty measures (default: all): msr = 1 − max softmax (softmax model only); pe, ee, mi "
                        "(sampling models; for the SSN mi is aleatoric and ee epistemic)")
    g.add_argument("--aggregations", nargs="+", type=choice(AGGREGATIONS, "aggregation"), default=list(AGGREGATIONS),
                   metavar="A", help="image (sum), patch (max of 10^D window sums), threshold (mean above λ fitted on "
                                     "validation); default: all")
    g.add_argument("--tasks", nargs="+", type=choice(TASKS, "task"), default=list(TASKS), metavar="T",
                   help=f"separation study and downstream tasks (default: all): {', '.join(TASKS)}")
    g.add_argument("--epochs", type=int, default=None, metavar="N", help="override the preset's training epochs")
    g.add_argument("--al-learner", type=choice(("pm", "backbone"), "AL learner"), default=None,
                   help="what AL retrains: the prediction model itself (pm, thesis preset) or one softmax U-Net "
                        "(backbone, laptop/smoke presets)")
    g.add_argument("--al-aggregations", nargs="+", type=choice(AGGREGATIONS, "aggregation"), default=None, metavar="A",
                   help="aggregations whose rankings are used as AL queries (each needs a retrain; default: all for "
                        "the thesis preset, patch for laptop/smoke)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes for training, evaluation and AL retrains (default: 2 on CPU, 1 on CUDA); "
                        "results do not depend on it")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads per process on CPU (default: 1 — these small nets gain nothing from "
                        "intra-op threads, and on a shared CPU threads slow them down badly)")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    add_common_args(p, default_out="runs/values")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core.errors import UserError
    if args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    for flag in ("workers", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1")
    if args.dataset not in ("toy2d", "toy3d"):
        path = Path(args.dataset)
        if not path.exists():
            raise UserError(f"unknown dataset {args.dataset!r}: not toy2d/toy3d and no such path")
    device = resolve_device(args.device)
    import torch
    threads = args.threads or (1 if device == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    workers = args.workers or (min(2, os.cpu_count() or 1) if device == "cpu" else 1)
    from uncertainty.runner import RunSpec, Runner
    spec = RunSpec(dataset=args.dataset, preset=args.preset, models=list(dict.fromkeys(args.models)),
                   measures=list(dict.fromkeys(args.measures)), aggregations=list(dict.fromkeys(args.aggregations)),
                   tasks=list(dict.fromkeys(args.tasks)),
                   seeds=[args.seed_offset + i for i in range(args.seeds)], device=device, out=Path(args.out),
                   resume=args.resume, epochs=args.epochs, al_learner=args.al_learner,
                   al_aggregations=args.al_aggregations, workers=workers, threads=threads, plots=not args.no_plots)
    t0 = time.time()
    with Progress(args.quiet) as pr:
        runner = Runner(spec, progress=pr, log=pr.log)
        pr.log(runner.data.summary())
        res = runner.run()
    md = res["summary"]
    note = md.split("## Closing note", 1)[1] if "## Closing note" in md else ""
    if not args.quiet:
        print(f"wrote {res['dir']}/results.csv ({len(res['results'])} rows), summary.md"
              + (f", {len(res.get('plots', []))} plots" if res.get("plots") else "") + f" in {(time.time() - t0) / 60:.1f} min")
        if note:
            print("Closing note" + note.rstrip())
    return 0


if __name__ == "__main__":
    main_guard(main)
