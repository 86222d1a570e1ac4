"""Roll-out datasets (spec §4, A.3.6): ISIC-2019, MIO-TCD and any ImageFolder layout (``folder:PATH``).

Layouts read (one-line ``UserError`` when something is missing):

* ``isic2019`` — ``DIR/ISIC_2019_Training_GroundTruth.csv`` (the challenge's one-hot CSV: ``image``,
  MEL, NV, BCC, AK, BKL, DF, VASC, SCC[, UNK]) and ``DIR/ISIC_2019_Training_Input/<image>.jpg``;
  8 classes, UNK rows dropped; the official set holds 25 331 images (recorded in ``info``).
* ``miotcd`` — the MIO-TCD classification set, ``DIR/train/<class>/*.jpg`` (or ``DIR/<class>/*.jpg``),
  11 classes (the public test part has no labels, so the train part is split 60/15/25).
* ``folder:PATH`` — ``PATH/<class>/*.{jpg,png,...}``; when ``PATH/train/`` and ``PATH/test/`` exist,
  the official test folder is the test split and ``train/`` is split 80/20 into train/val.

Splits: stratified 60/15/25 train/val/test; the test split is drawn with a fixed seed (identical for
every run seed), the validation split per seed.  Images are decoded once (PIL, JPEG draft mode,
threads) into ``uint8 [N, 3, S, S]`` at the *test-time view* (ISIC: Resize((S, S)); MIO/folder:
Resize(S·256/224) of the shorter side + CenterCrop(S)), optionally through a resumable on-disk cache
(``cache_dir``: a ``.npy`` memmap + filled mask, written atomically chunk by chunk).  Only the ids a
run needs are decoded (``max_train``/``max_val``/``max_test`` caps → stratified subsets first).

Their A.3.6 training transforms are in ``classification.augment`` (families ``isic`` and
``imagenet``).  Normalisation: ImageNet mean/std.  Metric: balanced accuracy (``imbalanced=True``).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core import seeds
from core.errors import UserError
from core.store import atomic_write, clean_temp, exclusive, undo_dirs

from .data import ImageData, Splits, subsample

ISIC_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
ISIC_TOTAL = 25_331
ISIC_CSV = "ISIC_2019_Training_GroundTruth.csv"
ISIC_DIR = "ISIC_2019_Training_Input"
MIO_CLASSES = ("articulated_truck", "background", "bicycle", "bus", "car", "motorcycle", "non-motorized_vehicle",
               "pedestrian", "pickup_truck", "single_unit_truck", "work_van")
MIO_TOTAL = 519_164
IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
FRACTIONS = (0.60, 0.15, 0.25)        # train (pool), val, test
TEST_SEED = seeds.derive(0, "test")   # the fixed test split of every run seed


@dataclass
class FileList:
    paths: list            # list[Path]
    targets: np.ndarray
    classes: tuple
    view: str              # "isic" (squash resize) | "imagenet" (shorter side + centre crop)


# ----------------------------------------------------------------------------- listing

def list_isic(root: Path) -> FileList:
    root = Path(root)
    csv, img_dir = root / ISIC_CSV, root / ISIC_DIR
    if not csv.is_file():
        raise UserError(f"ISIC-2019 not found: expected {csv} (the challenge's training ground-truth CSV) in --data-dir")
    if not img_dir.is_dir():
        raise UserError(f"ISIC-2019 images not found: expected the folder {img_dir}/ with <image>.jpg files")
    import pandas as pd
    try:
        df = pd.read_csv(csv)
    except Exception as e:  # noqa: BLE001 (pandas raises many types on malformed files)
        raise UserError(f"cannot read {csv}: {e.__class__.__name__}") from None
    missing = [c for c in ("image",) + ISIC_CLASSES if c not in df.columns]
    if missing:
        raise UserError(f"{csv} lacks the column(s) {', '.join(missing)}; is it the ISIC-2019 training ground truth?")
    if "UNK" in df.columns:
        df = df[df["UNK"] < 0.5]
    onehot = df[list(ISIC_CLASSES)].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.abs(onehot.sum(1) - 1) > 1e-6)
    if len(bad):
        raise UserError(f"{csv}: row for {df['image'].iloc[bad[0]]} is not one-hot over {', '.join(ISIC_CLASSES)}")
    paths = [img_dir / f"{name}.jpg" for name in df["image"].astype(str)]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise UserError(f"{len(absent)} image(s) listed in {csv.name} are missing, e.g. {absent[0]}")
    return FileList(paths, onehot.argmax(1).astype(np.int64), ISIC_CLASSES, "isic")


def _class_folders(root: Path, what: str) -> tuple[list, np.ndarray, tuple]:
    try:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as e:
        raise UserError(f"{what}: cannot list {root} ({e.strerror or e.__class__.__name__})") from None
    if not classes:
        raise UserError(f"{what}: {root} has no class folders (expected {root}/<class>/<image>.jpg)")
    paths, targets = [], []
    for c, name in enumerate(classes):
        try:
            files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMG_EXT and p.is_file())
        except OSError as e:
            raise UserError(f"{what}: cannot list {root / name} ({e.strerror or e.__class__.__name__})") from None
        if not files:  # an empty folder would silently become an extra class (and change C, the budgets, ...)
            raise UserError(f"{what}: class folder {root / name} holds no images ({'/'.join(IMG_EXT)}); "
                            "remove it or add its images")
        paths += files
        targets += [c] * len(files)
    if len(classes) < 2:
        raise UserError(f"{what}: {root} has a single class folder ({classes[0]}); classification needs >= 2 classes")
    return paths, np.asarray(targets, dtype=np.int64), tuple(classes)


def list_miotcd(root: Path) -> FileList:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"MIO-TCD not found: {root} is not a folder (expected {root}/train/<class>/*.jpg)")
    base = root / "train" if (root / "train").is_dir() else root
    present = {d.name for d in base.iterdir() if d.is_dir()}
    unknown = sorted(present - set(MIO_CLASSES) - {"test"})
    if not present & set(MIO_CLASSES) or unknown:
        raise UserError(f"MIO-TCD: {base} should hold the 11 class folders ({', '.join(MIO_CLASSES)})"
                        + (f"; unexpected folder(s): {', '.join(unknown[:3])}" if unknown else ""))
    paths, targets = [], []
    for c, name in enumerate(MIO_CLASSES):
        d = base / name
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMG_EXT) if d.is_dir() else []
        paths += files
        targets += [c] * len(files)
    if not paths:
        raise UserError(f"MIO-TCD: no images in the class folders of {base}")
    return FileList(paths, np.asarray(targets, dtype=np.int64), MIO_CLASSES, "imagenet")


def list_folder(root: Path) -> tuple[FileList, FileList | None]:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"folder dataset: {root} is not a folder (expected {root}/<class>/<image>.jpg)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        p, t, classes = _class_folders(root / "train", "folder dataset")
        tp, tt, tclasses = _class_folders(root / "test", "folder dataset")
        extra = sorted(set(tclasses) - set(classes))
        if extra:
            raise UserError(f"folder dataset: test class folder(s) {', '.join(extra[:3])} are not in {root / 'train'}")
        remap = np.asarray([classes.index(c) for c in tclasses])
        return FileList(p, t, classes, "imagenet"), FileList(tp, remap[tt], classes, "imagenet")
    p, t, classes = _class_folders(root, "folder dataset")
    return FileList(p, t, classes, "imagenet"), None


# ----------------------------------------------------------------------------- splits

def _stratified_split(ids: np.ndarray, targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, part) with |part| ≈ fraction·|ids|, stratified by class where every class allows it."""
    from sklearn.model_selection import train_test_split
    y = targets[ids]
    counts = np.bincount(y)
    strat = y if counts[counts > 0].min() >= 2 else None
    try:
        rest, part = train_test_split(ids, test_size=fraction, stratify=strat, random_state=int(seed) % (2 ** 32))
    except ValueError:  # too few samples of some class for the requested fraction
        rest, part = train_test_split(ids, test_size=fraction, stratify=None, random_state=int(seed) % (2 ** 32))
    return np.sort(rest), np.sort(part)


