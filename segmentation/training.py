"""Partial-annotation training of a K-model 3D U-Net ensemble, and sliding-window inference.

* :class:`MaskedDiceCELoss` — nnU-Net's DC + CE (weights 1/1; soft Dice with smooth 0, no
  background, batch Dice) in which voxels carrying the ignore label contribute to neither term.
* :class:`RegionSampler` — training patches that always contain an annotated voxel placed at a
  uniformly random position inside the patch (so the patch brings unlabelled context); a third of
  each batch (nnU-Net's ``oversample_foreground_percent``) is centred on a random annotated voxel
  of a random annotated foreground class instead.
* :func:`cv_folds` — K folds over the images with ≥ 1 annotated patch; each class is put in the
  validation fold of ≥ 2 folds (rarest class first) so every training split sees every class.
* :func:`train_ensemble` — K DynUNets from scratch (fold k trains on the other folds), seeded by
  (seed, cycle, fold); :class:`Ensemble` predicts ``[K, C+1, X, Y, Z]`` softmax maps with MONAI's
  Gaussian-weighted sliding-window inference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from core import seeds
import torch.nn.functional as F

from .plans import NetworkPlan, Preset


# ---------------------------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------------------------

class MaskedDiceCELoss(torch.nn.Module):
    """DC + CE on ``logits [B, C, ...]`` and integer ``target [B, ...]`` where ``target ==
    ignore_index`` marks unannotated voxels.  Those voxels are removed from both terms (their logits
    get exactly zero gradient).  Dice: ``1 − mean_c 2·TP_c / (P_c + G_c)`` over foreground classes,
    summed over the batch (``batch_dice``) or per sample, smooth 0 (denominator clamped at 1e-8)."""

    def __init__(self, ignore_index: int, do_bg: bool = False, batch_dice: bool = True, smooth: float = 0.0,
                 weight_ce: float = 1.0, weight_dice: float = 1.0):
        super().__init__()
        self.ignore_index, self.do_bg, self.batch_dice, self.smooth = int(ignore_index), do_bg, batch_dice, smooth
        self.weight_ce, self.weight_dice = weight_ce, weight_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        n_cls = logits.shape[1]
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return logits.sum() * 0.0
        safe = torch.where(valid, target, torch.zeros_like(target)).long()
        # CE: mean over annotated voxels only (logits of ignored voxels are masked out of the graph)
        ce = F.cross_entropy(logits, safe, reduction="none")
        ce = (ce * valid).sum() / valid.sum()
        # Dice on annotated voxels only
        vm = valid.unsqueeze(1).to(logits.dtype)
        probs = torch.softmax(logits, 1) * vm
        onehot = F.one_hot(safe, n_cls).movedim(-1, 1).to(logits.dtype) * vm
        dims = (0,) + tuple(range(2, logits.ndim)) if self.batch_dice else tuple(range(2, logits.ndim))
        tp = (probs * onehot).sum(dims)
        denom = probs.sum(dims) + onehot.sum(dims)
        dc = (2 * tp + self.smooth) / (denom + self.smooth).clamp_min(1e-8)
        if not self.do_bg:
            dc = dc[1:] if self.batch_dice else dc[:, 1:]
        return self.weight_ce * ce + self.weight_dice * (1.0 - dc.mean())


def deep_supervision_weights(n: int) -> list[float]:
    w = np.asarray([1 / 2 ** i for i in range(n)])
    return (w / w.sum()).tolist()


# ---------------------------------------------------------------------------------------------
# region sampling
# ---------------------------------------------------------------------------------------------

class RegionSampler:
    """Draws training patches from partially annotated images (see module docstring).

    ``images``: list of ``[channels, X, Y, Z]`` float32; ``labels``: list of ``[X, Y, Z]`` integer
    maps with ``ignore`` at unannotated voxels.  Images smaller than the patch are padded (0 image,
    ignore label).  Images without any annotated voxel are skipped."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], patch: Sequence[int],
                 n_classes: int, ignore: int, rng: np.random.Generator, oversample_fg: float = 0.33,
                 mirror: bool = True):
        self.patch = np.asarray(patch, dtype=np.int64)
        self.ignore, self.rng, self.oversample_fg, self.mirror = int(ignore), rng, float(oversample_fg), mirror
        self.images, self.labels, self.annotated, self.by_class = [], [], [], []
        for img, lab in zip(images, labels):
            lab = np.asarray(lab)
            ann = np.flatnonzero(lab.ravel() != ignore)
            if len(ann) == 0:
                continue
            pad = [(0, max(0, int(p) - s)) for p, s in zip(self.patch, lab.shape)]
            if any(b for _, b in pad):
                img = np.pad(img, [(0, 0)] + pad)
                lab = np.pad(lab, pad, constant_values=ignore)
                ann = np.flatnonzero(lab.ravel() != ignore)
            flat = lab.ravel()
            vals = flat[ann]
            self.images.append(np.asarray(img, dtype=np.float32))
            self.labels.append(lab)
            self.annotated.append(ann)
            self.by_class.append({c: ann[vals == c] for c in range(1, n_classes + 1) if (vals == c).any()})
        if not self.images:
            raise ValueError("no annotated voxels to train on")

    def _origin(self, i: int, force_fg: bool) -> np.ndarray:
        shape = np.asarray(self.labels[i].shape)
        if force_fg and self.by_class[i]:
            classes = sorted(self.by_class[i])
            c = classes[int(self.rng.integers(len(classes)))]
            locs = self.by_class[i][c]
            v = np.asarray(np.unravel_index(int(locs[self.rng.integers(len(locs))]), shape))
            origin = v - self.patch // 2                                   # centred on the class voxel
        else:
            locs = self.annotated[i]
            v = np.asarray(np.unravel_index(int(locs[self.rng.integers(len(locs))]), shape))
            origin = v - self.rng.integers(0, self.patch)                  # voxel uniformly inside the patch
        return np.clip(origin, 0, shape - self.patch)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        n_fg = int(round(batch_size * self.oversample_fg))
        p = self.patch
        for b in range(batch_size):  # a loop over batch elements, not voxels
            i = int(self.rng.integers(len(self.images)))
            o = self._origin(i, force_fg=b >= batch_size - n_fg)
            x = self.images[i][:, o[0]:o[0] + p[0], o[1]:o[1] + p[1], o[2]:o[2] + p[2]]
            y = self.labels[i][o[0]:o[0] + p[0], o[1]:o[1] + p[1], o[2]:o[2] + p[2]]
            if self.mirror:
                for ax in np.flatnonzero(self.rng.random(3) < 0.5):
                    x, y = np.flip(x, ax + 1), np.flip(y, ax)
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# cross-validation folds
# ---------------------------------------------------------------------------------------------

