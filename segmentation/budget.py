"""Does the query schedule fit the dataset?  Decided once, before any training.

A run annotates ``start + (loops − 1) · query`` non-overlapping query patches in all.  On a small
dataset (the D.5 default of 50 patches per class and loop is sized for hundreds of large images)
that total may not fit: the loop would die at its fourth query with "only 15 of 20 patches fit".
:func:`fit_schedule` decides up front:

* **capacity** — how many non-overlapping patches the train+pool images hold when they are filled
  the way a run fills them: seeded simulations on the empty images, with the pool's own candidate
  grid, of nnActive's random family placing patches until none fits (:func:`family_fill`:
  Random, Random 33 % FG and Random 66 % FG — class-centred patches pack worse than uniform ones;
  the starting budget is placed this way too), or, without the labels at hand, of uniformly random
  placement (:func:`random_fill`); the smallest of the draws counts.  That is far below the perfect
  packing (``∏ ⌊image / patch⌋`` per image, also reported): a random fill jams at roughly 40 % of
  it.  A schedule may use :data:`MARGIN` of the capacity (the score-greedy methods pack at least
  as densely as a random fill).
* a schedule within the capacity runs unchanged;
* a schedule that does not fit has its **default** parts capped — with nothing set by the user the
  query size and the starting budget by the same factor; with ``--query-size`` set, the starting
  budget; with ``--start-size`` set, the query size — the loops kept (§D.5: "we do not advise to
  reduce the number of AL loops"), with a note that the CLI prints and the run's config records;
* where the parts the **user** set cannot fit (both sizes, or ``--query-scale``, which keeps the
  thesis' starting and total budget), the run is refused in one line naming the largest query size
  that fits.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from core import seeds
from core.errors import UserError

from .patches import ImageSelector, PatchPool
from .plans import QuerySetting

MARGIN = 0.85   # share of the simulated fill capacity a schedule may use
DRAWS = 3       # label-free random fills simulated; the smallest counts


def packing_capacity(shapes, patch) -> int:
    """Most non-overlapping ``patch`` boxes the images can hold (perfect grid packing)."""
    total = 0
    for s in shapes:
        k = np.minimum(np.asarray(patch), np.asarray(s))
        total += int(np.prod(np.asarray(s) // k))
    return total


def random_fill(shapes, patch, stride, seed: int = 0) -> int:
    """Patches that fit when the images are filled at random allowed positions until none fits
    (random sequential packing, seeded: the candidate origins in random order, each accepted when
    still allowed; one vectorised block update of the allowed-origin grid per accepted patch)."""
    pool = PatchPool(shapes, patch, stride)
    rng = seeds.rng(seed, "capacity")
    n = 0
    for img in range(pool.n_images):
        sel = ImageSelector(pool, img, 0.0)
        flat = sel.valid.ravel()   # a view: accept() clears blocks of it in place
        for j in rng.permutation(sel.valid_flat()):
            if flat[j]:
                sel.accept(int(j))
                n += 1
    return n


def family_fill(shapes, qs: QuerySetting, n_classes: int, label_of, seed: int = 0) -> int:
    """Smallest number of patches the random family (Random, Random 33 % / 66 % FG; ``label_of(j)``:
    the label of train+pool image ``j``) places before the images are full, one seeded draw each."""
    from .query import P_FG33, P_FG66, P_RANDOM, QueryEnv, random_patches
    counts = []
    for k, probs in enumerate((P_RANDOM, P_FG33, P_FG66)):
        pool = PatchPool(shapes, qs.patch, qs.agg_stride)
        env = QueryEnv(pool, label_of, n_classes, 0.0, qs.n_patch_per_image)
        rng = seeds.rng(seed, "capacity", k)
        selectors: dict = {}
        n = 0
        while True:
            try:
                random_patches(env, 1, rng, probs, selectors)
            except UserError:
                break
            n += 1
        counts.append(n)
    return min(counts)


def fit_schedule(qs: QuerySetting, shapes, n_labels: int, user_set=(), seed: int = 0,
                 label_of=None) -> QuerySetting:
    """``qs`` if its schedule fits the train+pool images ``shapes`` (module docstring), else the
    schedule with its default parts capped and a note in ``qs.notes``.  ``user_set``: the parts the
    user set — a subset of {"start", "query"} (True: both) — which are never changed: a schedule
    whose user-set parts alone do not fit, or that leaves no starting budget of one patch per label
    (``n_labels`` incl. background), is refused (``UserError``, one line).  The loops are never cut
    (§D.5)."""
    fixed = {"start", "query"} if user_set is True else set(user_set or ())
    start, q, L1 = qs.start_size, qs.query_size, qs.loops - 1
    total = start + L1 * q
    n_img = len(shapes)
    per_query = n_img * qs.n_patch_per_image if qs.n_patch_per_image != qs.query_size else None
    pack = packing_capacity(shapes, qs.patch)
    if total <= MARGIN * pack / 8 and (per_query is None or q <= per_query):
        return qs   # fits even a worst-case fill (each patch blocking 2× its size per axis)
    if label_of is not None:
        fill = family_fill(shapes, qs, n_labels - 1, label_of, seed)
    else:
        fill = min(random_fill(shapes, qs.patch, qs.agg_stride, seed + k) for k in range(DRAWS))
    usable = int(MARGIN * fill)
    if total <= usable and (per_query is None or q <= per_query):
        return qs
    what = (f"about {fill} non-overlapping {'×'.join(map(str, qs.patch))} query patches fit into the {n_img} "
            f"train+pool images filled at random{'' if label_of is not None else ' (label-free estimate)'} "
            f"({pack} with perfect packing); a schedule may use {usable}"
            + (f", a query at most {per_query} ({qs.n_patch_per_image} per image)" if per_query is not None else ""))
    head = f"{start} + {L1} × {q} = {total} patches over {qs.loops} loops do not fit: {what}"
    cap_q = (lambda q_: q_ if per_query is None else min(q_, per_query))
    if fixed >= {"start", "query"}:
        best = cap_q((usable - start) // max(L1, 1))
        hint = (f"use --query-size {best} or less" if best >= 1 else
                f"use a smaller --start-size (≤ {max(usable - L1, 0)}) and --query-size")
        raise UserError(f"{head}; {hint}, fewer --loops or a smaller --patch-size")
    if "query" in fixed:
        if per_query is not None and q > per_query:
            raise UserError(f"{head}; use --query-size {per_query} or less, or raise --n-patch-per-image")
        start = min(start, usable - L1 * q)
    elif "start" in fixed:
        q = cap_q(min(q, (usable - start) // max(L1, 1)))
    else:
        r = min(usable / total, 1.0)
        q, start = cap_q(int(np.floor(q * r))), int(np.floor(start * r))
    if start < n_labels or q < 1:
        raise UserError(f"{head}; no schedule with a starting budget of one patch per label ({n_labels}) and at least one "
                        "patch per query remains — use a smaller --patch-size, --query-size or fewer --loops")
    note = (f"schedule capped to fit the dataset: {qs.start_size} + {L1} × {qs.query_size} patches → "
            f"{start} + {L1} × {q} ({what})")
    ppi = min(qs.n_patch_per_image, q) if qs.n_patch_per_image == qs.query_size else qs.n_patch_per_image
    return replace(qs, query_size=q, start_size=start, n_patch_per_image=ppi, notes=[*qs.notes, note])
