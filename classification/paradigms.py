"""The training paradigms (thesis §5.1, A.3): one dispatch from a paradigm's name to its recipe,
trainer and tuning grid.

* ``supervised`` — ResNet-18 from scratch (Table A.7; ``training.fit``);
* ``selfsl``     — SimCLR pre-training with lightly, then fine-tuning with an MLP head (Tables A.5,
  A.8; ``selfsl.fit_selfsl``, needs the checkpoint in ``FitTask.pretrained``);
* ``fixmatch``   — semi-supervised FixMatch (Table A.9; ``fixmatch.fit_fixmatch``, needs the
  unlabelled pool in ``FitTask.unlabelled``).

Every trainer is ``fit(task: FitTask, cfg, callbacks) -> (net, info)``; AL cycles and Optuna trials
both go through :func:`fit_fn`::

    fit = paradigms.fit_fn("fixmatch", FitTask(train, val, 10, mean, std, unlabelled=pool))
    net, info = fit(paradigms.train_config("fixmatch", "cifar10", preset), callbacks=[])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from core.errors import UserError

from . import fixmatch, selfsl, training
from .presets import supervised_config
from .training import FitTask


@dataclass(frozen=True)
class Paradigm:
    name: str
    fit: Callable                       # fit(task, cfg, callbacks) -> (net, info)
    build: Callable                     # build(task, cfg) -> the untrained net ``fit`` starts from
    config: Callable                    # config(dataset, preset, regime) -> the paradigm's training config
    space: dict                         # the Optuna grid of Table A.4
    needs_unlabelled: bool = False
    needs_pretrained: bool = False
    description: str = ""


PARADIGMS: dict[str, Paradigm] = {p.name: p for p in (
    Paradigm("supervised", training.fit, training.build_net, lambda dataset, preset, regime=None: supervised_config(dataset, preset, regime),
             {"lr": [0.1, 0.01], "weight_decay": [5e-3, 5e-4], "augmentation": ["randaugment", "standard"]},
             description="ResNet-18 from scratch"),
    Paradigm("selfsl", selfsl.fit_selfsl, selfsl.build_finetune_net,
             lambda dataset, preset, regime=None: selfsl.finetune_config(dataset, preset.name, regime),
             {"lr": [0.01, 0.001], "weight_decay": [5e-3, 5e-4], "augmentation": ["randaugment_weak", "standard"]},
             needs_pretrained=True, description="SimCLR pre-training + fine-tuning with an MLP head"),
    Paradigm("fixmatch", fixmatch.fit_fixmatch, training.build_net,
             lambda dataset, preset, regime=None: fixmatch.fixmatch_config(dataset, preset.name, regime),
             {"lr": [0.03, 0.3], "weight_decay": [5e-3, 5e-4]}, needs_unlabelled=True,
             description="FixMatch (semi-supervised)"),
)}
NAMES = tuple(PARADIGMS)


def get(name: str) -> Paradigm:
    if name not in PARADIGMS:
        raise UserError(f"unknown paradigm {name!r}; valid: {', '.join(NAMES)}")
    return PARADIGMS[name]


def train_config(paradigm: str, dataset: str, preset, regime: str | None = None):
    """The training recipe of a paradigm for a dataset (and Label Regime) under a preset (Tables A.7 /
    A.8 / A.9 for ``thesis``)."""
    return get(paradigm).config(dataset, preset, regime)


def fit_fn(paradigm: str, task: FitTask, fit: Callable | None = None) -> Callable:
    """``fit_fn(cfg, callbacks) -> (net, info)``: the paradigm's trainer on ``task`` (``fit`` overrides
    the trainer, e.g. in tests).  Checks that the task carries what the paradigm needs."""
    p = get(paradigm)
    if p.needs_unlabelled and task.unlabelled is None:
        raise UserError(f"{paradigm} needs the unlabelled pool")
    trainer = fit or p.fit

    def run(cfg, callbacks=None):
        return trainer(task, cfg, callbacks)
    return run
