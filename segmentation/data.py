"""nnU-Net raw / Medical Segmentation Decathlon datasets prepared for AL: validate, split, resample, cache.

The folder is read by ``segmentation.msd`` (the one MSD / nnU-Net reader; layouts and dataset.json
fields are documented there).  Preparation (:func:`prepare`) validates every case *before* anything
is written — missing labels, image/label shape or affine mismatches, label values that are not
classes of dataset.json, wrong channel counts: one ``UserError`` naming the file — then splits the
cases 75/25 into train+pool and test with a fixed split seed, takes the target spacing from the
train+pool spacings by nnU-Net's rule (median, anisotropy rule: :func:`segmentation.plans.target_spacing`;
the nnU-Net fingerprint is computed on train+pool only), resamples images (cubic)
and labels (nearest) to it, normalises intensities — CT channels with the nnU-Net CT scheme (clip
to the 0.5/99.5 percentiles of the train+pool foreground, z-score with its mean/std), every other
channel per image — and caches the result as ``.npy`` files, memory-mapped on load (volumes are
never all held in RAM), in a folder keyed by a hash of the raw files, written to a temporary
folder and renamed into place only when complete.

    data = prepare("/data/Task04_Hippocampus", "cache/")
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core import seeds
from core.errors import UserError
from core.store import atomic_dir, atomic_write_json, clean_temp, exclusive, undo_dirs

from .msd import Layout, check_header, load_image, load_label, read_layout, rel

CACHE_VERSION = 5   # 4: the split is drawn by core.seeds; 5: nnU-Net target-spacing rule (anisotropy)
SPLIT_SEED = 12345
MEM_LABEL_VOXELS = 300_000_000   # inspect() keeps the resampled train+pool labels in memory up to this size  # nnActive's RANDOM_SEED: the split is fixed across experiment seeds


# ---------------------------------------------------------------------------------------------
# split, resampling, fingerprint
# ---------------------------------------------------------------------------------------------

def split_cases(n: int, test_fraction: float = 0.25, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train+pool, test) case indices, sorted; fixed by ``seed``."""
    if n < 2:
        raise UserError("need at least 2 cases to split into train+pool and test")
    n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
    perm = seeds.rng(seed, "split").permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def resample(arr: np.ndarray, new_shape, order: int) -> np.ndarray:
    """Resample ``[C, X, Y, Z]`` (or ``[X, Y, Z]``) to ``new_shape`` (spatial)."""
    from scipy import ndimage
    new_shape = tuple(int(v) for v in new_shape)
    if tuple(arr.shape[-3:]) == new_shape:
        return arr
    zoom = [n / o for n, o in zip(new_shape, arr.shape[-3:])]
    if arr.ndim == 3:
        return ndimage.zoom(arr, zoom, order=order, mode="nearest", grid_mode=False)
    return np.stack([ndimage.zoom(c, zoom, order=order, mode="nearest", grid_mode=False) for c in arr])


def largest_component_bbox(label: np.ndarray, n_classes: int) -> np.ndarray:
    """``[C, 3]`` bounding-box size of the largest connected component of each foreground class
    (0 where the class is absent) — the statistic of the D.5 query-patch-size guideline."""
    from scipy import ndimage
    out = np.zeros((n_classes, 3), dtype=np.int64)
    for c in range(1, n_classes + 1):
        comp, n = ndimage.label(label == c)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        biggest = int(np.argmax(sizes)) + 1
        sl = ndimage.find_objects(comp, max_label=biggest)[biggest - 1]
        out[c - 1] = [s.stop - s.start for s in sl]
    return out


# ---------------------------------------------------------------------------------------------
# the prepared dataset
# ---------------------------------------------------------------------------------------------

@dataclass
class Prepared:
    name: str
    root: Path
    cache_dir: Path
    class_names: list[str]
    channel_names: list[str]
    cases: list[str]
    label_files: list[str]
    train: np.ndarray
    test: np.ndarray
    spacing: tuple
    shapes: list[tuple]
    norm: list[dict]
    lcc_bbox: dict = field(default_factory=dict)  # case index -> [C, 3]
    data_key: str = ""                             # hash of the raw files + split seed
    mirror: bool = True                            # mirroring in training (False: left/right labels)
    mirror_reason: str = ""
    test_mirror: bool = True                       # test-time mirroring allowed (plans.mirror_policy)
    mem_labels: dict | None = None                 # inspect(): resampled train+pool labels held in memory

    @property
    def n_classes(self) -> int:
        return len(self.class_names) - 1

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    def image(self, i: int) -> np.ndarray:
        """Normalised ``[channels, X, Y, Z]`` float32 of case ``i`` (read-only memory map)."""
        return self._cached(f"{self.cases[i]}_img.npy")

    def label(self, i: int) -> np.ndarray:
        if self.mem_labels is not None:
            return self.mem_labels[int(i)]
        return self._cached(f"{self.cases[i]}_seg.npy")

    def _cached(self, name: str) -> np.ndarray:
        try:
            return np.load(self.cache_dir / name, mmap_mode="r")
        except (OSError, ValueError, EOFError) as e:  # truncated / garbage cache file
            raise UserError(f"damaged dataset cache file {self.cache_dir / name} ({e.__class__.__name__}); "
                            f"delete the folder {self.cache_dir} to rebuild it") from None

    def fingerprint(self) -> dict:
        shapes = np.asarray([self.shapes[i] for i in self.train])
        return {"spacing": list(self.spacing), "median_shape": np.median(shapes, 0).astype(int).tolist(),
                "n_train": int(len(self.train)), "n_test": int(len(self.test))}


