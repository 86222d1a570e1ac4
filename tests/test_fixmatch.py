"""FixMatch: schedule, distribution alignment, batches, pseudo-label mask, final checkpoint, determinism."""
import copy
import math
from dataclasses import replace

import lightning as L
import numpy as np
import pytest
import torch

from classification import fixmatch as FM
from classification.data import ImageData
from classification.model import ResNet18
from classification.training import FitTask, balanced_class_weights
from core.errors import UserError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _data(n, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = np.arange(n) % C
    x = torch.randint(0, 60, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageData(x + torch.as_tensor(y * 60, dtype=torch.uint8).view(-1, 1, 1, 1), y)


def test_config_table_a9():
    c = FM.fixmatch_config("cifar10")
    assert (c.mu, c.tau, c.lambda_u, c.batch_size, c.lr, c.weight_decay, c.epochs * c.steps_per_epoch) == \
        (7, 0.95, 1.0, 64, 0.03, 5e-4, 200_000)
    assert not c.distribution_alignment and FM.fixmatch_config("cifar100").distribution_alignment
    assert FM.fixmatch_config("cifar10_lt").weight_decay == 1e-3
    assert FM.fixmatch_config("isic2019").warmup_steps == 3000
    lap = FM.fixmatch_config("cifar10", "laptop")
    assert lap.mu <= 2 and lap.batch_size <= 32


def test_schedule_is_fixmatch_cosine():
    assert FM.fixmatch_lambda(0, 0, 100) == 1.0
    assert math.isclose(FM.fixmatch_lambda(100, 0, 100), math.cos(7 * math.pi / 16))
    assert FM.fixmatch_lambda(4, 10, 100) == 0.5


def test_distribution_alignment_pushes_to_uniform():
    net = ResNet18(3, width=4)
    task = FitTask(_data(4), _data(4), 3, MEAN, STD)
    m = FM.FixMatchModule(net, replace(FM.fixmatch_config("cifar100", "smoke"), da_buffer=4), task)
    p = torch.tensor([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1]])
    q = m.align(p)
    assert torch.allclose(q.sum(1), torch.ones(2))
    assert q[:, 0].mean() < p[:, 0].mean()                      # the over-predicted class is damped
    m2 = FM.FixMatchModule(net, FM.fixmatch_config("cifar100", "smoke"), task)
    flat = torch.full((4, 3), 1 / 3)
    assert torch.allclose(m2.align(flat), flat)                 # already uniform → unchanged
    for _ in range(10):                                         # ring buffer of da_buffer batches
        m.align(p)
    assert int(m.da_count) == 11 and m.da_history.shape == (4, 3)


def test_paired_batches_shapes_and_coverage():
    l, u = _data(16), _data(40, seed=1)
    torch.manual_seed(0)
    b = FM.PairedBatches(l, u, batch_size=4, mu=2, steps=4)
    batches = list(b)
    assert len(batches) == len(b) == 4
    xl, yl, xu, ui = batches[0]
    assert xl.shape == (4, 3, 32, 32) and yl.shape == (4,) and xu.shape == (8, 3, 32, 32) and ui.shape == (8,)
    seen = torch.cat([torch.as_tensor(bb[1]) for bb in batches])
    assert sorted(torch.cat([bb[3] for bb in batches]).tolist()) == sorted(set(torch.cat([bb[3] for bb in batches]).tolist()))
    assert np.bincount(seen.numpy(), minlength=4).tolist() == [4, 4, 4, 4]  # one epoch = one pass over L


class _Final(L.Callback):
    def on_train_end(self, trainer, module):
        self.state = copy.deepcopy(module.net.state_dict())


def test_fit_fixmatch_final_checkpoint_mask_and_determinism():
    tr, un, va = _data(16), _data(48, seed=1), _data(16, seed=2)
    cfg = replace(FM.fixmatch_config("cifar10_lt", "smoke"), epochs=2, steps_per_epoch=2)
    cb = _Final()
    task = FitTask(tr, va, 4, MEAN, STD, "balanced_accuracy", True, 0, unlabelled=un)
    net, info = FM.fit_fixmatch(task, cfg, callbacks=[cb])
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in cb.state.items())   # final, not best
    assert info["steps"] == 4 and len(info["val_history"]) == 2 and info["best_val"] == max(info["val_history"])
    assert not net.training and isinstance(net, ResNet18)
    net2, info2 = FM.fit_fixmatch(task, cfg)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
    # τ > 1: no pseudo-label passes → unsupervised loss exactly 0; τ = 0: every one passes
    plain = FitTask(tr, va, 4, MEAN, STD, unlabelled=un)
    _, hi = FM.fit_fixmatch(plain, replace(cfg, tau=1.01))
    assert hi["mask_rate"] == [0.0, 0.0] and hi["loss_u"] == [0.0, 0.0]
    _, lo = FM.fit_fixmatch(plain, replace(cfg, tau=0.0))
    assert lo["mask_rate"] == [1.0, 1.0] and all(v > 0 for v in lo["loss_u"])
    assert all(0 <= a <= 1 for a in lo["pseudo_acc"])


def test_weighted_ce_and_errors():
    w = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    assert torch.allclose(w, torch.tensor([4 / 6, 2.0, 0.0]))
    with pytest.raises(UserError, match="unlabelled"):
        empty = ImageData(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), np.zeros(0, int))
        FM.fit_fixmatch(FitTask(_data(4), _data(4), 4, MEAN, STD, unlabelled=empty), FM.fixmatch_config("cifar10", "smoke"))
