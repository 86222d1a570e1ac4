"""Experiment settings: presets, label regimes / query patch sizes per dataset, and the network plan.

* Thesis datasets (Table C.2, main study; Table D.1 / §8.5, roll-out) carry their published query
  patch size, per-loop query size per Label Regime and aggregation stride.  The thesis writes patch
  sizes in nnU-Net's (z, y, x) array order; our arrays are in NIfTI (x, y, z) order, so the tuples
  are reversed when applied.
* Any other dataset follows the deployment guideline of §D.5: query patch size = median over
  foreground classes of the per-class median bounding box of the largest connected component
  (train+pool, resampled grid); query size per loop = 50 patches per class (regime ``low`` /
  ``rollout``), doubled for ``medium`` and doubled again for ``high`` (our extension: D.5 gives one
  budget only); 5 loops; starting budget = query size.
* The built-in phantoms use the D.5 patch-size rule and fixed budgets sized like Hippocampus
  (≈ 6 / 12 / 18 % of the train+pool voxels annotated after 5 loops).
* :func:`mirror_policy`: datasets with left/right labels train and predict without mirroring.
* :func:`target_spacing` is nnU-Net's 3d_fullres target spacing (median, anisotropy rule).
* :func:`plan_network` configures a DynUNet from the dataset fingerprint the way nnU-Net does:
  network patch from the median shape under a voxel budget, per-axis pooling while the feature map
  stays ≥ 4 voxels and the axis is not much coarser than the finest one, 3×3×3 kernels except on
  strongly anisotropic axes, filters doubling per stage up to a cap.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, asdict

import numpy as np

from core.errors import UserError

REGIMES = ("low", "medium", "high", "rollout")
N_LOOPS = 5


@dataclass(frozen=True)
class Preset:
    name: str
    ensemble: int                # K models (split by ensemble_split), retrained from scratch each loop
    iterations: int              # training iterations per model (nnU-Net: 200 epochs x 250)
    batch_size: int
    patch_voxels: int            # network-patch voxel budget
    base_filters: int
    max_filters: int
    max_pools: int
    deep_supervision: bool
    amp: bool                    # bf16 autocast on CPU, fp16 on CUDA
    tta_test: bool               # mirror TTA for test-set inference
    lr: float
    optimizer: str               # "sgd" (nnU-Net: momentum 0.99, nesterov, poly) or "adamw"
    sw_batch: int
    phantom_n: int
    phantom_size: int
    seeds: int                   # default number of seeds
    loops: int = N_LOOPS
    augment: str = "nnunet"      # "nnunet" (segmentation.augment: nnU-Net's pipeline) or "mirror" (flips only)
    backend: str = "monai"       # default training backend: "monai" (DynUNet) or "nnunet" (nnunetv2)
    # seeds of a loop's model (initial weights, training-patch stream) on the monai backend: "run" — the
    # same in every loop of a run (per seed and fold; still trained from scratch each loop), so the loops
    # differ by their annotation, not by the luck of a new initialisation (common random numbers);
    # "loop" — a new seed per loop (versions before this field)
    train_seed: str = "run"
    # how the K models of an ensemble split the annotated images (monai backend): "cv" — K-fold
    # cross-validation, model k trains on the images outside fold k (the thesis' nnU-Net folds); "seeds" —
    # every model trains on all annotated images and the models differ only by their seeds (initial
    # weights, training-patch stream), an ensemble that lowers the variance without halving the data
    ensemble_split: str = "cv"

    def to_dict(self) -> dict:
        """The preset as run configs and full-data keys record it; ``ensemble_split`` only when it is not
        the thesis' ``cv`` (configs written before the field existed stay resumable, their keys unchanged)."""
        d = asdict(self)
        if d["ensemble_split"] == "cv":
            del d["ensemble_split"]
        return d


