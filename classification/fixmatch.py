"""Semi-SL paradigm: FixMatch (spec §8.5, Table A.9; anchors §4.4) as a Lightning module.

Per step: B labelled images (weak view = the dataset's ``standard`` transform) and μ·B unlabelled
images drawn from the pool, each seen as a weak and a strong view (``randaugment`` = RandAugmentMC +
Cutout on the CIFARs).  One forward pass over the concatenation (BatchNorm sees all three parts):

    L = CE_w(f(weak(x_l)), y) + λ_u · mean_b[ 1[max q_b ≥ τ] · CE(f(strong(u_b)), argmax q_b) ]
    q_b = softmax(f(weak(u_b)) / T)  — optionally distribution-aligned: q ← normalise(q · p_target / p̄_model),
          p_target uniform, p̄_model the mean prediction over the last ``da_buffer`` (128) batches.

The mask average runs over all μB unlabelled samples; CE_w is weighted CE (N/(C·n_c)) on imbalanced
sets.  No EMA model.  SGD Nesterov, FixMatch's cosine schedule lr·cos(7πk/16K) with optional linear
warm-up steps, no weight decay on biases/BN.  Validation after every "epoch" (``steps_per_epoch``
iterations) is recorded, but the **final** weights are returned (§6 step 4b).  Linear head (with
dropout p for BALD), i.e. ``classification.model.ResNet18``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from core.errors import UserError

from . import datasets
from .augment import normalise
from .data import ImageData
from .model import ResNet18
from .training import (Batches, FitTask, KeepBest, SupervisedModule, TrainConfig, balanced_class_weights, build_net,
                       finish, fit_interruptible, param_groups, trainer_for)


@dataclass
class FixMatchConfig(TrainConfig):
    epochs: int = 200                   # "epochs" of ``steps_per_epoch`` iterations (2·10⁵ steps)
    steps_per_epoch: int = 1000
    warmup_epochs: int = 0              # unused; see warmup_steps
    warmup_steps: int = 0
    batch_size: int = 64
    lr: float = 0.03
    weight_decay: float = 5e-4
    augmentation: str = "standard"      # weak view (labelled and unlabelled)
    strong_augmentation: str = "randaugment"
    mu: int = 7
    tau: float = 0.95
    lambda_u: float = 1.0
    temperature: float = 1.0
    distribution_alignment: bool = False
    da_buffer: int = 128
    imbalance: str = "weighted_ce"      # weighted_ce | oversample | none (applies on imbalanced sets)
    precision: str = "32"


def fixmatch_config(dataset: str, preset: str = "thesis", regime: str | None = None) -> FixMatchConfig:
    """Table A.9 from the dataset's ``fixmatch`` recipe (``classification.datasets``): DA on every
    dataset except CIFAR-10 (and Fashion-MNIST, its offline stand-in); 3000 warm-up steps on the
    224-px roll-out data; weighted CE on imbalanced data; CIFAR-10-LT weight decay 1e-3 (Low) /
    5e-4 (Medium)."""
    cfg = FixMatchConfig(**datasets.get(dataset).recipe("fixmatch", regime))
    if preset == "thesis":
        return cfg
    if preset == "laptop":
        return replace(cfg, epochs=6, steps_per_epoch=100, warmup_steps=min(cfg.warmup_steps, 50), batch_size=32,
                       mu=2, width=16, precision="auto")
    if preset == "smoke":
        return replace(cfg, epochs=1, steps_per_epoch=3, warmup_steps=0, batch_size=8, mu=2, width=4,
                       mc_samples=8, eval_batch_size=256)
    raise UserError(f"unknown preset {preset!r}")


def fixmatch_lambda(step: int, warmup: int, total: int) -> float:
    """kekmodel/FixMatch-pytorch ``get_cosine_schedule_with_warmup`` (num_cycles = 7/16)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, math.cos(math.pi * 7.0 / 16.0 * min(1.0, progress)))


class PairedBatches:
    """``steps`` batches of ((x_l uint8 [B], y_l [B]), x_u uint8 [μB], u_ids [μB]) per epoch; labelled and
    unlabelled orders are concatenated random permutations (class-balanced draws for ``oversample``),
    all from torch's global RNG (seeded per fit → deterministic)."""

    def __init__(self, labelled: ImageData, unlabelled: ImageData, batch_size: int, mu: int, steps: int,
                 balanced_weights: torch.Tensor | None = None):
        self.l, self.u = labelled, unlabelled
        self.lt = torch.as_tensor(labelled.targets)
        self.bs, self.mu, self.steps, self.w = batch_size, mu, steps, balanced_weights

    def __len__(self):
        return self.steps

    @staticmethod
    def _order(n: int, length: int) -> torch.Tensor:
        reps = math.ceil(length / n)
        return torch.cat([torch.randperm(n) for _ in range(reps)])[:length]

    def __iter__(self):
        nl, nu = self.steps * self.bs, self.steps * self.bs * self.mu
        lo = (torch.multinomial(self.w, nl, replacement=True) if self.w is not None
              else self._order(len(self.l), nl))
        uo = self._order(len(self.u), nu)
        for s in range(self.steps):
            li = lo[s * self.bs:(s + 1) * self.bs]
            ui = uo[s * self.bs * self.mu:(s + 1) * self.bs * self.mu]
            yield self.l.images[li], self.lt[li], self.u.images[ui], ui


