"""The shared Lightning pieces of every paradigm and the supervised trainer (spec §8.3, A.3.3).

Shared: :class:`FitTask` (what a trainer fits: data, classes, normalisation, metric, seed, device,
augmentation, and for FixMatch / Self-SL the unlabelled pool / the SimCLR checkpoint),
:class:`TrainConfig`, in-memory :class:`Batches`, the labelled-set sampling rule
(:func:`labelled_loader`), :class:`SupervisedModule`, :class:`KeepBest`, :func:`trainer_for`,
:func:`fit_interruptible` and :func:`embed` (one backbone pass).  Every trainer is
``fit(task, cfg, callbacks) -> (net, info)``; ``classification.paradigms`` maps a paradigm to it.

Supervised recipe: SGD with Nesterov momentum 0.9; linear warm-up then cosine decay stepped per iteration; no
weight decay on biases and BatchNorm parameters; a labelled set smaller than ``min_train`` (5 500)
is upsampled to ``min_train`` samples per epoch; imbalanced sets use a class-balanced sampler
(weights 1/(n_c·C)) or weighted CE; the checkpoint with the best validation metric is kept (in
memory).  bf16 autocast on CPU where supported.  Retrained from scratch every cycle.
"""
from __future__ import annotations

import copy
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler, WeightedRandomSampler

from core.metrics import accuracy, balanced_accuracy

from core.errors import UserError

from .augment import augment_batch, normalise
from .data import ImageData
from .model import ResNet18

for _name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*bf16.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
warnings.filterwarnings("ignore", ".*predict_dataloader.*|.*val_dataloader.*|.*train_dataloader.*")


@dataclass
class TrainConfig:
    epochs: int = 200
    warmup_epochs: int = 10
    batch_size: int = 1024
    lr: float = 0.1
    weight_decay: float = 5e-3
    momentum: float = 0.9
    augmentation: str = "randaugment"
    min_train: int = 5500
    width: int = 64
    dropout: float = 0.0
    mc_samples: int = 50
    imbalance: str = "oversample"      # oversample | weighted_ce | none
    precision: str = "auto"            # auto | 32 | bf16
    eval_batch_size: int = 512
    extra: dict = field(default_factory=dict)


@dataclass
class FitTask:
    """What a trainer fits (the one argument the paradigms' ``fit(task, cfg, callbacks)`` share)."""
    train: ImageData                    # the labelled set
    val: ImageData                      # the labelled validation subset
    n_classes: int
    mean: tuple
    std: tuple
    metric: str = "accuracy"            # validation metric: accuracy | balanced_accuracy
    imbalanced: bool = False
    seed: int = 0
    device: str = "cpu"
    augment: Callable | None = None     # fn(x_u8, name) -> float 0..255; None: augment.augment_batch (CIFAR)
    unlabelled: ImageData | None = None  # FixMatch: the unlabelled pool
    pretrained: dict | None = None      # Self-SL: the SimCLR checkpoint

    @property
    def cifar_stem(self) -> bool:
        return self.train.images.shape[-1] <= 64


class Batches:
    """Iterable of ``(uint8 images [B, 3, H, W], targets [B])`` batches drawn by index straight from
    the in-memory tensors (no per-sample collation).  ``sampler=None`` → sequential, keep last."""

    def __init__(self, data: ImageData, batch_size: int, sampler: Sampler | None = None, drop_last: bool = False):
        self.images, self.targets = data.images, torch.as_tensor(data.targets)
        self.bs, self._sampler, self.drop_last = batch_size, sampler, drop_last

    def __len__(self):
        n = len(self._sampler) if self._sampler is not None else len(self.targets)
        return n // self.bs if self.drop_last else math.ceil(n / self.bs)

    def __iter__(self):
        order = torch.as_tensor(list(iter(self._sampler))) if self._sampler is not None else torch.arange(len(self.targets))
        for a in range(0, len(self) * self.bs, self.bs):
            idx = order[a:a + self.bs]
            yield self.images[idx], self.targets[idx]


