"""Pick regression: every query method picks the same candidate ids as before the query-contract
refactor, for fixed synthetic evidence and a fixed generator.

``tests/data/query_picks.json`` was recorded on the tree *before* the refactor (issue 10, commit
3236bf5, by that commit's version of this file run as a script, with the old registry API); the test
only reads it.  Change it only for a deliberate change of a method's picks, and say so in the commit.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segmentation.start import starting_budget

PICKS = Path(__file__).parent / "data" / "query_picks.json"
N_PICK_CLS, N_PICK_SEG = 10, 6
GEN_SEED = 1234


# ------------------------------------------------------------------------------ synthetic evidence
def _softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def classification_evidence():
    """Unlabelled candidates 20..119 of a 120-sample pool (0..19 labelled)."""
    rng = np.random.default_rng(42)
    n_pool, n_lab, C, M, D = 120, 20, 5, 8, 16
    logits = rng.standard_normal((n_pool, C)) * 2.0
    mc = _softmax(logits[:, None, :] + rng.standard_normal((n_pool, M, C)) * 1.5).astype(np.float32)
    probs = mc.mean(1)
    feats = rng.standard_normal((n_pool, D)).astype(np.float32)
    h = np.abs(rng.standard_normal((n_pool, D))).astype(np.float32)
    unl = np.arange(n_lab, n_pool)
    lab = np.arange(n_lab)
    return {"unlabelled": unl, "probs": probs[unl], "mc_probs": mc[unl], "features": feats[unl],
            "labelled_features": feats[lab], "badge": (probs[unl], h[unl])}


def segmentation_setup():
    """(env, score grids, starting-budget ids) on 8 labelled 16³ volumes with 3 foreground classes."""
    from segmentation import query as segq
    from segmentation.patches import PatchPool, box_mean
    from synthetic import box_volumes
    rng = np.random.default_rng(7)
    shape, n_img, patch = (16, 16, 16), 8, (4, 4, 4)
    labels = box_volumes(rng, n_img, shape, (1, 5), 8, (11, 13))
    pool = PatchPool([shape] * n_img, patch, 1)
    env = segq.QueryEnv(pool, labels.__getitem__, 3, 0.0, 8)
    start = starting_budget(env, 10, np.random.default_rng(3))
    pool.label(start, 0)
    pe, mi, cls = [], [], []
    for j in range(n_img):
        p = _softmax(rng.standard_normal((4, *shape)) * 1.5, axis=0).astype(np.float32)  # [C+1, X, Y, Z]
        h = -(p * np.log(p)).sum(0)
        k = pool.kernels[j]
        pe.append(box_mean(h, k, 1))
        mi.append(box_mean(h * rng.random(h.shape).astype(np.float32), k, 1))
        cls.append(box_mean(p[1:] * h[None], k, 1))
    return env, {"pe": pe, "mi": mi, "cls": cls}, start


# Context variants: (tag, beta, cycle).  ClaSP PE reads the scheduled β of the cycle; the power /
# softrank methods read β.
CONTEXTS = [("b1c0", 1.0, 0), ("b2c2", 2.0, 2)]


# ------------------------------------------------------------------------------ the test (new API)
RECORDED = json.loads(PICKS.read_text())
# old registry name -> (domain, new name); the evidence kinds were renamed with the registry
SEG_RENAMED = {f"seg_{n}": n for n in ("random", "random_fg33", "random_fg66", "pe", "bald", "power_bald",
                                       "softrank_bald", "power_pe", "claspe")}
SEG_KINDS = {"pe": "grid:pe", "mi": "grid:bald", "cls": "grid:cls:pe"}


def test_classification_picks_unchanged():
    from core import query
    from classification import query as _registers  # noqa: F401
    ev0 = classification_evidence()
    assert RECORDED["classification"]
    for key, want in RECORDED["classification"].items():
        name, tag = key.split("/")
        _, beta, cycle = dict((c[0], c) for c in CONTEXTS)[tag]
        ev = query.Evidence(values={k: v for k, v in ev0.items() if k != "unlabelled"},
                            context={"beta": beta, "cycle": cycle}, candidates=ev0["unlabelled"])
        res = query.get("classification", name).select(ev, N_PICK_CLS, np.random.default_rng(GEN_SEED))
        assert res.ids.tolist() == want, key


def test_segmentation_picks_unchanged():
    from core import query
    from segmentation import query as _registers  # noqa: F401
    _, _, start = segmentation_setup()
    assert start.tolist() == RECORDED["segmentation_start"]
    assert set(k.split("/")[0] for k in RECORDED["segmentation"]) == set(SEG_RENAMED)
    for key, want in RECORDED["segmentation"].items():
        old, tag = key.split("/")
        _, beta, cycle = dict((c[0], c) for c in CONTEXTS)[tag]
        env, scores, _ = segmentation_setup()
        ev = query.Evidence(values={"env": env, **{SEG_KINDS[k]: v for k, v in scores.items()}},
                            context={"cycle": cycle, "beta": beta}, candidates=env.pool.unlabelled)
        res = query.get("segmentation", SEG_RENAMED[old]).select(ev, N_PICK_SEG, np.random.default_rng(GEN_SEED))
        assert res.ids.tolist() == want, key
        assert query.get("segmentation", old) is query.get("segmentation", SEG_RENAMED[old])   # old names map on read
