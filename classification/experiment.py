"""One classification AL experiment (dataset × regime × paradigm × method × seed) on the shared core.

``prepare(setting, seed)`` loads the seed's splits and draws the pool subset, the starting budget and
the validation subset (label strategy of spec §4.5); ``run_one(...)`` wires the domain's train /
evaluate / evidence callables into ``core.loop.ActiveLearningLoop`` with a ``core.store.RunStore``.

    prep = prepare(Setting("fashion_mnist", "low", "supervised", PRESETS["smoke"]), seed=0)
    records = run_one(prep, "badge", prep.setting.preset.train, Path("runs/x"))
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from core import query, seeds
from core.errors import UserError
from core.loop import ActiveLearningLoop
from core.metrics import accuracy, balanced_accuracy, macro_f1
from core.pool import Pool
from core.query import Evidence
from core.store import RunStore, atomic_write, atomic_write_json

from . import data as D
from . import datasets, paradigms
from . import query as _registers  # noqa: F401  (registers the classification query methods)
from .augment import augmenter
from .presets import ROLLOUT_IMAGE_SIZE, Preset, pool_size
from .regimes import Regime, regime as get_regime
from .training import FitTask, TrainConfig, embed, finish

PARADIGMS = paradigms.NAMES


@dataclass(frozen=True)
class Setting:
    """One classification setting: dataset × Label Regime × paradigm under a preset, and where the
    data lives (roll-out data: image size and decode cache)."""
    dataset: str
    regime: str
    paradigm: str
    preset: Preset
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    cache_dir: str | None = None
    query_size: int | None = None   # replaces the regime's query size (the starting budget stays)
    rounds: int | None = None       # replaces the regime's number of training rounds


VAL_CAP = 2000   # a shrunken preset decodes at most this many validation-split images of roll-out data


@dataclass(frozen=True)
class Retune:
    """Re-tune the HPs when the labelled budget first reaches each of ``budgets`` (the dip study of
    A.8.1 / Table A.26): the grid ``space`` (default: lr × weight decay of the paradigm's A.4 grid,
    as in Table A.26) is trained on the labelled set of that cycle and scored on the validation
    subset; the winner is used from that cycle on.  Studies live under ``study_dir/budget<B>``."""
    budgets: tuple
    study_dir: Path
    space: dict | None = None


@dataclass
class Prepared:
    """Everything that is fixed for one (setting, seed) and shared by all methods."""
    setting: Setting
    splits: D.Splits
    pool_data: D.ImageData        # train+pool candidates (preset subset)
    pool_source_ids: np.ndarray   # their ids in the official train split
    val_data: D.ImageData         # the regime's labelled validation subset
    test_data: D.ImageData
    start_ids: np.ndarray         # starting budget, as pool positions
    regime: Regime
    seed: int


@functools.lru_cache(maxsize=4)
def _splits(dataset: str, request: datasets.LoadRequest) -> D.Splits:
    return datasets.load(dataset, request)


def setting_regime(setting: Setting, n_classes: int | None, val_split: int | None) -> Regime:
    """The setting's Label Regime (Table A.4 / the class-count rule) with its query-size / rounds
    overrides, capped by the preset's rounds unless the rounds were set explicitly."""
    regime = get_regime(setting.dataset, setting.regime, setting.paradigm, n_classes, val_split,
                        setting.query_size, setting.rounds)
    cap = setting.preset.max_rounds
    if cap is not None and regime.rounds > cap and setting.rounds is None:
        regime = replace(regime, rounds=cap)
    return regime


def n_classes_of(setting: Setting) -> int:
    """The class count (listed from the folder for ``folder:PATH``; no image is read)."""
    info = datasets.get(setting.dataset)
    if info.n_classes is not None:
        return info.n_classes
    files, _ = info.source(setting.dataset, setting.data_dir)
    return len(files.classes)