PRESETS = {
    # thesis scale: nnU-Net 3d_fullres, 5-fold ensemble, 200 epochs x 250 iterations, batch 2
    "thesis": Preset("thesis", ensemble=5, iterations=200 * 250, batch_size=2, patch_voxels=128 ** 3,
                     base_filters=32, max_filters=320, max_pools=5, deep_supervision=True, amp=True,
                     tta_test=True, lr=0.01, optimizer="sgd", sw_batch=2, phantom_n=60, phantom_size=64, seeds=4,
                     backend="nnunet"),
    # same protocol on a 2-core CPU: a 2-model seed ensemble per loop, short training, small network and
    # patches.  Length from the learning curve of benchmarks/seg_learning_curve.py on the real brain data
    # (--dataset brain; full-data test Dice of one model, batch 2, nnU-Net augmentation):
    #   32³ patches (~0.2 s CPU/iteration): 100 it 0.14, 200 it 0.27, 400 it 0.44, 800 it 0.54;
    #   24³ patches (~0.05 s CPU/iteration): 200 it 0.19, 400 it 0.29, 800 it 0.37, 1600 it 0.40 (plateau).
    # 800 iterations of 32³ is past the steep part of the curve; the old 300 iterations, mirror-only,
    # reached 0.28 on this data.
    # Why two models on all annotated images (ensemble_split "seeds") and not one model or the thesis'
    # 2 folds: one model's Dice on a fixed annotation moves by 0.07–0.10 with its training seed
    # (benchmarks/seg_seed_spread.py, seed 0 Random 33 % FG: 60 patches 0.330 vs 0.433, 75 patches 0.369
    # vs 0.440), 2–3 times a loop's mean gain, so one-model curves dipped (5-loop brain runs, seed 0 / 1:
    # Random 0.261 0.311 0.334 0.330 0.369 / 0.370 0.373 0.455 0.446 0.473, ClaSP PE 0.261 0.345 0.409
    # 0.422 0.443 / 0.370 0.398 0.396 0.395 0.452); fold models would each see half of the few annotated
    # images.  With this preset (default schedule capped to 15 + 4 × 15 patches, train_seed "run"):
    #   ClaSP PE  seed 0: 0.331 0.431 0.480 0.520 0.542   seed 1: 0.394 0.446 0.473 0.492 0.514
    #             seed 2: 0.355 0.348 0.379 0.471 0.496   3-seed mean: 0.360 0.408 0.444 0.494 0.517
    #   Random 33 % FG    0.331 0.375 0.374 0.426 0.434           0.394 0.467 0.521 0.515 0.531
    #                     0.355 0.375 0.348 0.392 0.389                0.360 0.406 0.414 0.444 0.451
    # — both methods' seed means rise every loop; single seeds still dip now and then (Random 4 of 12
    # steps, −0.001 to −0.027; ClaSP PE 1 of 12), so methods are compared over seeds.  Full-data
    # reference (2 models, all images annotated): 0.514.  Cost: twice the one-model CPU, ~230–400 s per
    # loop on one core (a (method, seed) job ≈ 23–27 CPU-min).  BALD runs as is (2 models).
    "laptop": Preset("laptop", ensemble=2, iterations=800, batch_size=2, patch_voxels=32 ** 3,
                     base_filters=16, max_filters=64, max_pools=3, deep_supervision=False, amp=True,
                     tta_test=False, lr=1e-3, optimizer="adamw", sw_batch=4, phantom_n=24, phantom_size=48, seeds=1,
                     ensemble_split="seeds"),
    # tests: tiny volumes, two iterations; 16 phantoms (12 train+pool images) leave room for 5 loops of
    # 20 non-overlapping patches whatever the phantom draw (12 did not for the generator-v2 phantoms)
    "smoke": Preset("smoke", ensemble=2, iterations=2, batch_size=1, patch_voxels=16 ** 3,
                    base_filters=16, max_filters=32, max_pools=2, deep_supervision=False, amp=False,
                    tta_test=False, lr=1e-3, optimizer="adamw", sw_batch=2, phantom_n=16, phantom_size=24, seeds=1),
}


# ---------------------------------------------------------------------------------------------
# Label regimes and query patch sizes
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSetting:
    key: str
    aliases: tuple
    patch_zyx: tuple | None           # thesis order; None = D.5 rule
    query_sizes: dict                 # regime -> patches per loop
    agg_stride_zyx: tuple = (1, 1, 1)
    n_patch_per_image: int | None = 20   # None = query size (roll-out)
    source: str = ""
    patch_half_zyx: tuple | None = None  # Patch×½ ablation size of the reference code (None: halve each axis)
    train_mirror: bool | None = None     # mirroring in training (None: from the labels / dataset.json)
    test_mirror: bool | None = None      # test-time mirroring (None: = training mirroring)


