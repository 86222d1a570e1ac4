"""All-window mean scoring, the sparse patch pool and greedy non-overlapping selection."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from core.errors import UserError
from segmentation.patches import ImageSelector, PatchPool, _box_mean_numpy, box_mean, box_mean_loop


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(*[st.integers(3, 14)] * 3), k=st.tuples(*[st.integers(1, 16)] * 3),
       s=st.tuples(*[st.integers(1, 4)] * 3), seed=st.integers(0, 10 ** 6))
def test_box_mean_matches_loop(shape, k, s, seed):
    u = np.random.default_rng(seed).random(shape).astype(np.float32)
    fast = box_mean(u, k, s)
    ref = box_mean_loop(u, k, s).reshape(fast.shape)
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_box_mean_numpy(u, k, s), ref, rtol=1e-5, atol=1e-6)   # the path without numba
    np.testing.assert_allclose(box_mean(torch.from_numpy(u), k, s).numpy(), ref, rtol=1e-5, atol=1e-6)


def test_box_mean_channels_and_value():
    u = np.zeros((2, 6, 6, 6), np.float32)
    u[1, 2:4, 2:4, 2:4] = 1.0
    out = box_mean(u, (2, 2, 2), 1)
    assert out.shape == (2, 5, 5, 5)
    assert out[0].max() == 0.0
    assert out[1, 2, 2, 2] == pytest.approx(1.0)
    assert out[1, 1, 1, 1] == pytest.approx(1 / 8)


def make_pool():
    return PatchPool([(10, 12, 8), (6, 6, 6)], patch=(4, 4, 4), stride=(2, 1, 2))


def test_pool_geometry_roundtrip():
    pool = make_pool()
    assert pool.grids.tolist() == [[4, 9, 3], [2, 3, 2]]
    assert len(pool) == 4 * 9 * 3 + 2 * 3 * 2
    ids = np.arange(len(pool))
    img, org = pool.decode(ids)
    assert (org % pool.stride == 0).all()
    for j in range(2):
        sel = img == j
        assert (org[sel] + pool.kernels[j] <= np.asarray(pool.shapes[j])).all()
        np.testing.assert_array_equal(pool.encode(j, org[sel] // pool.stride), ids[sel])


def test_pool_label_contract_and_unlabelled_view():
    pool = make_pool()
    pool.label([5, 1, 100], 0)
    with pytest.raises(ValueError):
        pool.label([5], 1)
    with pytest.raises(ValueError):
        pool.label([3, 3], 1)
    with pytest.raises(ValueError):
        pool.label([len(pool)], 1)
    pool.label([7], 2)
    dense = np.flatnonzero(pool.labelled_at < 0)
    view = pool.unlabelled
    assert len(view) == len(dense)
    np.testing.assert_array_equal(view[np.arange(len(view))], dense)
    assert view.contains(dense[[0, 10, -1]]).all() and not view.contains([1, 5, 7, 100, -1, len(pool)]).any()
    assert pool.labelled_in(2).tolist() == [7]
    other = make_pool()
    other.load_state_dict(pool.state_dict())
    np.testing.assert_array_equal(other.labelled_at, pool.labelled_at)
    with pytest.raises(UserError):
        PatchPool([(10, 10, 10)], (4, 4, 4)).load_state_dict(pool.state_dict())


def test_annotation_mask_is_union_of_patches():
    pool = make_pool()
    ids = pool.encode(0, np.array([[0, 0, 0], [1, 2, 1]]))
    pool.label(ids, 0)
    m = pool.annotation_mask(0)
    assert m.sum() == 2 * 64 - np.prod([2, 2, 2])  # boxes at (0,0,0) and (2,2,2) overlap in 2x2x2
    assert not pool.annotation_mask(1).any()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10 ** 6), n=st.integers(1, 30))
def test_greedy_never_overlaps_labelled_or_each_other(seed, n):
    rng = np.random.default_rng(seed)
    pool = PatchPool([(16, 14, 12)], patch=(5, 4, 3), stride=1)
    pre = rng.choice(len(pool), 3, replace=False)
    pool.label(pre, 0)
    labelled = pool.annotation_mask(0).copy()
    sel = ImageSelector(pool, 0, overlap=0.0)
    flat, vals = sel.greedy(rng.random(pool.grids[0]), n)
    assert np.all(np.diff(vals) <= 0)  # descending score order
    occ = labelled.astype(int)
    k = pool.kernels[0]
    for o in pool.decode(pool.encode(0, flat))[1]:
        occ[o[0]:o[0] + k[0], o[1]:o[1] + k[1], o[2]:o[2] + k[2]] += 1
    assert occ.max() <= 1


def test_greedy_exhausts_and_respects_overlap_fraction():
    pool = PatchPool([(8, 8, 8)], patch=(4, 4, 4), stride=1)
    flat, _ = ImageSelector(pool, 0, 0.0).greedy(np.ones(pool.grids[0]), 100)
    assert len(flat) == 8  # at most 8 disjoint 4³ boxes in 8³ whatever the order
    sel = ImageSelector(pool, 0, overlap=0.5)
    flat, _ = sel.greedy(np.random.default_rng(0).random(pool.grids[0]), 20)
    k = pool.kernels[0]
    occ = np.zeros((8, 8, 8), bool)
    for o in pool.decode(pool.encode(0, flat))[1]:
        box = occ[o[0]:o[0] + 4, o[1]:o[1] + 4, o[2]:o[2] + 4]
        assert box.mean() <= 0.5 + 1e-9
        occ[o[0]:o[0] + k[0], o[1]:o[1] + k[1], o[2]:o[2] + k[2]] = True
