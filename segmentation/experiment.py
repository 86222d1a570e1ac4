"""The segmentation domain plugged into ``core.loop.ActiveLearningLoop``.

:class:`SegmentationDomain` supplies the loop's four callables for one (dataset, regime, method,
seed): ``train`` (K-fold DynUNet ensemble from scratch on the partially annotated images),
``evaluate`` (test-set mean Dice + annotation statistics) and ``evidence`` (lazy window-mean score
grids from ensemble sliding-window inference over all train+pool images — exactly the ``grid:…``
kinds the query method ``needs``, all from one inference pass per image).  The pool is a
:class:`~segmentation.patches.PatchPool`; the starting budget (cycle 0) is drawn from the
experiment seed, so every method of a seed starts from the same patches — and, as cycle 0's
training depends on the seed and those patches only, trains the same cycle-0 ensemble:
:func:`train_round0` trains and saves it once, :func:`load_round0` gives it back to every method
(``SegmentationDomain(round0=...)``; monai backend).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from core import seeds
from core.errors import UserError
from core.query import Evidence, QueryMethod

from .augment import AugmentedRegionSampler
from .data import Prepared
from .patches import PatchPool, box_mean
from .plans import NetworkPlan, Preset, QuerySetting
from .query import QueryEnv, voxel_maps
from .start import starting_budget
from .training import Ensemble, RegionSampler, cv_folds, make_network, train_model

FIT_LOG_ENV = "REALISTIC_AL_FIT_LOG"


def _log_fit(key: tuple, n_images: int) -> None:
    """Tests and measurements: ``REALISTIC_AL_FIT_LOG=<file>`` appends one line per ensemble training
    (the key's seed and cycle, annotated images, pid) from whichever process trains (study workers
    inherit the variable)."""
    path = os.environ.get(FIT_LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write("\t".join(str(int(k)) for k in key[:2]) + f"\t{int(n_images)}\t{os.getpid()}\n")


def dice_per_class(pred: np.ndarray, gt: np.ndarray, n_classes: int) -> np.ndarray:
    """``[C]`` Dice of foreground classes 1..C; NaN where the class is absent in both."""
    k = n_classes + 1
    cm = np.bincount(gt.astype(np.int64).ravel() * k + pred.astype(np.int64).ravel(), minlength=k * k).reshape(k, k)
    tp = np.diag(cm)[1:].astype(np.float64)
    denom = cm.sum(0)[1:] + cm.sum(1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def _nanmean(a: np.ndarray, axis=None):
    """Mean ignoring NaN; NaN (no warning) where everything is NaN."""
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a)
    cnt = ok.sum(axis=axis)
    tot = np.where(ok, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def mean_dice(per_case: np.ndarray) -> float:
    """nnU-Net's ``foreground_mean`` Dice: per class mean over cases (NaN-skipping), then mean over
    classes (0 if no class has a value)."""
    per_class = _nanmean(per_case, axis=0)
    return float(_nanmean(per_class)) if np.isfinite(per_class).any() else 0.0


@dataclass
class Hooks:
    """Progress callbacks (all optional)."""
    log: Callable[[str], None] = lambda msg: None
    start: Callable[[str, int], None] = lambda desc, total: None
    tick: Callable[[int], None] = lambda n: None
    done: Callable[[], None] = lambda: None


class SegmentationDomain:
    def __init__(self, data: Prepared, qs: QuerySetting, preset: Preset, plan: NetworkPlan, *, seed: int,
                 device: str = "cpu", overlap: float = 0.0, method: QueryMethod | None = None,
                 hooks: Hooks | None = None, backend: str = "monai", work_dir=None, round0=None):
        """``round0``: the folder of a :func:`train_round0` model of this seed, loaded at cycle 0
        instead of training (monai backend)."""
        self.data, self.qs, self.preset, self.plan = data, qs, preset, plan
        if round0 is not None and backend != "monai":
            raise ValueError("a saved cycle-0 model is for the monai backend only")
        self.round0 = None if round0 is None else Path(round0)
        self.backend, self.work_dir, self._nnunet = backend, work_dir, None
        if backend not in ("monai", "nnunet"):
            raise ValueError(f"unknown backend {backend!r}")
        if backend == "nnunet" and work_dir is None:
            raise ValueError("the nnunet backend needs a work_dir (nnU-Net's folders live there)")
        self.seed, self.device, self.overlap = int(seed), device, float(overlap)
        self.method = method
        self.hooks = hooks or Hooks()
        self.train_cases = [int(c) for c in data.train]
        self.n_classes = data.n_classes
        self.ignore = self.n_classes + 1
        self.total_fg = int(sum(int(np.count_nonzero(self.gt(j))) for j in range(len(self.train_cases))))
        self.total_vox = int(sum(int(np.prod(data.shapes[c])) for c in self.train_cases))

    def gt(self, j: int) -> np.ndarray:
        """Full ground truth of train+pool image ``j`` (memory-mapped; the simulated annotator)."""
        return np.asarray(self.data.label(self.train_cases[j]))

    # -- pool ---------------------------------------------------------------------------------
    def new_pool(self) -> PatchPool:
        return PatchPool([self.data.shapes[c] for c in self.train_cases], self.qs.patch, self.qs.agg_stride)

    def env(self, pool: PatchPool) -> QueryEnv:
        return QueryEnv(pool, self.gt, self.n_classes, self.overlap, self.qs.n_patch_per_image)

    def initial_pool(self, notes: list | None = None) -> PatchPool:
        """Pool with the starting budget labelled in cycle 0 (validates feasibility: UserError);
        ``notes`` receives the small-dataset degradations of the start rule (segmentation.start)."""
        pool = self.new_pool()
        ids = starting_budget(self.env(pool), self.qs.start_size, seeds.rng(self.seed, "start"),
                              self.data.class_names, notes=notes)
        pool.label(ids, 0)
        return pool

    # -- training ------------------------------------------------------------------------------
    def _partial_labels(self, pool: PatchPool) -> dict[int, np.ndarray]:
        out = {}
        for j in range(pool.n_images):
            mask = pool.annotation_mask(j)
            if mask.any():
                lab = self.gt(j).astype(np.int16 if self.ignore > 255 else np.uint8, copy=True)
                lab[~mask] = self.ignore
                out[j] = lab
        return out

    def fit(self, labels: dict[int, np.ndarray], key: tuple, init_key: tuple | None = None) -> Ensemble:
        """K models from scratch on ``labels``; ``key`` seeds the CV folds, ``init_key`` (default
        ``key``) the models' initial weights and training-patch streams (monai backend)."""
        init_key = key if init_key is None else init_key
        images = sorted(labels)
        _log_fit(key, len(images))
        classes_of = {j: set(np.unique(labels[j]).tolist()) - {self.ignore} for j in images}
        K = self.preset.ensemble
        if self.preset.ensemble_split == "seeds" and self.backend == "monai":
            folds = [[] for _ in range(max(K, 1))]   # every model on all annotated images, its own seed
        else:
            folds = cv_folds(images, classes_of, K, seeds.rng(*key[:1], "folds", *key[1:]))
        if self.backend == "nnunet":
            return self._fit_nnunet(labels, folds, key)
        models = []
        self.hooks.start(f"training {K} model(s)", K * self.preset.iterations)
        for f in range(max(K, 1)):
            held = set(folds[f]) if f < len(folds) else set()
            tr = [j for j in images if j not in held] or images
            imgs, labs = [self.data.image(self.train_cases[j]) for j in tr], [labels[j] for j in tr]
            rng = seeds.rng(*init_key[:1], "regions", *init_key[1:], f)
            if self.preset.augment == "nnunet":
                sampler = AugmentedRegionSampler(imgs, labs, self.plan.patch_size, self.n_classes, self.ignore, rng,
                                                 spacing=self.data.spacing, mirror=self.data.mirror)
            else:
                sampler = RegionSampler(imgs, labs, self.plan.patch_size, self.n_classes, self.ignore, rng,
                                        mirror=self.data.mirror)
            models.append(train_model(sampler, self.plan, self.preset, self.data.n_channels, self.n_classes,
                                      self.ignore, (*init_key, f), self.device, tick=self.hooks.tick))
        self.hooks.done()
        return Ensemble(models, self.plan, self.device, self.preset.amp, self.preset.sw_batch, folds)

    def _fit_nnunet(self, labels: dict[int, np.ndarray], folds: list, key: tuple):
        from .nnunet import NnUNetBackend
        if self._nnunet is None:
            self._nnunet = NnUNetBackend(self.work_dir, self.data, self.train_cases, self.gt,
                                         iterations=self.preset.iterations, device=self.device,
                                         mirror=self.data.mirror, progress=self.hooks.tick)
        self.hooks.start(f"nnU-Net: training {len(folds)} fold(s)", len(folds) * self.preset.iterations)
        model = self._nnunet.fit(labels, folds, key)
        self.hooks.done()
        return model

    def train(self, pool: PatchPool, cycle: int) -> Ensemble:
        if cycle == 0 and self.round0 is not None:
            return load_round0(self.round0, self, pool)
        key = (self.seed, int(cycle))
        return self.fit(self._partial_labels(pool), key,
                        init_key=(self.seed,) if self.preset.train_seed == "run" else key)

    def train_full(self, key: tuple = (0, 9999)) -> Ensemble:
        """Reference model on the fully annotated train+pool set (same training length)."""
        return self.fit({j: self.gt(j) for j in range(len(self.train_cases))}, key)

    # -- evaluation ----------------------------------------------------------------------------
    def test_metrics(self, model: Ensemble) -> dict:
        per_case = []
        self.hooks.start("test inference", len(self.data.test))
        for c in self.data.test:
            P = model.predict(self.data.image(int(c)), overlap=0.5, mirror=self.preset.tta_test and self.data.test_mirror)
            pred = P.mean(0).argmax(0).numpy()
            per_case.append(dice_per_class(pred, np.asarray(self.data.label(int(c))), self.n_classes))
            self.hooks.tick(1)
        self.hooks.done()
        per_case = np.asarray(per_case)
        per_class, per_image = _nanmean(per_case, 0), _nanmean(per_case, 1)
        nan2none = (lambda a: [None if not np.isfinite(v) else float(v) for v in a])
        return {"mean_dice": mean_dice(per_case), "dice_per_class": nan2none(per_class),
                "per_image_dice": nan2none(per_image)}

    def annotation_stats(self, pool: PatchPool) -> dict:
        vox = fg = 0
        per_class = np.zeros(self.n_classes + 1, dtype=np.int64)
        for j in range(pool.n_images):
            m = pool.annotation_mask(j)
            if m.any():
                counts = np.bincount(self.gt(j)[m], minlength=self.n_classes + 1)
                per_class += counts
                vox += int(m.sum())
        fg = int(per_class[1:].sum())
        return {"n_patches": pool.n_labelled, "annotated_voxels": int(vox), "annotated_fg_voxels": fg,
                "annotated_class_voxels": per_class.tolist(),
                "voxel_fraction": vox / max(self.total_vox, 1), "fg_fraction": fg / max(self.total_fg, 1)}

    def evaluate(self, model: Ensemble, pool: PatchPool) -> dict:
        return {**self.test_metrics(model), **self.annotation_stats(pool)}

    # -- query evidence ------------------------------------------------------------------------
    def patch_scores(self, model: Ensemble, pool: PatchPool, kinds) -> dict[str, list]:
        """Per train+pool image: ensemble softmax [K, C+1, X, Y, Z] (sliding window, no TTA, tile
        step 0.75) → the voxel maps of ``kinds`` (``grid:<score>``, ``grid:cls:<score>``; see
        ``segmentation.query.VOXEL``) → mean over every query window."""
        kinds = tuple(kinds)
        out = {k: [] for k in kinds}
        self.hooks.start("query inference", pool.n_images)
        for j, c in enumerate(self.train_cases):
            P = model.predict(self.data.image(c), overlap=0.25, mirror=False)
            k, s = pool.kernels[j], pool.stride
            for kind, m in voxel_maps(P, kinds).items():
                out[kind].append(box_mean(m.numpy(), k, s))
            self.hooks.tick(1)
        self.hooks.done()
        return out

    def evidence(self, model: Ensemble, pool: PatchPool) -> Evidence:
        """The kinds the query method needs: ``env`` and its ``grid:…`` score grids (one pass)."""
        env = self.env(pool)
        grids = sorted(k for k in (self.method.needs if self.method else ()) if k.startswith("grid:"))
        cache: dict = {}

        def grid(kind):
            if not cache:
                cache.update(self.patch_scores(model, pool, grids))
            return cache[kind]
        providers = {"env": lambda: env, **{k: (lambda k=k: grid(k)) for k in grids}}
        return Evidence(providers=providers, candidates=pool.unlabelled)


