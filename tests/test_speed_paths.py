"""The fast paths of issue 14 compute the same thing as the plain ones."""
import numpy as np
import torch
import torch.nn.functional as F

from classification.model import ResNet18
from core.selection import kmeanspp_badge
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
