"""Backbone (C0) and prediction models (C1) of the testbed (``uncertainty.md`` §4, §8).

C0 is a small MONAI ``UNet`` (2D or 3D) followed by one full-resolution 3×3 conv block and a
1×1 head.  The five prediction models share it:

* ``softmax``  — one deterministic net (Dice + CE), one pass, M = 1;
* ``ttd``      — the same net with dropout p = 0.5 after every conv block, trained with dropout and
  kept active at test time, M = 10 passes;
* ``ensemble`` — 5 deterministic nets from different seeds (member 0 *is* the softmax model), M = 5;
* ``tta``      — the softmax model on every flip pattern of the spatial axes (4 in 2D, 8 in 3D; only
  the label-preserving axes of the data, e.g. horizontal flips of street scenes: 2),
  each without and with Gaussian noise (one noisy copy per image); every output is flipped back;
  M = 8 (2D) / 16 (3D);
* ``ssn``      — stochastic segmentation network: the head outputs the mean μ, the log-diagonal
  and a rank-R covariance factor P of a low-rank Gaussian over all C·N logits of an image; trained
  with the Monteiro loss (logsumexp over M_train = 10 samples) after a mean-only warm-up; M = 10.

Every model answers ``predict_samples(x[Cin, *S]) -> probs[M, C, *S]`` and the batched
``predict_batch(x[B, Cin, *S]) -> probs[B, M, C, *S]``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core import seeds
from core.store import atomic_write

MODELS = ("softmax", "ttd", "ensemble", "tta", "ssn")


@dataclass(frozen=True)
class TrainConfig:
    channels: tuple = (8, 16, 32, 64)   # U-Net encoder widths (4 levels; initial filters 8 as for the toy)
    features: int = 16                  # width of the full-resolution block before the head
    res_units: int = 0                  # MONAI UNet residual units per level
    epochs: int = 150
    batch_size: int = 8
    lr: float = 3e-4                    # Adam, as in the thesis
    weight_decay: float = 1e-5
    dropout: float = 0.5                # TTD
    ttd_passes: int = 10
    ensemble_size: int = 5
    ssn_rank: int = 5
    ssn_train_samples: int = 10
    ssn_test_samples: int = 10
    ssn_warmup_epochs: int = 5          # mean-only pre-training
    ssn_epochs: int | None = None       # SSN epochs if different from ``epochs`` (it converges slower)
    noise_var: float = 0.1              # Gaussian-noise augmentation: variance ~ U(0, noise_var)
    noise_p: float = 0.5                # share of training samples that get noise
    bf16: bool = False                  # bfloat16 autocast (CPU/GPU) for training and inference
    eval_batch: int = 16
    # set by the data (uncertainty.runner), not by presets; absent from to_dict() while None
    ignore_index: int | None = None     # label left out of the loss (GTA5/Cityscapes: 255); loss is then CE
    flip_axes: tuple | None = None      # spatial axes (0-based) flipped by augmentation and TTA; None = all

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        for k in ("ignore_index", "flip_axes"):
            if d[k] is None:
                del d[k]
        if "flip_axes" in d:
            d["flip_axes"] = list(d["flip_axes"])
        return d

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        if d.get("flip_axes") is not None:
            d["flip_axes"] = tuple(d["flip_axes"])
        return TrainConfig(**d)


# ================================================================================ backbone
def _conv(dim: int):
    return nn.Conv2d if dim == 2 else nn.Conv3d


def _inorm(dim: int):
    return nn.InstanceNorm2d if dim == 2 else nn.InstanceNorm3d


class FastDropout(nn.Dropout):
    """Inverted dropout with the mask drawn by ``rand >= p``: same semantics as ``nn.Dropout`` but
    ~4× faster on CPU, where ``bernoulli_`` dominated the TTD training step."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


def _swap_dropout(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p))
        else:
            _swap_dropout(child)


