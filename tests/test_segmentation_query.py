"""Segmentation query methods: registry, β schedule, ClaSP quotas, no overlap, baselines, starting budget."""
import numpy as np
import pytest

from core import query as cq
from core import selection
from core.errors import UserError
from core.loop import cycle_rng
from segmentation import query as segq

SEG_METHODS = cq.names("segmentation")
from segmentation.patches import PatchPool, box_mean
from segmentation.start import starting_budget
from synthetic import box_volumes


def phantom_env(n_img=8, shape=(20, 20, 20), patch=(4, 4, 4), ppi=20, seed=0):
    """Images with a big class-1 box, a small class-2 box and a tiny class-3 box."""
    labels = box_volumes(np.random.default_rng(seed), n_img, shape, (2, 6), 10, (13, 16))
    pool = PatchPool([shape] * n_img, patch, 1)
    return segq.QueryEnv(pool, labels.__getitem__, 3, 0.0, ppi), labels


def fake_scores(env, labels, seed=0):
    """Score grids computed from made-up probabilities, as the domain does."""
    rng = np.random.default_rng(seed)
    pe, mi, cls = [], [], []
    for j, lab in enumerate(labels):
        p = rng.dirichlet(np.ones(4), size=lab.shape).astype(np.float32)  # [X, Y, Z, 4]
        p = np.moveaxis(p, -1, 0)
        h = -(p * np.log(p)).sum(0)
        k = env.pool.kernels[j]
        pe.append(box_mean(h, k, 1))
        mi.append(box_mean(h * rng.random(h.shape, dtype=np.float32), k, 1))
        cls.append(box_mean(p[1:] * h[None], k, 1))
    return {"pe": pe, "mi": mi, "cls": cls}


def occupancy(env, ids):
    occ = {j: env.pool.annotation_mask(j).astype(int) for j in range(env.pool.n_images)}
    img, org = env.pool.decode(ids)
    for j, o in zip(img, org):
        k = env.pool.kernels[j]
        occ[j][o[0]:o[0] + k[0], o[1]:o[1] + k[1], o[2]:o[2] + k[2]] += 1
    return max(v.max() for v in occ.values())


def evidence(env, scores, cycle=0):
    kinds = {"pe": "grid:pe", "mi": "grid:bald", "cls": "grid:cls:pe"}
    return cq.Evidence(providers={"env": lambda: env, **{kinds[k]: (lambda v=v: v) for k, v in scores.items()}},
                       context={"cycle": cycle, "beta": 1.0}, candidates=env.pool.unlabelled)


def test_registry_holds_segmentation_short_names():
    assert set(SEG_METHODS) >= {"random", "random_fg33", "random_fg66", "pe", "bald", "power_bald", "softrank_bald",
                                "power_pe", "claspe"}
    for short in SEG_METHODS:
        m = cq.get("segmentation", short)
        assert m.domain == "segmentation" and m.name == short and m.label
        if short not in ("softrank_pe", "cla_pe33", "cla_pe66", "clap_pe", "claspe33"):   # old (pre-issue-10) names map on read
            assert cq.get("segmentation", f"seg_{short}") is m
        assert {k for k in m.needs if not k.startswith("grid:")} == {"env"}
    assert cq.get("segmentation", "claspe").label == "ClaSP PE"
    assert cq.get("segmentation", "power_pe").label == "PowerPE"
    assert cq.get("segmentation", "bald").model == {"min_ensemble": 2}
    with pytest.raises(UserError, match="valid:"):
        cq.get("segmentation", "coreset")


def test_beta_schedule_values():
    np.testing.assert_allclose(selection.exponential_schedule(5, 1, 100), [1, 3.16228, 10, 31.6228, 100], rtol=1e-5)
    got = [selection.scheduled_beta(t, 4) for t in range(6)]
    np.testing.assert_allclose(got, [1, 3.16228, 10, 31.6228, 100, 100], rtol=1e-5)
    # thesis formula β(t) = exp((1 − t/T) ln β0 + (t/T) ln βmax) with T = 4
    assert selection.scheduled_beta(2, 4, 2.0, 50.0) == pytest.approx(np.exp(0.5 * np.log(2) + 0.5 * np.log(50)))


