"""Batched image augmentation on uint8 tensors ``[B, 3, H, W]`` (spec §8.7), on any device.

* ``standard``         — RandomCrop(H, padding 4) + RandomHorizontalFlip (CIFAR standard);
* ``randaugment``      — standard (reflect padding), then RandAugmentMC(N = 2, M = 10, prob 1) with the
  FixMatch op pool, then Cutout (grey 127 square of half the image side) — "RandAugmentMC (CIFAR)";
* ``randaugment_weak`` — standard (reflect padding), then RandAugmentMC(N = 1, M = 2, prob 0.5), no Cutout;
* ``none``             — test time: nothing (normalisation happens separately).

Every op takes per-sample parameters and runs on the whole (sub-)batch at once — a Python loop over
images would cost more than the network on a CPU.  Randomness comes from torch's global generator,
which the trainer seeds per cycle, so the same seed gives the same augmented batches.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

AUGMENTATIONS = ("randaugment", "standard", "randaugment_weak", "none")
FILL = 128.0


def _u(n, device):
    return torch.rand(n, device=device)


def _sign(n, device):
    return torch.where(_u(n, device) < 0.5, 1.0, -1.0)


def _lvl(v: torch.Tensor, max_v: float, bias: float = 0.0) -> torch.Tensor:
    return v.float() * max_v / 10 + bias


def _b(t: torch.Tensor) -> torch.Tensor:  # per-sample scalar → broadcastable over [B, 3, H, W]
    return t.view(-1, 1, 1, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(x, degenerate, factor):
    return (degenerate + _b(factor) * (x - degenerate)).clamp_(0, 255)


# ---- ops: (x float [b, 3, H, W] in 0..255, v int [b]) → same ------------------------------------

def autocontrast(x, v):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 255.0 / (hi - lo).clamp_min(1e-6), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x).clamp_(0, 255)


def brightness(x, v):
    return _blend(x, torch.zeros_like(x), _lvl(v, 0.9, 0.05))


def color(x, v):
    return _blend(x, _gray(x).expand_as(x), _lvl(v, 0.9, 0.05))


def contrast(x, v):
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean.expand_as(x), _lvl(v, 0.9, 0.05))


def sharpness(x, v):
    k = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device) / 13
    smooth = F.conv2d(x, k.expand(3, 1, 3, 3).contiguous(), padding=1, groups=3)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth[:, :, 1:-1, 1:-1]  # PIL keeps the border pixels
    return _blend(x, degenerate, _lvl(v, 0.9, 0.05))


def equalize(x, v):
    return TF.equalize(x.round().to(torch.uint8)).float()


def identity(x, v):
    return x


def posterize(x, v):
    bits = _lvl(v, 4, 4).floor().clamp(1, 8).to(torch.int32)
    mask = ((0xFF << (8 - bits)) & 0xFF).view(-1, 1, 1, 1)
    return (x.round().to(torch.int32) & mask).float()


def solarize(x, v):
    thr = _b(256 - _lvl(v, 256).floor())
    return torch.where(x >= thr, 255 - x, x)


def _affine(x, theta):
    """Resample each image with its own 2×3 matrix (output → input, normalised coords), nearest
    neighbour, fill 128 outside."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    ones = torch.ones_like(x[:, :1])
    out = F.grid_sample(torch.cat([x, ones], 1), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    inside = out[:, 3:4]
    return out[:, :3] * inside + FILL * (1 - inside)


def _eye(n, device):
    return torch.eye(2, 3, device=device).repeat(n, 1, 1)


def rotate(x, v):
    a = torch.deg2rad(_sign(len(x), x.device) * _lvl(v, 30))
    t = _eye(len(x), x.device)
    t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    return _affine(x, t)


def shear_x(x, v):
    t = _eye(len(x), x.device)
    t[:, 0, 1] = _sign(len(x), x.device) * _lvl(v, 0.3)
    return _affine(x, t)


def shear_y(x, v):
    t = _eye(len(x), x.device)
    t[:, 1, 0] = _sign(len(x), x.device) * _lvl(v, 0.3)
    return _affine(x, t)


def translate_x(x, v):
    t = _eye(len(x), x.device)
    t[:, 0, 2] = 2 * (_sign(len(x), x.device) * _lvl(v, 0.3) * x.shape[-1]).trunc() / x.shape[-1]
    return _affine(x, t)


def translate_y(x, v):
    t = _eye(len(x), x.device)
    t[:, 1, 2] = 2 * (_sign(len(x), x.device) * _lvl(v, 0.3) * x.shape[-2]).trunc() / x.shape[-2]
    return _affine(x, t)


OPS = (autocontrast, brightness, color, contrast, equalize, identity, posterize, rotate, sharpness,
       shear_x, shear_y, solarize, translate_x, translate_y)


def rand_augment_mc(x: torch.Tensor, n: int, m: int, prob: float) -> torch.Tensor:
    """RandAugmentMC: n rounds; per image and round pick one op uniformly and a level v ∈ [1, m−1]
    (1 when m ≤ 2), apply with probability ``prob``.  ``x``: float [B, 3, H, W] in 0..255."""
    B = len(x)
    for _ in range(n):
        op = torch.randint(len(OPS), (B,), device=x.device)
        v = torch.randint(1, m, (B,), device=x.device) if m > 2 else torch.ones(B, dtype=torch.long, device=x.device)
        apply = _u(B, x.device) < prob
        for k, fn in enumerate(OPS):
            sel = torch.nonzero((op == k) & apply).flatten()
            if len(sel):
                x[sel] = fn(x[sel], v[sel])
    return x


def cutout(x: torch.Tensor, frac: float = 0.5) -> torch.Tensor:
    B, _, H, W = x.shape
    size = int(frac * min(H, W))
    cy = torch.randint(H, (B, 1, 1), device=x.device)
    cx = torch.randint(W, (B, 1, 1), device=x.device)
    ys = torch.arange(H, device=x.device).view(1, H, 1)
    xs = torch.arange(W, device=x.device).view(1, 1, W)
    box = (ys >= cy - size // 2) & (ys < cy + size // 2) & (xs >= cx - size // 2) & (xs < cx + size // 2)
    return torch.where(box[:, None], torch.full_like(x, 127.0), x)


def random_crop_flip(x: torch.Tensor, pad: int = 4, reflect: bool = False) -> torch.Tensor:
    B, C, H, W = x.shape
    padded = F.pad(x, [pad] * 4, mode="reflect" if reflect else "constant")
    oy = torch.randint(2 * pad + 1, (B,), device=x.device)
    ox = torch.randint(2 * pad + 1, (B,), device=x.device)
    rows = (oy[:, None] + torch.arange(H, device=x.device)[None])            # [B, H]
    cols = (ox[:, None] + torch.arange(W, device=x.device)[None])            # [B, W]
    flip = _u(B, x.device) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bidx = torch.arange(B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2)


@torch.no_grad()
def augment_batch(x_u8: torch.Tensor, name: str) -> torch.Tensor:
    """Augment a uint8 batch; returns float [B, 3, H, W] in 0..255 (ready for ``normalise``)."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}")
    x = x_u8.float()
    if name == "none":
        return x
    if name == "standard":
        return random_crop_flip(x)
    x = random_crop_flip(x, reflect=True).contiguous()
    if name == "randaugment":
        return cutout(rand_augment_mc(x, 2, 10, 1.0)).round_()
    return rand_augment_mc(x, 1, 2, 0.5).round_()


def normalise(batch: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 or float (0..255) batch → normalised float."""
    x = batch.float() / 255
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