class FixedLengthSampler(Sampler):
    """Draws ``length`` indices uniformly with replacement when the set is smaller, else a permutation."""

    def __init__(self, n: int, length: int):
        self.n, self.length = n, max(length, n)

    def __len__(self):
        return self.length

    def __iter__(self):
        if self.n >= self.length:
            return iter(torch.randperm(self.n).tolist())
        return iter(torch.randint(self.n, (self.length,)).tolist())


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation parameters (any 1-D parameter)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class SupervisedModule(L.LightningModule):
    """Cross-entropy training of ``net`` on augmented batches, validation metric per epoch; the
    normalisation, classes, metric and augmentation come from the ``FitTask``."""

    def __init__(self, net: ResNet18, cfg: TrainConfig, task: FitTask, steps_per_epoch: int,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        self.net, self.cfg, self.mean, self.std = net, cfg, task.mean, task.std
        self.augment = task.augment or augment_batch
        self.steps_per_epoch, self.metric, n_classes = steps_per_epoch, task.metric, task.n_classes
        self.n_classes = n_classes
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(n_classes))
        self._val_pred: list[torch.Tensor] = []
        self._val_true: list[torch.Tensor] = []

    def training_step(self, batch, _):
        x, y = batch
        logits = self.net(normalise(self.augment(x, self.cfg.augmentation), self.mean, self.std))
        return F.cross_entropy(logits.float(), y, weight=self.class_weights)

    def validation_step(self, batch, _):
        x, y = batch
        h = self.net.features(normalise(x, self.mean, self.std)).float()
        self._val_pred.append(self.net.predict_probs(h, self.cfg.mc_samples).argmax(1).cpu())
        self._val_true.append(y.cpu())

    def finish_validation(self) -> float:
        """Metric over the epoch's validation predictions (called by ``KeepBest``)."""
        pred, true = torch.cat(self._val_pred).numpy(), torch.cat(self._val_true).numpy()
        self._val_pred.clear()
        self._val_true.clear()
        return score(self.metric, true, pred, self.n_classes)

    def configure_optimizers(self):
        c = self.cfg
        opt = torch.optim.SGD(param_groups(self.net, c.weight_decay), lr=c.lr, momentum=c.momentum, nesterov=True)
        total = c.epochs * self.steps_per_epoch
        warm = c.warmup_epochs * self.steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warm, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class KeepBest(L.Callback):
    """Keeps the state dict of the epoch with the best validation metric (in memory)."""

    def __init__(self):
        self.best, self.state, self.history = -math.inf, None, []

    def on_validation_epoch_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        v = module.finish_validation()
        self.history.append(v)
        if v > self.best:
            self.best, self.state = v, copy.deepcopy(module.net.state_dict())


def fit_interruptible(trainer: L.Trainer, module, *loaders) -> None:
    """``trainer.fit`` that lets Ctrl-C reach the CLI as ``KeyboardInterrupt``: Lightning turns it into
    ``SystemExit(1)`` and ignores further SIGINTs, which would hide the "rerun with --resume" note."""
    import signal
    try:
        trainer.fit(module, *loaders)
    except SystemExit:
        if trainer.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise


def score(metric: str, y_true, y_pred, n_classes: int) -> float:
    return balanced_accuracy(y_true, y_pred, n_classes) if metric == "balanced_accuracy" else accuracy(y_true, y_pred)


def _precision(cfg: TrainConfig, device: str) -> str:
    if cfg.precision == "32":
        return "32-true"
    if cfg.precision == "bf16":
        return "bf16-mixed"
    if device == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if _cpu_bf16() else "32-true"


