"""Self-SL paradigm (spec §8.4, A.3.4–A.3.5, Tables A.5/A.8): SimCLR pre-training with lightly, then
fine-tuning of the whole network with a 2-layer MLP head.

Pre-training (``pretrain``):

* lightly building blocks: ``NTXentLoss`` (temperature), ``SimCLRProjectionHead`` (512 hidden,
  128 out, as the reference's ``hidden_mlp``/``feat_dim``), ``LARS`` (bias/BN excluded from weight decay
  and from the layer-wise scaling) with ``CosineWarmupScheduler`` (linear warm-up from 0, cosine to
  1e-6), stepped per iteration;
* views generated as batched tensor ops on uint8 ``[B, 3, H, W]`` (any device): RandomResizedCrop
  (0.08–1) + HFlip → ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with p = 0.8 → RandomGrayscale(0.2) →
  GaussianBlur (p = 0.5, kernel 10 % of the side; **off at 32 px**, anchors §4.1) → normalisation;
* ResNet-18 from ``classification.model`` (CIFAR stem for ≤ 64 px inputs, ImageNet stem above);
* only train+pool images (the validation split is excluded, so one model per split seed); a kNN
  monitor (lightly ``knn_predict``, cosine similarity, k = 200, t = 0.1) on the validation split,
  bank = one half, queries = the other half;
* cached per (dataset, split seed, config hash, image fingerprint) under ``cache_dir`` (atomic
  ``torch.save``) and reused; an interrupted pre-training resumes from ``*.partial.ckpt`` (written
  atomically every ``checkpoint_every`` epochs, including the RNG states, so the result equals an
  uninterrupted run).

Fine-tuning (``fit_selfsl``): the pretrained backbone + dropout(p) → Linear(D→512) → BN → ReLU →
Linear(512→C); 80 epochs, SGD Nesterov 0.9, no warm-up, lr ÷ 10 every ``epochs // 4`` epochs
(StepLR, the reference's ``step_size = max_epochs // 4``), no weight decay on biases/BN, upsampling
to ``min_train`` per epoch, class-balanced sampling on imbalanced data, best-validation checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import seeds
from core.errors import UserError
from core.store import atomic_path, atomic_write, clean_temp, exclusive

from . import datasets
from .augment import color_jitter, gaussian_blur, in_fp32, normalise, random_grayscale, random_resized_crop
from .data import ImageData
from .model import ResNet18
from .training import (Batches, FitTask, KeepBest, SupervisedModule, TrainConfig, _precision, finish,
                       fit_interruptible, labelled_loader, param_groups, trainer_for)


# ============================================================================ configs

@dataclass
class SimCLRConfig:
    epochs: int = 1000
    warmup_epochs: int = 10
    batch_size: int = 512
    lr: float = 1.0
    final_lr: float = 1e-6
    weight_decay: float = 1e-4
    momentum: float = 0.9
    temperature: float = 0.5
    blur: bool = False
    jitter_strength: float = 0.5
    crop_scale: tuple = (0.08, 1.0)
    hidden_mlp: int = 512
    feat_dim: int = 128
    width: int = 64
    precision: str = "auto"          # auto (bf16/fp16 mixed where supported) | 32 | bf16
    max_images: int | None = None    # random subset of the pre-training images (laptop)
    knn_k: int = 200
    knn_t: float = 0.1
    knn_every: int = 10              # epochs between kNN evaluations (and always after the last)
    knn_size: int | None = 5000      # validation images used by the monitor
    checkpoint_every: int = 10       # epochs between resumable partial checkpoints


@dataclass
class SelfSLConfig(TrainConfig):
    """Fine-tuning recipe (Table A.8); ``width`` is taken from the pretrained checkpoint."""
    epochs: int = 80
    warmup_epochs: int = 0
    batch_size: int = 64
    lr: float = 0.001
    weight_decay: float = 5e-3
    augmentation: str = "randaugment_weak"
    lr_step_epochs: int | None = None    # None → epochs // 4 (thesis: 20)
    lr_gamma: float = 0.1
    head: str = "mlp"                    # mlp (A.3.5) | linear (the Table A.6 ablation)
    head_hidden: int = 512
    precision: str = "32"


def pretrain_config(dataset: str, preset: str = "thesis") -> SimCLRConfig:
    """Table A.5 from the dataset's ``simclr`` recipe (``classification.datasets``: CIFARs 1000 epochs,
    bs 512, lr 1, T 0.5, wd 1e-4, no blur, jitter 0.5; ISIC bs 256, lr 0.3, T 0.1, wd 1e-6, blur,
    jitter 1.0; MIO-TCD and folder data ISIC's values with 200 epochs, §14 item 6) and its laptop /
    smoke shrinkings."""
    cfg = SimCLRConfig(**datasets.get(dataset).recipe("simclr"))
    if preset == "thesis":
        return cfg
    if preset == "laptop":
        return replace(cfg, epochs=15, warmup_epochs=1, batch_size=256, width=16, max_images=10_000, knn_every=5,
                       knn_size=2000, checkpoint_every=1, precision="auto")
    if preset == "smoke":
        return replace(cfg, epochs=1, warmup_epochs=0, batch_size=32, width=4, max_images=256, knn_every=1,
                       knn_size=128, checkpoint_every=1, hidden_mlp=32, feat_dim=16, precision="32")
    raise UserError(f"unknown preset {preset!r}")


def finetune_config(dataset: str, preset: str = "thesis", regime: str | None = None) -> SelfSLConfig:
    """Table A.8 from the dataset's ``selfsl`` recipe (batch, lr, wd, augmentation); imbalanced sets
    oversample (§8.6)."""
    cfg = SelfSLConfig(**datasets.get(dataset).recipe("selfsl", regime))
    if preset == "thesis":
        return cfg
    if preset == "laptop":
        return replace(cfg, epochs=8, batch_size=min(cfg.batch_size, 64), precision="auto")
    if preset == "smoke":
        return replace(cfg, epochs=2, batch_size=16, min_train=64, mc_samples=8, eval_batch_size=256, head_hidden=32)
    raise UserError(f"unknown preset {preset!r}")


# ============================================================================ SimCLR views

@in_fp32
def simclr_view(x_u8: torch.Tensor, cfg: SimCLRConfig, mean, std) -> torch.Tensor:
    """One SimCLR view of a uint8 batch (normalised float32, same spatial size; never autocast)."""
    x = x_u8.float()
    x = random_resized_crop(x, x.shape[-1], scale=tuple(cfg.crop_scale))
    s = cfg.jitter_strength
    x = color_jitter(x, 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=0.8)
    x = random_grayscale(x, 0.2)
    if cfg.blur and x.shape[-1] > 32:
        x = gaussian_blur(x, p=0.5)
    return normalise(x.clamp_(0, 255), mean, std)


# ============================================================================ pre-training

def _backbone(width: int, cifar_stem: bool) -> ResNet18:
    net = ResNet18(1, width=width, cifar_stem=cifar_stem)
    net.fc = nn.Identity()
    return net


class _Images:
    """Shuffled uint8 batches (drop_last) of an unlabelled image tensor; order from torch's global RNG."""

    def __init__(self, images: torch.Tensor, batch_size: int):
        self.images, self.bs = images, batch_size

    def __len__(self):
        return len(self.images) // self.bs

    def __iter__(self):
        order = torch.randperm(len(self.images))
        for a in range(0, len(self) * self.bs, self.bs):
            yield self.images[order[a:a + self.bs]]


