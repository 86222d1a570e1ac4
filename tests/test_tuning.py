"""Optuna HP tuning: grids of A.4, kill-and-resume of the journal study, pruning, best.json, real fits."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from classification import tuning as T
from classification.data import ImageData
from classification.fixmatch import fixmatch_config
from classification.selfsl import PretrainData, finetune_config, pretrain, pretrain_config
from classification import paradigms
from classification.training import FitTask, KeepBest, TrainConfig
from core.errors import UserError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class Killed(BaseException):
    """Stands in for a SIGKILL: nothing in ``tune`` may catch it."""


class FakeTrainer:
    def __init__(self, callbacks):
        self.sanity_checking, self.should_stop, self.callbacks = False, False, callbacks


def fake_fit(calls, kill_at=None, epochs=4):
    """A 'training' whose per-epoch validation curve rises with lr and favours 'standard'."""
    def fit_fn(cfg, callbacks):
        calls.append((cfg.lr, cfg.weight_decay, cfg.augmentation))
        if kill_at is not None and len(calls) == kill_at:
            raise Killed()
        keep = KeepBest()
        trainer = FakeTrainer([keep, *callbacks])
        for e in range(epochs):
            v = (cfg.lr * 5 + 0.3 * (cfg.augmentation == "standard") + 0.01 * (cfg.weight_decay == 5e-4)) * (e + 1) / epochs
            keep.history.append(v)
            keep.best = max(keep.best, v)
            for c in callbacks:
                c.on_validation_epoch_end(trainer, None)
            if trainer.should_stop:
                break
        return None, {"best_val": keep.best}
    return fit_fn


def test_grids_of_table_a4():
    assert len(T.grid(T.SPACES["supervised"])) == 8 and len(T.grid(T.SPACES["selfsl"])) == 8
    assert T.SPACES["fixmatch"] == {"lr": [0.03, 0.3], "weight_decay": [5e-3, 5e-4]}
    assert T.SPACES["selfsl"]["augmentation"] == ["randaugment_weak", "standard"]
    g = T.grid(T.SPACES["supervised"])
    assert len({json.dumps(p, sort_keys=True) for p in g}) == 8 and g == T.grid(T.SPACES["supervised"])
    cfg = T.apply_params(TrainConfig(), {"lr": 0.01, "weight_decay": 5e-4, "augmentation": "standard"})
    assert (cfg.lr, cfg.weight_decay, cfg.augmentation) == (0.01, 5e-4, "standard")


def test_kill_and_resume_repeats_no_finished_trial(tmp_path):
    calls = []
    with pytest.raises(Killed):
        T.tune("supervised", fake_fit(calls, kill_at=3), TrainConfig(epochs=4), tmp_path, prune=False)
    first_two = calls[:2]
    assert (tmp_path / "study.journal").exists() and not (tmp_path / "best.json").exists()
    calls.clear()
    best, path = T.tune("supervised", fake_fit(calls), TrainConfig(epochs=4), tmp_path, prune=False)
    assert len(calls) == 6 and not set(first_two) & set(calls)        # 8 grid points, 2 already done
    assert best == {"augmentation": "standard", "lr": 0.1, "weight_decay": 5e-4}
    saved = json.loads(path.read_text())
    assert saved["params"] == best and len(saved["trials"]) == 8
    assert all(t["state"] == "complete" for t in saved["trials"])
    calls.clear()                                                     # finished study: nothing retrained
    assert T.tune("supervised", fake_fit(calls), TrainConfig(epochs=4), tmp_path, prune=False)[0] == best
    assert calls == []
    # another setting (key) in the same folder is a new study
    T.tune("supervised", fake_fit(calls), TrainConfig(epochs=4), tmp_path, prune=False, key={"regime": "medium"})
    assert len(calls) == 8


def test_resumed_study_equals_uninterrupted_one(tmp_path):
    """Same trial order, same pruning decisions, same selection after a kill in the middle."""
    full = []
    T.tune("supervised", fake_fit(full, epochs=8), TrainConfig(epochs=8), tmp_path / "a", n_warmup_steps=1)
    part = []
    with pytest.raises(Killed):
        T.tune("supervised", fake_fit(part, kill_at=4, epochs=8), TrainConfig(epochs=8), tmp_path / "b", n_warmup_steps=1)
    rest = []
    T.tune("supervised", fake_fit(rest, epochs=8), TrainConfig(epochs=8), tmp_path / "b", n_warmup_steps=1)
    assert part[:3] + rest == full
    a, b = (json.loads((tmp_path / x / "best.json").read_text()) for x in "ab")
    assert a["trials"] == b["trials"] and a["params"] == b["params"]


def test_median_pruning_stops_hopeless_trials(tmp_path):
    calls = []
    best, path = T.tune("supervised", fake_fit(calls, epochs=8), TrainConfig(epochs=8), tmp_path,
                        n_startup_trials=2, n_warmup_steps=1)
    saved = json.loads(path.read_text())
    states = [t["state"] for t in saved["trials"]]
    assert "pruned" in states and states.count("complete") >= 2
    assert best == {"augmentation": "standard", "lr": 0.1, "weight_decay": 5e-4}


def _data(n, C=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = np.arange(n) % C
    x = torch.randint(0, 80, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageData(x + torch.as_tensor(y * 120, dtype=torch.uint8).view(-1, 1, 1, 1), y)


def test_real_fits_fixmatch_selfsl_supervised(tmp_path):
    tr, va, un = _data(8), _data(8, seed=1), _data(24, seed=2)
    fm = paradigms.fit_fn("fixmatch", FitTask(tr, va, 2, MEAN, STD, unlabelled=un))
    cfg = replace(fixmatch_config("cifar10", "smoke"), epochs=2, steps_per_epoch=1)
    best, path = T.tune("fixmatch", fm, cfg, tmp_path / "fm")
    assert set(best) == {"lr", "weight_decay"} and len(json.loads(path.read_text())["trials"]) == 4
    ck = pretrain(PretrainData(un.images, MEAN, STD), replace(pretrain_config("cifar10", "smoke"), epochs=1, batch_size=8),
                  seed=0)
    ss = paradigms.fit_fn("selfsl", FitTask(tr, va, 2, MEAN, STD, pretrained=ck))
    space = {"lr": [0.01], "weight_decay": [5e-4], "augmentation": ["randaugment_weak", "standard"]}
    best, _ = T.tune("selfsl", ss, replace(finetune_config("cifar10", "smoke"), epochs=1), tmp_path / "ss", space=space)
    assert best["augmentation"] in space["augmentation"]
    sup = paradigms.fit_fn("supervised", FitTask(tr, va, 2, MEAN, STD))
    from classification.presets import PRESETS
    best, _ = T.tune("supervised", sup, replace(PRESETS["smoke"].train, min_train=16), tmp_path / "st",
                     space={"lr": [0.1], "weight_decay": [5e-3], "augmentation": ["standard"]})
    assert best == {"augmentation": "standard", "lr": 0.1, "weight_decay": 5e-3}
    with pytest.raises(UserError, match="paradigm"):
        paradigms.fit_fn("mixmatch", FitTask(tr, va, 2, MEAN, STD))
    with pytest.raises(UserError, match="unlabelled"):
        paradigms.fit_fn("fixmatch", FitTask(tr, va, 2, MEAN, STD))