def prepare(setting: Setting, seed: int) -> Prepared:
    """Splits, pool subset, starting budget and validation subset of one seed; the regime follows
    Table A.4 (roll-out data: the same rule from the class count), capped by the preset's rounds.
    The pool of a shrunken preset holds at least ``pool_factor`` × the final budget (or the regime is
    refused with one line)."""
    preset, info = setting.preset, datasets.get(setting.dataset)
    planned = setting_regime(setting, n_classes_of(setting), 10 ** 9)
    request = datasets.LoadRequest(
        seed, setting.data_dir, setting.download, setting.image_size or ROLLOUT_IMAGE_SIZE[preset.name],
        max_train=pool_size(preset, planned.final_budget, None), max_val=None if preset.pool_size is None else VAL_CAP,
        max_test=preset.test_size, cache_dir=setting.cache_dir)
    if info.rollout:  # refuse a dataset too small for the regime before decoding (caching) it
        from . import rollout
        files, _, tr, va, te = rollout.plan_splits(setting.dataset, info.source, request)
        _check_fits(setting.dataset, setting_regime(setting, len(files.classes), len(va)), len(tr), len(va), len(te))
    s = _splits(setting.dataset, request)
    regime = setting_regime(setting, s.n_classes, len(s.val))
    n_pool = pool_size(preset, regime.final_budget, len(s.train), setting.dataset, regime.name)
    rng = seeds.rng(seed, "pool")
    # a pool raised to pool_factor × the final budget is drawn at exactly that size (the preset's own
    # size keeps its per-class rounding, so existing runs draw the same pool)
    raised = n_pool is not None and n_pool > preset.pool_size
    pool_ids = D.subsample(s.train.targets, n_pool, rng, s.n_classes, exact=raised)
    pool = s.train.subset(pool_ids)
    _check_fits(setting.dataset, regime, len(pool), len(s.val), len(s.test))
    test_ids = D.subsample(s.test.targets, preset.test_size, seeds.rng(0, "test"), s.n_classes)
    val_size = min(regime.val_size, len(s.val))
    if info.rollout:  # §4.5: 25 per class first, the rest at random from the split
        val_ids = D.label_strategy(s.val.targets, val_size, s.n_classes, seeds.rng(seed, "val"),
                                   balanced=False, first_per_class=25)
    else:
        val_ids = D.label_strategy(s.val.targets, val_size - val_size % s.n_classes, s.n_classes,
                                   seeds.rng(seed, "val"), balanced=True)
    start = D.label_strategy(pool.targets, regime.start, s.n_classes, seeds.rng(seed, "start"),
                             balanced=not s.imbalanced)
    return Prepared(setting, s, pool, pool_ids, s.val.subset(val_ids), s.test.subset(test_ids), start, regime, seed)


def _check_fits(dataset: str, regime: Regime, n_pool: int, n_val: int, n_test: int) -> None:
    need = regime.start + sum(regime.query_sizes)
    if need > n_pool or n_val == 0 or n_test == 0:
        raise UserError(f"{dataset} is too small for the {regime.name} regime: it needs {need} pool samples (start "
                        f"{regime.start} + {len(regime.query_sizes)} queries of {regime.query}), the pool holds "
                        f"{n_pool} (validation {n_val}, test {n_test} samples)")


def train_seed(seed: int, cycle: int) -> int:
    """Training seed of a cycle: depends on (seed, cycle) only, so every method trains the same
    round-0 model and a resumed run retrains exactly what an uninterrupted one would."""
    return seeds.derive(seed, "train", cycle)


def fit_fn_for(prep: Prepared, labelled_ids, seed: int, device: str, pretrained: dict | None = None):
    """``fit_fn(cfg, callbacks) -> (net, info)`` training the setting's paradigm on ``labelled_ids`` (pool
    positions) with the dataset's transforms; FixMatch gets the rest of the pool as unlabelled data.
    For AL cycles and tuning trials alike."""
    s, paradigm = prep.splits, paradigms.get(prep.setting.paradigm)
    unlabelled = None
    if paradigm.needs_unlabelled:
        unlabelled = prep.pool_data.subset(np.setdiff1d(np.arange(len(prep.pool_data)), labelled_ids))
    task = FitTask(prep.pool_data.subset(labelled_ids), prep.val_data, s.n_classes, s.mean, s.std, s.metric,
                   s.imbalanced, seed, device, augment=augmenter(s.info.get("transforms")), unlabelled=unlabelled,
                   pretrained=pretrained)
    return paradigms.fit_fn(paradigm.name, task)


def classification_metrics(y_true, probs: torch.Tensor, n_classes: int) -> dict:
    pred = probs.argmax(1).cpu().numpy()
    return {"accuracy": accuracy(y_true, pred), "balanced_accuracy": balanced_accuracy(y_true, pred, n_classes),
            "macro_f1": macro_f1(y_true, pred, n_classes)}


FIT_LOG_ENV = "REALISTIC_AL_FIT_LOG"


