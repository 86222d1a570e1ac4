"""Segmentation query methods (thesis ch. 7–8, nnActive §5, ClaSP PE §D) in the shared registry,
domain ``segmentation``.

A query candidate is a 3D patch (an id of :class:`~segmentation.patches.PatchPool`).  Methods:

* ``random``, ``random_fg33``, ``random_fg66`` — nnActive's random family (uniformly placed patches;
  1/6 or 1/3 centred on a class / on a class border);
* scores composed with the ranking rules — ``pe`` / ``power_pe`` / ``softrank_pe`` (predictive
  entropy of the ensemble mean) and ``bald`` / ``power_bald`` / ``softrank_bald`` (mutual
  information; needs an ensemble of ≥ 2);
* ``claspe`` — ClaSP's class stratification of the power PE score with the β schedule 1 → 100;
  its component ablation (thesis §8.3.1, Table D.3): ``cla_pe33`` / ``cla_pe66`` (stratified
  fraction α = 0.33 / 0.66, no noise), ``clap_pe`` (α = 0.66, constant β — the run's ``--beta``,
  1 in the thesis) and ``claspe33`` (the scheduled method with α = 0.33).  The schedule is the
  exponential one of eq. D.4 unless the run's context says ``beta_schedule`` = ``sigmoid_smooth`` /
  ``sigmoid_sharp`` (the reference code's schedule ablation; ``core.selection.SCHEDULES``).

Score × aggregation × rule: a score is a voxel map of the ensemble softmax ``P [K, C+1, X, Y, Z]``
(:data:`VOXEL`); the aggregation is the mean over every query-patch window (§4.4,
``patches.box_mean``), computed by ``segmentation.experiment`` for exactly the evidence kinds a
method ``needs`` (``grid:<score>``, and ``grid:cls:<score>`` = window mean of p̄_c · score for
ClaSP's class strata); the rule picks, per image, greedy descending-score windows that overlap no
annotated voxel and no earlier pick (Algorithm 1), then globally.  Noise is Gumbel(0, 1/β) on the
log of the *aggregated* score; every draw comes from the loop's per-cycle generator, so runs are
reproducible (unlike the reference PowerPE).

Evidence kinds: ``env`` (:class:`QueryEnv`: the patch pool, the oracle labels of the train+pool
images — read only by the foreground-aware random baselines and the starting budget, as an
annotator screening the image would —, allowed overlap, patches per image) and the grids above.
Run directories written before the per-domain registry named these methods ``seg_<name>``; the
old names resolve through ``core.query.alias``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage

from core import query, selection
from core.errors import UserError
from core.query import POWER, SOFTRANK, STRATIFIED, UNIFORM, QueryResult, Rule, Score

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


# ---------------------------------------------------------------------------------------------
# uncertainty family
# ---------------------------------------------------------------------------------------------

def _noised(scores: np.ndarray, rng: np.random.Generator, beta: float) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return np.log(np.maximum(s, selection.LOG_EPS)) + selection.gumbel(rng, s.size, beta).reshape(s.shape)


MAX_POOL_SCORES = 1_000_000   # windows kept (strided subsample) for a cycle's score distribution


def _allowed_scores(sel: ImageSelector, grid: np.ndarray, keep: int) -> np.ndarray:
    """Scores of the windows still allowed in this image (every ``keep``-th one) — the pool's score
    distribution, taken before any pick."""
    return np.asarray(grid, dtype=np.float64)[sel.valid][::keep]


def _keep_every(env: QueryEnv) -> int:
    return max(1, int(len(env.pool) // MAX_POOL_SCORES) + 1) if len(env.pool) > MAX_POOL_SCORES else 1


def _per_image_candidates(env: QueryEnv, grids: list, per_image: int, rng=None, beta=None):
    """Greedy per-image candidates (Algorithm 1, lines 2–12) → (ids, ranking values, base scores,
    allowed-window scores of the pool)."""
    ids, keys, base, pool = [], [], [], []
    keep = _keep_every(env)
    for img, g in enumerate(grids):
        s = _noised(g, rng, beta) if beta is not None else g
        sel = env.selector(img)
        pool.append(_allowed_scores(sel, g, keep))
        flat, vals = sel.greedy(s, per_image)
        ids.append(env.pool.encode(img, flat))
        keys.append(vals)
        base.append(np.asarray(g, dtype=np.float64).ravel()[flat])
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt))
    return cat(ids, np.int64), cat(keys, np.float64), cat(base, np.float64), cat(pool, np.float64)


def _enough(n_have: int, n: int):
    if n_have < n:
        raise UserError(f"only {n_have} non-overlapping query patches can be placed but {n} are requested; "
                        "use a smaller --query-size or --patch-size, or more --n-patch-per-image")


def rank_patches(env: QueryEnv, grids: list, n: int, rule: Rule, rng=None, beta: float = 1.0) -> QueryResult:
    """A ranking rule over patch candidates.  ``topk``: per image up to ``n_patch_per_image`` windows
    by score, then the global top-n; ``power``: the same on log score + Gumbel(0, 1/β) noise (noise
    drawn per window before the greedy pass); ``softrank`` (§5.5): per image 2 × n_patch_per_image
    candidates by unperturbed score, then global −log(rank) + Gumbel(0, 1/β)."""
    if rule is SOFTRANK:
        ids, keys, base, pool = _per_image_candidates(env, grids, 2 * env.n_patch_per_image)
        _enough(len(ids), n)
        pos = selection.softrank(keys, n, rng, beta=beta)
    else:
        noisy = rule is POWER
        ids, keys, base, pool = _per_image_candidates(env, grids, env.n_patch_per_image,
                                                      rng if noisy else None, beta if noisy else None)
        _enough(len(ids), n)
        pos = selection.topk(keys, n)
    return QueryResult(ids[pos], base[pos], {"beta": float(beta)} if rule.uses_beta else {}, pool_scores=pool)


def claspe_patches(env: QueryEnv, pe_grids: list, cls_grids: list, n: int, rng: np.random.Generator,
                   beta: float | None, alpha: float = ALPHA) -> QueryResult:
    """ClaSP PE, reference-exact (§6.5); ``beta=None``: no noise (Cla PE, the stratification alone).

    Strata: the C foreground class channels u_c = p̄_c·H and the plain PE channel H (-1).  Per
    image every stratum's aggregated score is noised (log + Gumbel(0, 1/β)); strata are visited in
    an rng-shuffled order, each keeps up to ``max(int(n_ppi·α/(C+1)), 1)`` (classes) or
    ``max(int(n_ppi·(1−α)), 1)`` (PE) windows, sharing one overlap state so strata never reuse a
    region.  Final query: ``int(n·α)`` split evenly over classes (remainder to rng-chosen classes),
    ``n − int(n·α)`` from the PE stratum, each by descending noised score.  Should a stratum hold
    fewer candidates than its quota (the reference asserts), the shortfall is filled with the best
    remaining candidates of any stratum.  Scores: each pick's (window-mean) PE, the score of the pool
    distribution; detail: the per-stratum quotas and counts, the stratum of every pick and β."""
    C = env.n_classes
    strata = list(range(C)) + [-1]
    cand = {k: ([], [], []) for k in strata}
    ppi = env.n_patch_per_image
    keep = _keep_every(env)
    pool_pe = []
    for img in range(env.pool.n_images):
        agg = {c: cls_grids[img][c] for c in range(C)}
        agg[-1] = pe_grids[img]
        noised = {k: (_noised(agg[k], rng, beta) if beta is not None else agg[k]) for k in strata}
        sel = env.selector(img)
        pool_pe.append(_allowed_scores(sel, pe_grids[img], keep))
        order = list(strata)
        rng.shuffle(order)
        for k in order:
            n_img = ppi * (1 - alpha) if k == -1 else ppi * alpha / len(strata)
            flat, vals = sel.greedy(noised[k], max(int(n_img), 1))
            cand[k][0].append(env.pool.encode(img, flat))
            cand[k][1].append(vals)
            cand[k][2].append(np.asarray(pe_grids[img], dtype=np.float64).ravel()[flat])
    ids = {k: np.concatenate(v[0]).astype(np.int64) for k, v in cand.items()}
    sc = {k: np.concatenate(v[1]) for k, v in cand.items()}
    base = {k: np.concatenate(v[2]) for k, v in cand.items()}
    _enough(sum(len(v) for v in ids.values()), n)
    n_cls = int(n * alpha)
    quota = {c: n_cls // C for c in range(C)}
    quota[-1] = n - n_cls
    fg = list(range(C))
    rng.shuffle(fg)
    for c in fg[: n_cls % C]:
        quota[c] += 1
    name = (lambda k: "pe" if k == -1 else f"class{k + 1}")
    picked, picked_base, picked_stratum, left, got = [], [], [], ([], [], [], []), {}
    for k in strata:
        order = np.argsort(-sc[k], kind="stable")
        take, rest = order[: quota[k]], order[quota[k]:]
        got[k] = len(take)
        picked.append(ids[k][take])
        picked_base.append(base[k][take])
        picked_stratum += [name(k)] * len(take)
        for lst, arr in zip(left, (ids[k][rest], sc[k][rest], base[k][rest], np.full(len(rest), k))):
            lst.append(arr)
    out, out_base = np.concatenate(picked), np.concatenate(picked_base)
    short = n - len(out)
    if short > 0:
        li, ls, lb, lk = (np.concatenate(x) for x in left)
        fill = selection.topk(ls, short)
        out, out_base = np.concatenate([out, li[fill]]), np.concatenate([out_base, lb[fill]])
        picked_stratum += [f"fill:{name(int(k))}" for k in lk[fill]]
    detail = {"quota": {name(k): int(q) for k, q in quota.items()}, "taken": {name(k): int(v) for k, v in got.items()},
              "filled": int(max(short, 0)), "beta": None if beta is None else float(beta), "alpha": float(alpha),
              "stratum": picked_stratum}
    return QueryResult(out, out_base, detail, pool_scores=np.concatenate(pool_pe))


# ---------------------------------------------------------------------------------------------
# scores (voxel measures of the ensemble softmax) and registration
# ---------------------------------------------------------------------------------------------

DOMAIN = "segmentation"

# voxel measure of a score: (P [K, C+1, X, Y, Z] ensemble softmax, decomposition of P) -> [X, Y, Z]
VOXEL = {
    "pe": lambda P, d: d["pe"],
    "bald": lambda P, d: d["mi"],
}


def grid_kind(score: str, classes: bool = False) -> str:
    """Evidence kind of a score's window-mean grids (``classes``: its ClaSP class channels)."""
    return f"grid:cls:{score}" if classes else f"grid:{score}"


