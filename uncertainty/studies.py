"""The separation study and the downstream tasks on the predictions of one prediction model.

Input: the model's :class:`SplitPred` for ``val``, ``test_iid``, ``test_ood`` and ``pool`` (maps per
measure, mean-prediction segmentation, per-image Dice and GED, predicted foreground share).
Output: tidy rows ``{model, measure, utype, aggregation, task, metric, split, seed, value}``.

Tasks and metrics (``uncertainty.md`` §9–§10):

* ``separation`` — NCC of every measure with the inter-rater variance on the ambiguous i.i.d.
  test cases (Q1/Q2), and image-level AUROC i.i.d. vs shifted test cases per aggregation (Q3/Q4):
  ``auroc`` uses all i.i.d. test cases (toy scenario 3b), ``auroc_noamb`` only the unambiguous
  ones (toy scenario 3a);
* ``seg``   — Dice of the mean prediction against every rater, averaged (i.i.d. / OoD test);
* ``ood``   — AUROC of the aggregated scores, i.i.d. pool (0) vs shifted pool (1);
* ``fd``    — AURC and E-AURC with confidence −score and risk 1 − Dice (i.i.d. / OoD test);
* ``calib`` — ACE after Platt scaling of −u (fitted per validation image, parameters averaged),
  correctness = agreement of the mean prediction with each rater, 20 bins;
* ``am``    — NCC (per measure) and GED with d = 1 − Dice between the model's sample
  segmentations and the raters (per model);
* ``al``    — computed by the runner (it retrains), see ``runner.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core import metrics as cm

from .aggregation import AGGREGATIONS, aggregate, fit_threshold
from .data import Split
from .measures import UTYPE, measure_maps

TASKS = ("separation", "seg", "ood", "fd", "calib", "al", "am")


@dataclass
class SplitPred:
    maps: dict            # measure → float32 [N, *S]
    seg: np.ndarray       # uint8 [N, *S], argmax of the mean prediction (class ids)
    fg_frac: np.ndarray   # [N] predicted foreground (non-background) share, mean over the M samples
    dice: np.ndarray      # [N] Dice(mean prediction, rater), mean over raters (and classes)
    ged: np.ndarray       # [N] GED(sample segmentations, raters)
    dice_cls: np.ndarray | None = None   # [N, C] per-class Dice (NaN where a class is absent); several classes only


@dataclass(frozen=True)
class LabelSpec:
    """How labels are read: ``n_classes`` outputs; with ``background`` class 0 is background (Dice,
    GED and the foreground share count classes 1..C−1; else every class counts); pixels labelled
    ``ignore_index`` are left out of every metric."""
    n_classes: int = 2
    background: bool = True
    ignore_index: int | None = None

    @property
    def binary(self) -> bool:
        return self.n_classes == 2 and self.background and self.ignore_index is None

    @property
    def classes(self) -> range:
        return range(1 if self.background else 0, self.n_classes)


def label_spec(data) -> LabelSpec:
    return LabelSpec(int(data.n_classes), bool(data.background), data.ignore_index)


def _pair_dice(x: np.ndarray, y: np.ndarray, ls: LabelSpec, valid: np.ndarray | None) -> np.ndarray:
    """Micro-averaged Dice over the counted classes between every label map of ``x[B, K, V]`` and
    every one of ``y[B, L, V]`` → ``[B, K, L]`` (two maps without counted pixels: 1).  For binary
    labels this is the foreground Dice of ``core.metrics.dice_matrix``."""
    inter = np.zeros((x.shape[0], x.shape[1], y.shape[1]), np.float64)
    sx = np.zeros(x.shape[:2], np.float64)
    sy = np.zeros(y.shape[:2], np.float64)
    for c in ls.classes:
        a, b = (x == c), (y == c)
        if valid is not None:
            a, b = a & valid[:, None], b & valid[:, None]
        a, b = a.astype(np.float32), b.astype(np.float32)
        inter += a @ np.swapaxes(b, -1, -2)
        sx += a.sum(-1)
        sy += b.sum(-1)
    den = sx[:, :, None] + sy[:, None, :]
    return np.where(den > 0, 2 * inter / np.where(den > 0, den, 1), 1.0)


def _class_dice(seg: np.ndarray, rat: np.ndarray, ls: LabelSpec, valid: np.ndarray | None):
    """Per-class Dice of ``seg[B, V]`` against every rater ``rat[B, R, V]``: → (mean over the classes
    present in prediction or rater and over raters [B] (1 when no class is present), per class [B, C]
    averaged over raters, NaN where the class is absent)."""
    b, r = rat.shape[:2]
    acc, cnt = np.zeros((b, r)), np.zeros((b, r))
    per = np.full((b, ls.n_classes), np.nan)
    for c in ls.classes:
        a, t = (seg == c)[:, None], (rat == c)
        if valid is not None:
            a, t = a & valid[:, None], t & valid[:, None]
        inter = (a & t).sum(-1)
        den = a.sum(-1) + t.sum(-1)
        present = den > 0
        d = np.where(present, 2 * inter / np.where(present, den, 1), 0.0)
        acc += d
        cnt += present
        with np.errstate(invalid="ignore"):
            per[:, c] = np.where(present.any(1), (d * present).sum(1) / np.maximum(present.sum(1), 1), np.nan)
    return np.where(cnt > 0, acc / np.maximum(cnt, 1), 1.0).mean(-1), per


def predict_split(model, split: Split, measures, batch: int = 16, on_batch=None, labels: LabelSpec = LabelSpec()) -> SplitPred:
    """Run a prediction model over a split, keeping only per-image summaries and the maps."""
    sp = split.images.shape[2:]
    if len(split) == 0:     # no shifted cases (e.g. toy scenario 1): an empty prediction, not an error
        return SplitPred({m: np.zeros((0, *sp), np.float32) for m in measures}, np.zeros((0, *sp), np.uint8),
                         np.zeros(0), np.zeros(0), np.zeros(0), None if labels.binary else np.zeros((0, labels.n_classes)))
    maps = {m: [] for m in measures}
    seg, fg, dice, ged, dcls = [], [], [], [], []
    for s in range(0, len(split), batch):
        p = model.predict_batch(torch.as_tensor(split.images[s:s + batch]))            # [B, M, C, *S]
        for k, v in measure_maps(p, measures).items():
            maps[k].append(v.numpy().astype(np.float32))
        b, m = p.shape[:2]
        mean_cls = p.mean(1).argmax(1).flatten(1).numpy().astype(np.uint8)                # [B, V]
        samp_cls = p.argmax(2).flatten(2).numpy().astype(np.uint8)                        # [B, M, V]
        rat = split.raters[s:s + batch].reshape(b, split.raters.shape[1], -1)
        seg.append(mean_cls.reshape((b,) + tuple(p.shape[3:])))
        if labels.binary:   # the binary testbed (toy, LIDC, merged classes): foreground Dice / GED
            samp_seg = (samp_cls > 0).astype(np.uint8)
            rat01 = (rat > 0).astype(np.uint8)
            fg.append(samp_seg.mean((1, 2)))
            dice.append(cm.dice_matrix((mean_cls > 0)[:, None], rat01)[:, 0].mean(-1))
            ged.append(cm.ged(rat01, samp_seg))
        else:
            valid = None if labels.ignore_index is None else rat[:, 0] != labels.ignore_index
            nonbg = (samp_cls > 0) if labels.background else np.ones_like(samp_cls, bool)
            if valid is not None:
                nonbg = nonbg & valid[:, None]
            fg.append(nonbg.mean((1, 2)))
            d, per = _class_dice(mean_cls, rat, labels, valid)
            dice.append(d)
            dcls.append(per)
            cross = (1 - _pair_dice(rat, samp_cls, labels, valid)).mean((-1, -2))
            rr = (1 - _pair_dice(rat, rat, labels, valid)).mean((-1, -2))
            ss = (1 - _pair_dice(samp_cls, samp_cls, labels, valid)).mean((-1, -2))
            ged.append(2 * cross - rr - ss)
        if on_batch is not None:
            on_batch()
    return SplitPred({k: np.concatenate(v) for k, v in maps.items()}, np.concatenate(seg),
                     np.concatenate(fg), np.concatenate(dice), np.concatenate(ged),
                     np.concatenate(dcls) if dcls else None)


def _agreement(split: Split, pred: SplitPred) -> np.ndarray:
    """Per pixel, the share of raters that agree with the mean prediction → [N, V]."""
    n = len(split)
    return (split.raters.reshape(n, split.raters.shape[1], -1) == pred.seg.reshape(n, 1, -1)).mean(1)


def _mean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


@dataclass
class Calibrators:
    thresholds: dict   # measure → λ
    platt: dict        # measure → (a, b)


def fit_calibrators(val: Split, pv: SplitPred, labels: LabelSpec = LabelSpec()) -> Calibrators:
    alpha = float(pv.fg_frac.mean())
    thr = {m: fit_threshold(u, alpha) for m, u in pv.maps.items()}
    agree = _agreement(val, pv)
    valid = val.valid(labels.ignore_index)
    platt = {}
    chunk = max(1, 2 ** 22 // max(1, agree.shape[1]))     # bound the Newton temporaries for big 3D maps
    for m, u in pv.maps.items():
        flat = -u.reshape(len(val), -1)
        ab = [cm.platt_fit(flat[i:i + chunk], agree[i:i + chunk], None if valid is None else valid[i:i + chunk])
              for i in range(0, len(val), chunk)]
        platt[m] = (float(np.mean(np.concatenate([x[0] for x in ab]))), float(np.mean(np.concatenate([x[1] for x in ab]))))
    return Calibrators(thr, platt)


def scores(pred: SplitPred, cal: Calibrators, aggregations=AGGREGATIONS) -> dict:
    """{measure: {aggregation: scores[N]}}."""
    return {m: {a: aggregate(u, a, cal.thresholds.get(m)) for a in aggregations} for m, u in pred.maps.items()}


def evaluate(model: str, data_splits: dict, preds: dict, seed: int, labels: LabelSpec = LabelSpec(),
             class_names=None) -> tuple[list[dict], dict]:
    """All tasks except AL for one prediction model and seed.  ``preds`` holds SplitPred for
    val / test_iid / test_ood / pool.  Returns (rows, extras) — extras carry the calibrators,
    the aggregated scores and the per-image risks for plots and for AL.  With several classes the
    ``seg`` rows add ``dice:<class>`` per class."""
    rows: list[dict] = []
    ut = UTYPE[model]

    def add(task, metric, value, split, measure="-", aggregation="-"):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return
        rows.append({"model": model, "measure": measure, "utype": ut.get(measure, "-"), "aggregation": aggregation,
                     "task": task, "metric": metric, "split": split, "seed": seed, "value": float(value)})

    cal = fit_calibrators(data_splits["val"], preds["val"], labels)
    sc = {sp: scores(preds[sp], cal) for sp in ("test_iid", "test_ood", "pool")}
    ti, to, pool = (data_splits[k] for k in ("test_iid", "test_ood", "pool"))
    pi, po = preds["test_iid"], preds["test_ood"]

    # segmentation performance
    add("seg", "dice", _mean(pi.dice), "test_iid")
    add("seg", "dice", _mean(po.dice), "test_ood")
    for sp, p in (("test_iid", pi), ("test_ood", po)):
        if p.dice_cls is not None and len(p.dice_cls):
            for c in labels.classes:
                name = class_names[c] if class_names else str(c)
                add("seg", f"dice:{name}", _mean(p.dice_cls[:, c]), sp)

    # separation study: NCC with the aleatoric reference (ambiguous i.i.d. cases) and AUROC
    ref_i = ti.reference_variance().reshape(len(ti), int(np.prod(ti.images.shape[2:])))
    ref_o = to.reference_variance().reshape(len(to), int(np.prod(to.images.shape[2:])))
    for m in pi.maps:
        amb = ti.ambiguous
        if amb.any():
            add("separation", "ncc", _mean(cm.ncc(ref_i[amb], pi.maps[m][amb].reshape(int(amb.sum()), -1))), "test_iid", m)
        if len(to):
            for a in AGGREGATIONS:
                lab = np.r_[np.zeros(len(ti)), np.ones(len(to))]
                add("separation", "auroc", cm.auroc(np.r_[sc["test_iid"][m][a], sc["test_ood"][m][a]], lab), "test", m, a)
                keep = ~ti.ambiguous
                if keep.any() and ti.ambiguous.any():
                    lab2 = np.r_[np.zeros(int(keep.sum())), np.ones(len(to))]
                    add("separation", "auroc_noamb",
                        cm.auroc(np.r_[sc["test_iid"][m][a][keep], sc["test_ood"][m][a]], lab2), "test", m, a)

    # OoD detection on the pool
    if pool.ood.any() and (~pool.ood).any():
        for m in pi.maps:
            for a in AGGREGATIONS:
                add("ood", "auroc", cm.auroc(sc["pool"][m][a], pool.ood), "pool", m, a)

    # failure detection
    for sp, p in (("test_iid", pi), ("test_ood", po)):
        if not len(p.dice):
            continue
        risk = 1 - p.dice
        for m in p.maps:
            for a in AGGREGATIONS:
                conf = -sc[sp][m][a]
                add("fd", "aurc", cm.aurc(risk, conf), sp, m, a)
                add("fd", "eaurc", cm.eaurc(risk, conf), sp, m, a)

    # calibration (pixel level, after Platt scaling fitted on validation)
    for sp, split, p in (("test_iid", ti, pi), ("test_ood", to, po)):
        if not len(split):
            continue
        agree = _agreement(split, p)
        valid = split.valid(labels.ignore_index)
        for m, u in p.maps.items():
            a, b = cal.platt[m]
            conf = cm.platt_apply(-u.reshape(len(split), -1), a, b)
            add("calib", "ace", _mean(cm.ace(conf, agree, n_bins=20, mask=valid)), sp, m)

    # ambiguity modelling
    for sp, split, p, ref in (("test_iid", ti, pi, ref_i), ("test_ood", to, po, ref_o)):
        if not len(split):
            continue
        add("am", "ged", _mean(p.ged), sp)
        for m, u in p.maps.items():
            add("am", "ncc", _mean(cm.ncc(ref, u.reshape(len(split), -1))), sp, m)

    extras = {"cal": cal, "scores": sc, "risk": {"test_iid": 1 - pi.dice, "test_ood": 1 - po.dice}}
    return rows, extras
