"""One classification AL experiment (dataset × regime × paradigm × method × seed) on the shared core.

``prepare(setting, seed)`` loads the seed's splits and draws the pool subset, the starting budget and
the validation subset (label strategy of spec §4.5); ``run_one(...)`` wires the domain's train /
evaluate / evidence callables into ``core.loop.ActiveLearningLoop`` with a ``core.store.RunStore``.

    prep = prepare(Setting("fashion_mnist", "low", "supervised", PRESETS["smoke"]), seed=0)
    records = run_one(prep, "badge", prep.setting.preset.train, Path("runs/x"))
"""
from __future__ import annotations

import functools
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
from core.store import RunStore

from . import data as D
from . import datasets, paradigms
from . import query as _registers  # noqa: F401  (registers the classification query methods)
from .augment import augmenter
from .presets import ROLLOUT_IMAGE_SIZE, Preset
from .regimes import Regime, regime as get_regime
from .training import FitTask, TrainConfig, embed

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


def prepare(setting: Setting, seed: int) -> Prepared:
    """Splits, pool subset, starting budget and validation subset of one seed; the regime follows
    Table A.4 (roll-out data: the same rule from the class count), capped by the preset's rounds."""
    preset, info = setting.preset, datasets.get(setting.dataset)
    s = _splits(setting.dataset, datasets.LoadRequest(
        seed, setting.data_dir, setting.download, setting.image_size or ROLLOUT_IMAGE_SIZE[preset.name],
        max_train=preset.pool_size, max_val=None if preset.pool_size is None else 2000, max_test=preset.test_size,
        cache_dir=setting.cache_dir))
    regime = get_regime(setting.dataset, setting.regime, setting.paradigm, s.n_classes, len(s.val))
    if preset.max_rounds is not None and regime.rounds > preset.max_rounds:
        regime = replace(regime, rounds=preset.max_rounds)
    rng = seeds.rng(seed, "pool")
    pool_ids = D.subsample(s.train.targets, preset.pool_size, rng, s.n_classes)
    pool = s.train.subset(pool_ids)
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
    need = regime.start + sum(regime.query_sizes)
    if need > len(pool):
        raise UserError(f"regime {regime.name} needs {need} pool samples (start {regime.start} + "
                        f"{len(regime.query_sizes)} queries of {regime.query}) but the pool holds {len(pool)}")
    return Prepared(setting, s, pool, pool_ids, s.val.subset(val_ids), s.test.subset(test_ids), start, regime, seed)


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


class ClassificationRun:
    """The domain callables for one run; ``round0_cache`` (shared across methods of one invocation)
    reuses the deterministic round-0 model of an identical configuration instead of retraining it."""

    def __init__(self, prep: Prepared, method: query.QueryMethod, cfg: TrainConfig, device: str,
                 round0_cache: dict | None = None, pretrained: dict | None = None):
        self.p, self.method, self.device = prep, method, device
        self.pretrained = pretrained
        missing = set(method.needs) - set(_registers.EVIDENCE)
        if missing:
            raise UserError(f"query method {method.name!r} needs evidence this domain cannot compute: {sorted(missing)}")
        self.cfg = replace(cfg, dropout=float(method.model.get("dropout", cfg.dropout)))
        self.cache = round0_cache if round0_cache is not None else {}
        self.last_fit: dict = {}

    # -- train / evaluate -------------------------------------------------------------------
    def train(self, pool: Pool, cycle: int):
        s = self.p.splits
        key = (s.name, self.p.regime.name, self.p.seed, tuple(sorted(pool.labelled.tolist())), repr(self.cfg))
        if cycle == 0 and key in self.cache:
            net, self.last_fit = self.cache[key]
            return net
        net, info = fit_fn_for(self.p, pool.labelled, train_seed(self.p.seed, cycle), self.device,
                               self.pretrained)(self.cfg, None)
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


def run_config(dataset: str, regime: Regime, paradigm: str, method: str, seed: int, preset: Preset,
               cfg: TrainConfig, extra: dict | None = None, beta: float = 1.0) -> dict:
    """The resolved config stored in the run directory (everything that defines the numbers);
    ``extra`` holds e.g. the tuned hyper-parameters and the SimCLR checkpoint used."""
    return {"experiment": "classification", "dataset": dataset, "regime": asdict(regime), "paradigm": paradigm,
            "method": method, "beta": beta, "seed": seed, "seeding": seeds.SEEDING, "preset": preset.name, "pool_size": preset.pool_size,
            "test_size": preset.test_size, "train": asdict(cfg), **(extra or {})}


def run_one(prep: Prepared, method_name: str, cfg: TrainConfig, run_dir: Path, *, resume: bool = False,
            device: str = "cpu", beta: float = 1.0, round0_cache: dict | None = None, progress=None,
            pretrained: dict | None = None, extra_config: dict | None = None) -> list[dict]:
    """One AL run (resumable) of ``method_name`` in the prepared setting; returns its cycle records.
    ``round0_cache`` (shared by the methods of one seed) reuses the round-0 model; ``pretrained``
    is the Self-SL checkpoint; ``extra_config`` goes into the run's config (tuned HPs, checkpoint)."""
    method = query.get("classification", method_name)
    regime, setting = prep.regime, prep.setting
    config = run_config(prep.splits.name, regime, setting.paradigm, method_name, prep.seed, setting.preset, cfg,
                        extra_config, beta)
    store = RunStore(run_dir, config, resume=resume)
    if store.done:
        return store.records
    pool = Pool(len(prep.pool_data), val_ids=np.arange(len(prep.val_data)), test_ids=np.arange(len(prep.test_data)))
    if store.pool_state is None:
        pool.label(prep.start_ids, 0)
    run = ClassificationRun(prep, method, cfg, device, round0_cache, pretrained=pretrained)
    loop = ActiveLearningLoop(pool, train=run.train, evaluate=run.evaluate, evidence=run.evidence, query=method,
                              query_sizes=regime.query_sizes, store=store, seed=prep.seed, beta=beta,
                              progress=progress)
    return loop.run()
