"""The fast paths of issue 14 compute the same thing as the plain ones."""
import numpy as np
import torch
import torch.nn.functional as F

from classification.model import ResNet18
from core.selection import _D2Sampler, kmeanspp_badge
from segmentation.patches import box_mean, box_mean_loop


def test_half_dropout_fast_path_matches_f_dropout_in_distribution():
    torch.manual_seed(0)
    net = ResNet18(4, width=4, dropout=0.5).eval()
    h = torch.randn(200, 32).relu()
    fast = net.mc_probs(h, 3000)
    assert fast.shape == (200, 3000, 4) and torch.allclose(fast.sum(-1), torch.ones(200, 3000))
    ref = torch.softmax(net.fc(F.dropout(h.unsqueeze(1).expand(-1, 3000, -1), 0.5, training=True)), -1)
    assert (fast.mean(1) - ref.mean(1)).abs().max() < 0.03       # same MC expectation
    assert (fast.std(1) - ref.std(1)).abs().max() < 0.03         # same spread: masks are fair coins
    torch.manual_seed(1)
    a = net.mc_probs(h, 5)
    torch.manual_seed(1)
    assert torch.equal(a, net.mc_probs(h, 5))                    # seeded → same masks
    assert not torch.equal(a[:, 0], a[:, 1])                     # independent masks per sample


def test_badge_pruned_seeding_equals_dense_reference():
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(3000, 10, generator=g) * 3, 1)
    h = torch.randn(3000, 64, generator=g).relu_()
    fast = kmeanspp_badge(probs, h, 120, np.random.default_rng(7))
    dense = kmeanspp_badge(probs, h, 120, np.random.default_rng(7), dense=True)
    assert fast.tolist() == dense.tolist()