def split_rollout(targets: np.ndarray, seed: int, has_official_test: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) ids: 60/15/25 stratified; the test part uses a fixed seed (same for every run
    seed); with an official test split only train/val are drawn (80/20)."""
    ids = np.arange(len(targets))
    if has_official_test:
        test = np.zeros(0, dtype=np.int64)
        rest = ids
    else:
        rest, test = _stratified_split(ids, targets, FRACTIONS[2], TEST_SEED)
    train, val = _stratified_split(rest, targets, FRACTIONS[1] / (FRACTIONS[0] + FRACTIONS[1]), seeds.derive(seed, "split"))
    return train, val, test


# ----------------------------------------------------------------------------- decoding

def _decode_one(path: Path, size: int, view: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            if view == "isic":
                im.draft("RGB", (size, size))
                im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            else:  # Resize(shorter side → size·256/224) + CenterCrop(size)
                short = int(round(size * 256 / 224))
                im.draft("RGB", (short, short))
                im = im.convert("RGB")
                w, h = im.size
                s = short / min(w, h)
                nw, nh = max(short, int(round(w * s))), max(short, int(round(h * s)))
                im = im.resize((nw, nh), Image.BILINEAR)
                left, top = int(round((nw - size) / 2)), int(round((nh - size) / 2))
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except Image.DecompressionBombError as e:  # Pillow's own guard against absurd header sizes
        raise UserError(f"image {path} is too large to decode safely ({str(e).split(' could')[0]}); "
                        "is it a real image?") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read image {path} ({e.__class__.__name__}: {str(e)[:80]})") from None


def _fingerprint(files: FileList, size: int) -> str:
    h = hashlib.sha1(f"{size}|{files.view}|{len(files.paths)}".encode())
    for p in files.paths:
        h.update(str(p).encode())
        h.update(b"\0")
    h.update(files.targets.tobytes())
    return h.hexdigest()[:16]


def decode(files: FileList, ids: np.ndarray, size: int, cache_dir: str | Path | None = None, workers: int = 2,
           chunk: int = 256, progress: Callable[[str], None] | None = None, name: str = "images") -> torch.Tensor:
    """uint8 ``[len(ids), 3, size, size]`` for ``files.paths[ids]``; with ``cache_dir`` decoded images
    are kept in a memmap (``<name>-<size>-<hash>.npy`` + ``.filled.npy``) and reused / resumed."""
    ids = np.asarray(ids, dtype=np.int64)
    if cache_dir is None:
        return _decode(files, ids, size, None, None, None, workers, chunk, progress, name)
    cache_dir = Path(cache_dir)
    stem = cache_dir / f"{name.replace(':', '_').replace('/', '_')}-{size}-{_fingerprint(files, size)}"
    # one process fills a cache file at a time (others wait, then reuse it); temp files of killed writes go
    with exclusive(cache_dir / f".{stem.name}.lock", f"image cache {stem}", wait=True):
        clean_temp(cache_dir, prefix=f".{stem.name}")
        return _decode(files, ids, size, *_open_cache(stem, (len(files.paths), 3, size, size)),
                       workers, chunk, progress, name)


def _open_cache(stem: Path, shape: tuple) -> tuple:
    """(memmap, filled mask, mask path) of an image cache; a cache a killed process left unreadable
    (e.g. a header without data) is started afresh — the mask says which images are valid."""
    data_path, mask_path = stem.with_suffix(".npy"), Path(str(stem) + ".filled.npy")
    store = filled = None
    if data_path.exists():
        try:
            store = np.load(data_path, mmap_mode="r+")
            filled = np.load(mask_path) if mask_path.exists() else np.zeros(shape[0], dtype=bool)
            if store.shape != shape or store.dtype != np.uint8 or filled.shape != (shape[0],) or filled.dtype != bool:
                raise ValueError("unexpected shape")
        except (OSError, ValueError, EOFError):
            store = filled = None
            mask_path.unlink(missing_ok=True)
    if store is None:
        store = np.lib.format.open_memmap(data_path, mode="w+", dtype=np.uint8, shape=shape)
        filled = np.zeros(shape[0], dtype=bool)
    return store, filled, mask_path


def _decode(files: FileList, ids: np.ndarray, size: int, store, filled, mask_path, workers, chunk, progress,
            name) -> torch.Tensor:
    out = np.zeros((len(ids), 3, size, size), dtype=np.uint8)
    todo = ids[~filled[ids]] if store is not None else ids
    todo = np.unique(todo)
    pos = {int(i): k for k, i in enumerate(ids)} if store is None else None
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        for a in range(0, len(todo), chunk):
            part = todo[a:a + chunk]
            imgs = list(ex.map(lambda i: _decode_one(files.paths[i], size, files.view), part))
            if store is not None:
                store[part] = np.stack(imgs)
                store.flush()
                filled[part] = True
                atomic_write(mask_path, lambda f: np.save(f, filled), binary=True)
            else:
                for i, im in zip(part, imgs):
                    out[pos[int(i)]] = im
            done += len(part)
            if progress is not None:
                progress(f"decoding {name}: {done}/{len(todo)} images at {size}px")
    if store is not None:
        out[:] = store[ids]
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------- loading

def source_isic(name: str, data_dir) -> tuple[FileList, None]:
    if data_dir is None:
        raise UserError(f"{name} needs --data-dir DIR containing {ISIC_CSV} and {ISIC_DIR}/")
    return list_isic(Path(data_dir)), None


def source_miotcd(name: str, data_dir) -> tuple[FileList, None]:
    if data_dir is None:
        raise UserError(f"{name} needs --data-dir DIR containing train/<class>/*.jpg")
    return list_miotcd(Path(data_dir)), None


def source_folder(name: str, data_dir=None) -> tuple[FileList, FileList | None]:
    path = name.split(":", 1)[1] if ":" in name else ""
    if not path:
        raise UserError("folder:PATH needs a path, e.g. --dataset folder:/data/my_images")
    return list_folder(Path(path))


@functools.lru_cache(maxsize=4)
def plan_splits(name: str, source: Callable, req) -> tuple:
    """(files, official test files or None, train ids, val ids, test ids) of a roll-out dataset for
    ``req.seed`` — listing and splitting only, nothing decoded or written (so a dataset too small
    for a regime is refused before any cache is made)."""
    seed = req.seed
    files, official_test = source(name, req.data_dir)
    C = len(files.classes)
    tr, va, te = split_rollout(files.targets, seed, has_official_test=official_test is not None)
    rng = seeds.rng(seed, "subsample")
    tr = tr[subsample(files.targets[tr], req.max_train, rng, C)]
    va = va[subsample(files.targets[va], req.max_val, rng, C)]
    if official_test is not None:
        te = subsample(official_test.targets, req.max_test, seeds.rng(0, "test"), C)
    else:
        te = te[subsample(files.targets[te], req.max_test, seeds.rng(0, "test"), C)]
    return files, official_test, tr, va, te


def load_rollout(info, name: str, req, progress: Callable[[str], None] | None = None) -> Splits:
    """The seed's splits of a roll-out dataset (``info``: its ``datasets.DatasetInfo``, ``req`` a
    ``datasets.LoadRequest``) as in-memory ``Splits`` (ImageNet normalisation, balanced accuracy,
    ``imbalanced=True``).  ``req.max_*`` cap each split by a stratified subset drawn *before*
    decoding (train/val per seed, test with a fixed seed)."""
    size = req.image_size
    if size < 8:
        raise UserError(f"image size {size} is too small (>= 8 px)")
    files, official_test, tr, va, te = plan_splits(name, info.source, req)
    C = len(files.classes)
    tag = name if not name.startswith("folder:") else "folder_" + hashlib.sha1(name.encode()).hexdigest()[:8]
    dec = dict(size=size, cache_dir=req.cache_dir, workers=req.workers, progress=progress, name=tag)
    fresh = req.cache_dir is not None and not Path(req.cache_dir).exists()
    with undo_dirs(req.cache_dir) if fresh else contextlib.nullcontext():
        try:
            train = ImageData(decode(files, tr, **dec), files.targets[tr])
            val = ImageData(decode(files, va, **dec), files.targets[va])
            if official_test is not None:
                test = ImageData(decode(official_test, te, **{**dec, "name": tag + "_test"}), official_test.targets[te])
            else:
                test = ImageData(decode(files, te, **dec), files.targets[te])
        except UserError:
            if fresh:  # a bad image in a dataset seen for the first time: leave no cache behind
                shutil.rmtree(req.cache_dir, ignore_errors=True)
            raise
    meta = {"classes": list(files.classes), "n_total": len(files.paths) + (len(official_test.paths) if official_test else 0),
            "expected_total": info.expected_total,
            "train_counts": np.bincount(train.targets, minlength=C).tolist(),
            "transforms": files.view, "image_size": size, "cifar_stem": size <= 64}
    return Splits(name, C, info.norm[0], info.norm[1], train, val, test, imbalanced=True, metric=info.metric, info=meta)
