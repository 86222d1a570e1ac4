"""Datasets of the testbed: the seeded toy generator (2D / 3D) and a loader for MSD / nnU-Net layouts.

Every dataset is a :class:`SegData` with five splits (``uncertainty.md`` §7):

* ``train`` / ``val``  — i.i.d. cases (models train on i.i.d. data only; ``val`` picks the
  threshold λ and the Platt parameters);
* ``test_iid`` / ``test_ood`` — the test sets of the separation study and of FD / CALIB / AM;
* ``pool`` — the unlabelled pool (i.i.d. + shifted) of OoD detection and active learning.

Each case carries its image(s), all rater masks (the aleatoric reference is their pixel-wise
variance), an OoD flag, an "ambiguous" flag (raters disagree somewhere) and the kind of shift.

Toy generator (``uncertainty.md`` §7.1, re-done in 2D/3D with analytic masks instead of voxelised
meshes): spheres (discs) of extent ``r ∈ [size/5, size/2]`` placed fully inside the image;
aleatoric uncertainty = Gaussian blur extending the boundary outward plus three raters that cut the
blurred object at volumes of ≈10 %, 55 % and 100 % of ``image ≥ 0.1``; epistemic uncertainty =
test objects with a different grey value (×U(0.5, 0.9)), shape (cubes/squares) or position
(partly beyond the border).  Background noise (every pixel below 0.1 becomes 0 or U(0, 1) with
equal probability) is added after the labels are made; images are z-scored per case.

Scenarios (``ToyConfig.scenario``; thesis Table B.1, ``uncertainty.md`` §7.1): ``mixed`` (default:
scenario 3b's training data and test sets plus an unlabelled pool — every task in one run) or one
separation-study scenario with exactly its training and test data —

* ``1``  — every training case blurred (σ ¼ of the 3a/3b blur, the reference's 2 vs 8; no
  background noise); test: blurred i.i.d. cases only (NCC, Q1/Q2);
* ``2``  — no training case blurred; test: unblurred i.i.d. + shifted cases (AUROC, Q3/Q4);
* ``3a`` — half the training cases blurred; test: unblurred i.i.d. + shifted cases;
* ``3b`` — as 3a; test: unblurred i.i.d. + shifted + blurred i.i.d. cases.

Scenarios 2/3a/3b share their test cases (3b adds the blurred ones), 3a and 3b their training
cases, as in the reference generator.  The pool (OoD detection, AL) follows the scenario's training
distribution plus shifted cases (scenario 1: i.i.d. only, so OoD detection and AL are skipped).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from core import seeds
from core.errors import UserError
from segmentation import msd

SPLITS = ("train", "val", "test_iid", "test_ood", "pool")
RATER_PERC = np.array([0.10, 0.55, 1.00])  # rater volumes relative to ``image >= 0.1``


@dataclass
class Split:
    images: np.ndarray      # float32 [N, Cin, *S], z-scored per case
    raters: np.ndarray      # uint8 [N, R, *S], binary masks
    ood: np.ndarray         # bool [N]
    ambiguous: np.ndarray   # bool [N], raters disagree somewhere
    shift: np.ndarray       # str [N]: none | gray | shape | border | ood
    ids: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "Split":
        idx = np.asarray(idx, dtype=np.int64)
        return Split(self.images[idx], self.raters[idx], self.ood[idx], self.ambiguous[idx],
                     self.shift[idx], [self.ids[i] for i in idx])

    @staticmethod
    def concat(parts: Sequence["Split"]) -> "Split":
        return Split(np.concatenate([p.images for p in parts]), np.concatenate([p.raters for p in parts]),
                     np.concatenate([p.ood for p in parts]), np.concatenate([p.ambiguous for p in parts]),
                     np.concatenate([p.shift for p in parts]), sum((list(p.ids) for p in parts), []))

    def reference_variance(self) -> np.ndarray:
        """Aleatoric reference map [N, *S]: population variance of the binary rater labels; for
        class-id labels (several classes) the same quantity per class summed and halved,
        ``(1 − Σ_c p_c²) / 2`` with ``p_c`` the share of raters voting ``c`` — equal to ``p(1 − p)``
        for two classes (NCC, which is what the reference feeds, ignores the scale anyway)."""
        r = self.raters
        if not len(r) or int(r.max()) <= 1:
            return r.astype(np.float32).var(axis=1)
        sq = np.zeros((len(r),) + r.shape[2:], np.float32)
        for c in np.unique(r):
            sq += (r == c).mean(axis=1, dtype=np.float32) ** 2
        return (1 - sq) / 2

    def valid(self, ignore_index: int | None) -> np.ndarray | None:
        """[N, V] bool: pixels with a label (not ``ignore_index``; the first rater decides), or None."""
        if ignore_index is None:
            return None
        return self.raters[:, 0].reshape(len(self), -1) != ignore_index


@dataclass
class SegData:
    name: str
    dim: int
    splits: dict
    n_classes: int = 2
    class_names: list = field(default_factory=lambda: ["background", "foreground"])
    ignore_index: int | None = None  # label value excluded from training and metrics (GTA5/Cityscapes: 255)
    background: bool = True          # class 0 is background: foreground share, threshold aggregation
    flip_axes: tuple | None = None   # spatial axes (0-based) whose flips preserve labels; None = all
    shift: str = "none"              # what the shifted cases are: none | toy | dataset | <--shift name> | ...
    notes: list = field(default_factory=list)   # choices the loader made (class handling, ...), for the summary

    @property
    def spatial(self) -> tuple:
        return tuple(self.splits["train"].images.shape[2:])

    @property
    def in_channels(self) -> int:
        return int(self.splits["train"].images.shape[1])

    def summary(self) -> str:
        parts = []
        for k in SPLITS:
            s = self.splits[k]
            parts.append(f"{k}={len(s)} (ood {int(s.ood.sum())}, ambiguous {int(s.ambiguous.sum())})")
        return f"{self.name}: {self.dim}D {self.spatial}, {self.n_raters} rater(s), " + ", ".join(parts)

    @property
    def n_raters(self) -> int:
        return int(self.splits["train"].raters.shape[1])


# ============================================================================ toy generator
@dataclass(frozen=True)
class ToyConfig:
    dim: int = 2
    size: int = 64
    blur_sigma: float = 4.0        # for a 64-pixel image; scales with ``size``
    blur_fraction: float = 0.5     # share of blurred (ambiguous) cases in train / val / i.i.d. pool
    n_train: int = 160
    n_val: int = 40
    n_test_iid: int = 21           # per kind: this many unblurred + this many blurred i.i.d. cases
    n_test_ood: int = 21           # split evenly over the grey / shape / border shifts
    n_pool_iid: int = 40
    n_pool_ood: int = 40
    noise: bool = True
    seed: int = 0
    scenario: str = "mixed"        # mixed | 1 | 2 | 3a | 3b (thesis Table B.1)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Scenario:
    """One row of thesis Table B.1: the blurred share of the training data and the test sets."""
    name: str
    train_blur: float           # share of blurred (ambiguous) training / validation / i.i.d. pool cases
    sigma_scale: float = 1.0    # blur σ relative to ``ToyConfig.blur_sigma``
    noise: bool = True          # background noise on every case
    test_plain: bool = True     # unblurred i.i.d. test cases
    test_blur: bool = False     # blurred i.i.d. test cases
    test_shifted: bool = True   # shifted (OoD) test cases
    description: str = ""


SCENARIOS = {s.name: s for s in (
    Scenario("1", 1.0, sigma_scale=0.25, noise=False, test_plain=False, test_blur=True, test_shifted=False,
             description="train on blurred data (AU); test on blurred i.i.d. data — Q1/Q2 (NCC)"),
    Scenario("2", 0.0, description="train without blur; test on i.i.d. and shifted data — Q3/Q4 (AUROC)"),
    Scenario("3a", 0.5, description="train with and without blur; test on unblurred i.i.d. and shifted data — Q4"),
    Scenario("3b", 0.5, test_blur=True,
             description="as 3a; test also on blurred i.i.d. data — Q4 with AU in the test set"),
)}
SCENARIO_NAMES = ("mixed", *SCENARIOS)


def _axes(dim: int, size: int) -> list[np.ndarray]:
    """Pixel-centre coordinates per axis, shaped to broadcast against [N, *S]."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return [c.reshape((1,) + tuple(size if i == a else 1 for i in range(dim))) for a in range(dim)]


