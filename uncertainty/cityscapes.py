"""GTA5 → Cityscapes for the testbed (thesis §6.4.3, app. B.2.3; ``uncertainty.md`` §7.3): synthetic
street scenes are the i.i.d. data, real ones the shifted data, and stochastic label switches make
the aleatoric uncertainty.

Folder layouts read (``--data-dir DIR``; nothing is downloaded without ``--download``):

* GTA5 (Richter et al. 2016, https://download.visinf.tu-darmstadt.de/data/from_games/):
  ``DIR/gta5/images/NNNNN.png`` and ``DIR/gta5/labels/NNNNN.png`` — the labels are colour maps in
  the Cityscapes palette (palette PNGs; RGB and grey label-id PNGs are read too);
* Cityscapes (Cordts et al. 2016, https://www.cityscapes-dataset.com, needs an account):
  ``DIR/cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
  ``DIR/cityscapes/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``.

Labels: the Cityscapes label ids (and the GTA5 colours) map to the 19 evaluation classes
(``trainId`` 0–18 of the official table :data:`LABELS`), everything else to the ignore label 255.
Label switches (Kohl et al. 2018, as the thesis): per image and class, with probability 1/3 every
pixel of sidewalk, person, car, vegetation or road becomes "⟨class⟩ 2" (train ids 19–23:
sidewalk_2, person_2, car_2, vegetation_2, road_2), so the net has 24 outputs.  Every image gets
``n_raters`` independent switch draws (the reference "raters" of NCC / GED, the thesis' reference
code uses 5); training draws one of them per image and step, like the on-the-fly switch.

Preprocessing: centre crop to 1912×1024 (GTA5 1914×1052 and Cityscapes 2048×1024, as in the
thesis; smaller images to that aspect ratio), then resize to ``height × width`` (thesis:
25 %, 256×478; image bilinear, labels nearest); images are z-scored per image and channel.
Splits (Fig. B.4): Cityscapes train → shifted unlabelled pool, Cityscapes val → shifted test set;
as many random GTA5 images as Cityscapes train images → i.i.d. pool; the other GTA5 images 75 / 25
into train / test, train 80 / 20 into train / validation.  The ``max_*`` limits of
:class:`GTACSConfig` subsample every split after that (laptop and smoke presets).

No background class: the ``threshold`` aggregation does not apply (thesis B.6) and is skipped;
flips are horizontal only (street scenes have an up and a down).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from core import seeds
from core.errors import UserError


class Label(NamedTuple):
    name: str
    id: int
    train_id: int       # 255 = ignored
    color: tuple


# The official Cityscapes label table (cityscapesScripts labels.py: name, id, trainId, colour).
LABELS = [
    Label("unlabeled", 0, 255, (0, 0, 0)), Label("ego vehicle", 1, 255, (0, 0, 0)),
    Label("rectification border", 2, 255, (0, 0, 0)), Label("out of roi", 3, 255, (0, 0, 0)),
    Label("static", 4, 255, (0, 0, 0)), Label("dynamic", 5, 255, (111, 74, 0)), Label("ground", 6, 255, (81, 0, 81)),
    Label("road", 7, 0, (128, 64, 128)), Label("sidewalk", 8, 1, (244, 35, 232)), Label("parking", 9, 255, (250, 170, 160)),
    Label("rail track", 10, 255, (230, 150, 140)), Label("building", 11, 2, (70, 70, 70)), Label("wall", 12, 3, (102, 102, 156)),
    Label("fence", 13, 4, (190, 153, 153)), Label("guard rail", 14, 255, (180, 165, 180)),
    Label("bridge", 15, 255, (150, 100, 100)), Label("tunnel", 16, 255, (150, 120, 90)), Label("pole", 17, 5, (153, 153, 153)),
    Label("polegroup", 18, 255, (153, 153, 153)), Label("traffic light", 19, 6, (250, 170, 30)),
    Label("traffic sign", 20, 7, (220, 220, 0)), Label("vegetation", 21, 8, (107, 142, 35)), Label("terrain", 22, 9, (152, 251, 152)),
    Label("sky", 23, 10, (70, 130, 180)), Label("person", 24, 11, (220, 20, 60)), Label("rider", 25, 12, (255, 0, 0)),
    Label("car", 26, 13, (0, 0, 142)), Label("truck", 27, 14, (0, 0, 70)), Label("bus", 28, 15, (0, 60, 100)),
    Label("caravan", 29, 255, (0, 0, 90)), Label("trailer", 30, 255, (0, 0, 110)), Label("train", 31, 16, (0, 80, 100)),
    Label("motorcycle", 32, 17, (0, 0, 230)), Label("bicycle", 33, 18, (119, 11, 32)),
]
IGNORE = 255
TRAIN_NAMES = [lab.name for lab in sorted((x for x in LABELS if x.train_id != IGNORE), key=lambda x: x.train_id)]
SWITCHED = ("sidewalk", "person", "car", "vegetation", "road")      # → train ids 19..23, in this order
CLASS_NAMES = TRAIN_NAMES + [f"{n}_2" for n in SWITCHED]
SWITCH_P = 1 / 3
ASPECT = 1912 / 1024
GTA_URL = "https://download.visinf.tu-darmstadt.de/data/from_games/data/{:02d}_{}.zip"

_ID2TRAIN = np.full(256, IGNORE, np.uint8)
for _l in LABELS:
    _ID2TRAIN[_l.id] = _l.train_id
_COLOR2TRAIN: dict = {}
for _l in sorted(LABELS, key=lambda x: x.train_id == IGNORE):   # evaluated classes win shared colours
    _COLOR2TRAIN.setdefault(_l.color, _l.train_id)


@dataclass(frozen=True)
class GTACSConfig:
    height: int = 256                  # thesis: 25 % of 1024×1912 = 256×478; the presets use 480 (see runner)
    width: int = 480
    n_raters: int = 5                  # label-switch draws per image (reference samples)
    max_train: int | None = None       # limits per split after the thesis split (None = all)
    max_test: int | None = None
    max_pool: int | None = None        # per side (i.i.d. GTA5 / shifted Cityscapes)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------ layout
def _sub(root: Path, names) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def find_gta(data_dir: Path) -> list[tuple[Path, Path]]:
    """[(image, label)] of the GTA5 release below ``data_dir``."""
    gta = _sub(data_dir, ("gta5", "GTA5", "gta", "GTA"))
    hint = (f"GTA5 not found: expected {data_dir}/gta5/images/00001.png and {data_dir}/gta5/labels/00001.png (the "
            "GTA5 release, https://download.visinf.tu-darmstadt.de/data/from_games/) — pass --data-dir, or --download")
    if gta is None or not (gta / "images").is_dir() or not (gta / "labels").is_dir():
        raise UserError(hint)
    labels = {p.name: p for p in (gta / "labels").glob("*.png") if not p.name.startswith(".")}
    pairs = [(p, labels[p.name]) for p in sorted((gta / "images").glob("*.png"))
             if not p.name.startswith(".") and p.name in labels]
    if not pairs:
        raise UserError(hint)
    return pairs


def find_cityscapes(data_dir: Path, split: str) -> list[tuple[Path, Path]]:
    """[(leftImg8bit image, gtFine labelIds)] of one Cityscapes split."""
    cs = _sub(data_dir, ("cityscapes", "Cityscapes", "CityScapes"))
    hint = (f"Cityscapes not found: expected {data_dir}/cityscapes/leftImg8bit/{split}/<city>/*_leftImg8bit.png and "
            f"{data_dir}/cityscapes/gtFine/{split}/<city>/*_gtFine_labelIds.png (leftImg8bit_trainvaltest.zip and "
            "gtFine_trainvaltest.zip from https://www.cityscapes-dataset.com/downloads/, which needs an account)")
    if cs is None or not (cs / "leftImg8bit" / split).is_dir() or not (cs / "gtFine" / split).is_dir():
        raise UserError(hint)
    pairs = []
    for img in sorted((cs / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        lab = cs / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"
        if not lab.is_file():
            raise UserError(f"{lab}: missing (the label-id map of {img.name})")
        pairs.append((img, lab))
    if not pairs:
        raise UserError(hint)
    return pairs


# ------------------------------------------------------------------------------------ reading
def _crop_box(w: int, h: int) -> tuple:
    """Centre crop to 1912×1024 (thesis; GTA5 and Cityscapes images are larger), or for smaller
    images (pre-scaled copies) to the largest centred window of that aspect ratio."""
    if w >= 1912 and h >= 1024:
        x0, y0 = (w - 1912) // 2, (h - 1024) // 2
        return x0, y0, x0 + 1912, y0 + 1024
    if w / h >= ASPECT:
        cw, ch = int(round(h * ASPECT)), h
    else:
        cw, ch = w, int(round(w / ASPECT))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return x0, y0, x0 + cw, y0 + ch


def train_ids(path: Path) -> np.ndarray:
    """A GTA5 / Cityscapes label PNG → train ids (uint8, 255 = ignore).  Palette and RGB PNGs are
    colour maps in the Cityscapes palette; grey PNGs hold label ids."""
    from PIL import Image
    try:
        im = Image.open(path)
        im.load()
    except Exception as e:   # noqa: BLE001 — PIL raises many kinds for a bad file
        raise UserError(f"{path}: cannot read PNG ({e.__class__.__name__})") from None
    if im.mode in ("L", "I", "I;16"):
        ids = np.asarray(im).astype(np.int64)
        if ids.max(initial=0) > 255:
            raise UserError(f"{path}: label ids above 255")
        return _ID2TRAIN[ids]
    rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    key = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    uniq, inv = np.unique(key, return_inverse=True)
    lut = np.array([_COLOR2TRAIN.get(((k >> 16) & 255, (k >> 8) & 255, k & 255), -1) for k in uniq])
    out = lut[inv.reshape(key.shape)]
    unknown = float((out < 0).mean())
    if unknown > 0.01:
        raise UserError(f"{path}: {unknown:.0%} of the pixels have colours outside the Cityscapes palette "
                        "(not a GTA5 / Cityscapes label map)")
    return np.where(out < 0, IGNORE, out).astype(np.uint8)


def read_pair(img_path: Path, lab_path: Path, height: int, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(image [3, H, W] float32 z-scored per channel, train ids [H, W]); None when image and label
    sizes differ (a handful of GTA5 images)."""
    from PIL import Image
    try:
        im = Image.open(img_path).convert("RGB")
    except Exception as e:   # noqa: BLE001
        raise UserError(f"{img_path}: cannot read PNG ({e.__class__.__name__})") from None
    lab = train_ids(lab_path)
    if im.size != (lab.shape[1], lab.shape[0]):
        return None
    box = _crop_box(*im.size)
    im = im.crop(box).resize((width, height), Image.BILINEAR)
    lab = np.asarray(Image.fromarray(lab).crop(box).resize((width, height), Image.NEAREST))
    x = np.asarray(im, dtype=np.float32).transpose(2, 0, 1)
    mu, sd = x.mean((1, 2), keepdims=True), x.std((1, 2), keepdims=True)
    return ((x - mu) / np.where(sd > 0, sd, 1)).astype(np.float32), lab.astype(np.uint8)