def cv_folds(images: Sequence[int], classes_of: dict, k: int, rng: np.random.Generator) -> list[list[int]]:
    """Validation folds (lists of image ids).  Model f trains on every image not in fold f.  With
    ``k == 1`` the single model trains on every image (fold 0 is empty)."""
    images = list(images)
    if k <= 1:
        return [[]]
    folds: list[list[int]] = [[] for _ in range(k)]
    where: dict[int, int] = {}
    all_classes = sorted({c for i in images for c in classes_of[i]})
    counts = {c: sum(c in classes_of[i] for i in images) for c in all_classes}
    for c in sorted(all_classes, key=lambda c: (counts[c], c)):  # rarest first
        holders = [i for i in images if c in classes_of[i]]
        have = {where[i] for i in holders if i in where}
        free = [i for i in holders if i not in where]
        free = [free[j] for j in rng.permutation(len(free))]
        while len(have) < min(2, k) and free:
            i = free.pop()
            f = min((f for f in range(k) if f not in have), key=lambda f: (len(folds[f]), f))
            folds[f].append(i)
            where[i] = f
            have.add(f)
    rest = [i for i in images if i not in where]
    for j in rng.permutation(len(rest)):
        f = min(range(k), key=lambda f: (len(folds[f]), f))
        folds[f].append(rest[j])
        where[rest[j]] = f
    return [sorted(f) for f in folds]