def _grid_score(name: str, **kw) -> Score:
    return Score(name, lambda ev: ev[grid_kind(name)], needs=("env", grid_kind(name)), **kw)


PE = _grid_score("pe", label="Predictive Entropy", short="PE",
                 description="Predictive Entropy: top-k patches by mean H[p̄] of the ensemble")
BALD = _grid_score("bald", label="BALD", short="BALD", model={"min_ensemble": 2},
                   description="BALD: top-k patches by mean mutual information of the ensemble")
SCORES = (PE, BALD)


def _patch_select(score: Score, rule: Rule):
    def run(ev, n, rng):
        return rank_patches(ev["env"], score.fn(ev), n, rule, rng, ev.beta())
    return run


for _score in SCORES:
    query.register_scored(DOMAIN, _score, _patch_select)


def _scheduled_beta(ev) -> float:
    """ClaSP's β of this cycle: the context's ``beta_schedule`` (exponential by default, eq. D.4) from β0
    to βmax, reached at the ``beta_horizon``-th query and kept after."""
    schedule = str(ev.context.get("beta_schedule", "exponential"))
    if schedule not in selection.SCHEDULES:
        raise UserError(f"unknown β schedule {schedule!r}; valid: {', '.join(selection.SCHEDULES)}")
    return selection.scheduled_beta(int(ev.context.get("cycle", 0)), int(ev.context.get("beta_horizon", BETA_HORIZON)),
                                    BETA0, BETA_MAX, schedule)