@pytest.mark.parametrize("name", SEG_METHODS)
def test_methods_never_overlap_labelled_voxels(name):
    env, labels = phantom_env()
    rng = np.random.default_rng(1)
    start = starting_budget(env, 10, rng)
    env.pool.label(start, 0)
    scores = fake_scores(env, labels)
    m = cq.get("segmentation", name)
    ev = evidence(env, scores)
    for cycle in range(2):
        ev = evidence(env, scores, cycle)
        ids = m.select(ev, 12, cycle_rng(3, cycle)).ids
        assert occupancy(env, ids) <= 1   # o = 0: disjoint from annotated voxels and each other
        env.pool.label(ids, cycle + 1)
    # same seed, same picks
    env2, _ = phantom_env()
    env2.pool.label(start, 0)
    ids2 = m.select(evidence(env2, scores), 12, cycle_rng(3, 0)).ids
    np.testing.assert_array_equal(np.sort(ids2), env.pool.labelled_in(1))


def test_claspe_quotas_per_class():
    env, labels = phantom_env(n_img=8)
    scores = fake_scores(env, labels, seed=2)
    res = segq.claspe_patches(env, scores["pe"], scores["cls"], 20, np.random.default_rng(0), beta=1.0)
    info = res.detail
    assert len(np.unique(res.ids)) == 20 and len(info["stratum"]) == 20 and np.isfinite(res.scores).all()
    n_cls = int(20 * 0.66)                       # 13 → 4/4/4 + 1 to a random class; PE stratum 7
    assert info["quota"]["pe"] == 20 - n_cls == 7
    cls_q = sorted(info["quota"][f"class{c}"] for c in (1, 2, 3))
    assert cls_q == [4, 4, 5] and sum(cls_q) == n_cls
    assert info["taken"] == info["quota"] and info["filled"] == 0
    # per image: max(int(20·0.66/(C+1)), 1) = 3 windows per class stratum, int(20·0.34) = 6 for PE
    env2, _ = phantom_env(n_img=8, ppi=20)
    ids_all = segq.claspe_patches(env2, scores["pe"], scores["cls"], 8 * (3 * 3 + 6), np.random.default_rng(0), 1.0).ids
    assert np.bincount(env2.pool.decode(ids_all)[0]).max() <= 3 * 3 + 6


def test_claspe_class_strata_follow_class_scores():
    """With noise negligible (β = 1e6) each class stratum takes the windows where that class's
    score is highest, even when plain PE is highest elsewhere."""
    env, labels = phantom_env(n_img=4, shape=(16, 16, 16), ppi=8)
    g = env.pool.grids[0]
    pe = [np.full(g, 0.5, np.float32) for _ in range(4)]
    cls = [np.full((3, *g), 0.01, np.float32) for _ in range(4)]
    pe[0][0, 0, 0] = 5.0                 # PE hot spot in image 0
    cls[1][2][10, 10, 10] = 3.0          # class-3 hot spot in image 1
    res = segq.claspe_patches(env, pe, cls, 6, np.random.default_rng(0), beta=1e6)
    img, org = env.pool.decode(res.ids)
    hot = {(int(j), tuple(o)) for j, o in zip(img, org)}
    assert (1, (10, 10, 10)) in hot and (0, (0, 0, 0)) in hot


def test_foreground_aware_random_hits_foreground_more():
    env, labels = phantom_env(n_img=8)
    frac = {}
    for name, probs in [("random", segq.P_RANDOM), ("fg66", segq.P_FG66)]:
        hits = []
        for seed in range(4):
            e, _ = phantom_env(n_img=8)
            ids = segq.random_patches(e, 24, np.random.default_rng(seed), probs)
            img, org = e.pool.decode(ids)
            for j, o in zip(img, org):
                box = labels[j][o[0]:o[0] + 4, o[1]:o[1] + 4, o[2]:o[2] + 4]
                hits.append(bool(((box == 2) | (box == 3)).any()))
        frac[name] = np.mean(hits)
    assert frac["fg66"] > frac["random"] + 0.15


def test_not_enough_room_is_a_user_error():
    env, labels = phantom_env(n_img=2, shape=(8, 8, 8), patch=(4, 4, 4))
    scores = fake_scores(env, labels)
    with pytest.raises(UserError, match="non-overlapping"):
        segq.rank_patches(env, scores["pe"], 20, cq.TOPK)
    with pytest.raises(UserError, match="non-overlapping"):
        segq.random_patches(env, 17, np.random.default_rng(0))