# ---------------------------------------------------------------------------------------------
# network, training, inference
# ---------------------------------------------------------------------------------------------

def make_network(plan: NetworkPlan, in_channels: int, out_channels: int, deep_supervision: bool) -> torch.nn.Module:
    from monai.networks.nets import DynUNet
    n_ds = max(0, min(len(plan.strides) - 2, 3)) if deep_supervision else 0
    return DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                   kernel_size=plan.kernels, strides=plan.strides, upsample_kernel_size=plan.strides[1:],
                   filters=plan.filters, norm_name=("instance", {"affine": True}), act_name=("leakyrelu", {"negative_slope": 0.01}),
                   deep_supervision=n_ds > 0, deep_supr_num=max(n_ds, 1))


def _autocast(device: str, enabled: bool):
    if not enabled:
        return torch.autocast(device_type="cpu", enabled=False)
    if device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16)


def train_model(sampler: RegionSampler, plan: NetworkPlan, preset: Preset, in_channels: int, n_classes: int,
                ignore: int, seed_key: Sequence[int], device: str,
                tick: Callable[[int], None] | None = None) -> torch.nn.Module:
    """One DynUNet trained from scratch for ``preset.iterations`` iterations."""
    torch.manual_seed(seeds.derive(seed_key[0], "train", *seed_key[1:]))
    net = make_network(plan, in_channels, n_classes + 1, preset.deep_supervision).to(device)
    loss_fn = MaskedDiceCELoss(ignore_index=ignore)
    if preset.optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=preset.lr, momentum=0.99, nesterov=True, weight_decay=3e-5)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=preset.lr, weight_decay=1e-4)
    total = max(int(preset.iterations), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - min(it, total - 1) / total) ** 0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=preset.amp and device.startswith("cuda"))  # fp16 needs scaling
    net.train()
    for it in range(total):
        x, y = sampler.batch(preset.batch_size)
        x, y = x.to(device), y.to(device)
        with _autocast(device, preset.amp):
            out = net(x)
        if out.ndim == y.ndim + 2:  # deep supervision: [B, heads, C, ...]
            w = deep_supervision_weights(out.shape[1])
            loss = sum(wi * loss_fn(out[:, h], y) for h, wi in enumerate(w))
        else:
            loss = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        scaler.step(opt)
        scaler.update()
        sched.step()
        if tick:
            tick(1)
    net.eval()
    return net


@dataclass
class Ensemble:
    models: list
    plan: NetworkPlan
    device: str
    amp: bool
    sw_batch: int
    folds: list

    @torch.no_grad()
    def predict(self, image: np.ndarray, overlap: float = 0.25, mirror: bool = False) -> torch.Tensor:
        """Softmax maps ``[K, C+1, X, Y, Z]`` (float32, on CPU) for one ``[channels, X, Y, Z]`` image:
        Gaussian-weighted sliding window with the network patch size; ``overlap=0.25`` is nnU-Net's
        tile step 0.75 used at query time, 0.5 is its test-time default; ``mirror`` averages the 8
        axis flips (test-time augmentation)."""
        from monai.inferers import sliding_window_inference
        x = torch.from_numpy(np.ascontiguousarray(image))[None].to(self.device)
        outs = []
        flips = [()] + ([(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)] if mirror else [])
        for net in self.models:
            acc = None
            for fl in flips:
                xi = torch.flip(x, fl) if fl else x
                with _autocast(self.device, self.amp):
                    logits = sliding_window_inference(xi, roi_size=self.plan.patch_size, sw_batch_size=self.sw_batch,
                                                      predictor=net, overlap=overlap, mode="gaussian")
                p = torch.softmax(logits.float(), 1)
                p = torch.flip(p, fl) if fl else p
                acc = p if acc is None else acc + p
            outs.append((acc / len(flips))[0].cpu())
        return torch.stack(outs)