NOISE = {
    "scheduled": (_scheduled_beta, "scheduled power {short}, β {b0:g} → {bm:g}"),
    "constant": (lambda ev: ev.beta(), "power {short} with the run's constant β (1 in the thesis)"),
    "none": (lambda ev: None, "{short} without noise"),
}


def register_clasp(score: Score, name: str, label: str, alpha: float = ALPHA,
                   noise: str = "scheduled") -> query.QueryMethod:
    """ClaSP's class stratification of any score: its class channels p̄_c · score are the strata
    (evidence ``grid:cls:<score>``), a fraction ``alpha`` of the query stratified; ``noise`` on the
    log of the aggregated scores: ``scheduled`` (ClaSP), ``constant`` (the run's β) or ``none``."""
    cls = grid_kind(score.name, classes=True)
    beta_of, how = NOISE[noise]
    how = how.format(short=score.short or score.name, b0=BETA0, bm=BETA_MAX)

    @query.register(DOMAIN, name, needs=(*score.needs, cls), model=dict(score.model), label=label,
                    rule=STRATIFIED, score=score,
                    description=f"{label}: class-stratified (α = {alpha:g}) {how}")
    def _clasp(ev, n, rng):
        return claspe_patches(ev["env"], score.fn(ev), ev[cls], n, rng, beta_of(ev), alpha)
    return query.get(DOMAIN, name)