def _dataset_hash(ds: Layout, split_seed: int, version: int | None = CACHE_VERSION) -> str:
    """Hash of dataset.json, every file's name/size/mtime and the split seed (and the cache format
    version when given — the run configs use the hash without it)."""
    h = hashlib.sha256()
    h.update(ds.meta_bytes)
    h.update(f"v{version}|seed{split_seed}".encode())
    for c in ds.cases:
        for f in [*c.images, c.label]:
            st = os.stat(f)
            h.update(f"{c.name}|{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def prepare(root, cache_root, split_seed: int = SPLIT_SEED,
            progress: Callable[[str, int, int], None] | None = None) -> Prepared:
    """Validate, split, resample and cache an MSD / nnU-Net raw dataset (see module docstring)."""
    ds = read_layout(root)
    cache_root = Path(cache_root)
    key = _dataset_hash(ds, split_seed)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in ds.name)[:40]
    final = cache_root / f"{safe}-{key}"
    if (final / "manifest.json").is_file():
        return _load_manifest(final, ds)
    note = progress or (lambda what, i, n: None)

    # pass 0: headers of every case (cheap), so shape/affine errors come before any heavy work
    headers = []
    for i, c in enumerate(ds.cases):
        headers.append(check_header(ds, c))
        note("checking headers", i + 1, len(ds.cases))
    train, test = split_cases(len(ds.cases), seed=split_seed)
    from .plans import declared_mirror, target_spacing
    mirror_declared = declared_mirror(ds.meta, ds.root / "dataset.json")
    spacing = target_spacing([headers[i].spacing for i in train], [headers[i].shape for i in train])

    # one process builds a cache folder (others wait, then load it); temp folders of killed builds go; a
    # dataset refused while building (bad voxels) leaves no cache folder behind
    lock = cache_root / f".{safe}-{key}.lock"
    with undo_dirs(cache_root, lock), exclusive(lock, f"dataset cache {final}", wait=True):
        if not (final / "manifest.json").is_file():
            clean_temp(cache_root, prefix=f".{safe}-{key}.tmp-")
            with atomic_dir(final) as tmp:
                shapes, bboxes, ct_samples = [], {}, {c: [] for c, n in enumerate(ds.channel_names) if n.upper() == "CT"}
                train_set = set(train.tolist())
                rng = seeds.rng(0, "ct")
                for i, c in enumerate(ds.cases):
                    lab = load_label(ds, c)
                    img = load_image(ds, c)
                    new_shape = tuple(max(1, int(round(s * sp / tsp))) for s, sp, tsp in zip(headers[i].shape, headers[i].spacing, spacing))
                    img = resample(img, new_shape, order=3).astype(np.float32)
                    lab = resample(lab, new_shape, order=0)
                    np.save(tmp / f"{c.name}_img.npy", img)
                    np.save(tmp / f"{c.name}_seg.npy", lab)
                    shapes.append(new_shape)
                    if i in train_set:
                        bboxes[i] = largest_component_bbox(lab, ds.n_classes).tolist()
                        fg = lab > 0
                        for ch in ct_samples:
                            v = img[ch][fg]
                            if len(v) > 10000:
                                v = rng.choice(v, 10000, replace=False)
                            ct_samples[ch].append(v)
                    note("resampling", i + 1, len(ds.cases))
                norm = []  # pass 2: normalise the cached volumes in place
                for ch, nm in enumerate(ds.channel_names):
                    if ch in ct_samples and ct_samples[ch] and sum(len(v) for v in ct_samples[ch]):
                        v = np.concatenate(ct_samples[ch])
                        lo, hi = np.percentile(v, [0.5, 99.5])
                        vc = np.clip(v, lo, hi)
                        norm.append({"scheme": "ct", "lo": float(lo), "hi": float(hi), "mean": float(vc.mean()), "std": float(vc.std())})
                    else:
                        norm.append({"scheme": "zscore"})
                for c in ds.cases:
                    img = np.load(tmp / f"{c.name}_img.npy", mmap_mode="r+")
                    for ch, nrm in enumerate(norm):
                        x = np.asarray(img[ch], dtype=np.float32)
                        if nrm["scheme"] == "ct":
                            x = (np.clip(x, nrm["lo"], nrm["hi"]) - nrm["mean"]) / max(nrm["std"], 1e-8)
                        else:
                            x = (x - x.mean()) / max(float(x.std()), 1e-8)
                        img[ch] = x
                    img.flush()
                    del img
                manifest = {"version": CACHE_VERSION, "name": ds.name, "root": str(ds.root.resolve()),
                            "class_names": ds.class_names, "channel_names": ds.channel_names,
                            "cases": [c.name for c in ds.cases], "label_files": [rel(ds.root.resolve(), c.label) for c in ds.cases],
                            "train": train.tolist(), "test": test.tolist(), "split_seed": split_seed,
                            "spacing": list(spacing), "original_spacings": [list(h.spacing) for h in headers],
                            "shapes": [list(s) for s in shapes], "norm": norm,
                            "lcc_bbox": {str(k): v for k, v in bboxes.items()},
                            "data_key": _dataset_hash(ds, split_seed, version=None), "mirror_declared": mirror_declared}
                atomic_write_json(tmp / "manifest.json", manifest)
    return _load_manifest(final, ds)


