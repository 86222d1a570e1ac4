"""All image augmentation of the classification suite, as batched ops on uint8 tensors ``[B, 3, H, W]``
(spec §8.7, A.3.6; SimCLR views §A.3.4), on any device, with public torch/torchvision APIs only.

Transform families (``augmenter(family)(x_u8, name) -> float 0..255``):

* ``cifar`` (CIFARs, Fashion-MNIST): ``standard`` — RandomCrop(H, padding 4) + RandomHorizontalFlip;
  ``randaugment`` — standard (reflect padding), then RandAugmentMC(N = 2, M = 10, prob 1) with the
  FixMatch op pool, then Cutout (grey 127 square of half the image side) — "RandAugmentMC (CIFAR)";
  ``randaugment_weak`` — standard (reflect padding), then RandAugmentMC(N = 1, M = 2, prob 0.5), no Cutout;
* ``isic`` ``standard``: Resize 300/224·S → HFlip → VFlip → ColorJitter(0.02, 0.02, 0.02, 0.01) →
  RandomRotation(±180) → RandomAffine(±180, translate 0.1, scale 0.7–1.3) → RandomCrop(S), with all the
  geometric steps folded into one bilinear resampling (the rotation's corners stay black, as when
  applied twice); ``randaugment``: flips → affine → crop → jitter → RandAugmentMC(2, 10, p = 1);
  ``randaugment_weak``: same base, RandAugmentMC(1, 2, p = 0.5);
* ``imagenet`` (MIO-TCD, folder data): ``standard``: RandomResizedCrop(S) + HFlip; ``randaugment``:
  + RandAugmentMC(2, 10, p = 1) (no Cutout); ``randaugment_weak``: + RandAugmentMC(1, 2, p = 0.5);
* ``none`` in every family: test time, nothing (normalisation happens separately).

The colour ops (ColorJitter with hue via our own RGB↔HSV, grayscale, Gaussian blur) and
RandomResizedCrop also build the SimCLR views (``selfsl.simclr_view``).  Every op takes per-sample
parameters and runs on the whole (sub-)batch at once — a Python loop over images would cost more
than the network on a CPU.  Randomness comes from torch's global generator, which the trainer seeds
per cycle, so the same seed gives the same augmented batches.

    x = augmenter("cifar")(batch_u8, "randaugment")
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

FAMILIES = ("cifar", "isic", "imagenet")

AUGMENTATIONS = ("randaugment", "standard", "randaugment_weak", "none")
FILL = 128.0


def _u(n, device):
    return torch.rand(n, device=device)


def _uniform(n, lo, hi, device):
    return lo + (hi - lo) * torch.rand(n, device=device)


def _sign(n, device):
    return torch.where(_u(n, device) < 0.5, 1.0, -1.0)


def _lvl(v: torch.Tensor, max_v: float, bias: float = 0.0) -> torch.Tensor:
    return v.float() * max_v / 10 + bias


def _b(t: torch.Tensor) -> torch.Tensor:  # per-sample scalar → broadcastable over [B, 3, H, W]
    return t.view(-1, 1, 1, 1)


def gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma ``[B, 1, H, W]`` of an RGB batch."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


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
    return _blend(x, gray(x).expand_as(x), _lvl(v, 0.9, 0.05))


def contrast(x, v):
    mean = gray(x).mean(dim=(1, 2, 3), keepdim=True)
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


def in_fp32(augment):
    """Run an augmentation ``fn(x, ...)`` in float32 with autocast disabled, without gradients.

    Trainers call augmentations inside their bf16/fp16 autocast region; there ``affine_grid``,
    convolutions and matmuls would silently run in low precision and move pixels by up to 255 grey
    levels.  Every augmentation path (supervised, FixMatch, SimCLR, roll-out) goes through this."""
    @functools.wraps(augment)
    def run(x: torch.Tensor, *args, **kwargs):
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            return augment(x, *args, **kwargs)
    return run


@in_fp32
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


# ---- colour and geometry ops of SimCLR and the roll-out transforms ---------------------------

def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] → HSV in [0, 1] along dim −3 (hue undefined on greys: 0)."""
    r, g, b = x.unbind(dim=-3)
    maxc, minc = x.amax(dim=-3), x.amin(dim=-3)
    flat = maxc == minc
    ones = torch.ones_like(maxc)
    delta = maxc - minc
    s = delta / torch.where(flat, ones, maxc)
    d = torch.where(flat, ones, delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, (rc + 2.0) - bc, (gc + 4.0) - rc))
    h = torch.where(flat, torch.zeros_like(h), h)
    return torch.stack((torch.fmod(h * (1.0 / 6.0) + 1.0, 1.0), s, maxc), dim=-3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] → RGB in [0, 1] along dim −3 (sector i = ⌊6h⌋ picks from v, p, q, t)."""
    h, s, v = x.unbind(dim=-3)
    h6 = h * 6
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(torch.int64).remainder(6)
    p = ((1.0 - s) * v).clamp(0.0, 1.0)
    q = ((1.0 - s * f) * v).clamp(0.0, 1.0)
    t = ((s * f + (1.0 - s)) * v).clamp(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=-3)
    pick = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=x.device)[:, i]
    return vpqt.gather(-3, pick.movedim(0, -3))


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                 p: float = 1.0) -> torch.Tensor:
    """torchvision ColorJitter per sample (own factors and own random op order), applied with prob. p;
    ``x`` float [B, 3, H, W] in 0..255."""
    B, dev = len(x), x.device
    apply = _u(B, dev) < p
    fb = _uniform(B, max(0, 1 - brightness), 1 + brightness, dev)
    fc = _uniform(B, max(0, 1 - contrast), 1 + contrast, dev)
    fs = _uniform(B, max(0, 1 - saturation), 1 + saturation, dev)
    fh = _uniform(B, -hue, hue, dev)
    order = torch.argsort(torch.rand(B, 4, device=dev), dim=1)

    def op(k, t, sel):
        if k == 0 and brightness > 0:
            return (t * fb[sel].view(-1, 1, 1, 1)).clamp(0, 255)
        if k == 1 and contrast > 0:
            m = gray(t).mean(dim=(1, 2, 3), keepdim=True)
            return (m + fc[sel].view(-1, 1, 1, 1) * (t - m)).clamp(0, 255)
        if k == 2 and saturation > 0:
            g = gray(t)
            return (g + fs[sel].view(-1, 1, 1, 1) * (t - g)).clamp(0, 255)
        if k == 3 and hue > 0:
            hsv = rgb_to_hsv(t / 255)
            h = (hsv[:, 0] + fh[sel].view(-1, 1, 1)).remainder(1.0)
            return hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), 1)) * 255
        return t

    x = x.clone()
    for slot in range(4):
        for k in range(4):
            sel = torch.nonzero(apply & (order[:, slot] == k)).flatten()
            if len(sel):
                x[sel] = op(k, x[sel], sel)
    return x


def random_grayscale(x: torch.Tensor, p: float) -> torch.Tensor:
    g = gray(x).expand_as(x)
    return torch.where((_u(len(x), x.device) < p).view(-1, 1, 1, 1), g, x)


def gaussian_blur(x: torch.Tensor, p: float = 0.5, sigma: tuple = (0.1, 2.0), kernel_frac: float = 0.1) -> torch.Tensor:
    """SimCLR blur: kernel ≈ 10 % of the side (odd), per-sample σ ~ U(sigma), prob. p; separable grouped conv."""
    B, C, H, W = x.shape
    k = max(3, int(kernel_frac * H) // 2 * 2 + 1)
    s = _uniform(B, sigma[0], sigma[1], x.device)
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    g = torch.exp(-r[None] ** 2 / (2 * s[:, None] ** 2))
    g = (g / g.sum(1, keepdim=True)).repeat_interleave(C, 0)                       # [B·C, k]
    y = F.pad(x.reshape(1, B * C, H, W), [k // 2] * 4, mode="reflect")
    y = F.conv2d(y, g.view(B * C, 1, k, 1), groups=B * C)
    y = F.conv2d(y, g.view(B * C, 1, 1, k), groups=B * C).view(B, C, H, W)
    return torch.where((_u(B, x.device) < p).view(-1, 1, 1, 1), y, x)


def random_resized_crop(x: torch.Tensor, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        flip: bool = True) -> torch.Tensor:
    """torchvision RandomResizedCrop (10 tries, then the centre fallback) + optional HFlip, per sample,
    resampled with ``roi_align`` (bilinear, area-averaged when shrinking)."""
    from torchvision.ops import roi_align
    B, _, H, W = x.shape
    dev, area, tries = x.device, H * W, 10
    t_area = area * _uniform(B * tries, scale[0], scale[1], dev).view(B, tries)
    logr = _uniform(B * tries, math.log(ratio[0]), math.log(ratio[1]), dev).view(B, tries)
    ar = torch.exp(logr)
    w = torch.sqrt(t_area * ar).round()
    h = torch.sqrt(t_area / ar).round()
    ok = (w > 0) & (h > 0) & (w <= W) & (h <= H)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((B,), -1, device=dev))
    # centre-crop fallback (whole image clipped to the ratio range)
    in_r = W / H
    fw = W if ratio[0] <= in_r <= ratio[1] else (W if in_r < ratio[0] else round(H * ratio[1]))
    fh = H if ratio[0] <= in_r <= ratio[1] else (round(W / ratio[0]) if in_r < ratio[0] else H)
    idx = first.clamp_min(0)
    bw = torch.where(first >= 0, w.gather(1, idx[:, None])[:, 0], torch.full((B,), float(fw), device=dev))
    bh = torch.where(first >= 0, h.gather(1, idx[:, None])[:, 0], torch.full((B,), float(fh), device=dev))
    x0 = torch.floor(_u(B, dev) * (W - bw + 1))
    y0 = torch.floor(_u(B, dev) * (H - bh + 1))
    x0 = torch.where(first >= 0, x0, ((W - bw) / 2).round())
    y0 = torch.where(first >= 0, y0, ((H - bh) / 2).round())
    boxes = torch.stack([torch.arange(B, device=dev, dtype=x.dtype), x0, y0, x0 + bw, y0 + bh], 1).to(x.dtype)
    out = roi_align(x, boxes, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    if flip:
        out = torch.where((_u(B, dev) < 0.5).view(-1, 1, 1, 1), out.flip(-1), out)
    return out


def _sample(x: torch.Tensor, coords: torch.Tensor, valid: torch.Tensor | None = None, fill: float = 0.0) -> torch.Tensor:
    """Bilinear sampling at normalised coords ``[B, H, W, 2]`` (align_corners=False); outside → fill."""
    ones = torch.ones_like(x[:, :1])
    out = F.grid_sample(torch.cat([x, ones], 1), coords, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = out[:, 3:4]
    if valid is not None:
        inside = inside * valid[:, None].to(x.dtype)
    img = torch.where(inside > 1e-6, out[:, :3] / inside.clamp_min(1e-6), torch.zeros_like(out[:, :3]))
    return img * (inside > 0.5) + fill * (inside <= 0.5)


def isic_geometry(x: torch.Tensor, rotation=(-180.0, 180.0), degrees=(-180.0, 180.0), translate: float = 0.1,
                  scale=(0.7, 1.3), resize: float = 300 / 224, flips: bool = True) -> torch.Tensor:
    """Resize(resize·S) → HFlip → VFlip → RandomRotation(rotation) → RandomAffine(degrees, translate,
    scale) → RandomCrop(S), as one bilinear resampling of the S×S input (fill 0; the corners the
    rotation leaves black stay black).  ``rotation=None`` skips the RandomRotation step.  Angles are
    counter-clockwise as in torchvision."""
    B, _, S, _ = x.shape
    dev = x.device
    R = S * resize
    lin = (torch.arange(S, device=dev, dtype=x.dtype) + 0.5) / S * 2 - 1            # output pixel centres
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    u = torch.stack([gx, gy], -1).expand(B, S, S, 2)
    off = torch.stack([torch.floor(_u(B, dev) * (R - S + 1)), torch.floor(_u(B, dev) * (R - S + 1))], 1)
    off = off.clamp_max(max(R - S, 0))
    v = u * (S / R) + ((S + 2 * off - R) / R).view(B, 1, 1, 2)                       # crop → R-image coords

    def rot(deg):  # counter-clockwise on screen (y points down)
        a = torch.deg2rad(deg)
        return torch.stack([torch.stack([a.cos(), a.sin()], -1), torch.stack([-a.sin(), a.cos()], -1)], -2)

    # inverse of RandomAffine: x1 = R(−θ2)/s · (v − t)
    th2 = _uniform(B, degrees[0], degrees[1], dev)
    sc = _uniform(B, scale[0], scale[1], dev)
    t = torch.stack([(_uniform(B, -translate, translate, dev) * R).round(),
                     (_uniform(B, -translate, translate, dev) * R).round()], 1) * 2 / R
    x1 = torch.einsum("bij,bhwj->bhwi", rot(-th2) / sc.view(B, 1, 1), v - t.view(B, 1, 1, 2))
    if rotation is not None:
        valid = (x1.abs() <= 1 + 1e-6).all(-1)
        x0 = torch.einsum("bij,bhwj->bhwi", rot(-_uniform(B, rotation[0], rotation[1], dev)), x1)
    else:
        valid, x0 = None, x1
    if flips:
        f = torch.stack([torch.where(_u(B, dev) < 0.5, -1.0, 1.0), torch.where(_u(B, dev) < 0.5, -1.0, 1.0)], 1)
        x0 = x0 * f.view(B, 1, 1, 2).to(x.dtype)
    return _sample(x, x0, valid).clamp_(0, 255)


@in_fp32
def augment_rollout(x_u8: torch.Tensor, name: str, kind: str) -> torch.Tensor:
    """A.3.6 transforms for ``kind`` ∈ {isic, imagenet}; uint8 [B, 3, S, S] → float 0..255 [B, 3, S, S]
    (float32 even inside an autocast region: :func:`in_fp32`)."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}")
    x = x_u8.float()
    if name == "none":
        return x
    S = x.shape[-1]
    if kind == "isic":
        if name == "standard":
            x = color_jitter(x, 0.02, 0.02, 0.02, 0.01)
            return isic_geometry(x).round_()
        x = color_jitter(isic_geometry(x, rotation=None), 0.02, 0.02, 0.02, 0.01).contiguous()
    elif kind == "imagenet":
        x = random_resized_crop(x, S).contiguous()
        if name == "standard":
            return x.clamp_(0, 255).round_()
        x = x.clamp_(0, 255).round_()
    else:
        raise ValueError(f"unknown transform family {kind!r}")
    n, m, p = (2, 10, 1.0) if name == "randaugment" else (1, 2, 0.5)
    return rand_augment_mc(x, n, m, p).round_()


def augmenter(family: str | None) -> Callable[[torch.Tensor, str], torch.Tensor]:
    """``fn(x_u8, name)`` for a dataset's transform family: ``cifar``/None → :func:`augment_batch`,
    ``isic`` / ``imagenet`` → :func:`augment_rollout`."""
    if family in (None, "cifar"):
        return augment_batch
    if family not in FAMILIES:
        raise ValueError(f"unknown transform family {family!r}")

    def fn(x, name):
        return augment_rollout(x, name, family)
    fn.kind = family
    return fn