def _cpu_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def labelled_loader(train: ImageData, cfg: TrainConfig, n_classes: int, imbalanced: bool):
    """(Batches, class_weights | None) of the labelled set: upsampling to ``min_train`` per epoch,
    a class-balanced sampler (``oversample``) or weighted CE (``weighted_ce``) on imbalanced data."""
    if len(train) == 0:
        raise UserError("cannot train on an empty labelled set")
    length = max(cfg.min_train, len(train))
    counts = np.bincount(train.targets, minlength=n_classes).astype(np.float64)
    class_weights = None
    if imbalanced and cfg.imbalance == "oversample":
        w = 1.0 / (counts[train.targets] * n_classes)
        sampler = WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), num_samples=length, replacement=True)
    else:
        sampler = FixedLengthSampler(len(train), length)
        if imbalanced and cfg.imbalance == "weighted_ce":
            class_weights = balanced_class_weights(train.targets, n_classes)
    bs = min(cfg.batch_size, length)
    return Batches(train, bs, sampler, drop_last=True), class_weights


def balanced_class_weights(targets: np.ndarray, n_classes: int) -> torch.Tensor:
    """sklearn's "balanced" weights N/(C·n_c) over the classes present (0 for absent ones)."""
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    present = counts > 0
    cw = np.zeros(n_classes)
    cw[present] = counts.sum() / (present.sum() * counts[present])
    return torch.as_tensor(cw, dtype=torch.float32)


def trainer_for(cfg, device: str, callbacks: list, max_epochs: int) -> L.Trainer:
    return L.Trainer(max_epochs=max_epochs, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                     precision=_precision(cfg, device), logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     deterministic=device == "cpu", callbacks=callbacks)


def finish(net, cfg, device: str):
    """The trained net in eval mode, tagged with the precision ``embed`` should use."""
    net.eval()
    net._precision = _precision(cfg, device)
    return net


def build_net(task: FitTask, cfg: TrainConfig) -> ResNet18:
    """The untrained ResNet-18 of ``task`` (supervised and FixMatch): what ``fit`` trains and what a
    saved state dict (the shared round-0 model) is loaded into."""
    return ResNet18(task.n_classes, width=cfg.width, dropout=cfg.dropout, cifar_stem=task.cifar_stem)


def fit(task: FitTask, cfg: TrainConfig, callbacks: list | None = None) -> tuple[ResNet18, dict]:
    """Train a fresh ResNet-18 on ``task.train``; return it at its best validation epoch and a summary.
    ``callbacks`` are extra Lightning callbacks (e.g. Optuna pruning)."""
    L.seed_everything(task.seed, workers=True, verbose=False)
    net = build_net(task, cfg)
    loader, class_weights = labelled_loader(task.train, cfg, task.n_classes, task.imbalanced)
    val_loader = Batches(task.val, cfg.eval_batch_size)
    module = SupervisedModule(net, cfg, task, len(loader), class_weights)
    keep = KeepBest()
    trainer = trainer_for(cfg, task.device, [keep, *(callbacks or [])], cfg.epochs)
    fit_interruptible(trainer, module, loader, val_loader)
    if keep.state is not None:
        net.load_state_dict(keep.state)
    return finish(net, cfg, task.device), {"best_val": keep.best, "val_history": keep.history, "epochs": cfg.epochs,
                                           "steps_per_epoch": len(loader), "batch_size": loader.bs}


@torch.no_grad()
def embed(net: ResNet18, data: ImageData, mean, std, device: str = "cpu", batch_size: int = 512) -> torch.Tensor:
    """Penultimate features ``[N, D]`` of ``data`` with test-time transforms, one backbone pass."""
    net.eval().to(device)
    bf16 = getattr(net, "_precision", "32-true") == "bf16-mixed"
    out = []
    for a in range(0, len(data), batch_size):
        x = normalise(data.images[a:a + batch_size].to(device), mean, std)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out.append(net.features(x).float())
    return torch.cat(out) if out else torch.zeros(0, net.feature_dim, device=device)
