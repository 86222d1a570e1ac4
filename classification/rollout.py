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

Training transforms of A.3.6 as batched tensor ops on uint8 ``[B, 3, S, S]`` → float 0..255
``[B, 3, S, S]`` (``augmenter(kind)(x, name)``, same contract as ``transforms.augment_batch``):

* ISIC ``standard``: Resize 300/224·S → HFlip → VFlip → ColorJitter(0.02, 0.02, 0.02, 0.01) →
  RandomRotation(±180) → RandomAffine(±180, translate 0.1, scale 0.7–1.3) → RandomCrop(S), with all the
  geometric steps folded into one bilinear resampling (the rotation's corners stay black, as when
  applied twice); ``randaugment``: flips → affine → crop → jitter → RandAugmentMC(2, 10, p = 1);
  ``randaugment_weak``: same base, RandAugmentMC(1, 2, p = 0.5).
* ImageNet (MIO-TCD, folder) ``standard``: RandomResizedCrop(S) + HFlip; ``randaugment``:
  + RandAugmentMC(2, 10, p = 1) (no Cutout); ``randaugment_weak``: + RandAugmentMC(1, 2, p = 0.5).
* ``none``: the stored test-time view.

Normalisation: ImageNet mean/std.  Metric: balanced accuracy (``imbalanced=True``).
"""
from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import UserError
from core.store import atomic_write

from .data import ImageData, Splits, subsample
from .transforms import augment_batch, rand_augment_mc

DATASETS = ("isic2019", "miotcd")
ISIC_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
ISIC_TOTAL = 25_331
ISIC_CSV = "ISIC_2019_Training_GroundTruth.csv"
ISIC_DIR = "ISIC_2019_Training_Input"
MIO_CLASSES = ("articulated_truck", "background", "bicycle", "bus", "car", "motorcycle", "non-motorized_vehicle",
               "pedestrian", "pickup_truck", "single_unit_truck", "work_van")
MIO_TOTAL = 519_164
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
FRACTIONS = (0.60, 0.15, 0.25)        # train (pool), val, test
TEST_SEED = 0xE5


def is_rollout(name: str) -> bool:
    return name in DATASETS or name.startswith("folder:")


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
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"{what}: {root} has no class folders (expected {root}/<class>/<image>.jpg)")
    paths, targets = [], []
    for c, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMG_EXT and p.is_file())
        paths += files
        targets += [c] * len(files)
    if not paths:
        raise UserError(f"{what}: no images ({'/'.join(IMG_EXT)}) in the class folders of {root}")
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
    train, val = _stratified_split(rest, targets, FRACTIONS[1] / (FRACTIONS[0] + FRACTIONS[1]), seed)
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
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"cannot read image {path} ({e.__class__.__name__})") from None


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
    out = np.zeros((len(ids), 3, size, size), dtype=np.uint8)
    store = filled = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        stem = cache_dir / f"{name.replace(':', '_').replace('/', '_')}-{size}-{_fingerprint(files, size)}"
        data_path, mask_path = stem.with_suffix(".npy"), Path(str(stem) + ".filled.npy")
        shape = (len(files.paths), 3, size, size)
        if data_path.exists():
            store = np.load(data_path, mmap_mode="r+")
            if store.shape != shape:
                raise UserError(f"image cache {data_path} has an unexpected shape; delete it")
        else:
            store = np.lib.format.open_memmap(data_path, mode="w+", dtype=np.uint8, shape=shape)
        filled = np.load(mask_path) if mask_path.exists() else np.zeros(len(files.paths), dtype=bool)
        todo = ids[~filled[ids]]
    else:
        todo = ids
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

def load_rollout(name: str, seed: int, data_dir: str | Path | None = None, size: int = 224,
                 max_train: int | None = None, max_val: int | None = None, max_test: int | None = None,
                 cache_dir: str | Path | None = None, workers: int = 2,
                 progress: Callable[[str], None] | None = None) -> Splits:
    """The seed's splits of a roll-out dataset as in-memory ``Splits`` (ImageNet normalisation,
    balanced accuracy, ``imbalanced=True``).  ``max_*`` cap each split by a stratified subset drawn
    *before* decoding (train/val per seed, test with a fixed seed)."""
    if not is_rollout(name):
        raise UserError(f"unknown roll-out dataset {name!r}; valid: {', '.join(DATASETS)}, folder:PATH")
    if size < 8:
        raise UserError(f"image size {size} is too small (>= 8 px)")
    official_test = None
    if name.startswith("folder:"):
        path = name.split(":", 1)[1]
        if not path:
            raise UserError("folder:PATH needs a path, e.g. --dataset folder:/data/my_images")
        files, official_test = list_folder(Path(path))
    else:
        if data_dir is None:
            hint = f"{ISIC_CSV} and {ISIC_DIR}/" if name == "isic2019" else "train/<class>/*.jpg"
            raise UserError(f"{name} needs --data-dir DIR containing {hint}")
        files = list_isic(Path(data_dir)) if name == "isic2019" else list_miotcd(Path(data_dir))
    C = len(files.classes)
    tr, va, te = split_rollout(files.targets, seed, has_official_test=official_test is not None)
    rng = np.random.default_rng([int(seed), 0xD7])
    tr = tr[subsample(files.targets[tr], max_train, rng, C)]
    va = va[subsample(files.targets[va], max_val, rng, C)]
    tag = name if not name.startswith("folder:") else "folder_" + hashlib.sha1(name.encode()).hexdigest()[:8]
    dec = dict(size=size, cache_dir=cache_dir, workers=workers, progress=progress, name=tag)
    train = ImageData(decode(files, tr, **dec), files.targets[tr])
    val = ImageData(decode(files, va, **dec), files.targets[va])
    if official_test is not None:
        te = subsample(official_test.targets, max_test, np.random.default_rng(TEST_SEED), C)
        test = ImageData(decode(official_test, te, **{**dec, "name": tag + "_test"}), official_test.targets[te])
    else:
        te = te[subsample(files.targets[te], max_test, np.random.default_rng(TEST_SEED), C)]
        test = ImageData(decode(files, te, **dec), files.targets[te])
    info = {"classes": list(files.classes), "n_total": len(files.paths) + (len(official_test.paths) if official_test else 0),
            "expected_total": {"isic2019": ISIC_TOTAL, "miotcd": MIO_TOTAL}.get(name),
            "train_counts": np.bincount(train.targets, minlength=C).tolist(),
            "transforms": files.view, "image_size": size, "cifar_stem": size <= 64}
    return Splits(name, C, IMAGENET_NORM[0], IMAGENET_NORM[1], train, val, test, imbalanced=True,
                  metric="balanced_accuracy", info=info)


def regime_table(n_classes: int, val_split: int) -> dict:
    """Table A.4 rule for roll-out data: start = query = 5C / 25C / 100C, 10 rounds, validation
    5 × start capped by the split (ISIC: 40/200/800, MIO: 55/275/1100 exactly)."""
    return {k: (m * n_classes, m * n_classes, 10, min(5 * m * n_classes, val_split))
            for k, m in (("low", 5), ("medium", 25), ("high", 100))}


# ----------------------------------------------------------------------------- batched transforms

def _u(n, device):
    return torch.rand(n, device=device)


def _uniform(n, lo, hi, device):
    return lo + (hi - lo) * torch.rand(n, device=device)


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                 p: float = 1.0) -> torch.Tensor:
    """torchvision ColorJitter per sample (own factors and own random op order), applied with prob. p;
    ``x`` float [B, 3, H, W] in 0..255."""
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv
    B, dev = len(x), x.device
    apply = _u(B, dev) < p
    fb = _uniform(B, max(0, 1 - brightness), 1 + brightness, dev)
    fc = _uniform(B, max(0, 1 - contrast), 1 + contrast, dev)
    fs = _uniform(B, max(0, 1 - saturation), 1 + saturation, dev)
    fh = _uniform(B, -hue, hue, dev)
    order = torch.argsort(torch.rand(B, 4, device=dev), dim=1)

    def gray(t):
        return 0.299 * t[:, 0:1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3]

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
            hsv = _rgb_to_hsv(t / 255)
            h = (hsv[:, 0] + fh[sel].view(-1, 1, 1)).remainder(1.0)
            return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), 1)) * 255
        return t

    x = x.clone()
    for slot in range(4):
        for k in range(4):
            sel = torch.nonzero(apply & (order[:, slot] == k)).flatten()
            if len(sel):
                x[sel] = op(k, x[sel], sel)
    return x


def random_grayscale(x: torch.Tensor, p: float) -> torch.Tensor:
    g = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
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


ROLLOUT_AUGMENTATIONS = ("standard", "randaugment", "randaugment_weak", "none")


@torch.no_grad()
def augment_rollout(x_u8: torch.Tensor, name: str, kind: str) -> torch.Tensor:
    """A.3.6 transforms for ``kind`` ∈ {isic, imagenet}; uint8 [B, 3, S, S] → float 0..255 [B, 3, S, S]
    (computed in float32 even inside an autocast region)."""
    with torch.autocast(x_u8.device.type, enabled=False):
        return _augment_rollout(x_u8, name, kind)


def _augment_rollout(x_u8: torch.Tensor, name: str, kind: str) -> torch.Tensor:
    if name not in ROLLOUT_AUGMENTATIONS:
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


def augmenter(kind: str | None) -> Callable[[torch.Tensor, str], torch.Tensor]:
    """``fn(x_u8, name)`` for a dataset's transform family: ``cifar``/None → ``transforms.augment_batch``,
    ``isic`` / ``imagenet`` → ``augment_rollout``."""
    if kind in (None, "cifar"):
        return augment_batch
    if kind not in ("isic", "imagenet"):
        raise ValueError(f"unknown transform family {kind!r}")

    def fn(x, name):
        return augment_rollout(x, name, kind)
    fn.kind = kind
    return fn


def augmenter_for(splits: Splits) -> Callable[[torch.Tensor, str], torch.Tensor]:
    return augmenter(splits.info.get("transforms"))
