"""Segmentation query methods on the shared registry (``core.query``, ``domain="segmentation"``).

Each method is registered as ``seg_<name>``; :data:`METHODS` maps the CLI names (``random``,
``random_fg33``, ``random_fg66``, ``pe``, ``bald``, ``power_bald``, ``softrank_bald``, ``power_pe``,
``claspe``) to them, so ``core.query.get("seg_claspe", "segmentation")`` (or :func:`get`) returns
the segmentation implementation and never the classification-evidence methods of the same short
name.  Methods return *positions* into ``pool.unlabelled`` as the registry contract demands.

Evidence kinds (built by ``segmentation.experiment``):

* ``env``          :class:`QueryEnv` — the patch pool, the oracle labels of the train+pool images
                   (used only by the foreground-aware random baselines and the starting budget, as
                   an annotator screening the image would), allowed overlap, patches per image;
* ``patch_scores`` dict of per-image score grids (mean over every query-patch window, §4.4):
                   ``pe`` H[p̄], ``mi`` BALD, ``cls`` [C, …] p̄_c·H (ClaSP's class channels).

Selection (Algorithm 1): per image, greedy descending-score picking of up to
``n_patch_per_image`` windows without overlap with annotated voxels or each other; then the global
top-n over all images.  Noise is Gumbel(0, 1/β) on the log of the *aggregated* score; every draw
comes from the loop's per-cycle generator, so runs are reproducible (unlike the reference PowerPE).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage

from core import query as cq
from core import selection
from core.errors import UserError

from .patches import ImageSelector, PatchPool

ALPHA = 0.66            # ClaSP: stratified fraction of the query
BETA0, BETA_MAX = 1.0, 100.0
BETA_HORIZON = 4        # β reaches βmax at the 5th loop (4 queries into a 5-loop run); kept after
P_FG33 = (4 / 6, 1 / 6, 1 / 6)   # (all, seg, border)
P_FG66 = (1 / 3, 1 / 3, 1 / 3)
P_RANDOM = (1.0, 0.0, 0.0)


@dataclass
class QueryEnv:
    pool: PatchPool
    label_of: Callable[[int], np.ndarray]   # oracle label of train+pool image j
    n_classes: int
    overlap: float = 0.0
    n_patch_per_image: int = 20
    _present: dict = field(default_factory=dict, repr=False)
    _voxels: dict = field(default_factory=dict, repr=False)

    def selector(self, img: int) -> ImageSelector:
        return ImageSelector(self.pool, img, self.overlap)

    def present(self, img: int) -> np.ndarray:
        """Label values (background included) present in image ``img``."""
        if img not in self._present:
            counts = np.bincount(np.asarray(self.label_of(img)).ravel(), minlength=self.n_classes + 1)
            self._present[img] = np.flatnonzero(counts)
        return self._present[img]

    def present_fg(self, img: int) -> np.ndarray:
        p = self.present(img)
        return p[p > 0]

    def class_voxels(self, img: int, c: int, border: bool = False) -> np.ndarray:
        """``[m, 3]`` voxels of class ``c`` (``border``: the inner boundary shell, mask minus its
        erosion with a radius-1 ball)."""
        key = (img, int(c), bool(border))
        if key not in self._voxels:
            mask = np.asarray(self.label_of(img)) == c
            if border:
                mask &= ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1))
            self._voxels[key] = np.argwhere(mask)
        return self._voxels[key]


# ---------------------------------------------------------------------------------------------
# random family
# ---------------------------------------------------------------------------------------------

def _place_on_class(env: QueryEnv, sel: ImageSelector, img: int, c: int, border: bool,
                    rng: np.random.Generator) -> int | None:
    """Grid index of a patch centred on a uniformly random voxel of class ``c`` (or its border)
    that is still allowed; None when no such voxel exists."""
    vox = env.class_voxels(img, c, border)
    if len(vox) == 0:
        return None
    gs = env.pool.snap(img, vox)
    ok = sel.valid.ravel()[gs]
    if not ok.any():
        return None
    cand = gs[ok]
    return int(cand[rng.integers(len(cand))])


def random_patches(env: QueryEnv, n: int, rng: np.random.Generator, probs=P_RANDOM,
                   selectors: dict | None = None) -> np.ndarray:
    """nnActive's random family (§5.1–5.2).  The train+pool images are shuffled and visited
    cyclically; each patch draws a mode from ``probs`` over (all, seg, border):
    ``all`` — a uniformly random allowed origin; ``seg`` / ``border`` — centred on a random voxel
    (or boundary voxel) of a random foreground class present in the image.  Allowed = no overlap
    beyond ``env.overlap`` with annotated voxels or earlier picks (uniform over the allowed
    positions, which is what nnActive's 600 rejection tries approximate).  An image that cannot
    host another patch leaves the cycle; a foreground mode that cannot be satisfied moves on to the
    next image.  Returns candidate ids."""
    pool = env.pool
    selectors = {} if selectors is None else selectors
    active = [int(i) for i in rng.permutation(pool.n_images)]
    ids: list[int] = []
    pos = 0
    probs = np.asarray(probs, dtype=np.float64)
    while len(ids) < n:
        if not active:
            raise UserError(f"only {len(ids)} of {n} non-overlapping query patches fit into the train+pool "
                            "images; use a smaller --query-size or --patch-size")
        img = active[pos % len(active)]
        sel = selectors.get(img)
        if sel is None:
            sel = selectors[img] = env.selector(img)
        if sel.n_valid == 0:
            active.remove(img)
            continue
        mode = int(rng.choice(3, p=probs))
        g = None
        if mode > 0:
            fg = env.present_fg(img)
            if len(fg):
                c = int(fg[rng.integers(len(fg))])
                g = _place_on_class(env, sel, img, c, border=(mode == 2), rng=rng)
                if g is None:
                    pos += 1
                    continue
            else:
                mode = 0
        if mode == 0:
            v = sel.valid_flat()
            g = int(v[rng.integers(len(v))])
        sel.accept(g)
        ids.append(int(pool.encode(img, g)))
        pos += 1
    return np.asarray(ids, dtype=np.int64)


def starting_budget(env: QueryEnv, size: int, rng: np.random.Generator, class_names=None) -> np.ndarray:
    """§4.5: two patches centred on random voxels of every label (background included), in two
    different images, rarest label first, at most one such patch per image; the rest of ``size`` is
    Random 33 % FG.  Returns candidate ids (to be labelled in cycle 0)."""
    pool, C = env.pool, env.n_classes
    names = class_names or [str(c) for c in range(C + 1)]
    if size < 2 * (C + 1):
        raise UserError(f"starting budget {size} is too small for 2 class-seeded patches per label "
                        f"({C + 1} labels incl. background need {2 * (C + 1)}); raise --query-size")
    holders = {c: [i for i in range(pool.n_images) if c in env.present(i)] for c in range(C + 1)}
    for c, h in holders.items():
        if len(h) < 2:
            raise UserError(f"class {names[c]!r} occurs in {len(h)} train+pool image(s); the starting budget "
                            "needs it in at least 2")
    available = set(range(pool.n_images))
    selectors: dict[int, ImageSelector] = {}
    ids: list[int] = []
    remaining = list(range(C + 1))
    while remaining:
        c = min(remaining, key=lambda c: (sum(i in available for i in holders[c]), c))
        cand = [i for i in holders[c] if i in available]
        placed = 0
        for j in rng.permutation(len(cand)):
            img = cand[int(j)]
            sel = selectors.get(img) or selectors.setdefault(img, env.selector(img))
            g = _place_on_class(env, sel, img, c, border=False, rng=rng)
            if g is None:
                continue
            sel.accept(g)
            ids.append(int(pool.encode(img, g)))
            available.discard(img)
            placed += 1
            if placed == 2:
                break
        if placed < 2:
            raise UserError(f"could not place 2 class-seeded starting patches of {names[c]!r} in distinct images")
        remaining.remove(c)
    fill = random_patches(env, size - len(ids), rng, P_FG33, selectors)
    return np.concatenate([np.asarray(ids, dtype=np.int64), fill])


# ---------------------------------------------------------------------------------------------
# uncertainty family
# ---------------------------------------------------------------------------------------------

def _noised(scores: np.ndarray, rng: np.random.Generator, beta: float) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return np.log(np.maximum(s, selection.LOG_EPS)) + selection.gumbel(rng, s.size, beta).reshape(s.shape)


def _per_image_candidates(env: QueryEnv, grids: list, per_image: int, rng=None, beta=None):
    """Greedy per-image candidates (Algorithm 1, lines 2–12) → (ids, scores)."""
    ids, scores = [], []
    for img, g in enumerate(grids):
        s = _noised(g, rng, beta) if beta is not None else g
        flat, vals = env.selector(img).greedy(s, per_image)
        ids.append(env.pool.encode(img, flat))
        scores.append(vals)
    return np.concatenate(ids).astype(np.int64), np.concatenate(scores)


def _enough(n_have: int, n: int):
    if n_have < n:
        raise UserError(f"only {n_have} non-overlapping query patches can be placed but {n} are requested; "
                        "use a smaller --query-size or --patch-size, or more --n-patch-per-image")


def topk_patches(env: QueryEnv, grids: list, n: int, rng=None, beta=None) -> np.ndarray:
    ids, scores = _per_image_candidates(env, grids, env.n_patch_per_image, rng, beta)
    _enough(len(ids), n)
    return ids[selection.topk(scores, n)]


def softrank_patches(env: QueryEnv, grids: list, n: int, rng, beta: float = 1.0) -> np.ndarray:
    """§5.5: per image 2 × n_patch_per_image candidates by unperturbed score, then global
    −log(rank) + Gumbel(0, 1/β)."""
    ids, scores = _per_image_candidates(env, grids, 2 * env.n_patch_per_image)
    _enough(len(ids), n)
    return ids[selection.softrank(scores, n, rng, beta=beta)]


def claspe_patches(env: QueryEnv, pe_grids: list, cls_grids: list, n: int, rng: np.random.Generator,
                   beta: float, alpha: float = ALPHA, info: dict | None = None) -> np.ndarray:
    """ClaSP PE, reference-exact (§6.5).

    Strata: the C foreground class channels u_c = p̄_c·H and the plain PE channel H (-1).  Per
    image every stratum's aggregated score is noised (log + Gumbel(0, 1/β)); strata are visited in
    an rng-shuffled order, each keeps up to ``max(int(n_ppi·α/(C+1)), 1)`` (classes) or
    ``max(int(n_ppi·(1−α)), 1)`` (PE) windows, sharing one overlap state so strata never reuse a
    region.  Final query: ``int(n·α)`` split evenly over classes (remainder to rng-chosen classes),
    ``n − int(n·α)`` from the PE stratum, each by descending noised score.  Should a stratum hold
    fewer candidates than its quota (the reference asserts), the shortfall is filled with the best
    remaining candidates of any stratum.  ``info`` (if given) receives the per-stratum quotas and
    counts."""
    C = env.n_classes
    strata = list(range(C)) + [-1]
    cand = {k: ([], []) for k in strata}
    ppi = env.n_patch_per_image
    for img in range(env.pool.n_images):
        agg = {c: cls_grids[img][c] for c in range(C)}
        agg[-1] = pe_grids[img]
        noised = {k: _noised(agg[k], rng, beta) for k in strata}
        sel = env.selector(img)
        order = list(strata)
        rng.shuffle(order)
        for k in order:
            n_img = ppi * (1 - alpha) if k == -1 else ppi * alpha / len(strata)
            flat, vals = sel.greedy(noised[k], max(int(n_img), 1))
            cand[k][0].append(env.pool.encode(img, flat))
            cand[k][1].append(vals)
    ids = {k: np.concatenate(v[0]).astype(np.int64) for k, v in cand.items()}
    sc = {k: np.concatenate(v[1]) for k, v in cand.items()}
    _enough(sum(len(v) for v in ids.values()), n)
    n_cls = int(n * alpha)
    quota = {c: n_cls // C for c in range(C)}
    quota[-1] = n - n_cls
    fg = list(range(C))
    rng.shuffle(fg)
    for c in fg[: n_cls % C]:
        quota[c] += 1
    picked, leftover_ids, leftover_sc, got = [], [], [], {}
    for k in strata:
        order = np.argsort(-sc[k], kind="stable")
        take = order[: quota[k]]
        got[k] = len(take)
        picked.append(ids[k][take])
        leftover_ids.append(ids[k][order[quota[k]:]])
        leftover_sc.append(sc[k][order[quota[k]:]])
    out = np.concatenate(picked)
    short = n - len(out)
    if short > 0:
        li, ls = np.concatenate(leftover_ids), np.concatenate(leftover_sc)
        out = np.concatenate([out, li[selection.topk(ls, short)]])
    if info is not None:
        info.update({"quota": {("pe" if k == -1 else f"class{k + 1}"): int(q) for k, q in quota.items()},
                     "taken": {("pe" if k == -1 else f"class{k + 1}"): int(v) for k, v in got.items()},
                     "filled": int(max(short, 0)), "beta": float(beta)})
    return out


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------

def _positions(ev, ids) -> np.ndarray:
    return ev["env"].pool.positions(ids)


def _beta(ev) -> float:
    return float(ev.context.get("beta", 1.0))


def _scheduled_beta(ev) -> float:
    if "beta_schedule" in ev.context:
        return float(ev.context["beta_schedule"])
    return selection.scheduled_beta(int(ev.context.get("cycle", 0)), int(ev.context.get("beta_horizon", BETA_HORIZON)),
                                    BETA0, BETA_MAX)


SEG = "segmentation"


@cq.register("seg_random", needs=("env",), domain=SEG, description="Random: uniformly placed patches, images visited cyclically")
def _seg_random(ev, n, rng):
    return _positions(ev, random_patches(ev["env"], n, rng, P_RANDOM))


@cq.register("seg_random_fg33", needs=("env",), domain=SEG,
             description="Random 33% FG: 1/6 centred on a class, 1/6 on a class border, rest random")
def _seg_random_fg33(ev, n, rng):
    return _positions(ev, random_patches(ev["env"], n, rng, P_FG33))


@cq.register("seg_random_fg66", needs=("env",), domain=SEG,
             description="Random 66% FG: 1/3 centred on a class, 1/3 on a class border, 1/3 random")
def _seg_random_fg66(ev, n, rng):
    return _positions(ev, random_patches(ev["env"], n, rng, P_FG66))


@cq.register("seg_pe", needs=("env", "patch_scores"), domain=SEG, model={"ensemble": True},
             description="Predictive Entropy: top-k patches by mean H[p̄] of the ensemble")
def _seg_pe(ev, n, rng):
    return _positions(ev, topk_patches(ev["env"], ev["patch_scores"]["pe"], n))


@cq.register("seg_bald", needs=("env", "patch_scores"), domain=SEG, model={"ensemble": True},
             description="BALD: top-k patches by mean mutual information of the ensemble")
def _seg_bald(ev, n, rng):
    return _positions(ev, topk_patches(ev["env"], ev["patch_scores"]["mi"], n))


@cq.register("seg_power_pe", needs=("env", "patch_scores"), domain=SEG, model={"ensemble": True},
             description="PowerPE: log mean PE + Gumbel(0, 1/β), β = 1")
def _seg_power_pe(ev, n, rng):
    return _positions(ev, topk_patches(ev["env"], ev["patch_scores"]["pe"], n, rng, _beta(ev)))


@cq.register("seg_power_bald", needs=("env", "patch_scores"), domain=SEG, model={"ensemble": True},
             description="PowerBALD: log mean BALD + Gumbel(0, 1/β), β = 1")
def _seg_power_bald(ev, n, rng):
    return _positions(ev, topk_patches(ev["env"], ev["patch_scores"]["mi"], n, rng, _beta(ev)))


@cq.register("seg_softrank_bald", needs=("env", "patch_scores"), domain=SEG, model={"ensemble": True},
             description="SoftrankBALD: −log rank(BALD) + Gumbel(0, 1/β), β = 1")
def _seg_softrank_bald(ev, n, rng):
    return _positions(ev, softrank_patches(ev["env"], ev["patch_scores"]["mi"], n, rng, _beta(ev)))


@cq.register("seg_claspe", needs=("env", "patch_scores"), domain=SEG, model={"ensemble": True},
             description="ClaSP PE: class-stratified (α = 0.66) scheduled power PE, β 1 → 100")
def _seg_claspe(ev, n, rng):
    info: dict = {}
    sc = ev["patch_scores"]
    ids = claspe_patches(ev["env"], sc["pe"], sc["cls"], n, rng, _scheduled_beta(ev), info=info)
    ev.context["claspe"] = info
    return _positions(ev, ids)


METHODS = {
    "random": "seg_random", "random_fg33": "seg_random_fg33", "random_fg66": "seg_random_fg66",
    "pe": "seg_pe", "bald": "seg_bald", "power_bald": "seg_power_bald", "softrank_bald": "seg_softrank_bald",
    "power_pe": "seg_power_pe", "claspe": "seg_claspe",
}
DISPLAY = {"random": "Random", "random_fg33": "Random 33% FG", "random_fg66": "Random 66% FG",
           "pe": "Predictive Entropy", "bald": "BALD", "power_bald": "PowerBALD", "softrank_bald": "SoftrankBALD",
           "power_pe": "PowerPE", "claspe": "ClaSP PE"}
SCORE_KINDS = {"pe": ("pe",), "bald": ("mi",), "power_bald": ("mi",), "softrank_bald": ("mi",),
               "power_pe": ("pe",), "claspe": ("pe", "cls")}


def get(name: str) -> cq.QueryMethod:
    """The segmentation implementation of CLI method ``name`` (``random``, ``claspe``, ...)."""
    if name not in METHODS:
        raise UserError(f"unknown segmentation query method {name!r}; valid: {', '.join(METHODS)}")
    return cq.get(METHODS[name], SEG)