THESIS_DATASETS = [
    DatasetSetting("hippocampus", ("hippocampus", "task04_hippocampus", "dataset004_hippocampus"), (20, 20, 20),
                   {"low": 20, "medium": 40, "high": 60}, (1, 1, 1), 20, "Table C.2", (10, 10, 10)),
    DatasetSetting("acdc", ("acdc", "dataset027_acdc"), (4, 40, 40),
                   {"low": 30, "medium": 60, "high": 90}, (1, 8, 8), 20, "Table C.2", (2, 20, 20)),
    # Patch×½ of AMOS: the reference code's 16×32×32, not 16×37×37 (spec §12 erratum 8)
    DatasetSetting("amos", ("amos", "amos2022", "dataset216_amos2022_task1"), (32, 74, 74),
                   {"low": 40, "medium": 200, "high": 500}, (8, 8, 8), 20, "Table C.2", (16, 32, 32)),
    DatasetSetting("kits", ("kits", "kits2021", "kits21", "dataset135_kits2021"), (64, 64, 64),
                   {"low": 40, "medium": 200, "high": 500}, (8, 8, 8), 20, "Table C.2 (64³ per §12 erratum 1)",
                   (32, 32, 32)),
    DatasetSetting("lits", ("lits", "liver", "task03_liver", "dataset003_liver"), (28, 44, 39),
                   {"rollout": 150}, (8, 8, 8), None, "Table D.1"),
    DatasetSetting("word", ("word", "dataset654_word"), (29, 74, 87), {"rollout": 800}, (4, 8, 8), None, "Table D.1"),
    # §D.3: ToothFairy2 trains without mirroring; MAMA-MIA and ToothFairy2 predict the test set without TTA
    DatasetSetting("toothfairy2", ("toothfairy2", "dataset119_toothfairy2"), (33, 34, 35), {"rollout": 2100},
                   (4, 6, 6), 50, "Table D.1", train_mirror=False, test_mirror=False),
    DatasetSetting("mamamia", ("mamamia", "mama-mia", "mama_mia", "dataset095_mamamia"), (16, 48, 57),
                   {"rollout": 100}, (2, 4, 4), None, "Table D.1", test_mirror=False),
]
PHANTOM_SETTING = DatasetSetting("phantoms", ("phantoms",), None, {"low": 20, "medium": 40, "high": 60},
                                 (1, 1, 1), 20, "built-in phantoms (D.5 patch rule, Hippocampus-like voxel fractions)")
D5_PER_CLASS = {"low": 50, "rollout": 50, "medium": 100, "high": 200}


def match_setting(name: str, is_phantoms: bool = False) -> DatasetSetting | None:
    if is_phantoms:
        return PHANTOM_SETTING
    key = "".join(ch for ch in name.lower() if ch.isalnum() or ch in "_-")
    for s in THESIS_DATASETS:
        if key in s.aliases or key.replace("-", "_") in s.aliases:
            return s
    return None


def d5_patch_size(lcc_bbox: dict) -> tuple:
    """§D.5: per class, median (over train+pool images containing it) of the bounding box of the
    largest connected component; then the median over classes, per axis."""
    arr = np.asarray([np.asarray(v, dtype=float) for v in lcc_bbox.values()])  # [images, C, 3]
    if arr.size == 0:
        raise UserError("cannot derive a query patch size: no foreground in the train+pool labels")
    arr[arr == 0] = np.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a class absent from every image: dropped below
        per_class = np.nanmedian(arr, axis=0)  # [C, 3]
    per_class = per_class[np.isfinite(per_class).all(1)]
    if len(per_class) == 0:
        raise UserError("cannot derive a query patch size: no foreground in the train+pool labels")
    return tuple(int(max(1, round(v))) for v in np.median(per_class, axis=0))


@dataclass
class QuerySetting:
    patch: tuple                 # query patch size, array order
    query_size: int              # patches per AL query (loops 2, 3, ...)
    loops: int
    agg_stride: tuple
    n_patch_per_image: int
    source: str
    notes: list = field(default_factory=list)
    start_size: int | None = None   # starting budget (cycle 0); None = query size (the thesis' 20 % rule)

    def __post_init__(self):
        if self.start_size is None:
            self.start_size = self.query_size

    @property
    def budgets(self) -> list[int]:
        """Annotated patches after each loop."""
        return [self.start_size + k * self.query_size for k in range(self.loops)]

    def to_dict(self):
        d = asdict(self)
        if d["start_size"] == d["query_size"]:   # the thesis rule; older run configs have no such key
            del d["start_size"]
        return d


