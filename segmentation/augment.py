"""nnU-Net's default training augmentation, built from MONAI transforms, for the MONAI backend.

nnU-Net v2 (``nnUNetTrainer.get_training_transforms``) augments each sampled patch with, in order:
spatial transform (rotation ±30° per axis p 0.2, scaling 0.7–1.4 p 0.2; sampled from a larger
region so rotated corners still hold image), Gaussian noise (variance ≤ 0.1, p 0.1), Gaussian blur
(σ 0.5–1, p 0.2), multiplicative brightness (0.75–1.25, p 0.15), contrast (0.75–1.25 around the
mean, range preserved, p 0.15), low-resolution simulation (zoom 0.5–1, p 0.25), gamma on the
inverted image (0.7–1.5, p 0.1) and on the image (0.7–1.5, p 0.3), both keeping mean/std, and
mirroring along every axis (p 0.5 each).  :class:`NNUNetAugmenter` applies the same list with
MONAI's ``Affine``, ``RandGaussianNoise``, ``RandGaussianSmooth``, ``RandScaleIntensity``,
``RandScaleIntensityFixedMean``, ``RandSimulateLowResolution`` and ``RandAdjustContrast``.

* Strongly anisotropic spacing (coarsest / finest > 3): rotation only about the coarse axis, as
  nnU-Net's 2D-style augmentation of such data.
* ``mirror=False`` (datasets with left/right labels): no mirroring.
* Labels follow the spatial transform with nearest-neighbour sampling; voxels that come from
  outside the sampled region get the ignore label, so they never reach the loss.
* Every random draw comes from the sampler's generator (MONAI transforms are re-seeded from it),
  so a training run is reproducible.

:class:`AugmentedRegionSampler` is :class:`~segmentation.training.RegionSampler` drawing the
enlarged region (:func:`sampling_extent`, like nnU-Net's ``initial_patch_size``) and handing each
patch to the augmenter.  Cost: one affine resampling of a network patch when a spatial transform is
drawn (≈ 36 % of samples) and a few element-wise passes otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .training import RegionSampler


@dataclass(frozen=True)
class AugmentConfig:
    p_rotation: float = 0.2
    max_rotation_deg: float = 30.0
    p_scale: float = 0.2
    scale: tuple = (0.7, 1.4)
    p_noise: float = 0.1
    noise_variance: float = 0.1
    p_blur: float = 0.2
    blur_sigma: tuple = (0.5, 1.0)
    p_brightness: float = 0.15
    brightness: tuple = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple = (0.75, 1.25)
    p_lowres: float = 0.25
    lowres_zoom: tuple = (0.5, 1.0)
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma: tuple = (0.7, 1.5)
    p_mirror: float = 0.5


def _rotation(angles) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rotation_axes(spacing: Sequence[float]) -> list[int]:
    """Axes about which patches may rotate: all three, or only the coarse axis of anisotropic data."""
    sp = np.asarray(spacing, dtype=float)
    if sp.max() / sp.min() > 3:
        return [int(np.argmax(sp))]
    return [0, 1, 2]


def sampling_extent(patch: Sequence[int], spacing: Sequence[float], cfg: AugmentConfig = AugmentConfig()) -> tuple:
    """Size of the region to draw before the spatial transform (nnU-Net's ``initial_patch_size``):
    the bounding box of the patch rotated by the largest angle about the allowed axes, times the
    scale nnU-Net budgets for (1.25; larger zooms sample padding, which carries the ignore label)."""
    p = np.asarray(patch, dtype=float)
    corners = np.array(np.meshgrid(*[[-v / 2, v / 2] for v in p], indexing="ij")).reshape(3, -1)
    a = np.deg2rad(cfg.max_rotation_deg)
    ext = np.abs(corners).max(1)
    for ax in rotation_axes(spacing):
        for sign in (-1, 1):
            ang = [0.0, 0.0, 0.0]
            ang[ax] = sign * a
            ext = np.maximum(ext, np.abs(_rotation(ang) @ corners).max(1))
    out = np.ceil(2 * ext * min(1.25, cfg.scale[1]))
    return tuple(int(max(v, q)) for v, q in zip(out, patch))


class NNUNetAugmenter:
    def __init__(self, patch: Sequence[int], spacing: Sequence[float], ignore: int, rng: np.random.Generator,
                 mirror: bool = True, cfg: AugmentConfig = AugmentConfig()):
        import monai.transforms as T
        self.patch = tuple(int(v) for v in patch)
        self.ignore, self.rng, self.mirror, self.cfg = int(ignore), rng, bool(mirror), cfg
        self.rot_axes = rotation_axes(spacing)
        sd = float(np.sqrt(cfg.noise_variance))
        self.intensity = [
            T.RandGaussianNoise(prob=cfg.p_noise, mean=0.0, std=sd),
            T.RandGaussianSmooth(sigma_x=cfg.blur_sigma, sigma_y=cfg.blur_sigma, sigma_z=cfg.blur_sigma, prob=cfg.p_blur),
            T.RandScaleIntensity(factors=(cfg.brightness[0] - 1, cfg.brightness[1] - 1), prob=cfg.p_brightness),
            T.RandScaleIntensityFixedMean(prob=cfg.p_contrast, factors=(cfg.contrast[0] - 1, cfg.contrast[1] - 1),
                                          preserve_range=True),
            T.RandSimulateLowResolution(prob=cfg.p_lowres, zoom_range=cfg.lowres_zoom),
            T.RandAdjustContrast(prob=cfg.p_gamma_inverted, gamma=cfg.gamma, invert_image=True, retain_stats=True),
            T.RandAdjustContrast(prob=cfg.p_gamma, gamma=cfg.gamma, invert_image=False, retain_stats=True),
        ]
        for t in self.intensity:
            t.set_random_state(seed=int(rng.integers(2 ** 31)))

    def _spatial(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rotate/scale about the region centre and cut the network patch (or just cut it)."""
        cfg, rng = self.cfg, self.rng
        angles = [0.0, 0.0, 0.0]
        do_rot = rng.random() < cfg.p_rotation
        do_scale = rng.random() < cfg.p_scale
        if do_rot:
            a = np.deg2rad(cfg.max_rotation_deg)
            for ax in self.rot_axes:
                angles[ax] = float(rng.uniform(-a, a))
        scale = float(rng.uniform(*cfg.scale)) if do_scale else 1.0
        if not (do_rot or do_scale):
            o = [(s - p) // 2 for s, p in zip(y.shape, self.patch)]
            sl = tuple(slice(a, a + p) for a, p in zip(o, self.patch))
            return x[(slice(None), *sl)], y[sl]
        from monai.transforms import Affine
        kw = dict(rotate_params=angles, scale_params=[scale] * 3, spatial_size=self.patch, padding_mode="zeros",
                  image_only=True)
        xt = Affine(mode="bilinear", **kw)(torch.from_numpy(np.ascontiguousarray(x)))
        # labels shifted by +1 so the zero padding marks "outside the region" → ignore
        yt = Affine(mode="nearest", **kw)(torch.from_numpy(y.astype(np.float32) + 1)[None])[0]
        yn = np.rint(np.asarray(yt)).astype(np.int64) - 1
        yn[yn < 0] = self.ignore
        return np.asarray(xt, dtype=np.float32), yn

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x [channels, *region]`` float32, ``y [*region]`` int → patch-sized, augmented pair."""
        x, y = self._spatial(x, y)
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        for t in self.intensity:
            xt = t(xt)
        x = np.asarray(xt, dtype=np.float32)
        if self.mirror:
            for ax in np.flatnonzero(self.rng.random(3) < self.cfg.p_mirror):
                x, y = np.flip(x, ax + 1), np.flip(y, ax)
        return np.ascontiguousarray(x), np.ascontiguousarray(y)


class AugmentedRegionSampler(RegionSampler):
    """Region sampling (annotated voxel uniformly inside the drawn region, a third of each batch
    centred on a foreground class) over the enlarged region, then nnU-Net's augmentation."""

    def __init__(self, images, labels, patch, n_classes: int, ignore: int, rng: np.random.Generator,
                 spacing, oversample_fg: float = 0.33, mirror: bool = True, cfg: AugmentConfig = AugmentConfig()):
        self.final_patch = tuple(int(v) for v in patch)
        extent = sampling_extent(self.final_patch, spacing, cfg)
        super().__init__(images, labels, extent, n_classes, ignore, rng, oversample_fg, mirror=False)
        self.augmenter = NNUNetAugmenter(self.final_patch, spacing, ignore, rng, mirror=mirror, cfg=cfg)

    def _origin(self, i: int, force_fg: bool) -> np.ndarray:
        """As the parent, but the annotated voxel lands uniformly inside the central network patch
        of the drawn region (so the augmented patch keeps it unless the image border intervenes)."""
        if force_fg and self.by_class[i]:
            return super()._origin(i, True)
        shape = np.asarray(self.labels[i].shape)
        locs = self.annotated[i]
        v = np.asarray(np.unravel_index(int(locs[self.rng.integers(len(locs))]), shape))
        fp = np.asarray(self.final_patch)
        origin = v - self.rng.integers(0, fp) - (self.patch - fp) // 2
        return np.clip(origin, 0, shape - self.patch)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().batch(batch_size)
        xs, ys = [], []
        for b in range(batch_size):  # a loop over batch elements, not voxels
            xb, yb = self.augmenter(x[b].numpy(), y[b].numpy())
            xs.append(xb)
            ys.append(yb)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.int64))
