"""Partial-annotation loss, region sampling, CV folds, network plan and a tiny ensemble."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from segmentation.plans import PRESETS, plan_network
from segmentation.training import Ensemble, MaskedDiceCELoss, RegionSampler, cv_folds, train_model

IGN = 4


def _batch(seed=0, shape=(2, 4, 6, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    target[:, :3] = IGN  # a slab of unannotated voxels
    return logits, target


def test_ignore_label_never_reaches_the_loss():
    loss_fn = MaskedDiceCELoss(ignore_index=IGN)
    logits, target = _batch()
    ign = target == IGN
    base = loss_fn(logits, target)
    # arbitrary changes of the logits at ignored voxels leave the loss unchanged
    wild = logits.clone()
    wild.permute(0, 2, 3, 4, 1)[ign] = torch.randn(int(ign.sum()), 4) * 50
    assert torch.allclose(loss_fn(wild, target), base, atol=1e-6)
    # ... and get exactly zero gradient
    x = logits.clone().requires_grad_(True)
    loss_fn(x, target).backward()
    g = x.grad.permute(0, 2, 3, 4, 1)
    assert g[ign].abs().max() == 0
    assert g[~ign].abs().max() > 0
    # the loss equals the loss on the annotated voxels alone (flattened as one 'image')
    keep = ~ign
    flat_logits = logits.permute(1, 0, 2, 3, 4)[:, keep][None, :, :, None, None]
    flat_target = target[keep][None, :, None, None]
    assert torch.allclose(loss_fn(flat_logits, flat_target), base, atol=1e-5)


def test_loss_all_ignored_is_zero_and_perfect_prediction_is_low():
    loss_fn = MaskedDiceCELoss(ignore_index=IGN)
    logits, target = _batch()
    x = logits.clone().requires_grad_(True)
    out = loss_fn(x, torch.full_like(target, IGN))
    out.backward()
    assert out.item() == 0.0 and x.grad.abs().max() == 0
    t = torch.randint(0, 4, (1, 5, 5, 5))
    perfect = torch.nn.functional.one_hot(t, 4).movedim(-1, 1).float() * 40
    assert loss_fn(perfect, t).item() < 1e-3
    assert loss_fn(-perfect, t).item() > 1.5


def test_region_sampler_patches_contain_annotation_at_uniform_position():
    lab = np.full((40, 40, 40), IGN, np.uint8)
    lab[20, 20, 20] = 2                      # one annotated voxel
    img = np.random.default_rng(0).random((1, 40, 40, 40)).astype(np.float32)
    s = RegionSampler([img], [lab], (8, 8, 8), 3, IGN, np.random.default_rng(1), oversample_fg=0.0, mirror=False)
    offsets = []
    for _ in range(300):
        x, y = s.batch(1)
        assert x.shape == (1, 1, 8, 8, 8)
        pos = np.argwhere(y[0].numpy() != IGN)
        assert len(pos) == 1
        offsets.append(pos[0])
    offsets = np.asarray(offsets)
    assert offsets.min() == 0 and offsets.max() == 7   # the voxel lands everywhere in the patch
    assert abs(offsets.mean() - 3.5) < 0.5
    # force-fg samples are centred on the class voxel
    s2 = RegionSampler([img], [lab], (8, 8, 8), 3, IGN, np.random.default_rng(2), oversample_fg=1.0, mirror=False)
    _, y = s2.batch(2)
    assert (y[:, 4, 4, 4] == 2).all()


def test_region_sampler_pads_small_images_and_skips_unannotated():
    lab = np.zeros((5, 6, 7), np.uint8)
    unl = np.full((5, 6, 7), IGN, np.uint8)
    img = np.ones((1, 5, 6, 7), np.float32)
    s = RegionSampler([img, img], [lab, unl], (8, 8, 8), 3, IGN, np.random.default_rng(0))
    assert len(s.images) == 1
    x, y = s.batch(3)
    assert x.shape == (3, 1, 8, 8, 8) and (y == IGN).any() and (y == 0).any()


def test_cv_folds_put_every_class_in_two_validation_folds():
    rng = np.random.default_rng(0)
    classes = {i: {0, 1} for i in range(10)}
    classes[3].add(2)
    classes[7].add(2)
    classes[5].add(3)
    folds = cv_folds(list(range(10)), classes, 5, rng)
    assert sorted(i for f in folds for i in f) == list(range(10))
    holders = [{f for f, fold in enumerate(folds) if any(2 in classes[i] for i in fold)}]
    assert len(holders[0]) == 2     # class 2 (2 images) sits in 2 different folds
    for f in range(5):              # so every training split sees class 2
        assert any(2 in classes[i] for i in range(10) if i not in folds[f])
    assert cv_folds([1, 2], {1: {0}, 2: {0}}, 1, rng) == [[]]


def test_plan_network_divisible_and_within_budget():
    for med, sp in [((48, 48, 48), (1, 1, 1)), ((237, 206, 16), (0.7, 0.7, 2.0)), ((20, 90, 90), (3, 0.8, 0.8))]:
        for name in ("laptop", "thesis"):
            p = plan_network(med, sp, PRESETS[name])
            div = np.prod(np.asarray(p.strides), 0)
            assert (np.asarray(p.patch_size) % div == 0).all()
            assert np.prod(p.patch_size) <= PRESETS[name].patch_voxels
            assert len(p.kernels) == len(p.strides) == len(p.filters)


def test_tiny_ensemble_trains_and_predicts_probabilities():
    preset = PRESETS["smoke"]
    plan = plan_network((16, 16, 16), (1, 1, 1), preset)
    lab = np.zeros((16, 16, 16), np.uint8)
    lab[4:10, 4:10, 4:10] = 1
    img = (lab[None].astype(np.float32) + 0.1)
    part = lab.copy()
    part[:, :, 12:] = 3  # ignore (C = 2 → ignore 3)
    s = RegionSampler([img], [part], plan.patch_size, 2, 3, np.random.default_rng(0))
    net = train_model(s, plan, preset, 1, 2, 3, (0, 0, 0), "cpu")
    net2 = train_model(RegionSampler([img], [part], plan.patch_size, 2, 3, np.random.default_rng(0)),
                       plan, preset, 1, 2, 3, (0, 0, 0), "cpu")
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)  # seeded: same key → same weights
    ds = train_model(RegionSampler([img], [part], plan.patch_size, 2, 3, np.random.default_rng(0)),
                     plan, replace(preset, deep_supervision=True), 1, 2, 3, (0, 0, 1), "cpu")  # thesis path
    ens = Ensemble([net, net2, ds], plan, "cpu", False, 2, [])
    P = ens.predict(img, overlap=0.25)
    assert P.shape == (3, 3, 16, 16, 16)
    assert torch.allclose(P.sum(1), torch.ones(1), atol=1e-5)
