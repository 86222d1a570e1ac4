"""Classification datasets with the thesis splits (spec §4, Table A.1/A.4).

Every dataset is loaded into memory as ``uint8`` images ``[N, 3, H, W]`` plus integer targets, then
split per seed into

* ``train`` — the train+pool candidates (the AL pool; labelled set and pool are subsets of it),
* ``val``   — a validation split fully separate from training and pool (the regime labels a
  subset of it),
* ``test``  — the official test split, identical for every seed.

Raw sources of the built-in datasets (their facts are in ``classification.datasets``): CIFAR-10,
CIFAR-100 (torchvision's python-pickle layout under ``--data-dir``; ``--download`` fetches it, never
silently) and Fashion-MNIST (the Debian ``dataset-fashion-mnist`` package or a torchvision-layout
folder; 28×28 padded to 32×32, grey replicated to 3 channels); long-tailed variants (ρ = 50, Table
A.1 counts, balanced validation taken before the long tail) are split here.  Also the label
strategy of the starting budget / validation subset and stratified subsampling (§4.5).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import seeds
from core.errors import UserError

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
LT_RHO = 50.0


@dataclass
class ImageData:
    """In-memory images (uint8 [N, 3, H, W]) and targets (int64 [N])."""
    images: torch.Tensor
    targets: np.ndarray

    def __len__(self):
        return len(self.targets)

    def subset(self, ids) -> "ImageData":
        ids = np.asarray(ids, dtype=np.int64)
        return ImageData(self.images[torch.as_tensor(ids)], self.targets[ids])


@dataclass
class Splits:
    name: str
    n_classes: int
    mean: tuple
    std: tuple
    train: ImageData
    val: ImageData
    test: ImageData
    imbalanced: bool
    metric: str = "accuracy"
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- raw loaders

def _read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """An IDX ubyte file (optionally gzipped) as a uint8 array; a truncated, garbled or unreadable
    file is one ``UserError`` naming it."""
    import zlib
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:  # permission denied, directory, ...; gzip: BadGzipFile is an OSError
        from core.errors import disk_error
        raise (disk_error(e, path, "read") or UserError(f"{path}: cannot read ({e.__class__.__name__}: {e})")) from None
    except (EOFError, zlib.error) as e:
        raise UserError(f"{path}: truncated or corrupt gzip file ({e.__class__.__name__}); replace it") from None
    if len(data) < 4:
        raise UserError(f"{path}: truncated IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[0:4], "big")
    nd = magic & 0xFF
    if magic >> 8 != 0x08 or nd == 0 or (ndim is not None and nd != ndim):
        raise UserError(f"{path} is not an IDX ubyte file" + (f" of {ndim} dimension(s)" if ndim else ""))
    if len(data) < 4 + 4 * nd:
        raise UserError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
    need = int(np.prod(dims, dtype=np.int64))
    have = len(data) - 4 - 4 * nd
    if have != need:
        raise UserError(f"{path}: header says {'x'.join(map(str, dims))} = {need} bytes of data, the file holds "
                        f"{have} ({'truncated' if have < need else 'trailing bytes'}); replace it")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_fmnist(data_dir: Path | None) -> Path:
    """The folder with the four Fashion-MNIST files: ``--data-dir`` (or its torchvision / upstream
    sub-folders) when given — never silently another copy — else the Debian package path."""
    names = FMNIST_FILES
    candidates = [Path(data_dir), Path(data_dir) / "FashionMNIST" / "raw", Path(data_dir) / "fashion-mnist"] \
        if data_dir is not None else [DEBIAN_FMNIST]
    for c in candidates:
        if all((c / n).exists() or (c / (n + ".gz")).exists() for n in names):
            return c
    if data_dir is not None:
        near = max(candidates, key=lambda c: sum((c / n).exists() or (c / (n + ".gz")).exists() for n in names))
        missing = [n for n in names if not ((near / n).exists() or (near / (n + ".gz")).exists())]
        raise UserError(f"Fashion-MNIST not found in --data-dir {data_dir}: {near} lacks {', '.join(missing)}(.gz)")
    raise UserError(f"Fashion-MNIST not found in {DEBIAN_FMNIST}: install the Debian package "
                    f"(apt-get install dataset-fashion-mnist) or put the four *-ubyte(.gz) files in --data-dir")


def load_fashion_mnist(data_dir: Path | None, download: bool = False) -> tuple[ImageData, ImageData]:
    """(train, test) of Fashion-MNIST (never downloaded)."""
    root = _find_fmnist(Path(data_dir) if data_dir else None)

    def get(stem, ndim):
        p = root / stem
        return _read_idx(p if p.exists() else root / (stem + ".gz"), ndim)

    def to_img(x):  # [N, 28, 28] → [N, 3, 32, 32] (zero-pad 2 px, grey → 3 channels)
        x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
        return torch.from_numpy(np.ascontiguousarray(np.repeat(x[:, None], 3, axis=1)))

    def pair(split):
        images, labels = get(f"{split}-images-idx3-ubyte", 3), get(f"{split}-labels-idx1-ubyte", 1)
        if len(images) != len(labels):
            raise UserError(f"Fashion-MNIST in {root}: {split}-images holds {len(images)} images but "
                            f"{split}-labels {len(labels)} labels")
        if len(labels) == 0:
            raise UserError(f"Fashion-MNIST in {root}: {split} split is empty")
        if labels.max() > 9:
            raise UserError(f"Fashion-MNIST in {root}: {split}-labels holds label {int(labels.max())}; "
                            "labels must be 0..9")
        return ImageData(to_img(images), labels.astype(np.int64))

    return pair("train"), pair("t10k")


def load_cifar(data_dir: Path | None, n_classes: int, download: bool) -> tuple[ImageData, ImageData]:
    from torchvision import datasets as tvd
    cls, folder = (tvd.CIFAR10, "cifar-10-batches-py") if n_classes == 10 else (tvd.CIFAR100, "cifar-100-python")
    if data_dir is None:
        raise UserError(f"CIFAR-{n_classes} needs --data-dir DIR containing {folder}/ (torchvision's python "
                        f"version); add --download to fetch it, or use --dataset fashion_mnist offline")
    root = Path(data_dir)
    if not (root / folder).exists() and not download:
        raise UserError(f"CIFAR-{n_classes} not found: expected {root / folder}/ (torchvision's python version); "
                        f"pass --download to fetch it (online) or copy it there")
    try:
        tr, te = cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise UserError(f"CIFAR-{n_classes} under {root / folder} is incomplete or corrupted ({e})") from None
    except OSError as e:  # no network (URLError), permission denied, ...
        from core.errors import disk_error
        if disk_error(e) is not None:
            raise disk_error(e) from None
        raise UserError(f"CIFAR-{n_classes}: {'download failed' if download else 'cannot read'} "
                        f"({e.__class__.__name__}: {getattr(e, 'reason', e)}); copy torchvision's python version "
                        f"to {root / folder}/ or use --dataset fashion_mnist offline") from None
    except Exception as e:  # noqa: BLE001 — a garbled pickle raises anything
        raise UserError(f"CIFAR-{n_classes} under {root / folder} cannot be read ({e.__class__.__name__}); "
                        "replace it") from None

    def conv(ds):
        return ImageData(torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))),
                         np.asarray(ds.targets, dtype=np.int64))
    return conv(tr), conv(te)


def load_cifar10(data_dir, download: bool = False) -> tuple[ImageData, ImageData]:
    return load_cifar(data_dir, 10, download)


def load_cifar100(data_dir, download: bool = False) -> tuple[ImageData, ImageData]:
    return load_cifar(data_dir, 100, download)


# ----------------------------------------------------------------------------- splits

def lt_counts(max_count: int, n_classes: int, rho: float = LT_RHO) -> np.ndarray:
    """n_c = floor(max · ρ^(−c/(C−1))): Table A.1 for max = 4500, ρ = 50."""
    c = np.arange(n_classes)
    return np.floor(max_count * rho ** (-c / (n_classes - 1)) + 1e-9).astype(np.int64)


def split_ids(targets: np.ndarray, n_classes: int, seed: int, long_tail: bool,
              val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train_pool ids, val ids) into the official train split for one seed.

    Balanced datasets: a random ``val_fraction`` of the official train split (CIFAR: 5 000 of 50 000).
    Long-tailed: a *balanced* validation split of ``val_fraction`` per class is taken first; the long
    tail (ρ = 50, largest class = the remaining per-class count) is applied to the rest."""
    rng = seeds.rng(seed, "split")
    n = len(targets)
    if not long_tail:
        perm = rng.permutation(n)
        n_val = int(round(val_fraction * n))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    per_class = [rng.permutation(np.flatnonzero(targets == c)) for c in range(n_classes)]
    n_val_c = int(round(val_fraction * min(len(p) for p in per_class)))
    val = np.concatenate([p[:n_val_c] for p in per_class])
    rest = min(len(p) for p in per_class) - n_val_c
    counts = lt_counts(rest, n_classes)
    train = np.concatenate([p[n_val_c:n_val_c + k] for p, k in zip(per_class, counts)])
    return np.sort(train), np.sort(val)