def label_switch(lab: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` label-switch draws of one train-id map → [n, H, W]: per draw and switchable class,
    with probability 1/3 all its pixels become the class' "2" copy (train ids 19..23)."""
    out = np.repeat(lab[None], n, 0)
    for j, name in enumerate(SWITCHED):
        c = TRAIN_NAMES.index(name)
        flip = rng.random(n) < SWITCH_P
        m = lab == c
        if m.any() and flip.any():
            out[flip] = np.where(m[None], np.uint8(19 + j), out[flip])
    return out


# ------------------------------------------------------------------------------------ download
def download_gta(data_dir: Path, log=print) -> None:
    """GTA5 (20 zip archives, about 60 GB) into ``data_dir/gta5/{images,labels}``, one archive per
    folder ``gta5/.parts/NN_kind`` that appears only when complete (a rerun fetches the missing
    ones), then linked into place.  Cityscapes cannot be fetched without an account — a missing
    Cityscapes folder is a one-line error afterwards."""
    from .download import fetch_zip
    gta = data_dir / "gta5"
    if (gta / "images").is_dir() and (gta / "labels").is_dir() and not (gta / ".parts").is_dir():
        return                                          # brought by the user
    hint = (f"download the GTA5 images and labels from https://download.visinf.tu-darmstadt.de/data/from_games/ into "
            f"{gta}/images and {gta}/labels")
    for part in range(1, 11):
        for kind in ("images", "labels"):
            dest = gta / ".parts" / f"{part:02d}_{kind}"
            if not dest.is_dir():
                fetch_zip(GTA_URL.format(part, kind), dest, hint)
                log(f"downloaded GTA5 part {part:02d} {kind}")
    for kind in ("images", "labels"):
        (gta / kind).mkdir(parents=True, exist_ok=True)
        for f in sorted((gta / ".parts").glob(f"*_{kind}/**/*.png")):
            target = gta / kind / f.name
            if not target.exists():
                target.hardlink_to(f)


# ------------------------------------------------------------------------------------ dataset
def _split_counts(n_gta: int, n_pool: int) -> tuple[int, int, int]:
    """(i.i.d. pool, test, val) sizes from the GTA5 count (thesis Fig. B.4)."""
    pool = min(n_pool, max(n_gta - 4, 0))
    rest = n_gta - pool
    test = int(round(0.25 * rest))
    val = max(1, int(round(0.2 * (rest - test))))
    return pool, test, val


def load_gta_cs(data_dir, cfg: GTACSConfig, download: bool = False, log=print, classes: str = "per-class"):
    """(SegData, info) of GTA5 → Cityscapes with label switches."""
    from .data import SegData, Split
    if classes != "per-class":
        raise UserError("gta-cs has no background class: --classes merged would make every pixel foreground; "
                        "use --classes per-class (the default)")
    data_dir = Path(data_dir) if data_dir else Path("data")
    if download:
        data_dir.mkdir(parents=True, exist_ok=True)
        download_gta(data_dir, log)
    gta = find_gta(data_dir)
    cs_pool, cs_test = find_cityscapes(data_dir, "train"), find_cityscapes(data_dir, "val")
    rng = seeds.rng(cfg.seed, "gta-cs")
    order = rng.permutation(len(gta))
    n_pool, n_test, n_val = _split_counts(len(gta), len(cs_pool))
    if len(gta) - n_pool - n_test - n_val < 2:
        raise UserError(f"GTA5: {len(gta)} images are too few for the i.i.d. pool, test, validation and training splits")
    idx = {"pool": order[:n_pool], "test_iid": order[n_pool:n_pool + n_test],
           "val": order[n_pool + n_test:n_pool + n_test + n_val], "train": order[n_pool + n_test + n_val:]}

    def cap(a, m):
        return a if m is None or len(a) <= m else a[:m]
    idx["train"] = cap(idx["train"], cfg.max_train)
    idx["val"] = cap(idx["val"], None if cfg.max_train is None else max(1, cfg.max_train // 4))
    idx["test_iid"] = cap(idx["test_iid"], cfg.max_test)
    idx["pool"] = cap(idx["pool"], cfg.max_pool)
    cs_pool = [cs_pool[i] for i in cap(rng.permutation(len(cs_pool)), cfg.max_pool)]
    cs_test = [cs_test[i] for i in cap(rng.permutation(len(cs_test)), cfg.max_test)]
    skipped = 0

    def build(pairs, ood: bool, tag: str, salt: int) -> Split:
        nonlocal skipped
        imgs, raters, ids = [], [], []
        for i, (ip, lp) in enumerate(pairs):
            r = read_pair(ip, lp, cfg.height, cfg.width)
            if r is None:
                skipped += 1
                continue
            x, lab = r
            imgs.append(x)
            raters.append(label_switch(lab, cfg.n_raters, seeds.rng(cfg.seed, "label-switch", salt, i)))
            ids.append(re.sub(r"_leftImg8bit$", "", ip.stem))
        n = len(imgs)
        if not n:
            return Split(np.zeros((0, 3, cfg.height, cfg.width), np.float32),
                         np.zeros((0, cfg.n_raters, cfg.height, cfg.width), np.uint8), np.zeros(0, bool),
                         np.zeros(0, bool), np.zeros(0, "<U12"), [])
        R = np.stack(raters)
        amb = (R.max(1) != R.min(1)).reshape(n, -1).any(1)
        return Split(np.stack(imgs), R, np.full(n, ood), amb, np.full(n, tag, dtype="<U12"), ids)

    log(f"GTA5/Cityscapes: reading {sum(len(v) for v in idx.values())} GTA5 and {len(cs_pool) + len(cs_test)} "
        f"Cityscapes images at {cfg.height}×{cfg.width}")
    splits = {k: build([gta[i] for i in v], False, "none", s) for s, (k, v) in enumerate(idx.items())}
    splits["test_ood"] = build(cs_test, True, "cityscapes", 10)
    splits["pool"] = Split.concat([splits["pool"], build(cs_pool, True, "cityscapes", 11)])
    if skipped:
        log(f"note: {skipped} image(s) skipped: image and label sizes differ")
    data = SegData("GTA5-Cityscapes", 2, splits, n_classes=len(CLASS_NAMES), class_names=list(CLASS_NAMES),
                   ignore_index=IGNORE, background=False, flip_axes=(1,), shift="gta-cs",
                   notes=[f"classes: the 19 Cityscapes evaluation classes + 5 label-switch copies ({', '.join(SWITCHED)} "
                          f"→ ⟨class⟩_2 with p = 1/3 per image and class, {cfg.n_raters} draws per image as raters); "
                          "255 ignored; Dice per class, averaged over the classes present",
                          "shift: GTA5 (synthetic) i.i.d. → Cityscapes (real) OoD; Cityscapes train = shifted pool, "
                          "val = shifted test set"])
    return data, {"gta_images": len(gta), "cityscapes_train": len(find_cityscapes(data_dir, "train")),
                  "cityscapes_val": len(find_cityscapes(data_dir, "val"))}
