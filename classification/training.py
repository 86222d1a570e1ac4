"""Supervised training (spec §8.3, A.3.3) as a Lightning module, plus the one-pass predictor.

Recipe: SGD with Nesterov momentum 0.9; linear warm-up then cosine decay stepped per iteration; no
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

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler, WeightedRandomSampler

from core.metrics import accuracy, balanced_accuracy

from .data import ImageData
from .model import ResNet18
from .transforms import augment_batch, normalise

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
    def __init__(self, net: ResNet18, cfg: TrainConfig, mean, std, steps_per_epoch: int,
                 metric: str, n_classes: int, class_weights: torch.Tensor | None = None, augment=None):
        super().__init__()
        self.net, self.cfg, self.mean, self.std = net, cfg, mean, std
        self.augment = augment or augment_batch
        self.steps_per_epoch, self.metric, self.n_classes = steps_per_epoch, metric, n_classes
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


def fit(train: ImageData, val: ImageData, cfg: TrainConfig, n_classes: int, mean, std, metric: str,
        imbalanced: bool, seed: int, device: str = "cpu", *, augment=None,
        callbacks=None) -> tuple[ResNet18, dict]:
    """Train a fresh ResNet-18 on ``train``; return it at its best validation epoch and a summary.

    ``augment(x_u8, name) -> float 0..255`` replaces the CIFAR transforms (roll-out datasets);
    ``callbacks`` are extra Lightning callbacks (e.g. Optuna pruning)."""
    L.seed_everything(seed, workers=True, verbose=False)
    net = ResNet18(n_classes, width=cfg.width, dropout=cfg.dropout, cifar_stem=train.images.shape[-1] <= 64)
    length = max(cfg.min_train, len(train))
    class_weights = None
    counts = np.bincount(train.targets, minlength=n_classes).astype(np.float64)
    if imbalanced and cfg.imbalance == "oversample":
        w = 1.0 / (counts[train.targets] * n_classes)
        sampler = WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), num_samples=length, replacement=True)
    else:
        sampler = FixedLengthSampler(len(train), length)
        if imbalanced and cfg.imbalance == "weighted_ce":
            present = counts > 0
            cw = np.zeros(n_classes)
            cw[present] = counts.sum() / (present.sum() * counts[present])
            class_weights = torch.as_tensor(cw, dtype=torch.float32)
    bs = min(cfg.batch_size, length)
    loader = Batches(train, bs, sampler, drop_last=True)
    val_loader = Batches(val, cfg.eval_batch_size)
    module = SupervisedModule(net, cfg, mean, std, len(loader), metric, n_classes, class_weights, augment)
    keep = KeepBest()
    trainer = L.Trainer(max_epochs=cfg.epochs, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                        precision=_precision(cfg, device), logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        deterministic=device == "cpu", callbacks=[keep, *(callbacks or [])])
    fit_interruptible(trainer, module, loader, val_loader)
    if keep.state is not None:
        net.load_state_dict(keep.state)
    net.eval()
    net._precision = _precision(cfg, device)
    return net, {"best_val": keep.best, "val_history": keep.history, "epochs": cfg.epochs,
                 "steps_per_epoch": len(loader), "batch_size": bs}


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


@torch.no_grad()
def predict(net: ResNet18, h: torch.Tensor, mc_samples: int = 50) -> torch.Tensor:
    """Class probabilities from features (MC-averaged for a dropout head)."""
    return net.predict_probs(h, mc_samples)