# ---------------------------------------------------------------------------- the shared cycle-0 model
ROUND0_WEIGHTS, ROUND0_META = "models.pt", "round0.json"


def _threads() -> int:
    import torch
    return torch.get_num_threads()


def cycle0_training(data: Prepared, qs: QuerySetting, preset: Preset, plan: NetworkPlan, backend: str,
                    seed: int) -> dict:
    """What a seed's cycle-0 training is made of besides its starting patches and the machine: the data,
    preset, network plan, query setting (the patch geometry the ids refer to), backend, seed and seeding
    scheme — one definition for :func:`round0_key` and the round-0 job's config (experiments.segmentation)."""
    return {"data_key": data.data_key, "mirror": data.mirror, "preset": preset.to_dict(), "plan": plan.to_dict(),
            "query": qs.to_dict(), "backend": backend, "seed": seed, "seeding": seeds.SEEDING}


def round0_key(domain: SegmentationDomain, labelled, threads: int | None = None) -> str:
    """What defines a cycle-0 ensemble: its training (:func:`cycle0_training`), the labelled patch ids,
    the device and the thread count (the same seed and threads give the same numbers; other counts may not)."""
    blob = {**cycle0_training(domain.data, domain.qs, domain.preset, domain.plan, domain.backend, domain.seed),
            "labelled": sorted(int(i) for i in labelled), "device": str(domain.device).split(":")[0],
            "threads": _threads() if threads is None else int(threads)}
    text = json.dumps(blob, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_round0(domain: SegmentationDomain, pool: PatchPool, out_dir) -> dict:
    """Train the cycle-0 ensemble of ``domain`` on ``pool`` (its starting budget) exactly as a run's
    cycle 0 does (``domain.train(pool, 0)``) and save it into ``out_dir``: the models' state dicts
    (``models.pt``, tensors only) and ``round0.json`` (its key, the folds and the fit summary), each
    written atomically.  Every method of the seed loads it (:func:`load_round0`) instead of
    retraining.  Monai backend only (nnU-Net's models live in each run's own folders)."""
    import torch
    from core.store import atomic_write, atomic_write_json
    if domain.backend != "monai":
        raise ValueError("train_round0 saves monai ensembles only")
    if domain.round0 is not None:
        raise ValueError("train_round0 trains the model a round0 folder would supply")
    labelled = pool.labelled
    t0 = time.perf_counter()
    ens = domain.train(pool, 0)
    train_s = time.perf_counter() - t0
    states = [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in ens.models]
    out_dir = Path(out_dir)
    atomic_write(out_dir / ROUND0_WEIGHTS, lambda f: torch.save(states, f), binary=True)
    meta = {"key": round0_key(domain, labelled), "seed": domain.seed, "budget": int(pool.n_labelled),
            "labelled": sorted(int(i) for i in labelled), "folds": [[int(i) for i in f] for f in ens.folds],
            "n_models": len(ens.models), "iterations": int(domain.preset.iterations), "train_s": train_s,
            "threads": _threads(), "device": str(domain.device), "backend": domain.backend}
    atomic_write_json(out_dir / ROUND0_META, meta)
    return meta


def load_round0(path, domain: SegmentationDomain, pool: PatchPool) -> Ensemble:
    """The cycle-0 ensemble saved by :func:`train_round0` in ``path``: the plan's untrained DynUNets
    with the saved tensors loaded (``weights_only``), in eval mode, with the saved folds — the same
    weights, so the same evaluation and queries as the ensemble trained in this process.  A model of
    another configuration (data, preset, seed, labelled patches, threads, ...) or a missing / damaged
    file is one line telling the user to delete the folder."""
    import torch
    path = Path(path)
    try:
        meta = json.loads((path / ROUND0_META).read_text())
        states = torch.load(path / ROUND0_WEIGHTS, map_location="cpu", weights_only=True)
        folds = [[int(i) for i in f] for f in meta["folds"]]
        if not isinstance(states, list) or len(states) != int(meta["n_models"]) or not states:
            raise ValueError("model count")
    except Exception as e:  # noqa: BLE001 — missing, damaged or foreign files
        raise UserError(f"the cycle-0 model in {path} is missing or damaged ({e.__class__.__name__}); "
                        "delete that folder and rerun with --resume") from None
    if meta.get("key") != round0_key(domain, pool.labelled):
        raise UserError(f"the cycle-0 model in {path} was trained with another configuration (data, preset, seed, "
                        "starting patches, device or --threads); delete that folder and rerun with --resume")
    models = []
    for state in states:
        net = make_network(domain.plan, domain.data.n_channels, domain.n_classes + 1, domain.preset.deep_supervision)
        try:
            net.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError) as e:
            raise UserError(f"the cycle-0 model in {path} does not fit this network ({e.__class__.__name__}); "
                            "delete that folder and rerun with --resume") from None
        models.append(net.to(domain.device).eval())
    return Ensemble(models, domain.plan, domain.device, domain.preset.amp, domain.preset.sw_batch, folds)
