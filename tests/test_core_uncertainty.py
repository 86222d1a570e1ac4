import math

import numpy as np
import torch

from core import uncertainty as U


def test_measures_hand_computed_disagreeing_members():
    # two confident members that disagree: total = ln 2, aleatoric 0, epistemic ln 2
    p = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # [N=1, M=2, C=2]
    assert np.isclose(U.predictive_entropy(p)[0], math.log(2))
    assert np.isclose(U.expected_entropy(p)[0], 0.0)
    assert np.isclose(U.mutual_information(p)[0], math.log(2))
    assert np.isclose(U.max_softmax(p)[0], 0.5)


def test_measures_hand_computed_values():
    # members (0.9, 0.1) and (0.5, 0.5): mean (0.7, 0.3)
    p = np.array([[[0.9, 0.1], [0.5, 0.5]]])
    h = lambda q: -sum(x * math.log(x) for x in q if x > 0)
    assert np.isclose(U.predictive_entropy(p)[0], h([0.7, 0.3]))
    assert np.isclose(U.expected_entropy(p)[0], (h([0.9, 0.1]) + h([0.5, 0.5])) / 2)
    assert np.isclose(U.mutual_information(p)[0], h([0.7, 0.3]) - (h([0.9, 0.1]) + h([0.5, 0.5])) / 2)
    assert np.isclose(U.entropy(np.array([0.25, 0.25, 0.5])), h([0.25, 0.25, 0.5]))


def test_identical_samples_have_zero_mi_and_pe_equals_entropy(rng):
    p = rng.dirichlet(np.ones(5), size=7)
    mc = np.repeat(p[:, None], 4, axis=1)
    assert np.allclose(U.mutual_information(mc), 0, atol=1e-7)
    assert np.allclose(U.predictive_entropy(mc), U.entropy(p))


def test_voxel_layout_and_decomposition(rng):
    p = torch.as_tensor(rng.dirichlet(np.ones(3), size=(4, 5, 6))).permute(0, 3, 1, 2)  # [M=4, C=3, 5, 6]
    d = U.decomposition(p, sample_dim=0, class_dim=1)
    assert d["pe"].shape == (5, 6)
    assert torch.allclose(d["pe"], d["ee"] + d["mi"], atol=1e-6)
    assert (d["mi"] >= 0).all()
    # same as the N, M, C layout
    flat = p.permute(2, 3, 0, 1).reshape(30, 4, 3)
    assert torch.allclose(U.mutual_information(flat).reshape(5, 6), d["mi"], atol=1e-6)
