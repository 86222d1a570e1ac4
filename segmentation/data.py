"""nnU-Net raw / Medical Segmentation Decathlon datasets: validate, split, resample, cache.

Layout read (both flavours)::

    ROOT/dataset.json   "labels" ({"0": "background", ...} MSD style or {"background": 0, ...} v2 style),
                        "modality" (MSD) or "channel_names" (v2), optional "training" list (MSD)
    ROOT/imagesTr/      MSD: one (3D or 4D, channels last) NIfTI per case, named in "training";
                        v2:  CASE_0000.nii.gz, CASE_0001.nii.gz, ... one file per channel
    ROOT/labelsTr/      CASE.nii.gz, integer labels 0..C

Preparation (:func:`prepare`) validates every case *before* anything is written — missing labels,
image/label shape or affine mismatches, label values that are not classes of dataset.json, wrong
channel counts: one ``UserError`` naming the file — then splits the cases 75/25 into train+pool
and test with a fixed split seed, takes the median train+pool spacing as target spacing (the nnU-Net
fingerprint is computed on train+pool only), resamples images (cubic) and labels (nearest) to it,
normalises intensities — CT channels with the nnU-Net CT scheme (clip to the 0.5/99.5 percentiles
of the train+pool foreground, z-score with its mean/std), every other channel per image — and caches
the result as ``.npy`` files, memory-mapped on load (volumes are never all held in RAM), in a folder
keyed by a hash of the raw files, written to a temporary folder and renamed into place only when
complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import UserError
from core.store import atomic_write_json

CACHE_VERSION = 3
SPLIT_SEED = 12345  # nnActive's RANDOM_SEED: the split is fixed across experiment seeds


# ---------------------------------------------------------------------------------------------
# dataset.json and file discovery
# ---------------------------------------------------------------------------------------------

@dataclass
class RawCase:
    name: str
    images: list[Path]  # one 3D/4D file (MSD) or one file per channel (v2)
    label: Path


@dataclass
class RawDataset:
    root: Path
    name: str
    class_names: list[str]      # index = label value, 0 = background
    channel_names: list[str]
    cases: list[RawCase]
    meta_bytes: bytes

    @property
    def n_classes(self) -> int:
        """Number of foreground classes C (labels are 0..C)."""
        return len(self.class_names) - 1


def _rel(root: Path, p: Path) -> str:
    try:
        return str(Path(p).relative_to(root))
    except ValueError:
        return str(p)


def read_dataset(root) -> RawDataset:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: missing (expected the nnU-Net raw / MSD layout: dataset.json, imagesTr/, labelsTr/)")
    raw = meta_path.read_bytes()
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"{meta_path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), dict) or not meta["labels"]:
        raise UserError(f"{meta_path}: needs a non-empty \"labels\" mapping")
    class_names = _parse_labels(meta["labels"], meta_path)
    chans = meta.get("channel_names", meta.get("modality", {"0": "image"}))
    if not isinstance(chans, dict) or not chans:
        raise UserError(f"{meta_path}: \"channel_names\"/\"modality\" must be a non-empty mapping")
    try:
        channel_names = [str(chans[k]) for k in sorted(chans, key=lambda k: int(k))]
    except ValueError:
        raise UserError(f"{meta_path}: channel keys must be integers (\"0\", \"1\", ...)") from None
    for d in ("imagesTr", "labelsTr"):
        if not (root / d).is_dir():
            raise UserError(f"{root / d}: missing folder")
    if isinstance(meta.get("training"), list) and meta["training"]:
        cases = _cases_msd(root, meta["training"], meta_path)
    else:
        cases = _cases_v2(root, meta.get("file_ending", ".nii.gz"), len(channel_names))
    if len(cases) < 2:
        raise UserError(f"{root}: needs at least 2 labelled training cases, found {len(cases)}")
    name = str(meta.get("name") or root.name)
    return RawDataset(root, name, class_names, channel_names, cases, raw)


def _parse_labels(labels: dict, where: Path) -> list[str]:
    pairs = {}
    for k, v in labels.items():
        if isinstance(v, (list, dict)):
            raise UserError(f"{where}: region-based labels ({k!r}) are not supported")
        if str(k).lstrip("-").isdigit() and not (isinstance(v, int) or str(v).lstrip("-").isdigit()):
            val, nm = int(k), str(v)          # MSD: {"0": "background"}
        elif isinstance(v, int) or str(v).isdigit():
            val, nm = int(v), str(k)          # v2: {"background": 0}
        else:
            raise UserError(f"{where}: cannot read label entry {k!r}: {v!r}")
        if nm.lower() == "ignore":
            raise UserError(f"{where}: declares an 'ignore' label; give fully annotated raw data (the ignore label is added internally)")
        if val in pairs:
            raise UserError(f"{where}: label value {val} declared twice")
        pairs[val] = nm
    vals = sorted(pairs)
    if vals != list(range(len(vals))) or len(vals) < 2:
        raise UserError(f"{where}: labels must be consecutive 0..C with C >= 1 (got {vals})")
    return [pairs[v] for v in vals]


def _cases_msd(root: Path, training: list, where: Path) -> list[RawCase]:
    out, seen = [], set()
    for i, e in enumerate(training):
        if not isinstance(e, dict) or "image" not in e:
            raise UserError(f"{where}: training entry {i} needs \"image\" and \"label\"")
        img = (root / str(e["image"])).resolve()
        if "label" not in e:
            raise UserError(f"{_rel(root, img)}: no label declared in dataset.json")
        lab = (root / str(e["label"])).resolve()
        name = _strip_ext(img.name)
        if name in seen:
            raise UserError(f"{where}: case {name} listed twice")
        seen.add(name)
        if not img.is_file():
            raise UserError(f"{_rel(root.resolve(), img)}: image file missing")
        if not lab.is_file():
            raise UserError(f"{_rel(root.resolve(), lab)}: label file missing for image {_rel(root.resolve(), img)}")
        out.append(RawCase(name, [img], lab))
    return out


def _strip_ext(name: str) -> str:
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".nhdr"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _cases_v2(root: Path, fe: str, n_ch: int) -> list[RawCase]:
    imgs = sorted(p for p in (root / "imagesTr").iterdir() if p.name.endswith(f"_0000{fe}") and not p.name.startswith("."))
    labs = {p.name[: -len(fe)]: p for p in (root / "labelsTr").iterdir()
            if p.name.endswith(fe) and not p.name.startswith(".")}
    out = []
    for p in imgs:
        case = p.name[: -len(f"_0000{fe}")]
        files = [root / "imagesTr" / f"{case}_{c:04d}{fe}" for c in range(n_ch)]
        for f in files:
            if not f.is_file():
                raise UserError(f"{_rel(root, f)}: channel file missing ({n_ch} channels declared)")
        if case not in labs:
            raise UserError(f"{_rel(root, p)}: no label file (expected labelsTr/{case}{fe})")
        out.append(RawCase(case, files, labs.pop(case)))
    for case, p in sorted(labs.items()):
        raise UserError(f"{_rel(root, p)}: label without image (expected imagesTr/{case}_0000{fe})")
    return out


# ---------------------------------------------------------------------------------------------
# reading and checking one case
# ---------------------------------------------------------------------------------------------

def _nib_load(path: Path, root: Path):
    import nibabel as nib
    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises many kinds for a bad file
        raise UserError(f"{_rel(root, path)}: cannot read NIfTI ({e.__class__.__name__}: {str(e)[:80]})") from None


@dataclass
class CaseHeader:
    shape: tuple
    spacing: tuple
    n_channels: int


def check_header(ds: RawDataset, case: RawCase) -> CaseHeader:
    """Shapes, affines and channel counts of one case (headers only)."""
    root = ds.root.resolve()
    lab = _nib_load(case.label, root)
    if len(lab.shape) != 3 and not (len(lab.shape) == 4 and lab.shape[3] == 1):
        raise UserError(f"{_rel(root, case.label)}: label must be a 3D volume, has shape {tuple(lab.shape)}")
    lshape = tuple(int(v) for v in lab.shape[:3])
    n_ch = 0
    for f in case.images:
        im = _nib_load(f, root)
        if tuple(int(v) for v in im.shape[:3]) != lshape:
            raise UserError(f"{_rel(root, case.label)}: shape {lshape} does not match image "
                            f"{_rel(root, f)} {tuple(int(v) for v in im.shape[:3])}")
        if not np.allclose(im.affine, lab.affine, rtol=1e-4, atol=1e-3):
            raise UserError(f"{_rel(root, case.label)}: affine differs from image {_rel(root, f)} "
                            f"(spacing {np.round(im.header.get_zooms()[:3], 4).tolist()} vs "
                            f"{np.round(lab.header.get_zooms()[:3], 4).tolist()}, or origin/orientation)")
        n_ch += int(im.shape[3]) if len(im.shape) == 4 else 1
    if n_ch != len(ds.channel_names):
        raise UserError(f"{_rel(root, case.images[0])}: has {n_ch} channel(s), dataset.json declares {len(ds.channel_names)}")
    spacing = tuple(float(abs(v)) for v in lab.header.get_zooms()[:3])
    if min(spacing) <= 0:
        raise UserError(f"{_rel(root, case.label)}: non-positive voxel spacing {spacing}")
    return CaseHeader(lshape, spacing, n_ch)


def load_label(ds: RawDataset, case: RawCase) -> np.ndarray:
    root = ds.root.resolve()
    arr = np.asanyarray(_nib_load(case.label, root).dataobj)
    arr = arr.reshape(arr.shape[:3])
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise UserError(f"{_rel(root, case.label)}: label values must be integers")
    vals = np.unique(arr)
    bad = [int(v) for v in vals if v < 0 or v > ds.n_classes]
    if bad:
        raise UserError(f"{_rel(root, case.label)}: label values {bad[:5]} are not classes of dataset.json (0..{ds.n_classes})")
    return arr.astype(np.uint8 if ds.n_classes < 255 else np.int16)


def load_image(ds: RawDataset, case: RawCase) -> np.ndarray:
    """``[channels, X, Y, Z]`` float32."""
    root = ds.root.resolve()
    chans = []
    for f in case.images:
        arr = np.asanyarray(_nib_load(f, root).dataobj).astype(np.float32)
        if arr.ndim == 4:
            chans.extend(np.moveaxis(arr, 3, 0))
        else:
            chans.append(arr)
    out = np.stack(chans, 0)
    if not np.all(np.isfinite(out)):
        raise UserError(f"{_rel(root, case.images[0])}: image contains NaN/inf")
    return out


# ---------------------------------------------------------------------------------------------
# split, resampling, fingerprint
# ---------------------------------------------------------------------------------------------

def split_cases(n: int, test_fraction: float = 0.25, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train+pool, test) case indices, sorted; fixed by ``seed``."""
    if n < 2:
        raise UserError("need at least 2 cases to split into train+pool and test")
    n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
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

    @property
    def n_classes(self) -> int:
        return len(self.class_names) - 1

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    def image(self, i: int) -> np.ndarray:
        """Normalised ``[channels, X, Y, Z]`` float32 of case ``i`` (read-only memory map)."""
        return np.load(self.cache_dir / f"{self.cases[i]}_img.npy", mmap_mode="r")

    def label(self, i: int) -> np.ndarray:
        return np.load(self.cache_dir / f"{self.cases[i]}_seg.npy", mmap_mode="r")

    def fingerprint(self) -> dict:
        shapes = np.asarray([self.shapes[i] for i in self.train])
        return {"spacing": list(self.spacing), "median_shape": np.median(shapes, 0).astype(int).tolist(),
                "n_train": int(len(self.train)), "n_test": int(len(self.test))}