def _log_fit(prep: Prepared, cycle: int, budget: int, cfg: TrainConfig) -> None:
    """Tests: ``REALISTIC_AL_FIT_LOG=<file>`` appends one line per AL-cycle training (seed, cycle, budget,
    dropout, pid) from whichever process trains (study workers inherit the variable)."""
    path = os.environ.get(FIT_LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{prep.seed}\t{cycle}\t{int(budget)}\t{float(cfg.dropout):g}\t{os.getpid()}\n")


class ClassificationRun:
    """The domain callables for one run.  Round 0 (the starting budget, the same for every method of a
    seed) comes from ``round0`` — the directory of a :func:`train_round0` job, loaded instead of
    retrained — or ``round0_cache`` (shared across the methods of one process) reuses the deterministic
    round-0 model of an identical configuration.  ``method=None``: training and evaluation only (the
    round-0 job)."""

    def __init__(self, prep: Prepared, method: query.QueryMethod | None, cfg: TrainConfig, device: str,
                 round0_cache: dict | None = None, pretrained: dict | None = None, retune: Retune | None = None,
                 round0: Path | None = None):
        self.p, self.method, self.device = prep, method, device
        self.pretrained = pretrained
        missing = set(method.needs if method else ()) - set(_registers.EVIDENCE)
        if missing:
            raise UserError(f"query method {method.name!r} needs evidence this domain cannot compute: {sorted(missing)}")
        self.cfg = replace(cfg, dropout=float(method.model.get("dropout", cfg.dropout))) if method else cfg
        self.cache = round0_cache if round0_cache is not None else {}
        self.round0 = Path(round0) if round0 is not None else None
        self.last_fit: dict = {}
        self.retune = retune
        self.retune_cycles = retune_cycles(prep.regime, retune.budgets) if retune else {}
        self._tuned: dict[int, dict] = {}
        self.hp: dict = {}

    # -- train / evaluate -------------------------------------------------------------------
    def cycle_config(self, pool: Pool, cycle: int) -> TrainConfig:
        """The training config of a cycle: the run's, or the one re-tuned at the latest re-tuning cycle
        (its grid trained on the labelled set of that cycle; cached in its study directory, so a resumed
        run reuses it)."""
        done = [c for c in self.retune_cycles if c <= cycle]
        if not done:
            self.hp = {}
            return self.cfg
        rc = max(done)
        if rc not in self._tuned:
            from .tuning import SPACES, tune
            labelled = np.flatnonzero((pool.labelled_at >= 0) & (pool.labelled_at <= rc))
            space = self.retune.space or {k: SPACES[self.p.setting.paradigm][k] for k in ("lr", "weight_decay")}
            fit = fit_fn_for(self.p, labelled, train_seed(self.p.seed, rc), self.device, self.pretrained)
            params, path = tune(self.p.setting.paradigm, fit, self.cfg,
                                self.retune.study_dir / f"budget{self.retune_cycles[rc]}", space=space,
                                key={"dataset": self.p.splits.name, "regime": self.p.regime.name, "seed": self.p.seed,
                                     "cycle": rc, "labelled": hashlib.sha1(labelled.tobytes()).hexdigest()},
                                seed=self.p.seed)
            self._tuned[rc] = {"params": params, "budget": int(len(labelled)), "at": self.retune_cycles[rc],
                               "study": str(path)}
        self.hp = self._tuned[rc]
        return replace(self.cfg, **self.hp["params"])

    def train(self, pool: Pool, cycle: int):
        cfg = self.cycle_config(pool, cycle)
        if cycle == 0 and self.round0 is not None:
            net, self.last_fit = load_round0(self.round0, self.p, pool.labelled, cfg, self.device, self.pretrained)
            return net
        key = round0_key(self.p, pool.labelled, cfg)
        if cycle == 0 and key in self.cache:
            net, self.last_fit = self.cache[key]
            return net
        _log_fit(self.p, cycle, pool.n_labelled, cfg)
        net, info = fit_fn_for(self.p, pool.labelled, train_seed(self.p.seed, cycle), self.device,
                               self.pretrained)(cfg, None)
        self.last_fit = info
        if cycle == 0:
            self.cache[key] = (net, info)
        return net

    def evaluate(self, net, pool: Pool) -> dict:
        s = self.p.splits
        h = embed(net, self.p.test_data, s.mean, s.std, self.device, self.cfg.eval_batch_size)
        with torch.no_grad():
            torch.manual_seed(seeds.derive(self.p.seed, "eval"))
            probs = net.predict_probs(h, self.cfg.mc_samples)
        m = classification_metrics(self.p.test_data.targets, probs, s.n_classes)
        m["val_best"] = self.last_fit.get("best_val")
        if self.hp:
            m["retuned"] = self.hp
        counts = np.bincount(self.p.pool_data.targets[pool.labelled], minlength=s.n_classes)
        m["labelled_per_class"] = counts.tolist()
        return m

    # -- evidence: one backbone pass over the unlabelled pool, everything else from the head ---
    def evidence(self, net, pool: Pool) -> Evidence:
        """The evidence kinds the query method needs (lazy; the backbone runs at most once)."""
        s, cfg, dev = self.p.splits, self.cfg, self.device
        unl = pool.unlabelled

        @functools.lru_cache(maxsize=None)
        def feats():
            return embed(net, self.p.pool_data.subset(unl), s.mean, s.std, dev, cfg.eval_batch_size)

        def probs():
            with torch.no_grad():
                return net.predict_probs(feats(), cfg.mc_samples).cpu()

        def mc_probs():
            with torch.no_grad():
                return net.mc_probs(feats(), cfg.mc_samples).cpu()

        def badge():
            with torch.no_grad():
                return torch.softmax(net.fc(feats()).float(), 1), net.head_input(feats())

        def labelled_features():
            return embed(net, self.p.pool_data.subset(pool.labelled), s.mean, s.std, dev, cfg.eval_batch_size)

        kinds = {"features": feats, "probs": probs, "mc_probs": mc_probs, "badge": badge,
                 "labelled_features": labelled_features}
        return Evidence({k: kinds[k] for k in self.method.needs}, candidates=unl)


# ---------------------------------------------------------------------------- the shared round-0 model
ROUND0_WEIGHTS, ROUND0_META = "model.pt", "round0.json"


def start_pool(prep: Prepared, fresh: bool = True) -> Pool:
    """The pool of a run: the starting budget labelled at cycle 0 (``fresh=False``: nothing labelled, for
    a resumed run whose stored pool state is loaded into it)."""
    pool = Pool(len(prep.pool_data), val_ids=np.arange(len(prep.val_data)), test_ids=np.arange(len(prep.test_data)))
    if fresh:
        pool.label(prep.start_ids, 0)
    return pool


def round0_key(prep: Prepared, labelled, cfg: TrainConfig) -> str:
    """What defines a round-0 model — the key of a saved :func:`train_round0` model and of
    ``ClassificationRun``'s in-process cache: data, regime, seed, the labelled ids and the training config."""
    blob = repr((prep.splits.name, prep.regime.name, prep.seed, tuple(sorted(np.asarray(labelled).tolist())),
                 repr(cfg)))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_round0(prep: Prepared, cfg: TrainConfig, out_dir: Path, device: str = "cpu",
                 pretrained: dict | None = None, extra: dict | None = None) -> dict:
    """Train and evaluate the round-0 model of ``prep`` (the paradigm's training on the starting budget,
    exactly as a run's cycle 0 does) and save it into ``out_dir``: the weights (``model.pt``, tensors
    only) and ``round0.json`` (its key, fit summary and test metrics).  Every method of the seed whose
    training config is ``cfg`` loads it (:func:`load_round0`) instead of retraining."""
    pool = start_pool(prep)
    run = ClassificationRun(prep, None, cfg, device, pretrained=pretrained)
    net = run.train(pool, 0)
    metrics = run.evaluate(net, pool)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    out_dir = Path(out_dir)
    atomic_write(out_dir / ROUND0_WEIGHTS, lambda f: torch.save(state, f), binary=True)
    meta = {"key": round0_key(prep, pool.labelled, cfg), "paradigm": prep.setting.paradigm, "seed": prep.seed,
            "budget": int(pool.n_labelled), "train": asdict(cfg), "fit": run.last_fit, "metrics": metrics,
            "metric": prep.splits.metric, **(extra or {})}
    atomic_write_json(out_dir / ROUND0_META, meta)
    return meta


def load_round0(path: Path, prep: Prepared, labelled, cfg: TrainConfig, device: str = "cpu",
                pretrained: dict | None = None):
    """(net, fit summary) of the round-0 model saved by :func:`train_round0` in ``path``: the paradigm's
    untrained net with the saved tensors loaded (``weights_only``), in eval mode — the same weights, so
    the same evaluation and queries as the net trained in this process.  A model of another
    configuration or a damaged file is one line."""
    path = Path(path)
    try:
        meta = json.loads((path / ROUND0_META).read_text())
        state = torch.load(path / ROUND0_WEIGHTS, map_location="cpu", weights_only=True)
        fit_info = meta["fit"]
    except Exception as e:  # noqa: BLE001 — missing, damaged or foreign files
        raise UserError(f"the round-0 model in {path} is missing or damaged ({e.__class__.__name__}); "
                        "delete that folder and rerun with --resume") from None
    if meta.get("key") != round0_key(prep, labelled, cfg):
        raise UserError(f"the round-0 model in {path} was trained with another configuration; delete that folder "
                        "and rerun with --resume")
    s = prep.splits
    task = FitTask(prep.pool_data.subset(np.asarray(labelled)), prep.val_data, s.n_classes, s.mean, s.std, s.metric,
                   s.imbalanced, train_seed(prep.seed, 0), device, pretrained=pretrained)
    net = paradigms.get(prep.setting.paradigm).build(task, cfg)
    net.load_state_dict(state)
    return finish(net, cfg, device), fit_info


def retune_cycles(regime: Regime, budgets) -> dict[int, int]:
    """{cycle: requested budget}: the first cycle whose labelled budget reaches each re-tuning budget."""
    have = [regime.start + sum(regime.query_sizes[:c]) for c in range(regime.rounds)]
    out = {}
    for b in sorted(set(int(x) for x in budgets)):
        c = next((k for k, v in enumerate(have) if v >= b), None)
        if c is None:
            raise UserError(f"--retune-at {b}: the run ends at {have[-1]} labels; re-tuning budgets must be <= the final budget")
        out.setdefault(c, b)
    return out


def run_config(dataset: str, regime: Regime, paradigm: str, method: str, seed: int, preset: Preset,
               cfg: TrainConfig, extra: dict | None = None, beta: float = 1.0) -> dict:
    """The resolved config stored in the run directory (everything that defines the numbers);
    ``extra`` holds e.g. the tuned hyper-parameters and the SimCLR checkpoint used."""
    extra = dict(extra or {})
    n_pool = extra.pop("pool_size", preset.pool_size)
    return {"experiment": "classification", "dataset": dataset, "regime": asdict(regime), "paradigm": paradigm,
            "method": method, "beta": beta, "seed": seed, "seeding": seeds.SEEDING, "preset": preset.name,
            "pool_size": n_pool, "test_size": preset.test_size, "train": asdict(cfg), **extra}


def describe(setting: Setting, cfg: TrainConfig, methods: list[str], seed_list: list[int], beta: float = 1.0,
             extra: dict | None = None, retune_at=()) -> dict:
    """The fully resolved configuration of a run without reading any image (``--dry-run``): the
    dataset facts, the Label Regime with every budget, the pool, the training recipe and its thesis
    table, the model, the methods (with their model changes) and the user's overrides."""
    preset, info = setting.preset, datasets.get(setting.dataset)
    n_classes = n_classes_of(setting)
    if info.split_sizes is not None:
        sizes, sizes_src = info.split_sizes, "thesis §4.1 / Table A.1 (a run records the actual sizes)"
    else:  # folder data: the 60/15/25 roll-out split of the listed images
        files, official = info.source(setting.dataset, setting.data_dir)
        n = len(files.paths)
        sizes = (round(0.6 * n), round(0.15 * n), round(0.25 * n)) if official is None else \
            (round(0.8 * n), round(0.2 * n), len(official.paths))
        sizes_src = "estimated from the listed images"
    val_split = sizes[1] if preset.pool_size is None or not info.rollout else min(sizes[1], VAL_CAP)
    regime = setting_regime(setting, n_classes, val_split)
    n_pool = pool_size(preset, regime.final_budget, sizes[0], setting.dataset, regime.name)
    cycles = retune_cycles(regime, retune_at) if retune_at else {}
    budgets = [regime.start + sum(regime.query_sizes[:c]) for c in range(regime.rounds)]
    pool_n = sizes[0] if n_pool is None else min(n_pool, sizes[0])
    image = (setting.image_size or ROLLOUT_IMAGE_SIZE[preset.name]) if info.rollout else 32
    head = getattr(cfg, "head", "linear") if setting.paradigm == "selfsl" else "linear"
    dropout = {m: float(query.get("classification", m).model.get("dropout", cfg.dropout)) for m in methods}
    paradigm = paradigms.get(setting.paradigm)
    out = {"experiment": "classification", "dataset": setting.dataset,
           "dataset_facts": {"n_classes": n_classes, "metric": info.metric, "long_tail": info.long_tail,
                             "imbalanced": info.imbalanced, "transforms": info.transforms, "rollout": info.rollout,
                             "image_size": image, "split_sizes": dict(zip(("train_pool", "val", "test"), sizes)),
                             "split_sizes_source": sizes_src},
           "regime": {**asdict(regime), "query_sizes": regime.query_sizes, "budgets": budgets,
                      "final_budget": regime.final_budget,
                      "source": "Table A.4" if info.regimes is not None else "Table A.4 rule (5C / 25C / 100C)",
                      "overridden": {k: v for k, v in (("query_size", setting.query_size), ("rounds", setting.rounds))
                                     if v is not None}},
           "pool": {"size": pool_n, "available": sizes[0], "subset": n_pool is not None,
                    "ratio_to_final_budget": round(pool_n / regime.final_budget, 3)},
           "test_size": preset.test_size or sizes[2], "paradigm": setting.paradigm, "preset": preset.name,
           "train": asdict(cfg),
           "recipe_source": f"{datasets.RECIPE_SOURCES[setting.paradigm]} ({info.name})",
           "model": {"arch": "ResNet-18", "width": cfg.width, "stem": "CIFAR (3x3, no max-pool)" if image <= 64
                     else "ImageNet (7x7, max-pool)", "head": head,
                     "head_hidden": getattr(cfg, "head_hidden", None) if head == "mlp" else None,
                     "dropout": dropout, "mc_samples": cfg.mc_samples},
           "methods": methods, "beta": beta, "seeds": seed_list, "seeding": seeds.SEEDING,
           "tuning_grid": paradigm.space}
    if retune_at:
        out["retune_at"] = {"budgets": sorted(int(b) for b in retune_at),
                            "cycles": {str(c): budgets[c] for c in cycles},
                            "grid": {k: paradigm.space[k] for k in ("lr", "weight_decay")}}
    if setting.paradigm == "selfsl":
        from .selfsl import pretrain_config
        out["simclr"] = {**asdict(pretrain_config(setting.dataset, preset.name)),
                         "source": f"{datasets.RECIPE_SOURCES['simclr']} ({info.name})"}
    out.update(extra or {})
    return out


def run_one(prep: Prepared, method_name: str, cfg: TrainConfig, run_dir: Path, *, resume: bool = False,
            device: str = "cpu", beta: float = 1.0, round0_cache: dict | None = None, progress=None,
            pretrained: dict | None = None, extra_config: dict | None = None,
            retune: Retune | None = None, on_start=None, on_cycle=None, round0: Path | None = None) -> list[dict]:
    """One AL run (resumable) of ``method_name`` in the prepared setting; returns its cycle records.
    ``round0`` (a :func:`train_round0` directory) or ``round0_cache`` (shared by the methods of one
    seed in one process) supply the round-0 model instead of training it; ``pretrained``
    is the Self-SL checkpoint; ``extra_config`` goes into the run's config (tuned HPs, checkpoint);
    ``retune`` re-tunes the HPs at given budgets (the dip study); ``on_start(cycles already committed)``
    and ``on_cycle(record)`` report progress (``core.study.JobRun``)."""
    method = query.get("classification", method_name)
    regime, setting = prep.regime, prep.setting
    extra_config = dict(extra_config or {})
    if setting.preset.pool_size is not None:
        extra_config["pool_size"] = len(prep.pool_data)
    if retune is not None:
        extra_config["retune_at"] = sorted(int(b) for b in retune.budgets)
    config = run_config(prep.splits.name, regime, setting.paradigm, method_name, prep.seed, setting.preset, cfg,
                        extra_config, beta)
    # the split sizes actually used (the preset's caps only bound them) and the metric the run is scored by
    config.update(pool_size=len(prep.pool_data), test_size=len(prep.test_data), metric=prep.splits.metric)
    with RunStore(run_dir, config, resume=resume) as store:
        pool = start_pool(prep, fresh=store.pool_state is None)
        run = ClassificationRun(prep, method, cfg, device, round0_cache, pretrained=pretrained, retune=retune,
                                round0=round0)
        if on_start is not None:
            on_start(len(store.records))
        loop = ActiveLearningLoop(pool, train=run.train, evaluate=run.evaluate, evidence=run.evidence, query=method,
                                  query_sizes=regime.query_sizes, store=store, seed=prep.seed, beta=beta,
                                  progress=progress, on_cycle=on_cycle)
        return loop.run()