class FixMatchModule(SupervisedModule):
    def __init__(self, net: ResNet18, cfg: FixMatchConfig, task: FitTask, class_weights: torch.Tensor | None = None):
        super().__init__(net, cfg, task, cfg.steps_per_epoch, class_weights)
        n_classes = task.n_classes
        unlabelled_targets = None if task.unlabelled is None else task.unlabelled.targets
        self.register_buffer("da_history", torch.full((max(1, cfg.da_buffer), n_classes), 1.0 / n_classes))
        self.register_buffer("da_count", torch.zeros((), dtype=torch.long))
        self.u_targets = None if unlabelled_targets is None else torch.as_tensor(unlabelled_targets)
        self.stats = {"mask": [], "pseudo_acc": [], "loss_x": [], "loss_u": []}
        self._acc = {k: [] for k in self.stats}

    @torch.no_grad()
    def align(self, probs: torch.Tensor) -> torch.Tensor:
        """Distribution alignment with a uniform target (ReMixMatch)."""
        k = int(self.da_count) % self.da_history.shape[0]
        self.da_history[k] = probs.mean(0)
        self.da_count += 1
        n = min(int(self.da_count), self.da_history.shape[0])
        p_model = self.da_history[:n].mean(0)
        q = probs * (1.0 / self.n_classes) / p_model.clamp_min(1e-6)
        return q / q.sum(1, keepdim=True)

    def training_step(self, batch, _):
        xl, yl, xu, uid = batch
        c = self.cfg
        wl = normalise(self.augment(xl, c.augmentation), self.mean, self.std)
        wu = normalise(self.augment(xu, c.augmentation), self.mean, self.std)
        su = normalise(self.augment(xu, c.strong_augmentation), self.mean, self.std)
        logits = self.net(torch.cat([wl, wu, su])).float()
        ll, lwu, lsu = logits[: len(xl)], logits[len(xl): len(xl) + len(xu)], logits[len(xl) + len(xu):]
        loss_x = F.cross_entropy(ll, yl, weight=self.class_weights)
        with torch.no_grad():
            q = torch.softmax(lwu.detach() / c.temperature, dim=1)
            if c.distribution_alignment:
                q = self.align(q)
            conf, pseudo = q.max(1)
            mask = (conf >= c.tau).float()
        loss_u = (F.cross_entropy(lsu, pseudo, reduction="none") * mask).mean()
        self._acc["mask"].append(float(mask.mean()))
        self._acc["loss_x"].append(float(loss_x.detach()))
        self._acc["loss_u"].append(float(loss_u.detach()))
        if self.u_targets is not None and mask.sum() > 0:
            true = self.u_targets[uid.cpu()].to(pseudo.device)
            self._acc["pseudo_acc"].append(float(((pseudo == true).float() * mask).sum() / mask.sum()))
        return loss_x + c.lambda_u * loss_u

    def on_train_epoch_end(self):
        for k, v in self._acc.items():
            self.stats[k].append(float(np.mean(v)) if v else None)
            v.clear()

    def configure_optimizers(self):
        c = self.cfg
        opt = torch.optim.SGD(param_groups(self.net, c.weight_decay), lr=c.lr, momentum=c.momentum, nesterov=True)
        total = c.epochs * c.steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: fixmatch_lambda(s, c.warmup_steps, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit_fixmatch(task: FitTask, cfg: FixMatchConfig, callbacks: list | None = None) -> tuple[ResNet18, dict]:
    """FixMatch on labelled ``task.train`` + ``task.unlabelled`` (the pool; its targets are used only
    for the pseudo-label accuracy diagnostic).  Returns the final model and a summary (``best_val`` =
    the best per-epoch validation metric, for tuning; ``final_val`` = the last)."""
    train, unlabelled, n_classes = task.train, task.unlabelled, task.n_classes
    if len(train) == 0:
        raise UserError("FixMatch needs a non-empty labelled set")
    if unlabelled is None or len(unlabelled) == 0:
        raise UserError("FixMatch needs a non-empty unlabelled pool")
    L.seed_everything(task.seed, workers=True, verbose=False)
    net = build_net(task, cfg)
    class_weights, sample_w = None, None
    if task.imbalanced and cfg.imbalance == "weighted_ce":
        class_weights = balanced_class_weights(train.targets, n_classes)
    elif task.imbalanced and cfg.imbalance == "oversample":
        counts = np.bincount(train.targets, minlength=n_classes).astype(np.float64)
        sample_w = torch.as_tensor(1.0 / (counts[train.targets] * n_classes), dtype=torch.double)
    loader = PairedBatches(train, unlabelled, cfg.batch_size, cfg.mu, cfg.steps_per_epoch, sample_w)
    module = FixMatchModule(net, cfg, task, class_weights)
    keep = KeepBest()
    trainer = trainer_for(cfg, task.device, [keep, *(callbacks or [])], cfg.epochs)
    fit_interruptible(trainer, module, loader, Batches(task.val, cfg.eval_batch_size))
    return finish(net, cfg, task.device), {
        "best_val": keep.best, "final_val": keep.history[-1] if keep.history else None,
        "val_history": keep.history, "epochs": trainer.current_epoch, "steps": trainer.global_step,
        "batch_size": cfg.batch_size, "mu": cfg.mu, "mask_rate": module.stats["mask"],
        "pseudo_acc": module.stats["pseudo_acc"], "loss_x": module.stats["loss_x"], "loss_u": module.stats["loss_u"]}