class SegNet(nn.Module):
    """MONAI UNet → [norm, dropout, act, 3×3 conv, norm, dropout, act] → 1×1 head(s).

    ``ssn_rank > 0`` adds the SSN heads (log-diagonal: C channels, covariance factor: C·R)."""

    def __init__(self, dim: int, in_ch: int, n_classes: int, cfg: TrainConfig, dropout: float = 0.0, ssn_rank: int = 0):
        super().__init__()
        from monai.networks.nets import UNet
        self.dim, self.n_classes, self.rank = dim, n_classes, ssn_rank
        ch = tuple(cfg.channels)
        self.backbone = UNet(spatial_dims=dim, in_channels=in_ch, out_channels=cfg.features, channels=ch,
                             strides=(2,) * (len(ch) - 1), num_res_units=cfg.res_units, dropout=dropout)
        conv, norm = _conv(dim), _inorm(dim)
        f = cfg.features
        def adn():
            return [norm(f)] + ([nn.Dropout(dropout)] if dropout > 0 else []) + [nn.LeakyReLU(0.01)]
        self.block = nn.Sequential(*adn(), conv(f, f, 3, padding=1), *adn())
        self.head = conv(f, n_classes, 1)
        _swap_dropout(self)
        if ssn_rank:
            self.log_diag = conv(f, n_classes, 1)
            self.factor = conv(f, n_classes * ssn_rank, 1)

    def forward(self, x):
        return self.head(self.block(self.backbone(x)))

    def ssn_params(self, x):
        h = self.block(self.backbone(x))
        return self.head(h), self.log_diag(h), self.factor(h)