def _load_manifest(folder: Path, ds: Layout) -> Prepared:
    try:
        m = json.loads((folder / "manifest.json").read_text())
        from .plans import match_setting, mirror_policy
        mirror, test_mirror, why = mirror_policy(m["class_names"], m.get("mirror_declared"), match_setting(m["name"]))
        return Prepared(name=m["name"], root=Path(m["root"]), cache_dir=folder, class_names=m["class_names"],
                        channel_names=m["channel_names"], cases=m["cases"], label_files=m["label_files"],
                        train=np.asarray(m["train"], dtype=np.int64), test=np.asarray(m["test"], dtype=np.int64),
                        spacing=tuple(m["spacing"]), shapes=[tuple(s) for s in m["shapes"]], norm=m["norm"],
                        lcc_bbox={int(k): np.asarray(v) for k, v in m["lcc_bbox"].items()}, data_key=m["data_key"],
                        mirror=mirror, mirror_reason=why, test_mirror=test_mirror)
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise UserError(f"{folder}: corrupt dataset cache ({e.__class__.__name__}); delete the folder to rebuild it") from None


def inspect(root, cache_root=None, split_seed: int = SPLIT_SEED) -> Prepared:
    """What :func:`prepare` would decide — split, target spacing, resampled shapes, the D.5
    statistic (largest-component bounding boxes of the train+pool labels, resampled), the mirroring
    policy — **without writing anything** (``--dry-run``): read from the cache when :func:`prepare`
    has built it, else computed in memory from the headers and the train+pool labels (images are not
    read).  The result's ``image``/``label`` are unusable (no cache folder)."""
    ds = read_layout(root)
    if cache_root is not None:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in ds.name)[:40]
        final = Path(cache_root) / f"{safe}-{_dataset_hash(ds, split_seed)}"
        if (final / "manifest.json").is_file():
            return _load_manifest(final, ds)
    headers = [check_header(ds, c) for c in ds.cases]
    train, test = split_cases(len(ds.cases), seed=split_seed)
    from .plans import declared_mirror, match_setting, mirror_policy, target_spacing
    declared = declared_mirror(ds.meta, ds.root / "dataset.json")
    spacing = target_spacing([headers[i].spacing for i in train], [headers[i].shape for i in train])
    shapes = [tuple(max(1, int(round(s * sp / tsp))) for s, sp, tsp in zip(h.shape, h.spacing, spacing)) for h in headers]
    labels = {int(i): resample(load_label(ds, ds.cases[int(i)]), shapes[int(i)], order=0) for i in train}
    bboxes = {i: largest_component_bbox(lab, ds.n_classes) for i, lab in labels.items()}
    if sum(lab.size for lab in labels.values()) > MEM_LABEL_VOXELS:
        labels = None   # too large to hold: the schedule check falls back to label-free fills
    mirror, test_mirror, why = mirror_policy(ds.class_names, declared, match_setting(ds.name))
    return Prepared(name=ds.name, root=ds.root, cache_dir=Path("/nonexistent-dry-run"), class_names=ds.class_names,
                    channel_names=ds.channel_names, cases=[c.name for c in ds.cases],
                    label_files=[rel(ds.root.resolve(), c.label) for c in ds.cases], train=train, test=test,
                    spacing=tuple(spacing), shapes=shapes, norm=[], lcc_bbox=bboxes,
                    data_key=_dataset_hash(ds, split_seed, version=None), mirror=mirror, mirror_reason=why,
                    test_mirror=test_mirror, mem_labels=labels)
