"""The starting budget (cycle 0), with a graceful rule for small datasets.

Thesis / nnActive rule (§4.5): two patches centred on random voxels of every label (background
included), in two *different* images, rarest label first, at most one class-seeded patch per image;
the rest of the budget is Random 33 % FG.  It assumes more images than class-seeded patches: with
12 cases and five structures it cannot be met, and a user has no way forward.

Degradation, in this order, each step recorded in ``notes`` (which the CLI writes into the run's
config):

1. a budget too small for two patches per label seeds **one** patch per label;
2. a label whose patches do not fit into distinct unused images gets its remaining patches in images
   that already host a class-seeded patch — first images without a patch of that label, then the
   same image again — never overlapping an earlier patch;
3. the rest of the budget is Random 33 % FG, as in the thesis.

The run is refused (``UserError``) only where no valid start exists: a budget smaller than the
number of labels, a label that occurs in no train+pool image, or a label none of whose voxels can
still be covered without overlap.  On datasets where the thesis rule can be met the draw is
exactly the thesis rule's (same generator calls, same patches).
"""
from __future__ import annotations

import numpy as np

from core.errors import UserError

from .patches import ImageSelector
from .query import P_FG33, QueryEnv, _place_on_class, random_patches


def starting_budget(env: QueryEnv, size: int, rng: np.random.Generator, class_names=None,
                    notes: list | None = None) -> np.ndarray:
    """Candidate ids of the starting budget (to be labelled in cycle 0); see module docstring.
    ``notes`` (if given) receives one line per degradation step taken."""
    pool, C = env.pool, env.n_classes
    names = class_names or [str(c) for c in range(C + 1)]
    notes = [] if notes is None else notes
    n_labels = C + 1
    if size < n_labels:
        raise UserError(f"starting budget {size} is too small to seed each of the {n_labels} labels (incl. "
                        f"background) with one patch; raise --query-size to at least {n_labels}")
    per_label = 2
    if size < 2 * n_labels:
        per_label = 1
        notes.append(f"starting budget {size} < {2 * n_labels} (2 class-seeded patches per label): one patch per label")
    holders = {c: [i for i in range(pool.n_images) if c in env.present(i)] for c in range(n_labels)}
    for c, h in holders.items():
        if not h:
            raise UserError(f"class {names[c]!r} occurs in no train+pool image; no valid starting budget exists "
                            "(check the labels or the split)")
    available = set(range(pool.n_images))
    selectors: dict[int, ImageSelector] = {}
    ids: list[int] = []
    seeded: dict[int, list[int]] = {c: [] for c in range(n_labels)}   # label -> images of its patches

    def place(img: int, c: int) -> bool:
        sel = selectors.get(img) or selectors.setdefault(img, env.selector(img))
        g = _place_on_class(env, sel, img, c, border=False, rng=rng)
        if g is None:
            return False
        sel.accept(g)
        ids.append(int(pool.encode(img, g)))
        seeded[c].append(img)
        return True

    # 1) the thesis rule: distinct images, one class-seeded patch per image, rarest label first
    remaining = list(range(n_labels))
    short = []
    while remaining:
        c = min(remaining, key=lambda c: (sum(i in available for i in holders[c]), c))
        cand = [i for i in holders[c] if i in available]
        placed = 0
        for j in rng.permutation(len(cand)):
            img = cand[int(j)]
            if place(img, c):
                available.discard(img)
                placed += 1
                if placed == per_label:
                    break
        if placed < per_label:
            short.append(c)
        remaining.remove(c)
    # 2) small datasets: the missing patches of a label go into images already used (other images
    #    first, then the same image again), without overlap
    for c in short:
        need = per_label - len(seeded[c])
        fresh = [i for i in holders[c] if i not in seeded[c]]
        again = [i for i in holders[c] if i in seeded[c]]
        order = [fresh[int(j)] for j in rng.permutation(len(fresh))] + [again[int(j)] for j in rng.permutation(len(again))]
        for img in order:
            if need == 0:
                break
            if place(img, c):
                need -= 1
        got = len(seeded[c])
        if got == 0:
            raise UserError(f"no class-seeded starting patch of {names[c]!r} fits without overlap; no valid starting "
                            "budget exists (use a smaller --patch-size)")
        n_img = len(set(seeded[c]))
        notes.append(f"class {names[c]!r}: {got} class-seeded starting patch(es) in {n_img} image(s) "
                     f"(thesis rule: {per_label} in distinct images; {len(holders[c])} image(s) hold the class, "
                     f"{pool.n_images} train+pool images in all)")
    fill = random_patches(env, size - len(ids), rng, P_FG33, selectors)
    return np.concatenate([np.asarray(ids, dtype=np.int64), fill])