def test_badge_pruned_seeding_equals_dense_for_signed_features_and_repeated_rows():
    """Features of both signs use the |a_i·a_j| bound (the ReLU bound would be wrong for them);
    repeated rows give D² = 0 ties; the picks, their D² and the norms equal the dense reference."""
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(2500, 7, generator=g) * 2, 1)
    h = torch.randn(2500, 48, generator=g)
    probs[1000:1100], h[1000:1100] = probs[:100], h[:100]     # exact duplicates
    fast = kmeanspp_badge(probs, h, 300, np.random.default_rng(11), return_scores=True)
    dense = kmeanspp_badge(probs, h, 300, np.random.default_rng(11), dense=True, return_scores=True)
    assert fast[0].tolist() == dense[0].tolist() and len(set(fast[0].tolist())) == 300
    np.testing.assert_allclose(fast[1], dense[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast[2], dense[2], rtol=1e-5)


def test_badge_sorted_runs_equal_dense_for_1000_centres_and_ragged_sizes():
    """The host path reads h in (class, runner-up, |g|²) order in runs of 8-row blocks: a pool size
    that is no multiple of 8, 1000 centres (half the pool: late steps touch scattered small runs)
    and a pool of fewer rows than one block give the dense reference's picks and D²."""
    g = torch.Generator().manual_seed(9)
    probs = torch.softmax(torch.randn(2003, 10, generator=g) * 3, 1)
    h = torch.randn(2003, 40, generator=g).relu_()
    fast = kmeanspp_badge(probs, h, 1000, np.random.default_rng(2), return_scores=True)
    dense = kmeanspp_badge(probs, h, 1000, np.random.default_rng(2), dense=True, return_scores=True)
    assert fast[0].tolist() == dense[0].tolist() and len(set(fast[0].tolist())) == 1000
    np.testing.assert_allclose(fast[1], dense[1], rtol=1e-4, atol=1e-6)
    small = kmeanspp_badge(probs[:5], h[:5], 5, np.random.default_rng(0))
    assert small.tolist() == kmeanspp_badge(probs[:5], h[:5], 5, np.random.default_rng(0), dense=True).tolist()


def test_blocked_d2_draw_is_the_inverse_cdf_draw():
    """The two-level draw (block sums, then rows of one block) picks the row a single cumulative sum
    over all rows picks, for the same uniform number; zero-D² rows are never drawn."""
    rng = np.random.default_rng(0)
    for n in (1, 511, 512, 513, 5000):
        d2 = rng.random(n) ** 3
        d2[rng.random(n) < 0.3] = 0.0
        if not d2.any():
            d2[-1] = 1.0
        s = _D2Sampler(d2)
        cdf = np.cumsum(d2)
        for u in np.r_[rng.random(200), 0.0, 1.0 - 1e-16]:
            got = s.draw(_Fixed(u))
            assert d2[got] > 0
            r = u * cdf[-1]
            want = int(np.searchsorted(cdf, r, side="right"))
            if want < n and np.abs(cdf - r).min() > 1e-9 * cdf[-1]:   # not on a boundary (round-off)
                assert got == want, (n, u)
        s.d2[:] = 0.0
        s.refresh(np.arange(n))
        assert s.draw(_Fixed(0.5)) is None


class _Fixed:
    """A stand-in generator whose ``random()`` returns a fixed number."""

    def __init__(self, u):
        self.u = u

    def random(self):
        return self.u


def test_box_mean_odd_shapes_strides_and_power_of_two_sizes():
    rng = np.random.default_rng(0)
    for shape, k, s in (((2, 64, 64, 64), (9, 5, 16), (1, 1, 1)), ((33, 17, 40), (7, 17, 3), (2, 1, 3)),
                        ((32, 32, 32), (4, 4, 4), (4, 4, 4))):
        u = rng.random(shape, dtype=np.float32)
        fast = box_mean(u, k, s)
        assert fast.flags.c_contiguous and fast.dtype == np.float32
        for lead in np.ndindex(*shape[:-3]):   # leading dims (channels) are scored one by one
            ref = box_mean_loop(u[lead], k, s).reshape(fast[lead].shape)
            assert np.abs(fast[lead] - ref).max() < 1e-5


def test_box_mean_benchmark_window_layouts_and_reused_workspace():
    """The benchmark's case at a smaller size (window 20, stride 1), non-contiguous and float64
    inputs, and repeated calls: the scratch buffers kept between calls never leak into a result."""
    rng = np.random.default_rng(1)
    u = rng.random((44, 40, 36), dtype=np.float32) * np.float32(np.log(4))
    first = box_mean(u, (20, 20, 20), 1)
    keep = first.copy()
    pos = np.stack(np.unravel_index(rng.choice(first.size, 300, replace=False), first.shape), 1)
    ref = box_mean_loop(u, (20, 20, 20), 1, positions=pos)
    assert np.abs(first[tuple(pos.T)] - ref).max() <= 1e-5
    other = box_mean(rng.random((44, 40, 36), dtype=np.float32), (20, 20, 20), 1)   # same workspace
    assert np.array_equal(first, keep) and not np.shares_memory(first, other)
    v = rng.random((3, 30, 26, 22))                      # float64, leading dim, then a strided view
    out = box_mean(v[:, ::-1, :, 1::2], (5, 6, 4), (1, 2, 1))
    for c in range(3):
        ref = box_mean_loop(v[c, ::-1, :, 1::2], (5, 6, 4), (1, 2, 1)).reshape(out[c].shape)
        assert out.dtype == np.float32 and np.abs(out[c] - ref).max() < 1e-5


def test_box_mean_uses_the_compiled_kernel_and_falls_back_to_numpy_without_numba(monkeypatch):
    """numba is a dependency: box_mean runs the compiled cache-blocked kernel; with numba missing it
    takes the numpy path, and both give the loop reference's means (window 20 as in the benchmark,
    a leading channel dim, strides on every axis, a non-cubic map)."""
    import segmentation.patches as P
    assert P._numba_kernel() is not None
    rng = np.random.default_rng(4)
    u = rng.random((2, 45, 38, 41), dtype=np.float32)
    fast = box_mean(u, (20, 20, 20), (1, 2, 3))
    monkeypatch.setattr(P, "_KERNEL", [None])
    slow = box_mean(u, (20, 20, 20), (1, 2, 3))
    assert fast.shape == slow.shape == (2, 26, 10, 8)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    for c in range(2):
        ref = box_mean_loop(u[c], (20, 20, 20), (1, 2, 3)).reshape(fast[c].shape)
        assert np.abs(fast[c] - ref).max() < 1e-5