def _objects(rng: np.random.Generator, n: int, dim: int, size: int, shape: str, over_border: bool) -> np.ndarray:
    """Binary object images [n, *S] (float32), all cases at once."""
    ext = rng.integers(size // 5, size // 2 + 1, size=n).astype(np.float32)       # object extent
    hi = (size - ext)[:, None]
    off = np.floor(rng.random((n, dim)) * (hi + 1))                                 # U_int[0, size−ext]
    if over_border:
        k = rng.integers(1, 2 ** dim, size=n)                                      # non-zero bit pattern
        bits = ((k[:, None] >> np.arange(dim)[None]) & 1).astype(bool)
        lo = -np.floor(2 / 3 * ext)[:, None]
        off_out = lo + np.floor(rng.random((n, dim)) * (-lo + 1))                   # U_int[−⌊2/3 ext⌋, 0]
        off = np.where(bits, off_out, off)
    centre = off + ext[:, None] / 2
    if over_border:                                                                 # random mirror per axis
        flip = rng.random((n, dim)) < 0.5
        centre = np.where(flip, size - centre, centre)
    half = ext / 2
    d = [(ax - centre[:, a].reshape((n,) + (1,) * dim)) / half.reshape((n,) + (1,) * dim)
         for a, ax in enumerate(_axes(dim, size))]
    if shape == "sphere":
        inside = sum(x * x for x in d) <= 1.0
    elif shape == "cube":
        inside = np.max(np.stack([np.abs(x) for x in np.broadcast_arrays(*d)]), axis=0) <= 1.0
    else:
        raise ValueError(shape)
    return inside.astype(np.float32)


def _quantile_rows(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row linear-interpolated quantile (numpy's default method): x [N, V], q [N, K] → [N, K]."""
    s = np.sort(x, axis=1)
    pos = q * (x.shape[1] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[1] - 1)
    vlo, vhi = np.take_along_axis(s, lo, 1), np.take_along_axis(s, hi, 1)
    return vlo + (vhi - vlo) * (pos - lo)


def _raters(img: np.ndarray) -> np.ndarray:
    """Three rater masks per case (before noise): ``image ≥ quantile(1 − p·ratio)`` for p ∈
    {0.10, 0.55, 1.00}, ratio = share of ``image ≥ 0.1``.  Identical masks on binary images."""
    n = len(img)
    flat = img.reshape(n, -1)
    ratio = (flat >= 0.1).mean(1)
    q = np.clip(1 - RATER_PERC[None] * ratio[:, None], 0, 1)
    thr = _quantile_rows(flat, q)                                                   # [N, 3]
    masks = flat[:, None, :] >= thr[:, :, None]
    return masks.reshape((n, len(RATER_PERC)) + img.shape[1:]).astype(np.uint8)


def _make_cases(rng: np.random.Generator, cfg: ToyConfig, n: int, *, shape="sphere", blur=False,
                gray=False, over_border=False, shift="none", prefix="c") -> Split:
    from scipy.ndimage import gaussian_filter
    dim, size = cfg.dim, cfg.size
    if n == 0:
        return Split(np.zeros((0, 1) + (size,) * dim, np.float32), np.zeros((0, 3) + (size,) * dim, np.uint8),
                     np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, "<U6"), [])
    img = _objects(rng, n, dim, size, shape, over_border)
    if gray:
        img *= rng.uniform(0.5, 0.9, size=n).astype(np.float32).reshape((n,) + (1,) * dim)
    if blur:
        sig = (0,) + (cfg.blur_sigma * size / 64,) * dim
        img = gaussian_filter(img, sigma=sig, mode="constant").astype(np.float32)
    raters = _raters(img)
    if cfg.noise:
        bg = img < 0.1
        keep_zero = rng.random(img.shape) < 0.5
        img = np.where(bg, np.where(keep_zero, 0.0, rng.random(img.shape)), img).astype(np.float32)
    flat = img.reshape(n, -1)
    sd = flat.std(1)
    img = ((flat - flat.mean(1, keepdims=True)) / np.where(sd > 0, sd, 1)[:, None]).reshape(img.shape)
    amb = (raters.max(1) != raters.min(1)).reshape(n, -1).any(1)
    ood = shift != "none"
    return Split(img[:, None].astype(np.float32), raters, np.full(n, ood), amb,
                 np.full(n, shift, dtype="<U6"), [f"{prefix}{i:04d}" for i in range(n)])


def _iid(rng, cfg: ToyConfig, n: int, blur_frac: float, prefix: str) -> Split:
    nb = int(round(n * blur_frac))
    parts = [_make_cases(rng, cfg, nb, blur=True, prefix=prefix + "b"),
             _make_cases(rng, cfg, n - nb, blur=False, prefix=prefix + "s")]
    s = Split.concat(parts)
    return s.subset(rng.permutation(len(s)))


def _shifted(rng, cfg: ToyConfig, n: int, prefix: str) -> Split:
    k = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
    return Split.concat([_make_cases(rng, cfg, k[0], gray=True, shift="gray", prefix=prefix + "g"),
                         _make_cases(rng, cfg, k[1], shape="cube", shift="shape", prefix=prefix + "q"),
                         _make_cases(rng, cfg, k[2], over_border=True, shift="border", prefix=prefix + "o")])


def make_toy(cfg: ToyConfig) -> SegData:
    """The toy dataset: ``mixed`` (scenario 3b plus an unlabelled pool; ``blur_fraction`` sets the
    blurred share of the training data) or one scenario of Table B.1 (:data:`SCENARIOS`)."""
    if cfg.dim not in (2, 3):
        raise UserError(f"toy data is 2D or 3D, not {cfg.dim}D")
    if cfg.size < 16:
        raise UserError("toy image size must be at least 16")
    if cfg.scenario != "mixed":
        return _make_scenario(cfg)
    rng = seeds.rng(cfg.seed, "toy", cfg.dim, cfg.size)
    train = _iid(rng, cfg, cfg.n_train, cfg.blur_fraction, "tr")
    val = _iid(rng, cfg, cfg.n_val, cfg.blur_fraction, "va")
    test_iid = Split.concat([_make_cases(rng, cfg, cfg.n_test_iid, blur=False, prefix="tis"),
                             _make_cases(rng, cfg, cfg.n_test_iid, blur=True, prefix="tib")])
    test_ood = _shifted(rng, cfg, cfg.n_test_ood, "to")
    pool = Split.concat([_iid(rng, cfg, cfg.n_pool_iid, cfg.blur_fraction, "pi"),
                         _shifted(rng, cfg, cfg.n_pool_ood, "po")])
    return SegData(f"toy{cfg.dim}d", cfg.dim, {
        "train": train, "val": val,
        "test_iid": test_iid, "test_ood": test_ood, "pool": pool}, shift="toy")


def _make_scenario(cfg: ToyConfig) -> SegData:
    """One scenario of Table B.1.  Training data: scenario 1 / 2 / 3 (3a and 3b share it), test data:
    scenario 1, or the shared 2/3a/3b stream (unblurred i.i.d., shifted, then — 3b only — blurred
    i.i.d. cases); each from its own seeded stream, so scenarios share what the thesis shares."""
    if cfg.scenario not in SCENARIOS:
        raise UserError(f"unknown toy scenario {cfg.scenario!r}; valid: {', '.join(SCENARIO_NAMES)}")
    sc = SCENARIOS[cfg.scenario]
    c = replace(cfg, blur_sigma=cfg.blur_sigma * sc.sigma_scale, noise=sc.noise)
    kind = cfg.scenario[0]                                                # training data: 1, 2 or 3
    rng = seeds.rng(cfg.seed, "toy-train", cfg.dim, cfg.size, int(kind))
    train = _iid(rng, c, cfg.n_train, sc.train_blur, "tr")
    val = _iid(rng, c, cfg.n_val, sc.train_blur, "va")
    pool_iid = _iid(rng, c, cfg.n_pool_iid, sc.train_blur, "pi")
    pool_ood = _shifted(rng, c, cfg.n_pool_ood if sc.test_shifted else 0, "po")
    if kind == "1":   # Table B.1: 20 blurred i.i.d. test cases (21 for scenarios 2/3)
        t = seeds.rng(cfg.seed, "toy-test", cfg.dim, cfg.size, 1)
        test_iid = _make_cases(t, c, max(1, cfg.n_test_iid * 20 // 21), blur=True, prefix="tib")
        test_ood = _make_cases(t, c, 0)
    else:
        t = seeds.rng(cfg.seed, "toy-test", cfg.dim, cfg.size, 2)
        plain = _make_cases(t, c, cfg.n_test_iid, blur=False, prefix="tis")
        test_ood = _shifted(t, c, cfg.n_test_ood, "to")
        blurred = _make_cases(t, c, cfg.n_test_iid if sc.test_blur else 0, blur=True, prefix="tib")
        test_iid = Split.concat([plain, blurred])
    return SegData(f"toy{cfg.dim}d-s{cfg.scenario}", cfg.dim, {
        "train": train, "val": val, "test_iid": test_iid, "test_ood": test_ood,
        "pool": Split.concat([pool_iid, pool_ood])}, shift="toy" if len(test_ood) else "none")


# ============================================================================ MSD / nnU-Net layout
CLASS_MODES = ("merged", "per-class")
# keys of the ``values`` block of dataset.json (README "The values block")
VALUES_KEYS = {
    "ood": "list of case names that are shifted (OoD) cases",
    "shift": "one line saying what the shift is (shown in the tables)",
    "splits": "optional fixed split: {train, val, test_iid, test_ood, pool} → lists of case names",
}


@dataclass(frozen=True)
class MSDConfig:
    size: int = 64                 # every case is resampled to size^D
    test_fraction: float = 0.2     # of the i.i.d. cases
    pool_fraction: float = 0.2     # of the i.i.d. cases: the unlabelled pool (AL; with a shift also OoD detection)
    val_fraction: float = 0.2      # of the remaining i.i.d. cases
    seed: int = 0
    classes: str = "merged"        # merged (foreground = any label > 0) | per-class (one output per label)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MSDFacts:
    """What a dataset folder offers the testbed, read from dataset.json and the file listing only
    (no volume decoded): decides which tasks can run before any work starts."""
    root: Path
    n_cases: int
    raters: tuple                  # (min, max) label files per case
    n_ood: int
    class_names: list | None
    values: dict                   # the validated ``values`` block ({} when absent)
    has_values: bool


def values_block(layout: msd.Layout) -> dict:
    """The ``values`` block of dataset.json, checked: known keys, case names that exist, a fixed
    split that assigns no case twice.  Every problem is one ``UserError`` naming dataset.json."""
    where = layout.root / "dataset.json"
    raw = layout.meta.get("values", {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: \"values\" must be an object, e.g. {{\"ood\": [\"case_017\", ...]}}")
    unknown = sorted(set(raw) - set(VALUES_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} in \"values\"; known: "
                        f"{', '.join(VALUES_KEYS)}")
    names = {c.name for c in layout.cases}
    example = next(iter(sorted(names)), "case")

    def case_list(v, what: str) -> list[str]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise UserError(f"{where}: {what} must be a list of case names (strings), e.g. [\"{example}\"]")
        bad = [x for x in v if x not in names]
        if bad:
            raise UserError(f"{where}: {what} names {len(bad)} case(s) that do not exist: "
                            f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} (cases are named like {example!r})")
        return list(v)

    out = {}
    if "ood" in raw:
        out["ood"] = case_list(raw["ood"], "values.ood")
    if "shift" in raw:
        if not isinstance(raw["shift"], str):
            raise UserError(f"{where}: values.shift must be a string describing the shift")
        out["shift"] = raw["shift"]
    if "splits" in raw:
        sp = raw["splits"]
        if not isinstance(sp, dict):
            raise UserError(f"{where}: values.splits must be an object {{\"train\": [...], \"val\": [...], ...}}")
        bad = sorted(set(sp) - set(SPLITS))
        if bad:
            raise UserError(f"{where}: unknown split(s) {', '.join(bad)} in values.splits; known: {', '.join(SPLITS)}")
        seen: dict = {}
        out["splits"] = {}
        for k in SPLITS:
            lst = case_list(sp.get(k, []), f"values.splits.{k}")
            for c in lst:
                if c in seen:
                    raise UserError(f"{where}: case {c} is in values.splits.{seen[c]} and values.splits.{k}")
                seen[c] = k
            out["splits"][k] = lst
        for k in ("train", "val", "test_iid"):
            if not out["splits"][k]:
                raise UserError(f"{where}: values.splits.{k} is empty")
        ood = {c.name for c in layout.cases if c.ood}
        wrong = [c for c in out["splits"]["test_ood"] if c not in ood] + [c for k in ("train", "val", "test_iid")
                                                                          for c in out["splits"][k] if c in ood]
        if wrong:
            raise UserError(f"{where}: values.splits puts case {wrong[0]} on the wrong side: test_ood holds the cases "
                            "of values.ood, train / val / test_iid the others")
    return out


def inspect_msd(path) -> MSDFacts:
    """Facts of an MSD / nnU-Net folder for the testbed, from dataset.json and file names only."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"dataset path {root} does not exist (use toy2d, toy3d, lidc-tex, lidc-mal, gta-cs or an "
                        "MSD/nnU-Net folder)")
    layout = msd.read_layout(root, need_labels=False, min_cases=0)
    vals = values_block(layout)
    r = [len(c.labels) for c in layout.cases] or [0]
    return MSDFacts(root, len(layout.cases), (min(r), max(r)), sum(c.ood for c in layout.cases),
                    layout.class_names, vals, "values" in layout.meta)


def _to_tensor_shape(arr: np.ndarray, channels_last: bool) -> np.ndarray:
    """→ [Cin, *S] with S 2D or 3D (singleton spatial axes dropped)."""
    a = np.asarray(arr)
    if channels_last and a.ndim == 4:
        a = np.moveaxis(a, -1, 0)
    else:
        a = a[None]
    sp = [s for s in a.shape[1:] if s > 1]
    return a.reshape((a.shape[0],) + tuple(sp))


def _resize(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)[None]
    dim = t.ndim - 2
    kw = {"mode": mode} if mode == "nearest" else {"mode": "bilinear" if dim == 2 else "trilinear", "align_corners": False}
    return F.interpolate(t, size=(size,) * dim, **kw)[0].numpy()


def class_note(names: list | None, mode: str) -> str:
    """One line saying how the dataset's classes are handled (printed, and kept in the summary)."""
    fg = list(names[1:]) if names else ["foreground"]
    shown = ", ".join(fg[:8]) + (", ..." if len(fg) > 8 else "")
    if len(fg) == 1:
        return f"classes: one foreground class ({fg[0]}) against background"
    if mode == "merged":
        return (f"classes: the {len(fg)} foreground classes ({shown}) are merged into one foreground "
                f"(--classes merged, the default); --classes per-class trains a {len(fg) + 1}-class net instead")
    return (f"classes: per class (--classes per-class) — a {len(fg) + 1}-class net (background, {shown}); Dice per "
            f"class and averaged over the foreground classes; NCC/GED/calibration on the class labels")


def load_msd(path, cfg: MSDConfig = MSDConfig(), log=print) -> SegData:
    """Load an MSD / nnU-Net-layout dataset (``dataset.json``, ``imagesTr``, ``labelsTr``).

    * classes: ``cfg.classes == "merged"`` → binary, foreground = label > 0; ``"per-class"`` → one
      output per label of dataset.json (labels 0..C as class ids);
    * multiple raters: ``labelsTr/<case>_NN.nii.gz`` files (or a list under ``label`` in the
      ``training`` entry); one rater otherwise;
    * distribution shift: cases listed under ``dataset.json["values"]["ood"]`` (or
      ``"ood_cases"``, or an entry's ``"ood": true``) are the shifted cases; a fixed split under
      ``values.splits``, else a seeded random one (i.i.d.: test / pool / val / train; shifted: half
      test, half pool);
    * every case is resampled to ``size^D`` (image: linear; labels: nearest)."""
    if cfg.classes not in CLASS_MODES:
        raise UserError(f"unknown class handling {cfg.classes!r}; valid: {', '.join(CLASS_MODES)}")
    facts = inspect_msd(path)
    root = facts.root
    layout = msd.read_layout(root, need_labels=False, min_cases=0)
    cases = layout.cases
    if len(cases) < 8:
        raise UserError(f"{root} has {len(cases)} cases; the testbed needs at least 8")
    per_class = cfg.classes == "per-class"
    if per_class and layout.class_names is None:
        raise UserError(f"{root / 'dataset.json'}: --classes per-class needs the \"labels\" of dataset.json")
    n_fg = layout.n_classes
    imgs, labs, dims = [], [], set()
    for c in cases:
        chans = [_to_tensor_shape(msd.read_volume(p, root), channels_last=True) for p in c.images]
        im = np.concatenate(chans, 0).astype(np.float32)
        ls = []
        for p in c.labels:
            lab = _to_tensor_shape(msd.read_volume(p, root), channels_last=False)[0]
            if per_class:
                bad = np.setdiff1d(np.unique(lab), np.arange(n_fg + 1))
                if len(bad):
                    raise UserError(f"{msd.rel(root.resolve(), p)}: label values {bad[:5].tolist()} are not classes of "
                                    f"dataset.json (0..{n_fg})")
                ls.append(lab.astype(np.float32))
            else:
                ls.append((lab > 0).astype(np.float32))
        if any(lab.shape != im.shape[1:] for lab in ls):
            raise UserError(f"case {c.name}: label shape {ls[0].shape} differs from image shape {im.shape[1:]}")
        dims.add(im.ndim - 1)
        imgs.append(_resize(im, cfg.size, "linear"))
        labs.append(np.rint(_resize(np.stack(ls), cfg.size, "nearest")).astype(np.uint8))
    if len(dims) != 1 or dims.pop() not in (2, 3):
        raise UserError(f"{root}: cases must all be 2D or all 3D")
    if len({i.shape[0] for i in imgs}) != 1:
        raise UserError(f"{root}: cases have different numbers of image channels")
    r = min(lab.shape[0] for lab in labs)
    if r != max(lab.shape[0] for lab in labs):
        log(f"note: cases have {r}..{max(lab.shape[0] for lab in labs)} raters; using the first {r} of each")
    images = np.stack(imgs)
    flat = images.reshape(len(images), images.shape[1], -1)
    mu, sd = flat.mean(-1, keepdims=True), flat.std(-1, keepdims=True)
    images = ((flat - mu) / np.where(sd > 0, sd, 1)).reshape(images.shape).astype(np.float32)
    raters = np.stack([lab[:r] for lab in labs])
    ood = np.array([c.ood for c in cases])
    amb = (raters.max(1) != raters.min(1)).reshape(len(cases), -1).any(1)
    allc = Split(images, raters, ood, amb, np.where(ood, "ood", "none").astype("<U12"), [c.name for c in cases])
    fixed = facts.values.get("splits")
    if fixed:
        index = {c.name: i for i, c in enumerate(cases)}
        splits = {k: allc.subset(np.array([index[c] for c in fixed[k]], dtype=np.int64)) for k in SPLITS}
        unused = len(cases) - sum(len(v) for v in fixed.values())
        if unused:
            log(f"note: values.splits leaves {unused} case(s) unused")
    else:
        rng = seeds.rng(cfg.seed, "msd")
        iid = rng.permutation(np.flatnonzero(~ood))
        oo = rng.permutation(np.flatnonzero(ood))
        n_test = max(1, int(round(cfg.test_fraction * len(iid))))
        n_pool = max(1, int(round(cfg.pool_fraction * len(iid)))) if cfg.pool_fraction > 0 else 0
        rest = iid[n_test + n_pool:]
        n_val = max(1, int(round(cfg.val_fraction * len(rest))))
        if len(rest) - n_val < 2:
            raise UserError(f"{root}: too few i.i.d. cases ({len(iid)}) for train/val/test/pool splits")
        half = len(oo) // 2
        splits = {"train": allc.subset(rest[n_val:]), "val": allc.subset(rest[:n_val]),
                  "test_iid": allc.subset(iid[:n_test]), "test_ood": allc.subset(oo[:half]),
                  "pool": allc.subset(np.r_[iid[n_test:n_test + n_pool], oo[half:]].astype(np.int64))}
    names = list(layout.class_names) if (per_class and layout.class_names) else \
        ["background", "foreground" if n_fg > 1 or not layout.class_names else layout.class_names[1]]
    notes = [class_note(layout.class_names, cfg.classes)]
    if facts.values.get("shift"):
        notes.append(f"shift (dataset.json values.shift): {facts.values['shift']}")
    return SegData(root.name, images.ndim - 2, splits, n_classes=len(names), class_names=names,
                   shift="dataset" if ood.any() else "none", notes=notes)


def write_msd(data: SegData, path, splits: Sequence[str] = SPLITS) -> Path:
    """Export a dataset in the nnU-Net v2 raw layout (``segmentation.msd`` writer) with one label
    file per rater (``labelsTr/<case>_NN.nii.gz``) and the shifted cases under ``values.ood``.  Used
    to hand the toy data to other tools and to test the real-data path."""
    def cases():
        for sp in splits:
            s = data.splits[sp]
            for i in range(len(s)):
                yield msd.NewCase(f"{sp}_{s.ids[i]}", list(s.images[i]), list(s.raters[i]), bool(s.ood[i]))
    return msd.write_layout(path, cases(), name=data.name, class_names=list(data.class_names),
                            channel_names=["image"] * data.in_channels)