def half_patch(setting: DatasetSetting | None, patch: tuple) -> tuple:
    """Patch×½ (§7.4.6, Tables C.8/C.9/D.4): the reference code's halved size of a thesis dataset,
    else every axis halved (at least 1 voxel)."""
    if setting is not None and setting.patch_half_zyx is not None and tuple(reversed(setting.patch_zyx)) == tuple(patch):
        return tuple(reversed(setting.patch_half_zyx))
    return tuple(max(1, int(v) // 2) for v in patch)


def check_query_flags(query_scale, schedule_set: bool, patch_half: bool, patch_set: bool) -> None:
    """Flag combinations that contradict each other (checked before any data is read)."""
    if query_scale is not None and schedule_set:
        raise UserError("--query-scale keeps the starting and the total budget and sets the query size and the "
                        "loops; do not combine it with --query-size or --loops")
    if patch_half and patch_set:
        raise UserError("--patch-half halves the dataset's query patch size; do not combine it with --patch-size")


def query_setting(setting: DatasetSetting | None, regime: str, n_classes: int, lcc_bbox: dict, *,
                  patch_override=None, query_size_override=None, stride_override=None, ppi_override=None,
                  loops: int = N_LOOPS, start_override=None, query_scale: float | None = None,
                  patch_half: bool = False) -> QuerySetting:
    """The resolved query setting.  The starting budget is the regime's (thesis: = its query size,
    20 % of the Label-Regime budget; ``start_override``: ``--start-size``) whatever the query size:
    ``query_size_override`` (``--query-size``) changes only the patches per AL query and ``loops``
    (``--loops``) only the number of loops.  ``query_scale`` is the thesis' query-size ablation
    (QSx2 / QSx1/2, §7.4.3, Tables C.4/C.5): the query size × F with the same starting budget and
    the same total budget, so the loops become 1 + (loops − 1)/F (ACDC Low ×½: 30 + 8 × 15).
    ``patch_half``: Patch×½ (:func:`half_patch`)."""
    notes = []
    check_query_flags(query_scale, query_size_override is not None or loops != N_LOOPS, patch_half,
                      patch_override is not None)
    if setting is not None and setting.patch_zyx is not None:
        patch = tuple(reversed(setting.patch_zyx))
        stride = tuple(reversed(setting.agg_stride_zyx))
        src = f"{setting.key}: {setting.source}"
    else:
        patch = d5_patch_size(lcc_bbox)
        stride = tuple(reversed(setting.agg_stride_zyx)) if setting else (1, 1, 1)
        src = f"{setting.key if setting else 'new dataset'}: query patch by the D.5 median-bounding-box rule"
    if setting is not None and setting.query_sizes:
        if regime not in setting.query_sizes and query_size_override is None:
            raise UserError(f"dataset {setting.key} defines regimes {', '.join(setting.query_sizes)}, not {regime!r}")
        qs = setting.query_sizes.get(regime)
        ppi = setting.n_patch_per_image
    else:
        qs = D5_PER_CLASS[regime] * n_classes
        ppi = None
        src += f"; query size {D5_PER_CLASS[regime]} patches/class/loop (D.5)"
    start = qs
    if patch_override is not None:
        patch = tuple(int(v) for v in patch_override)
        notes.append("query patch size set by --patch-size")
    if patch_half:
        full, patch = patch, half_patch(setting, patch)
        notes.append(f"Patch×½: query patch {tuple(full)} halved to {tuple(patch)} (same number of patches)")
    if query_size_override is not None:
        qs = int(query_size_override)
        start = qs if start is None else start
        notes.append("query size set by --query-size (the starting budget is unchanged)")
    if start_override is not None:
        start = int(start_override)
        notes.append("starting budget set by --start-size")
    if start is None:   # a regime the dataset's table lacks, with --query-size: the thesis rule start = query size
        start = qs
    if query_scale is not None:
        f = float(query_scale)
        steps = (loops - 1) / f
        if not f > 0 or abs(qs * f - round(qs * f)) > 1e-9 or abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
            raise UserError(f"--query-scale {f:g}: {qs} patches × {f:g} and {loops - 1} queries / {f:g} must be whole "
                            "numbers (the thesis uses 2 and 0.5); set --query-size and --loops instead")
        qs, loops = int(round(qs * f)), 1 + int(round(steps))
        notes.append(f"query size ×{f:g} (QSx{f:g}, Tables C.4/C.5): {qs} patches per query, {loops} loops, "
                     "same starting and total budget")
    if stride_override is not None:
        stride = tuple(int(v) for v in stride_override)
    if ppi_override is not None:
        ppi = int(ppi_override)
    if ppi is None:
        ppi = qs
    if qs < 1 or start < 1 or min(patch) < 1 or min(stride) < 1 or ppi < 1:
        raise UserError("query size, starting budget, patch size, stride and patches per image must be >= 1")
    return QuerySetting(tuple(int(v) for v in patch), int(qs), int(loops), tuple(int(v) for v in stride),
                        int(ppi), src, notes, int(start))


# ---------------------------------------------------------------------------------------------
# Mirroring policy (datasets with left/right labels)
# ---------------------------------------------------------------------------------------------

_SIDE_TOKENS = {"left", "right", "l", "r", "lh", "rh", "lt", "rt", "links", "rechts", "sinister", "dexter"}


def lateral_labels(class_names) -> list[str]:
    """Label names that denote a body side (``left_kidney``, ``Head_of_femur_L``, ``Right Inferior
    Alveolar Canal``, ``lh_thalamus``): the tokens of a name split at non-letters and camelCase."""
    out = []
    for nm in class_names:
        tokens = re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", str(nm)).lower())
        if _SIDE_TOKENS & set(tokens):
            out.append(str(nm))
    return out


def declared_mirror(meta: dict, where):
    """dataset.json ``"mirror"``: true / false (training and test-time mirroring), an object
    ``{"train": bool, "test": bool}`` (either key may be left out), or None when absent (then
    decided by :func:`mirror_policy`)."""
    v = meta.get("mirror") if isinstance(meta, dict) else None
    msg = (f"{where}: \"mirror\" must be true, false or {{\"train\": true|false, \"test\": true|false}} (false: "
           "left/right labels, train and predict without mirroring; \"test\": false: no test-time mirroring)")
    if isinstance(v, dict):
        if not v or set(v) - {"train", "test"} or not all(isinstance(x, bool) for x in v.values()):
            raise UserError(msg)
        return {k: bool(x) for k, x in v.items()}
    if v is not None and not isinstance(v, bool):
        raise UserError(msg)
    return v


def mirror_policy(class_names, declared, setting: DatasetSetting | None = None) -> tuple[bool, bool, str]:
    """(mirroring in training, test-time mirroring, why) of a dataset — a plan option, not a preset
    switch (the preset's ``tta_test`` only says whether test-time mirroring is affordable at all).
    In order: dataset.json ``"mirror"`` (:func:`declared_mirror`); the thesis dataset's roll-out rule
    (§D.3: ToothFairy2 trains without mirroring, MAMA-MIA and ToothFairy2 predict the test set without
    it); left/right labels detected in the names (a flipped left structure is a right one: neither);
    else both.  Test-time mirroring is never on where training mirroring is off."""
    side = lateral_labels(class_names or [])
    if side:
        train, test = False, False
        why = f"left/right labels detected ({', '.join(side[:4])}{', ...' if len(side) > 4 else ''})"
    else:
        train, test, why = True, True, "no left/right labels"
    if setting is not None and (setting.train_mirror is not None or setting.test_mirror is not None):
        if setting.train_mirror is not None:
            train = test = setting.train_mirror
        if setting.test_mirror is not None:
            test = setting.test_mirror
        why = f"{setting.key} roll-out rule (§D.3)"
    if isinstance(declared, bool):
        train, test, why = declared, declared, f"dataset.json \"mirror\": {str(declared).lower()}"
    elif isinstance(declared, dict):
        train = declared.get("train", train)
        test = declared.get("test", test if "train" not in declared else declared["train"])
        why = "dataset.json \"mirror\": " + ", ".join(f"{k} {str(v).lower()}" for k, v in declared.items())
    return bool(train), bool(train and test), why


# ---------------------------------------------------------------------------------------------
# Target spacing and network plan (nnU-Net's planning rules)
# ---------------------------------------------------------------------------------------------

def target_spacing(spacings, shapes) -> tuple:
    """nnU-Net's 3d_fullres target spacing: the per-axis median spacing of train+pool, except on
    strongly anisotropic data — when the coarsest axis' median spacing exceeds 3× the finest other
    axis' *and* the median image has fewer than a third as many voxels along it as along the
    others — where that axis takes the 10th percentile of its spacings instead (kept above the
    other axes' spacing), so thick-slice scans are not interpolated across a few slices."""
    sp = np.asarray(spacings, dtype=float).reshape(-1, 3)
    sz = np.asarray(shapes, dtype=float).reshape(-1, 3)
    target = np.median(sp, 0)
    size = np.median(sz, 0)
    worst = int(np.argmax(target))
    other = [i for i in range(3) if i != worst]
    aniso_spacing = target[worst] > 3 * max(target[i] for i in other)
    aniso_voxels = size[worst] * 3 < min(size[i] for i in other)
    if aniso_spacing and aniso_voxels:
        t = float(np.percentile(sp[:, worst], 10))
        if t < max(target[i] for i in other):
            t = max(max(target[i] for i in other), t) + 1e-5
        target[worst] = t
    return tuple(float(v) for v in target)


@dataclass
class NetworkPlan:
    patch_size: tuple
    kernels: list
    strides: list
    filters: list

    def to_dict(self):
        return {"patch_size": list(self.patch_size), "kernels": [list(k) for k in self.kernels],
                "strides": [list(s) for s in self.strides], "filters": list(self.filters)}


def _pooling(patch, spacing, max_pools: int, min_feature: int = 4):
    size = np.asarray(patch, dtype=float)
    sp = np.asarray(spacing, dtype=float)
    kernels, strides = [], [[1, 1, 1]]
    kernels.append([3 if s <= 2 * sp.min() else 1 for s in sp])
    for _ in range(max_pools):
        can = size >= 2 * min_feature
        if not can.any():
            break
        ref = sp[can].min()
        pool = can & (sp <= 2 * ref)
        if not pool.any():
            break
        st = [2 if p else 1 for p in pool]
        size = size / np.asarray(st)
        sp = sp * np.asarray(st)
        strides.append(st)
        kernels.append([3 if s <= 2 * sp.min() else 1 for s in sp])
    return kernels, strides


def plan_network(median_shape, spacing, preset: Preset) -> NetworkPlan:
    """nnU-Net's 3d_fullres patch planning with a voxel budget in place of its VRAM estimate: start
    isotropic in mm (a 256³-voxel volume), clip to the median image shape, derive pooling per axis
    (:func:`_pooling`), pad up to the pooling divisibility, then while over budget shrink the axis
    whose patch is largest relative to the median shape by one divisibility step (re-deriving the
    pooling each time)."""
    med = np.maximum(np.asarray(median_shape, dtype=float), 1)
    sp = np.asarray(spacing, dtype=float)
    inv = 1.0 / sp
    patch = np.maximum(np.round(inv * (256 ** 3 / np.prod(inv)) ** (1 / 3)), 1)
    patch = np.minimum(patch, med)

    def fit(p):
        k, st = _pooling(p, sp, preset.max_pools)
        d = np.prod(np.asarray(st), axis=0)
        return k, st, d, np.ceil(p / d) * d

    kernels, strides, div, patch = fit(patch)
    for _ in range(10000):
        if np.prod(patch) <= preset.patch_voxels:
            break
        ax = int(np.argmax(patch / med))
        p2 = patch.copy()
        p2[ax] = max(p2[ax] - div[ax], 1)
        if p2[ax] == patch[ax]:  # cannot shrink this axis further: shrink the next largest
            order = np.argsort(-(patch / med))
            ax = next((int(a) for a in order if patch[a] > 1), ax)
            p2[ax] = max(patch[ax] - div[ax], 1)
        kernels, strides, div, patch = fit(p2)
    filters = [int(min(preset.base_filters * 2 ** i, preset.max_filters)) for i in range(len(strides))]
    return NetworkPlan(tuple(int(v) for v in patch), kernels, strides, filters)


def check_network_fits(plan: NetworkPlan, median_shape) -> None:
    """The MONAI DynUNet needs at least 3 levels (2 poolings); images too small to pool twice down
    to 4-voxel feature maps are refused in one line before anything is trained."""
    if len(plan.strides) < 3:
        shape = "×".join(str(int(v)) for v in median_shape)
        raise UserError(f"the images (median shape {shape} voxels after resampling) are too small for the network: "
                        "a U-Net of 3 levels pools twice down to ≥ 4-voxel feature maps, so some axis needs ≥ 16 "
                        "voxels — use larger images, or --backend nnunet")