register_clasp(PE, "claspe", "ClaSP PE")
# the component ablation of thesis §8.3.1 / Table D.3 (reference names class_pe33, class_pe66,
# class_power_pe66; α 0.33 with the schedule: the reference's schedule ablation)
register_clasp(PE, "cla_pe33", "Cla PE 33%", alpha=0.33, noise="none")
register_clasp(PE, "cla_pe66", "Cla PE 66%", alpha=0.66, noise="none")
register_clasp(PE, "clap_pe", "ClaP PE", alpha=0.66, noise="constant")
register_clasp(PE, "claspe33", "ClaSP PE 33%", alpha=0.33)


def _random_method(name: str, probs, label: str, description: str) -> None:
    @query.register(DOMAIN, name, needs=("env",), rule=UNIFORM, label=label, description=description)
    def _run(ev, n, rng):
        return QueryResult(random_patches(ev["env"], n, rng, probs), np.zeros(n))


_random_method("random", P_RANDOM, "Random", "Random: uniformly placed patches, images visited cyclically")
_random_method("random_fg33", P_FG33, "Random 33% FG",
               "Random 33% FG: 1/6 centred on a class, 1/6 on a class border, rest random")
_random_method("random_fg66", P_FG66, "Random 66% FG",
               "Random 66% FG: 1/3 centred on a class, 1/3 on a class border, 1/3 random")

for _name in ("random", "random_fg33", "random_fg66", "pe", "bald", "power_bald", "softrank_bald", "power_pe", "claspe"):
    query.alias(DOMAIN, f"seg_{_name}", _name)   # names of run directories written before issue 10


def voxel_maps(P, kinds) -> dict:
    """Voxel maps ``[X, Y, Z]`` (or ``[C, X, Y, Z]`` for class channels) of the requested ``grid:…``
    evidence kinds from the ensemble softmax ``P [K, C+1, X, Y, Z]`` (a torch tensor)."""
    from core import uncertainty
    d = uncertainty.decomposition(P, sample_dim=0, class_dim=1)
    out = {}
    for kind in kinds:
        parts = kind.split(":")
        base = VOXEL[parts[-1]](P, d)
        out[kind] = (P.mean(0)[1:] * base[None]) if parts[1] == "cls" else base
    return out