def load_splits(info, seed: int, data_dir: str | None = None, download: bool = False) -> Splits:
    """The seed's splits of a built-in dataset (``info``: its ``datasets.DatasetInfo``)."""
    full, test = info.source(data_dir, download)
    n_classes, (mean, std) = info.n_classes, info.norm
    tr, va = split_ids(full.targets, n_classes, seed, info.long_tail)
    train, val = full.subset(tr), full.subset(va)
    return Splits(info.name, n_classes, mean, std, train, val, test, imbalanced=info.long_tail, metric=info.metric,
                  info={"train_counts": np.bincount(train.targets, minlength=n_classes).tolist(),
                        "transforms": info.transforms})


# ----------------------------------------------------------------------------- label strategy

def label_strategy(targets: np.ndarray, n: int, n_classes: int, rng: np.random.Generator,
                   balanced: bool, first_per_class: int = 5) -> np.ndarray:
    """Ids for the starting budget / validation subset (spec §4.5).

    balanced=True: exactly n/C per class (n must be a multiple of C).
    balanced=False: ``first_per_class`` per class at random, the rest uniformly from what is left."""
    if balanced:
        if n % n_classes:
            raise UserError(f"a balanced label set of {n} is not a multiple of {n_classes} classes")
        k = n // n_classes
        out = []
        for c in range(n_classes):
            ids = np.flatnonzero(targets == c)
            if len(ids) < k:
                raise UserError(f"class {c} has only {len(ids)} samples, {k} needed for a balanced set of {n}")
            out.append(rng.choice(ids, size=k, replace=False))
        return np.sort(np.concatenate(out))
    out = []
    for c in range(n_classes):
        ids = np.flatnonzero(targets == c)
        out.append(rng.choice(ids, size=min(first_per_class, len(ids)), replace=False))
    first = np.concatenate(out)
    if len(first) > n:
        raise UserError(f"a starting budget of {n} cannot hold {first_per_class} samples of each of {n_classes} classes")
    rest = np.setdiff1d(np.arange(len(targets)), first)
    if n - len(first) > len(rest):
        raise UserError(f"a label set of {n} is larger than the {len(targets)} samples it is drawn from")
    more = rng.choice(rest, size=n - len(first), replace=False)
    return np.sort(np.concatenate([first, more]))


def subsample(targets: np.ndarray, n: int | None, rng: np.random.Generator, n_classes: int,
              exact: bool = False) -> np.ndarray:
    """A stratified random subset of about n (keeps the class proportions, per-class counts rounded);
    ``exact``: exactly n (largest-remainder rounding); all ids when n is None."""
    if n is None or n >= len(targets):
        return np.arange(len(targets))
    counts = np.bincount(targets, minlength=n_classes)
    share = n * counts / len(targets)
    if exact:
        k = np.floor(share).astype(np.int64)
        k[np.argsort(-(share - k), kind="stable")[: n - int(k.sum())]] += 1
    else:
        k = np.round(share).astype(np.int64)
    out = [rng.choice(np.flatnonzero(targets == c), size=min(int(k[c]), int(counts[c])), replace=False)
           for c in range(n_classes)]
    return np.sort(np.concatenate(out))


