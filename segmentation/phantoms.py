"""Seeded multi-class 3D phantoms written in the Medical Segmentation Decathlon layout.

Each volume (default 48³, 1 mm isotropic) holds, inside a textured 'body' (background class):

* label 1 ``organ``  — a large, smoothly deformed ellipsoid (≈ 8–12 % of the volume);
* label 2 ``vessel`` — three to five short, thin bright tubes in the body (small, elongated);
* label 3 ``lesion`` — a small hypo-intense blob *inside* the organ (present in ~80 % of cases);
* distractors (background): bright spots with the vessels' intensity, so vessels need shape context.

Image formation: piecewise-constant intensities → Gaussian blur (partial volume) → multiplicative
smooth bias field → additive Gaussian noise.  Every random draw comes from
``core.seeds.rng(seed, "phantom", case)``, so a case does not depend on how many are generated.
The output is a real nnU-Net raw / MSD folder (``dataset.json``, ``imagesTr/``, ``labelsTr/`` with
NIfTI files), written and read back by ``segmentation.msd`` like any downloaded dataset.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from core import seeds
from core.errors import UserError
from core.store import clean_temp, exclusive

from .msd import NewCase, reuse_generated, write_layout

CLASS_NAMES = ["background", "organ", "vessel", "lesion"]
GENERATOR_VERSION = 2   # 2: draws from core.seeds (purpose "phantom")


def _smooth_field(rng, shape, sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return f / max(float(np.abs(f).max()), 1e-6)


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points ``p [..., 3]`` to the segment a–b."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def make_case(seed: int, case: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: (image float32 [S, S, S], label uint8 [S, S, S])."""
    rng = seeds.rng(seed, "phantom", case)
    S = int(size)
    grid = np.stack(np.meshgrid(*[np.arange(S, dtype=np.float32)] * 3, indexing="ij"), -1)
    centre = S / 2 + rng.uniform(-0.04, 0.04, 3) * S
    lab = np.zeros((S, S, S), dtype=np.uint8)

    # body (background tissue) — a big ellipsoid; outside it is 'air'
    body_r = S * rng.uniform(0.42, 0.48, 3)
    body = (((grid - S / 2) / body_r) ** 2).sum(-1) < 1.0

    # organ — deformed, rotated ellipsoid
    radii = S * np.array([rng.uniform(0.28, 0.34), rng.uniform(0.22, 0.28), rng.uniform(0.18, 0.24)])
    rot = _rotation(rng)
    local = (grid - centre) @ rot
    level = ((local / radii) ** 2).sum(-1) + 0.25 * _smooth_field(rng, (S, S, S), S / 8)
    organ = (level < 1.0) & body
    lab[organ] = 1

    # vessels — thin tubes through the body, avoiding the organ
    n_vessels = int(rng.integers(3, 6))
    vessel = np.zeros_like(organ)
    for _ in range(n_vessels):
        a = S / 2 + rng.uniform(-0.36, 0.36, 3) * S
        d = rng.standard_normal(3)
        b = a + d / np.linalg.norm(d) * S * rng.uniform(0.3, 0.5)
        r = rng.uniform(1.4, 2.2)
        vessel |= (_segment_distance(grid, a, b) < r) & body & ~organ
    lab[vessel] = 2

    # lesion — inside the organ (blob around an interior organ voxel)
    if rng.random() < 0.8:
        inner = np.argwhere(ndimage.binary_erosion(organ, iterations=4))
        if len(inner):
            c = inner[rng.integers(len(inner))].astype(np.float32)
            r = rng.uniform(2.5, 4.5)
            blob = (np.linalg.norm(grid - c, axis=-1) + 0.8 * _smooth_field(rng, (S, S, S), 3) < r) & organ
            lab[blob] = 3

    # distractors: vessel-bright spots in the body background
    spots = np.zeros_like(organ)
    for _ in range(int(rng.integers(2, 5))):
        c = S / 2 + rng.uniform(-0.38, 0.38, 3) * S
        spots |= np.linalg.norm(grid - c, axis=-1) < rng.uniform(1.5, 3.0)
    spots &= body & (lab == 0)

    img = np.zeros((S, S, S), dtype=np.float32)
    img[body] = 0.35 + 0.08 * _smooth_field(rng, (S, S, S), 2)[body]   # textured tissue
    img[lab == 1] = 1.0
    img[lab == 2] = 1.6
    img[lab == 3] = 0.62
    img[spots] = 1.55
    img = ndimage.gaussian_filter(img, 0.7)
    bias = np.exp(0.2 * _smooth_field(rng, (S, S, S), S / 3))
    img = img * bias + rng.normal(0.0, 0.12, img.shape).astype(np.float32)
    return img.astype(np.float32), lab


def write_phantoms(out, n: int = 24, size: int = 48, seed: int = 0, spacing=(1.0, 1.0, 1.0),
                   progress=None) -> Path:
    """Write ``n`` phantoms to ``out`` in the nnU-Net raw / MSD layout (``segmentation.msd`` writer).
    An existing folder written with the same parameters is reused; anything else there is refused.
    Written into a temporary folder and renamed into place, so a crash never leaves a half-written
    dataset."""
    out = Path(out)
    if n < 4 or size < 16:
        raise UserError("phantoms need n >= 4 cases and size >= 16 voxels")
    check_memory(size)
    generator = {"version": GENERATOR_VERSION, "n": n, "size": size, "seed": seed}
    if reuse_generated(out, generator, "phantoms"):   # refuses a folder holding something else
        return out
    # one writer per folder: a second process waits, then finds the finished folder and reuses it
    with exclusive(out.parent / f".{out.name}.lock", f"phantom folder {out}", wait=True):
        if reuse_generated(out, generator, "phantoms"):
            return out
        clean_temp(out.parent, prefix=f".{out.name}.tmp-")   # the temporary folder of a killed writer
        return _write(out, n, size, seed, spacing, generator, progress)


VOXEL_BYTES = 64   # peak memory per voxel of make_case (coordinate grid, distance maps, filters)


def check_memory(size: int) -> None:
    """Refuse a phantom size whose generation cannot fit into the available memory."""
    need = VOXEL_BYTES * int(size) ** 3
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not on Linux
        return
    if need > avail:
        raise UserError(f"phantoms of {size}³ voxels need about {need / 2 ** 30:.1f} GiB of memory, "
                        f"{avail / 2 ** 30:.1f} GiB are available; choose a smaller --size")


def _write(out: Path, n: int, size: int, seed: int, spacing, generator: dict, progress) -> Path:
    def cases():
        for i in range(n):
            img, lab = make_case(seed, i, size)
            yield NewCase(f"phantom_{i:03d}", [img], [lab])
    meta = {"description": f"synthetic multi-class 3D phantoms (realistic-al generator v{GENERATOR_VERSION}, "
                           f"seed {seed}, {n} cases of {size}^3)",
            "reference": "realistic-al segmentation.phantoms", "licence": "CC0", "release": "1.0",
            "tensorImageSize": "3D", "generator": generator}
    return write_layout(out, cases(), name="Phantoms", class_names=CLASS_NAMES, channel_names=["MRI"],
                        spacing=tuple(map(float, spacing)), meta=meta,
                        progress=(lambda i: progress(i, n)) if progress else None)