@dataclass
class PretrainData:
    """What SimCLR pre-trains on: uint8 train+pool images (never the validation split), their
    normalisation, optionally a labelled validation split for the kNN monitor, and a cache tag."""
    images: torch.Tensor
    mean: tuple
    std: tuple
    val: ImageData | None = None
    n_classes: int | None = None
    tag: str = "data"


class SimCLRModule(L.LightningModule):
    def __init__(self, cfg: SimCLRConfig, data: PretrainData, cifar_stem: bool, steps_per_epoch: int, seed: int = 0,
                 progress: Callable[[str], None] | None = None):
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        val, n_classes = data.val, data.n_classes
        self.cfg, self.mean, self.std, self.steps_per_epoch = cfg, data.mean, data.std, steps_per_epoch
        self.backbone = _backbone(cfg.width, cifar_stem)
        self.projection = SimCLRProjectionHead(self.backbone.feature_dim, cfg.hidden_mlp, cfg.feat_dim)
        self.criterion = NTXentLoss(temperature=cfg.temperature)
        self.val, self.n_classes, self.progress = val, n_classes, progress
        self.knn_history: list[tuple[int, float]] = []
        self._loss_sum, self._loss_n = 0.0, 0
        self._knn_split = None
        if val is not None and len(val) >= 4:
            rng = seeds.rng(seed, "knn")
            ids = rng.permutation(len(val))[: cfg.knn_size or len(val)]
            self._knn_split = (np.sort(ids[: len(ids) // 2]), np.sort(ids[len(ids) // 2:]))

    def training_step(self, x, _):
        v0 = simclr_view(x, self.cfg, self.mean, self.std)
        v1 = simclr_view(x, self.cfg, self.mean, self.std)
        z = self.projection(self.backbone.features(torch.cat([v0, v1]))).float()
        loss = self.criterion(z[: len(x)], z[len(x):])
        self._loss_sum += float(loss.detach())
        self._loss_n += 1
        return loss

    def configure_optimizers(self):
        from lightly.utils.lars import LARS
        from lightly.utils.scheduler import CosineWarmupScheduler
        c = self.cfg
        opt = LARS(param_groups(self, c.weight_decay), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        total = max(1, c.epochs * self.steps_per_epoch)
        warm = min(c.warmup_epochs * self.steps_per_epoch, total)
        sched = CosineWarmupScheduler(opt, warmup_epochs=warm, max_epochs=total, start_value=1.0,
                                      end_value=c.final_lr / c.lr, warmup_start_value=0.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @torch.no_grad()
    def knn_accuracy(self) -> float | None:
        """Top-1 kNN accuracy of the backbone features on the validation split (bank = half, query = half)."""
        from lightly.utils.benchmarking import knn_predict
        if self._knn_split is None or self.n_classes is None:
            return None
        was = self.training
        self.eval()
        bank_ids, query_ids = self._knn_split
        feats = []
        for ids in (bank_ids, query_ids):
            out = []
            for a in range(0, len(ids), 512):
                x = self.val.images[torch.as_tensor(ids[a:a + 512])].to(self.device)
                out.append(F.normalize(self.backbone.features(normalise(x, self.mean, self.std)).float(), dim=1))
            feats.append(torch.cat(out))
        bank_y = torch.as_tensor(self.val.targets[bank_ids], device=self.device)
        pred = knn_predict(feats[1], feats[0].T.contiguous(), bank_y, self.n_classes,
                           knn_k=min(self.cfg.knn_k, len(bank_ids)), knn_t=self.cfg.knn_t)[:, 0]
        self.train(was)
        return float((pred.cpu().numpy() == self.val.targets[query_ids]).mean())

    def end_epoch(self):
        """Loss / kNN report of the finished epoch (called by ``_Monitor`` before the partial checkpoint)."""
        e = self.current_epoch + 1
        loss = self._loss_sum / max(1, self._loss_n)
        self._loss_sum, self._loss_n = 0.0, 0
        msg = f"SimCLR epoch {e}/{self.cfg.epochs}: loss {loss:.4f}"
        if e % max(1, self.cfg.knn_every) == 0 or e == self.cfg.epochs:
            acc = self.knn_accuracy()
            if acc is not None:
                self.knn_history.append((e, acc))
                msg += f", kNN val acc {acc:.4f}"
        if self.progress is not None:
            self.progress(msg)

    # RNG states + monitor history travel with the partial checkpoint → exact resume
    def on_save_checkpoint(self, checkpoint):
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["rng"] = {"torch": torch.get_rng_state(), "np_keys": torch.from_numpy(keys.astype(np.int64)),
                             "np_rest": [int(pos), int(has_gauss), float(cached)],
                             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        checkpoint["knn_history"] = [[int(e), float(a)] for e, a in self.knn_history]

    def on_load_checkpoint(self, checkpoint):
        self.knn_history = [tuple(h) for h in checkpoint.get("knn_history", [])]
        self._pending_rng = checkpoint.get("rng")

    def on_train_start(self):
        rng = getattr(self, "_pending_rng", None)
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            pos, has_gauss, cached = rng["np_rest"]
            np.random.set_state(("MT19937", rng["np_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
            if rng.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            self._pending_rng = None


class _Monitor(L.Callback):
    def on_train_epoch_end(self, trainer, module):
        module.end_epoch()


class _PartialCheckpoint(L.Callback):
    """Atomically writes a resumable checkpoint every ``every`` epochs (not after the last)."""

    def __init__(self, path: Path, every: int, epochs: int):
        self.path, self.every, self.epochs = Path(path), max(1, every), epochs

    def on_train_epoch_end(self, trainer, module):
        e = trainer.current_epoch + 1
        if e % self.every == 0 and e < self.epochs:
            with atomic_path(self.path) as tmp:
                trainer.save_checkpoint(tmp)


class SimulatedKill(Exception):
    """Raised by the ``_stop_after`` test hook (a kill right after an epoch's checkpoint)."""


class _StopAfter(L.Callback):
    def __init__(self, n: int):
        self.n = n

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch + 1 >= self.n:
            raise SimulatedKill(f"stopped after epoch {self.n}")


def image_fingerprint(images: torch.Tensor, max_bytes: int = 64 << 20) -> str:
    """Short hash of an image tensor (shape + a strided subset of at most ``max_bytes``)."""
    h = hashlib.sha1(str(tuple(images.shape)).encode())
    n = len(images)
    per = max(1, images[0].numel()) if n else 1
    step = max(1, math.ceil(n * per / max_bytes))
    h.update(np.ascontiguousarray(images[::step].cpu().numpy()).tobytes())
    return h.hexdigest()[:16]


def cache_path(cache_dir: str | Path, tag: str, seed: int, cfg: SimCLRConfig, images: torch.Tensor) -> Path:
    key = json.dumps({"tag": tag, "seed": int(seed), "seeding": seeds.SEEDING, "cfg": asdict(cfg),
                      "images": image_fingerprint(images), "format": CKPT_FORMAT},
                     sort_keys=True, default=str)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in tag)[:60]
    return Path(cache_dir) / f"simclr-{safe}-seed{seed}-{digest}.pt"


CKPT_FORMAT = 2   # tensors in the torch file, everything else as a JSON string (loaded with weights_only=True)


def save_checkpoint(ckpt: dict, path: Path) -> None:
    """Atomically write a pre-training checkpoint: ``backbone`` tensors + the rest as JSON."""
    meta = json.dumps({k: v for k, v in ckpt.items() if k != "backbone"}, sort_keys=True)
    atomic_write(path, lambda f: torch.save({"backbone": ckpt["backbone"], "meta": meta}, f), binary=True)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by ``save_checkpoint`` without unpickling code (a file planted in a
    shared cache cannot run anything); anything else is one ``UserError``."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(raw["meta"])
        if not isinstance(raw["backbone"], dict) or not isinstance(meta, dict):
            raise TypeError("unexpected layout")
    except Exception as e:  # noqa: BLE001 — unpickling / JSON / layout errors of a damaged or foreign file
        raise UserError(f"corrupt or foreign SimCLR checkpoint {path} ({e.__class__.__name__}); delete it") from None
    return {"backbone": raw["backbone"], **meta}


def pretrain(data: PretrainData, cfg: SimCLRConfig, seed: int, device: str = "cpu",
             cache_dir: str | Path | None = None, progress: Callable[[str], None] | None = None,
             _stop_after: int | None = None) -> dict:
    """SimCLR on ``data.images`` (train+pool only — never pass the validation split here).

    Returns the checkpoint dict ``{"backbone": state_dict, "arch": {"width", "cifar_stem"}, "config",
    "knn_history": [(epoch, acc)], "n_images", "tag", "seed"}``; with ``cache_dir`` it is loaded from /
    saved to ``cache_path(...)`` (atomic) and an interrupted run resumes from its partial checkpoint."""
    images, tag = data.images, data.tag
    if len(images) == 0:
        raise UserError("SimCLR pre-training needs at least one image")
    path = cache_path(cache_dir, tag, seed, cfg, images) if cache_dir is not None else None
    if path is None:
        return _pretrain(data, cfg, seed, device, None, progress, _stop_after)
    # one process pre-trains a checkpoint, others wait and reuse it; temp files of killed writes go
    with exclusive(path.parent / f".{path.name}.lock", f"SimCLR checkpoint {path}", wait=True):
        clean_temp(path.parent, prefix=f".{path.stem}")
        if path.exists():
            ckpt = load_checkpoint(path)
            if progress is not None:
                progress(f"SimCLR: reusing {path.name}")
            return ckpt
        return _pretrain(data, cfg, seed, device, path, progress, _stop_after)


def _pretrain(data: PretrainData, cfg: SimCLRConfig, seed: int, device: str, path: Path | None, progress,
              _stop_after) -> dict:
    images, tag = data.images, data.tag
    L.seed_everything(seeds.derive(seed, "simclr"), workers=True, verbose=False)
    if cfg.max_images is not None and cfg.max_images < len(images):
        g = torch.Generator().manual_seed(seeds.derive(seed, "simclr", 1))
        images = images[torch.randperm(len(images), generator=g)[: cfg.max_images].sort().values]
    bs = min(cfg.batch_size, len(images))
    if bs < 2:
        raise UserError("SimCLR needs at least 2 images per batch")
    loader = _Images(images, bs)
    cifar_stem = images.shape[-1] <= 64
    module = SimCLRModule(cfg, data, cifar_stem, len(loader), seed, progress)
    callbacks: list = [_Monitor()]
    ckpt_path = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.ckpt")
        callbacks.append(_PartialCheckpoint(partial, cfg.checkpoint_every, cfg.epochs))
        ckpt_path = str(partial) if partial.exists() else None
        if ckpt_path and progress is not None:
            progress(f"SimCLR: resuming {partial.name}")
    if _stop_after is not None:
        callbacks.append(_StopAfter(_stop_after))
    trainer = L.Trainer(max_epochs=cfg.epochs, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                        precision=_precision(cfg, device), logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        deterministic=device == "cpu", callbacks=callbacks, limit_val_batches=0)
    trainer.fit(module, loader, ckpt_path=ckpt_path, weights_only=True)
    ckpt = {"backbone": {k: v.detach().cpu() for k, v in module.backbone.state_dict().items()},
            "arch": {"width": cfg.width, "cifar_stem": cifar_stem}, "config": asdict(cfg),
            "knn_history": [[int(e), float(a)] for e, a in module.knn_history], "n_images": len(images), "tag": tag,
            "seed": int(seed)}
    if path is not None:
        save_checkpoint(ckpt, path)
        partial = path.with_suffix(".partial.ckpt")
        if partial.exists():
            partial.unlink()
    return ckpt


# ============================================================================ fine-tuning model

class SelfSLNet(nn.Module):
    """Pretrained ResNet-18 backbone + MLP head dropout(p) → Linear(D→H) → BN → ReLU → Linear(H→C)
    (``hidden = 0``: the linear head dropout(p) → Linear(D→C) of the Table A.6 ablation).

    Same interface as ``classification.model.ResNet18``: ``features``, ``head``, ``head_input`` (the
    input of the last Linear — BADGE's embedding), ``mc_probs`` (MC dropout on the head only, backbone
    run once, BN with running statistics), ``predict_probs`` and ``fc`` (features → deterministic logits)."""

    def __init__(self, backbone: ResNet18, n_classes: int, dropout: float = 0.0, hidden: int = 512):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = backbone.feature_dim
        self.dropout_p = float(dropout)
        self.fc1 = nn.Linear(self.feature_dim, hidden) if hidden else None
        self.bn = nn.BatchNorm1d(hidden) if hidden else None
        self.fc2 = nn.Linear(hidden or self.feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)

    def _hidden(self, h: torch.Tensor, bn_eval: bool = False) -> torch.Tensor:
        if self.fc1 is None:     # linear head
            return h
        z = self.fc1(h)
        if bn_eval:
            z = F.batch_norm(z, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias,
                             training=False, eps=self.bn.eps)
        else:
            z = self.bn(z)
        return F.relu(z)

    def head_input(self, h: torch.Tensor) -> torch.Tensor:
        return self._hidden(h, bn_eval=not self.training)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self._hidden(F.dropout(h, self.dropout_p, self.training)))

    @property
    def fc(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """ResNet18-compatible ``net.fc(features)`` → deterministic logits (BN running stats)."""
        return lambda h: self.fc2(self._hidden(h, bn_eval=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def mc_probs(self, h: torch.Tensor, m: int, chunk: int = 2048) -> torch.Tensor:
        """[B, M, C] softmax under M dropout masks on the head input (always active), in chunks of rows."""
        out = []
        for a in range(0, len(h), chunk):
            hb = h[a:a + chunk]
            hm = hb.unsqueeze(1).expand(-1, m, -1).reshape(-1, hb.shape[1])
            if self.dropout_p > 0:
                hm = F.dropout(hm, self.dropout_p, training=True)
            logits = self.fc2(self._hidden(hm, bn_eval=True)).float()
            out.append(torch.softmax(logits, -1).view(len(hb), m, -1))
        return torch.cat(out) if out else torch.zeros(0, m, self.fc2.out_features, device=h.device)

    def predict_probs(self, h: torch.Tensor, mc_samples: int = 50) -> torch.Tensor:
        if self.dropout_p > 0:
            return self.mc_probs(h, mc_samples).mean(1)
        return torch.softmax(self.fc(h).float(), dim=-1)


def build_selfsl_net(pretrained_state: dict | None, n_classes: int, dropout: float = 0.0, hidden: int = 512,
                     width: int = 64, cifar_stem: bool = True) -> SelfSLNet:
    """``pretrained_state``: a ``pretrain`` checkpoint dict (architecture taken from it), a bare backbone
    state dict (``width``/``cifar_stem`` as given) or None (random initialisation)."""
    if isinstance(pretrained_state, dict) and "backbone" in pretrained_state:
        arch = pretrained_state.get("arch", {})
        width, cifar_stem = int(arch.get("width", width)), bool(arch.get("cifar_stem", cifar_stem))
        state = pretrained_state["backbone"]
    else:
        state = pretrained_state
    backbone = _backbone(width, cifar_stem)
    if state is not None:
        try:
            backbone.load_state_dict(state)
        except RuntimeError as e:
            raise UserError(f"the SimCLR checkpoint does not fit a ResNet-18 of width {width} "
                            f"({str(e).splitlines()[0]})") from None
    return SelfSLNet(backbone, n_classes, dropout, hidden)


# ============================================================================ fine-tuning

class SelfSLModule(SupervisedModule):
    """SupervisedModule with the StepLR (÷10 every epochs//4) recipe."""

    def configure_optimizers(self):
        c = self.cfg
        opt = torch.optim.SGD(param_groups(self.net, c.weight_decay), lr=c.lr, momentum=c.momentum, nesterov=True)
        step = getattr(c, "lr_step_epochs", None) or max(1, c.epochs // 4)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=getattr(c, "lr_gamma", 0.1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def build_finetune_net(task: FitTask, cfg: SelfSLConfig) -> SelfSLNet:
    """The net ``fit_selfsl`` fine-tunes: the pretrained backbone (``task.pretrained``) + the head of
    ``cfg`` (also what a saved state dict, the shared round-0 model, is loaded into)."""
    if getattr(cfg, "head", "mlp") not in ("mlp", "linear"):
        raise UserError(f"unknown Self-SL head {cfg.head!r}; valid: mlp, linear")
    hidden = 0 if getattr(cfg, "head", "mlp") == "linear" else getattr(cfg, "head_hidden", 512)
    return build_selfsl_net(task.pretrained, task.n_classes, cfg.dropout, hidden, width=cfg.width,
                            cifar_stem=task.cifar_stem)


def fit_selfsl(task: FitTask, cfg: SelfSLConfig, callbacks: list | None = None) -> tuple[SelfSLNet, dict]:
    """Fine-tune the pretrained backbone (``task.pretrained``) + MLP head on ``task.train``; the net
    at its best validation epoch."""
    L.seed_everything(task.seed, workers=True, verbose=False)
    net = build_finetune_net(task, cfg)
    loader, class_weights = labelled_loader(task.train, cfg, task.n_classes, task.imbalanced)
    module = SelfSLModule(net, cfg, task, len(loader), class_weights)
    keep = KeepBest()
    trainer = trainer_for(cfg, task.device, [keep, *(callbacks or [])], cfg.epochs)
    fit_interruptible(trainer, module, loader, Batches(task.val, cfg.eval_batch_size))
    if keep.state is not None:
        net.load_state_dict(keep.state)
    return finish(net, cfg, task.device), {
        "best_val": keep.best, "val_history": keep.history, "epochs": trainer.current_epoch,
        "steps_per_epoch": len(loader), "batch_size": loader.bs, "pretrained": task.pretrained is not None}


def pretrain_splits(splits, cfg: SimCLRConfig, seed: int, device: str = "cpu", cache_dir: str | Path | None = None,
                    images: torch.Tensor | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """SimCLR for one split seed: pre-trains on ``splits.train`` (train+pool — the validation split is
    never seen) or on ``images`` (e.g. the preset's pool subset, always drawn from the train split),
    with the kNN monitor on ``splits.val``; cached under ``cache_dir`` per (dataset, seed, config)."""
    data = PretrainData(splits.train.images if images is None else images, splits.mean, splits.std, splits.val,
                        splits.n_classes, splits.name)
    return pretrain(data, cfg, seed, device, cache_dir, progress)
