import numpy as np
import pytest
import torch

from core import selection as S


def test_topk_order_and_ties():
    assert S.topk([0.1, 0.5, 0.5, 0.9], 3).tolist() == [3, 1, 2]
    with pytest.raises(ValueError):
        S.topk([1.0, 2.0], 3)


def test_power_is_seeded_and_interpolates(rng):
    scores = rng.random(500)
    a = S.power(scores, 50, np.random.default_rng(7), beta=1.0)
    b = S.power(scores, 50, np.random.default_rng(7), beta=1.0)
    c = S.power(scores, 50, np.random.default_rng(8), beta=1.0)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 50
    # beta -> infinity recovers top-k
    assert set(S.power(scores, 50, np.random.default_rng(1), beta=1e9).tolist()) == set(S.topk(scores, 50).tolist())
    sr = S.softrank(scores, 50, np.random.default_rng(3), beta=1e9)
    assert set(sr.tolist()) == set(S.topk(scores, 50).tolist())


def test_gumbel_scale(rng):
    g = S.gumbel(np.random.default_rng(0), 200_000, beta=4.0)
    assert abs(g.mean() - 0.5772 / 4) < 0.01  # mean of Gumbel(0, 1/beta) = gamma / beta
    assert abs(g.std() - np.pi / np.sqrt(6) / 4) < 0.01


def test_stratified_quotas_no_duplicates():
    s1 = np.array([9, 8, 7, 0, 0, 0.0])
    s2 = np.array([9, 8, 0, 7, 6, 0.0])
    picks = S.stratified([s1, s2], [2, 2])
    assert picks.tolist() == [0, 1, 3, 4]


def _kcenter_bruteforce(x, lab, n):
    centres = list(lab)
    picks = []
    for _ in range(n):
        d = np.array([min(np.sum((xi - c) ** 2) for c in centres) for xi in x])
        d[picks] = -1
        j = int(np.argmax(d))
        picks.append(j)
        centres.append(x[j])
    return picks


@pytest.mark.parametrize("seed", range(5))
def test_kcenter_greedy_equals_bruteforce(seed):
    r = np.random.default_rng(seed)
    x = r.normal(size=(40, 3))
    lab = r.normal(size=(4, 3))
    assert S.kcenter_greedy(x, lab, 12).tolist() == _kcenter_bruteforce(x, lab, 12)


def test_kcenter_no_labelled_and_duplicates():
    x = np.zeros((5, 2))
    picks = S.kcenter_greedy(x, np.zeros((0, 2)), 5, np.random.default_rng(0))
    assert sorted(picks.tolist()) == [0, 1, 2, 3, 4]


def test_badge_factorised_distances_equal_dense(rng):
    probs = torch.as_tensor(rng.dirichlet(np.ones(4), size=30), dtype=torch.float32)
    h = torch.as_tensor(rng.normal(size=(30, 6)), dtype=torch.float32)
    a, hh = S.badge_factors(probs, h)
    g = S.badge_dense(probs, h)
    # embedding = (p - onehot(argmax)) outer h
    onehot = torch.nn.functional.one_hot(probs.argmax(1), 4).float()
    assert torch.allclose(g, ((probs - onehot)[:, :, None] * h[:, None]).reshape(30, -1))
    dense = torch.cdist(g, g) ** 2
    fact = ((a * a).sum(1) * (hh * hh).sum(1))[:, None] + ((a * a).sum(1) * (hh * hh).sum(1))[None] \
        - 2 * (a @ a.T) * (hh @ hh.T)
    assert torch.allclose(dense, fact.clamp_min(0), atol=1e-4)
    for seed in range(3):
        f = S.kmeanspp_badge(probs, h, 10, np.random.default_rng(seed))
        d = S.kmeanspp_badge(probs, h, 10, np.random.default_rng(seed), dense=True)
        assert f.tolist() == d.tolist()
        assert len(set(f.tolist())) == 10
        assert f[0] == int(torch.argmax(g.norm(dim=1)))  # first centre = max-norm embedding


def test_badge_no_phantom_centre_at_origin():
    # point 0: large embedding; point 1: zero embedding (confident one-hot); point 2: close to point 0.
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]])
    h = torch.tensor([[10.0, 0.0], [5.0, 5.0], [10.1, 0.0]])
    picks = [S.kmeanspp_badge(probs, h, 2, np.random.default_rng(s))[1] for s in range(50)]
    # distance to the chosen centre (not to the origin) decides: the zero embedding is far from point 0
    assert np.mean(np.array(picks) == 1) > 0.9


def test_badge_identical_embeddings_no_duplicates():
    probs = torch.tensor([[1.0, 0.0]] * 6)
    h = torch.ones(6, 3)
    picks = S.kmeanspp_badge(probs, h, 6, np.random.default_rng(0))
    assert sorted(picks.tolist()) == list(range(6))
