"""The contract every registered query method inherits (scikit-activeml's template-test style).

One parametrised test over *every* method of *every* domain in ``core.query``'s registry, on
synthetic evidence (no dataset, no model): a method is tested the moment it is registered.  The
evidence holds exactly the kinds the method declares in ``needs`` (an undeclared kind is a
``KeyError``), so the declarations the domains read to compute evidence are checked too.

Contract: the right number of ids, no duplicates, only unlabelled candidates, same seed → same
picks, one finite score per pick, a bounded JSON summary, and bad arguments (n ≤ 0, n > pool,
non-integer n, bad β) → ``UserError`` before any work.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from classification import query as _classification  # noqa: F401  (registers)
from core import query
from core.errors import UserError
from core.pool import Pool
from segmentation import query as segq
from segmentation.patches import PatchPool, box_mean

ALL = [(m.domain, m.name) for m in query.methods()]
N = 5


def _softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def classification_evidence(needs, context, seed=0):
    """A 60-sample pool with 12 labelled; every classification evidence kind, filtered to ``needs``."""
    rng = np.random.default_rng(seed)
    pool = Pool(60)
    pool.label(np.arange(0, 60, 5), 0)
    unl, lab = pool.unlabelled, pool.labelled
    mc = _softmax(rng.standard_normal((60, 6, 4)) * 2, -1).astype(np.float32)
    feats = rng.standard_normal((60, 8)).astype(np.float32)
    kinds = {"probs": lambda: mc[unl].mean(1), "mc_probs": lambda: mc[unl], "features": lambda: feats[unl],
             "labelled_features": lambda: feats[lab],
             "badge": lambda: (mc[unl].mean(1), np.abs(feats[unl]))}
    return query.Evidence({k: kinds[k] for k in needs}, context=context, candidates=unl), pool


def segmentation_evidence(needs, context, seed=0):
    """Six 12³ volumes (2 foreground classes), two patches labelled; window-mean grids of every
    ``grid:…`` kind in ``needs`` from a synthetic 2-member ensemble, as the domain computes them."""
    import torch
    rng = np.random.default_rng(seed)
    shape, n_img, patch = (12, 12, 12), 6, (3, 3, 3)
    labels = []
    for j in range(n_img):
        lab = np.zeros(shape, np.uint8)
        lab[2:8, 2:8, 2:8] = 1
        lab[9:11, 9:11, 1 + j % 3:3 + j % 3] = 2
        labels.append(lab)
    pool = PatchPool([shape] * n_img, patch, 1)
    pool.label(np.concatenate([pool.encode(0, [[0, 0, 0]]), pool.encode(3, [[5, 5, 5]])]), 0)
    env = segq.QueryEnv(pool, labels.__getitem__, 2, 0.0, 4)
    grid_kinds = sorted(k for k in needs if k.startswith("grid:"))
    grids = {k: [] for k in grid_kinds}
    for j in range(n_img):
        P = torch.as_tensor(_softmax(rng.standard_normal((2, 3, *shape)) * 1.5, 1).astype(np.float32))
        for kind, m in segq.voxel_maps(P, grid_kinds).items():
            grids[kind].append(box_mean(m.numpy(), pool.kernels[j], pool.stride))
    values = {"env": env, **grids}
    return query.Evidence(values={k: values[k] for k in needs}, context=context, candidates=pool.unlabelled), pool


BUILD = {"classification": classification_evidence, "segmentation": segmentation_evidence}


def _evidence(method, beta=1.0, seed=0):
    return BUILD[method.domain](method.needs, {"cycle": 1, "beta": beta}, seed)


def test_every_domain_is_covered():
    assert set(query.domains()) == set(BUILD), "a new domain needs a synthetic-evidence builder here"
    assert len(ALL) >= 19     # 9 classification + 10 segmentation methods when this test was written


@pytest.mark.parametrize("domain,name", ALL)
def test_query_method_contract(domain, name):
    m = query.get(domain, name)
    assert m.domain == domain and m.name == name and m.label and m.description
    assert isinstance(m.model, dict) and m.rule in (query.TOPK, query.POWER, query.SOFTRANK, query.STRATIFIED,
                                                    query.UNIFORM, query.KCENTER, query.KMEANSPP)
    ev, pool = _evidence(m)
    res = m.select(ev, N, np.random.default_rng(0))
    # right count, no duplicates, only unlabelled candidates
    assert isinstance(res, query.QueryResult) and res.ids.shape == (N,)
    assert len(np.unique(res.ids)) == N
    assert not np.isin(res.ids, pool.labelled).any() and ((res.ids >= 0) & (res.ids < len(pool))).all()
    pool.label(res.ids, 1)                                    # the pool accepts them
    # one finite score per pick, a bounded JSON summary that says which method picked
    assert res.scores.shape == (N,) and np.isfinite(res.scores).all()
    summary = res.summary()
    text = json.dumps(summary)
    assert summary["detail"]["method"] == name and summary["n"] == N and len(text) < 20_000
    if res.pool_scores is not None:
        assert summary["pool"]["n"] >= 1 and sum(summary["pool"]["hist"]["counts"]) == summary["pool"]["n"]
    # same seed, same picks (fresh evidence); the picks do not depend on evidence the method did not declare
    again = m.select(_evidence(m)[0], N, np.random.default_rng(0))
    assert again.ids.tolist() == res.ids.tolist() and np.array_equal(again.scores, res.scores)


@pytest.mark.parametrize("domain,name", ALL)
def test_query_method_rejects_bad_arguments(domain, name):
    m = query.get(domain, name)
    ev, pool = _evidence(m)
    size = len(pool.unlabelled)
    for bad_n in (0, -1, size + 1, 2.5, True):
        with pytest.raises(UserError):
            m.select(ev, bad_n, np.random.default_rng(0))
    for bad_beta in (0.0, -1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(UserError, match="β"):
            m.select(_evidence(m, beta=bad_beta)[0], N, np.random.default_rng(0))


@pytest.mark.parametrize("domain,name", [(d, n) for d, n in ALL if query.get(d, n).rule.uses_beta])
def test_beta_reaches_the_noise(domain, name):
    """power/softrank of any score: β → ∞ removes the noise (the top-k picks of the same score)."""
    m = query.get(domain, name)
    plain = query.get(domain, m.score.name)
    cold = m.select(_evidence(m, beta=1e9)[0], N, np.random.default_rng(0))
    top = plain.select(_evidence(plain)[0], N, np.random.default_rng(0))
    assert set(cold.ids.tolist()) == set(top.ids.tolist()) and cold.detail["beta"] == 1e9
    hot = [m.select(_evidence(m, beta=1e-3)[0], N, np.random.default_rng(s)).ids.tolist() for s in range(3)]
    assert len({tuple(h) for h in hot}) > 1                     # β → 0: (almost) random


def test_unknown_method_lists_the_domain_names():
    with pytest.raises(UserError, match="valid: .*claspe"):
        query.get("segmentation", "coreset")
    with pytest.raises(UserError, match="valid: .*badge"):
        query.get("classification", "claspe")


def test_the_contract_catches_broken_methods():
    ev, pool = classification_evidence(("probs",), {"beta": 1.0})
    cands = np.asarray(pool.unlabelled)

    def broken(kind):
        def run(ev, n, rng):
            if kind == "duplicates":
                return query.QueryResult(np.repeat(cands[:1], n), np.zeros(n))
            if kind == "labelled":
                return query.QueryResult(np.r_[pool.labelled[:1], cands[:n - 1]], np.zeros(n))
            if kind == "nan":
                return query.QueryResult(cands[:n], np.full(n, np.nan))
            return query.QueryResult(cands[:n - 1], np.zeros(n - 1))
        return query.QueryMethod("classification", kind, run, frozenset({"probs"}))
    for kind in ("duplicates", "labelled", "nan", "short"):
        with pytest.raises(RuntimeError):
            broken(kind).select(ev, N, np.random.default_rng(0))