def ssn_sample(mu, log_diag, factor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterised samples of the low-rank Gaussian over all C·V logits of each image:
    ``η = μ + P ε_R + sqrt(D) ε``, ``D = exp(log_diag) + 1e-5`` (what
    ``torch.distributions.LowRankMultivariateNormal(μ, P, D).rsample`` computes).  → [n, B, C, *S]."""
    b, c = mu.shape[:2]
    sp = mu.shape[2:]
    v = int(np.prod(sp))
    r = factor.shape[1] // c
    P = factor.reshape(b, c, r, v).permute(0, 1, 3, 2)                    # [B, C, V, R]
    D = torch.exp(log_diag.clamp(-20, 10)) + 1e-5
    eps_r = torch.randn((n, b, r), generator=generator, device=mu.device, dtype=mu.dtype)
    eps_d = torch.randn((n, b) + tuple(mu.shape[1:]), generator=generator, device=mu.device, dtype=mu.dtype)
    low = torch.einsum("bcvr,nbr->nbcv", P, eps_r).reshape((n, b, c) + tuple(sp))
    return mu.unsqueeze(0) + low + D.sqrt().unsqueeze(0) * eps_d


# ================================================================================ training
def _augment(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, g: torch.Generator):
    """Random flips per sample and axis, Gaussian noise (variance ~ U(0, noise_var)) on a share of
    the samples.  Vectorised over the batch."""
    b, dim = x.shape[0], x.ndim - 2
    for ax in (range(dim) if cfg.flip_axes is None else cfg.flip_axes):
        m = torch.rand(b, generator=g, device=x.device) < 0.5
        mx = m.view((b,) + (1,) * (x.ndim - 1))
        my = m.view((b,) + (1,) * (y.ndim - 1))
        x = torch.where(mx, x.flip(2 + ax), x)
        y = torch.where(my, y.flip(1 + ax), y)
    if cfg.noise_p > 0:
        sd = torch.sqrt(torch.rand(b, generator=g, device=x.device) * cfg.noise_var)
        sd = sd * (torch.rand(b, generator=g, device=x.device) < cfg.noise_p)
        x = x + sd.view((b,) + (1,) * (x.ndim - 1)) * torch.randn(x.shape, generator=g, device=x.device)
    return x, y


def ssn_loss(net: SegNet, x, y, n_samples: int, g: torch.Generator | None = None,
             ignore_index: int | None = None) -> torch.Tensor:
    """Monteiro et al. 2020: ``−mean_b [logsumexp_m Σ_pixels log softmax(η_m)[y] − log M]``, divided by
    the pixel count (a constant, keeps the scale of a per-pixel loss); ignored pixels add nothing."""
    mu, ld, fac = net.ssn_params(x)
    eta = ssn_sample(mu.float(), ld.float(), fac.float(), n_samples, g)                 # [M, B, C, *S]
    logp = F.log_softmax(eta, dim=2)
    keep = None
    if ignore_index is not None:
        keep = y != ignore_index
        y = torch.where(keep, y, torch.zeros_like(y))
    idx = y.long().unsqueeze(0).unsqueeze(2).expand((eta.shape[0], -1, 1) + tuple(y.shape[1:]))
    gathered = logp.gather(2, idx)
    if keep is not None:
        gathered = gathered * keep.unsqueeze(0).unsqueeze(2)
    ll = gathered.flatten(2).sum(-1)                                                  # [M, B]
    v = y[0].numel()
    return -(torch.logsumexp(ll, 0) - math.log(n_samples)).mean() / v


def train_net(kind: str, images: np.ndarray, raters: np.ndarray, dim: int, n_classes: int, cfg: TrainConfig,
              seed: int, device: str = "cpu", on_epoch: Callable[[int], None] | None = None) -> SegNet:
    """Train one net from scratch: ``kind`` ∈ {det, ttd, ssn}.  A random rater is drawn per image
    and step (ambiguous cases teach the aleatoric part).  Deterministic for a given seed."""
    torch.manual_seed(seed)
    g = torch.Generator(device="cpu").manual_seed(seeds.derive(seed, "batches"))
    dev_g = g if device == "cpu" else torch.Generator(device=device).manual_seed(seeds.derive(seed, "augment"))
    net = SegNet(dim, images.shape[1], n_classes, cfg, dropout=cfg.dropout if kind == "ttd" else 0.0,
                 ssn_rank=cfg.ssn_rank if kind == "ssn" else 0).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    from monai.losses import DiceCELoss
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    X = torch.as_tensor(images)
    Y = torch.as_tensor(raters)
    n, r = len(X), Y.shape[1]
    use_bf16 = cfg.bf16
    epochs = cfg.ssn_epochs if kind == "ssn" and cfg.ssn_epochs else cfg.epochs
    net.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            if len(idx) < 2 and n >= 2:
                continue
            rat = torch.randint(r, (len(idx),), generator=g)
            x = X[idx].to(device)
            y = Y[idx, rat].to(device)
            x, y = _augment(x, y, cfg, dev_g)
            with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu",
                                dtype=torch.bfloat16, enabled=use_bf16):
                ign = cfg.ignore_index
                if kind == "ssn":
                    if ep < cfg.ssn_warmup_epochs:
                        loss = F.cross_entropy(net(x).float(), y.long(), ignore_index=-100 if ign is None else ign)
                    else:
                        loss = ssn_loss(net, x, y, cfg.ssn_train_samples, dev_g, ign)
                elif ign is not None:   # an ignore label (GTA5/Cityscapes): cross-entropy, as the thesis' HRNet
                    loss = F.cross_entropy(net(x).float(), y.long(), ignore_index=ign)
                else:
                    loss = dice_ce(net(x).float(), y.unsqueeze(1).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(ep)
    net.eval()
    return net


def save_net(net: SegNet, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(net.state_dict(), f), binary=True)


def load_net(kind: str, path: Path, dim: int, in_ch: int, n_classes: int, cfg: TrainConfig, device: str) -> SegNet:
    net = SegNet(dim, in_ch, n_classes, cfg, dropout=cfg.dropout if kind == "ttd" else 0.0,
                 ssn_rank=cfg.ssn_rank if kind == "ssn" else 0)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.to(device).eval()


# ================================================================================ prediction models
class PredictionModel:
    """Common interface; subclasses implement ``_probs(x[B, Cin, *S]) -> [B, M, C, *S]``."""
    name = "?"

    def __init__(self, device: str = "cpu", seed: int = 0, bf16: bool = False):
        self.device, self.seed, self.bf16 = device, seed, bf16
        self.reset_rng()

    def reset_rng(self, seed: int | None = None) -> None:
        """Restart the sampling stream (dropout masks, TTA noise, SSN samples) for reproducibility."""
        if seed is not None:
            self.seed = seed
        self.gen = torch.Generator(device="cpu").manual_seed(self.seed)

    def _ctx(self):
        return torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu",
                              dtype=torch.bfloat16, enabled=self.bf16)

    @torch.no_grad()
    def predict_batch(self, x) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32).to(self.device)
        with self._ctx():
            p = self._probs(x)
        return p.float().cpu()

    def predict_samples(self, x) -> torch.Tensor:
        """``x[Cin, *S]`` → ``probs[M, C, *S]``."""
        return self.predict_batch(torch.as_tensor(x)[None])[0]


def _softmax(net, x):
    return torch.softmax(net(x).float(), dim=1)


class Softmax(PredictionModel):
    name = "softmax"

    def __init__(self, net: SegNet, **kw):
        self.net = net
        super().__init__(**kw)

    def _probs(self, x):
        return _softmax(self.net, x).unsqueeze(1)


class TTD(PredictionModel):
    name = "ttd"

    def __init__(self, net: SegNet, passes: int = 10, **kw):
        self.net, self.passes = net, passes
        super().__init__(**kw)

    def _probs(self, x):
        self.net.eval()
        for m in self.net.modules():
            if isinstance(m, nn.Dropout):
                m.train()
        b = x.shape[0]
        state = torch.get_rng_state()
        torch.manual_seed(int(torch.randint(2 ** 31 - 1, (1,), generator=self.gen)))
        try:
            p = _softmax(self.net, x.repeat_interleave(self.passes, 0))
        finally:
            torch.set_rng_state(state)
            self.net.eval()
        return p.view((b, self.passes) + tuple(p.shape[1:]))


class Ensemble(PredictionModel):
    name = "ensemble"

    def __init__(self, nets: Sequence[SegNet], **kw):
        self.nets = list(nets)
        super().__init__(**kw)

    def _probs(self, x):
        return torch.stack([_softmax(n, x) for n in self.nets], dim=1)


class TTA(PredictionModel):
    """Flip patterns × {clean, one noisy copy}; outputs flipped back before stacking."""
    name = "tta"

    def __init__(self, net: SegNet, noise_var: float = 0.1, flip_axes: tuple | None = None, **kw):
        self.net, self.noise_var, self.flip_axes = net, noise_var, flip_axes
        super().__init__(**kw)

    def _probs(self, x):
        b, dim = x.shape[0], x.ndim - 2
        axes = [2 + a for a in (range(dim) if self.flip_axes is None else self.flip_axes)]
        flips = [c for k in range(len(axes) + 1) for c in itertools.combinations(axes, k)]
        sd = torch.sqrt(torch.rand(b, generator=self.gen) * self.noise_var).to(x.device)
        noisy = x + sd.view((b,) + (1,) * (x.ndim - 1)) * torch.randn(x.shape, generator=self.gen).to(x.device)
        views = [v.flip(f) if f else v for v in (x, noisy) for f in flips]
        out = _softmax(self.net, torch.cat(views, 0)).split(b, 0)
        back = [o.flip(f) if f else o for o, f in zip(out, flips * 2)]
        return torch.stack(back, dim=1)


class SSN(PredictionModel):
    name = "ssn"

    def __init__(self, net: SegNet, samples: int = 10, **kw):
        self.net, self.samples = net, samples
        super().__init__(**kw)

    def _probs(self, x):
        mu, ld, fac = self.net.ssn_params(x)
        g = self.gen if x.device.type == "cpu" else None
        eta = ssn_sample(mu.float(), ld.float(), fac.float(), self.samples, g)     # [M, B, C, *S]
        return torch.softmax(eta, dim=2).transpose(0, 1).contiguous()


# which trained nets each prediction model needs: (net kind, member index)
def nets_needed(model: str, cfg: TrainConfig) -> list[tuple[str, int]]:
    if model in ("softmax", "tta"):
        return [("det", 0)]
    if model == "ensemble":
        return [("det", k) for k in range(cfg.ensemble_size)]
    if model == "ttd":
        return [("ttd", 0)]
    if model == "ssn":
        return [("ssn", 0)]
    raise ValueError(model)


def build_model(model: str, nets: dict, cfg: TrainConfig, device: str, seed: int) -> PredictionModel:
    kw = dict(device=device, seed=seed, bf16=cfg.bf16)
    if model == "softmax":
        return Softmax(nets[("det", 0)], **kw)
    if model == "ensemble":
        return Ensemble([nets[("det", k)] for k in range(cfg.ensemble_size)], **kw)
    if model == "tta":
        return TTA(nets[("det", 0)], noise_var=cfg.noise_var, flip_axes=cfg.flip_axes, **kw)
    if model == "ttd":
        return TTD(nets[("ttd", 0)], passes=cfg.ttd_passes, **kw)
    if model == "ssn":
        return SSN(nets[("ssn", 0)], samples=cfg.ssn_test_samples, **kw)
    raise ValueError(model)