def _dataset_hash(ds: RawDataset, split_seed: int, version: int | None = CACHE_VERSION) -> str:
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
    ds = read_dataset(root)
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
    spacing = tuple(float(v) for v in np.median([headers[i].spacing for i in train], 0))

    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_root, prefix=f".{safe}-tmp-"))
    try:
        shapes, bboxes, ct_samples = [], {}, {c: [] for c, n in enumerate(ds.channel_names) if n.upper() == "CT"}
        train_set = set(train.tolist())
        rng = np.random.default_rng(0)
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
                    "cases": [c.name for c in ds.cases], "label_files": [_rel(ds.root.resolve(), c.label) for c in ds.cases],
                    "train": train.tolist(), "test": test.tolist(), "split_seed": split_seed,
                    "spacing": list(spacing), "original_spacings": [list(h.spacing) for h in headers],
                    "shapes": [list(s) for s in shapes], "norm": norm,
                    "lcc_bbox": {str(k): v for k, v in bboxes.items()},
                    "data_key": _dataset_hash(ds, split_seed, version=None)}
        atomic_write_json(tmp / "manifest.json", manifest)
        if final.exists():  # a concurrent preparation won the race
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load_manifest(final, ds)


def _load_manifest(folder: Path, ds: RawDataset) -> Prepared:
    try:
        m = json.loads((folder / "manifest.json").read_text())
        return Prepared(name=m["name"], root=Path(m["root"]), cache_dir=folder, class_names=m["class_names"],
                        channel_names=m["channel_names"], cases=m["cases"], label_files=m["label_files"],
                        train=np.asarray(m["train"], dtype=np.int64), test=np.asarray(m["test"], dtype=np.int64),
                        spacing=tuple(m["spacing"]), shapes=[tuple(s) for s in m["shapes"]], norm=m["norm"],
                        lcc_bbox={int(k): np.asarray(v) for k, v in m["lcc_bbox"].items()}, data_key=m["data_key"])
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise UserError(f"{folder}: corrupt dataset cache ({e.__class__.__name__}); delete the folder to rebuild it") from None
