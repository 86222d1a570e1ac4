"""Self-SL: SimCLR pre-training (lightly), its cache/resume, the MLP-head model and fine-tuning."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from classification import selfsl as S
from classification.data import ImageData, Splits
from classification.training import FitTask, labelled_loader
from core.errors import UserError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _data(n, C=4, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    y = np.arange(n) % C
    x = torch.randint(0, 60, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageData(x + torch.as_tensor(y * 60, dtype=torch.uint8).view(-1, 1, 1, 1), y)


def _cfg(**kw):
    return replace(S.pretrain_config("cifar10", "smoke"), **{"epochs": 2, "batch_size": 16, "max_images": 48, **kw})


def test_configs_follow_tables_a5_a8():
    c = S.pretrain_config("cifar10")
    assert (c.epochs, c.batch_size, c.lr, c.temperature, c.weight_decay, c.blur, c.jitter_strength,
            c.warmup_epochs) == (1000, 512, 1.0, 0.5, 1e-4, False, 0.5, 10)
    i = S.pretrain_config("isic2019")
    assert (i.epochs, i.batch_size, i.lr, i.temperature, i.weight_decay, i.blur, i.jitter_strength) == \
        (1000, 256, 0.3, 0.1, 1e-6, True, 1.0)
    assert S.pretrain_config("miotcd").epochs == 200
    f = S.finetune_config("cifar10_lt")
    assert (f.epochs, f.batch_size, f.lr, f.weight_decay, f.augmentation, f.warmup_epochs) == (80, 64, 0.01, 5e-4, "standard", 0)
    assert (S.finetune_config("isic2019").batch_size, S.finetune_config("miotcd").augmentation) == (128, "randaugment_weak")
    with pytest.raises(UserError):
        S.pretrain_config("mnist")


def test_simclr_views_batched_and_seeded():
    x = _data(8).images
    cfg = S.pretrain_config("cifar10")
    torch.manual_seed(0)
    a, b = S.simclr_view(x, cfg, MEAN, STD), S.simclr_view(x, cfg, MEAN, STD)
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert not torch.equal(a, b)                      # two different views
    torch.manual_seed(0)
    assert torch.equal(a, S.simclr_view(x, cfg, MEAN, STD))


def test_pretrain_cache_resume_and_knn(tmp_path):
    pool, val = _data(64), _data(24, seed=1)
    cfg = _cfg()
    data = S.PretrainData(pool.images, MEAN, STD, val, 4)
    ck = S.pretrain(data, cfg, seed=3, cache_dir=tmp_path)
    assert [e for e, _ in ck["knn_history"]] == [1, 2] and all(0 <= a <= 1 for _, a in ck["knn_history"])
    path = S.cache_path(tmp_path, "data", 3, cfg, pool.images)
    assert path.exists() and not path.with_suffix(".partial.ckpt").exists()
    # cached: reused without training
    again = S.pretrain(S.PretrainData(pool.images, MEAN, STD), cfg, seed=3, cache_dir=tmp_path, _stop_after=0)
    assert all(torch.equal(ck["backbone"][k], again["backbone"][k]) for k in ck["backbone"])
    # a different seed / config / image set is a different checkpoint
    assert S.cache_path(tmp_path, "data", 4, cfg, pool.images) != path
    assert S.cache_path(tmp_path, "data", 3, replace(cfg, lr=0.5), pool.images) != path
    assert S.cache_path(tmp_path, "data", 3, cfg, pool.images[:-1]) != path
    # killed after epoch 1 → resumes from the partial checkpoint and ends bit-identical
    other = tmp_path / "other"
    with pytest.raises(S.SimulatedKill):
        S.pretrain(data, cfg, seed=3, cache_dir=other, _stop_after=1)
    assert path.with_suffix(".partial.ckpt").name in {p.name for p in other.iterdir()}
    resumed = S.pretrain(data, cfg, seed=3, cache_dir=other)
    assert all(torch.equal(ck["backbone"][k], resumed["backbone"][k]) for k in ck["backbone"])
    assert resumed["knn_history"] == ck["knn_history"]
    assert [p.suffix for p in other.iterdir() if not p.name.startswith(".")] == [".pt"]


def test_pretraining_sees_train_pool_only(tmp_path):
    tr, va = _data(40), _data(20, seed=2)
    splits = Splits("cifar10", 4, MEAN, STD, tr, va, _data(8, seed=3), imbalanced=False)
    ck = S.pretrain_splits(splits, _cfg(max_images=None, epochs=1), seed=0, cache_dir=tmp_path)
    assert ck["n_images"] == 40 and ck["tag"] == "cifar10"
    assert S.cache_path(tmp_path, "cifar10", 0, _cfg(max_images=None, epochs=1), tr.images).exists()


def test_selfsl_net_interface():
    torch.manual_seed(0)
    backbone = S._backbone(4, True)
    net = S.SelfSLNet(backbone, n_classes=5, dropout=0.5, hidden=16)
    net.train()
    net(torch.randn(6, 3, 32, 32))  # populate BN running stats
    net.eval()
    h = torch.randn(7, net.feature_dim)
    assert net.head_input(h).shape == (7, 16) and (net.head_input(h) >= 0).all()
    assert torch.allclose(net.fc(h), net.fc2(net.head_input(h)))       # BADGE: input of the last Linear
    assert torch.allclose(net.fc(h), net.head(h))                      # eval: dropout off
    mc = net.mc_probs(h, 6, chunk=3)
    assert mc.shape == (7, 6, 5) and torch.allclose(mc.sum(-1), torch.ones(7, 6))
    assert not torch.allclose(mc[:, 0], mc[:, 1])                      # dropout masks differ
    assert net.predict_probs(h, 4).shape == (7, 5)
    det = S.SelfSLNet(backbone, 5, dropout=0.0, hidden=16).eval()
    mc0 = det.mc_probs(h, 3)
    assert torch.allclose(mc0[:, 0], mc0[:, 2]) and torch.allclose(det.predict_probs(h), mc0[:, 0])


def test_build_from_checkpoint_and_errors():
    ck = S.pretrain(S.PretrainData(_data(32).images, MEAN, STD), _cfg(epochs=1, max_images=None), seed=0)
    net = S.build_selfsl_net(ck, 3, hidden=8)
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in ck["backbone"].items())
    bad = {**ck, "arch": {"width": 8, "cifar_stem": True}}
    with pytest.raises(UserError, match="width 8"):
        S.build_selfsl_net(bad, 3)


def test_fit_selfsl_recipe_and_determinism():
    ck = S.pretrain(S.PretrainData(_data(48).images, MEAN, STD), _cfg(epochs=1), seed=0)
    tr, va = _data(24), _data(16, seed=5)
    cfg = replace(S.finetune_config("cifar10", "smoke"), epochs=4)
    task = FitTask(tr, va, 4, MEAN, STD, seed=1, pretrained=ck)
    net, info = S.fit_selfsl(task, cfg)
    assert not net.training and isinstance(net, S.SelfSLNet) and len(info["val_history"]) == 4
    assert info["best_val"] == max(info["val_history"]) and info["pretrained"]
    net2, _ = S.fit_selfsl(task, cfg)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
    # lr ÷ 10 every epochs // 4 epochs (thesis: 80 epochs → every 20)
    module = S.SelfSLModule(net, S.finetune_config("cifar10"), FitTask(tr, va, 4, MEAN, STD), 1)
    opt = module.configure_optimizers()
    sched = opt["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and sched.step_size == 20 and sched.gamma == 0.1
    assert opt["optimizer"].defaults["nesterov"] and opt["lr_scheduler"]["interval"] == "epoch"
    # imbalanced data: class-balanced sampler (oversampling)
    loader, cw = labelled_loader(ImageData(tr.images, np.r_[np.zeros(20, int), np.ones(4, int)]), cfg, 2, True)
    drawn = torch.cat([y for _, y in loader])
    assert cw is None and 0.3 < drawn.float().mean() < 0.7
