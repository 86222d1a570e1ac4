"""The nnU-Net raw / Medical Segmentation Decathlon folder layout: the one reader and the one writer
used by segmentation AL (``segmentation.data``), the uncertainty testbed (``uncertainty.data``) and
the phantom generator (``segmentation.phantoms``).

Layout read (both flavours)::

    ROOT/dataset.json   "labels" ({"0": "background", ...} MSD style or {"background": 0, ...} v2 style),
                        "modality" (MSD) or "channel_names" (v2), "file_ending" (v2, default .nii.gz),
                        optional "training" list (MSD; "image"/"label" a path or a list of paths — several
                        label files are several raters), optional shifted (OoD) cases: "values": {"ood": [...]},
                        "ood_cases": [...] or an entry's "ood": true
    ROOT/imagesTr/      MSD: one (3D or 4D, channels last) NIfTI per case, named in "training";
                        v2:  CASE_0000.nii.gz, CASE_0001.nii.gz, ... one file per channel
    ROOT/labelsTr/      CASE.nii.gz (or CASE_00.nii.gz, CASE_01.nii.gz, ... one per rater), integer labels 0..C

Every problem is one ``UserError`` naming the file.  The writer (:func:`write_layout`) produces the
v2 flavour (one file per channel, one label file per rater when there are several) into a
temporary folder renamed into place when complete.

    layout = read_layout("/data/Task04_Hippocampus")
    img, lab = load_image(layout, layout.cases[0]), load_label(layout, layout.cases[0])
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from core import validate
from core.errors import UserError
from core.store import atomic_dir, atomic_write_json

EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".nhdr")


@dataclass
class Case:
    name: str
    images: list[Path]          # one 3D/4D file (MSD) or one file per channel (v2)
    labels: list[Path]          # one file per rater (usually one)
    ood: bool = False

    @property
    def label(self) -> Path:
        return self.labels[0]


@dataclass
class Layout:
    root: Path
    name: str
    class_names: list[str] | None   # index = label value, 0 = background; None when dataset.json declares none
    channel_names: list[str]
    cases: list[Case]
    meta: dict = field(default_factory=dict)
    meta_bytes: bytes = b""

    @property
    def n_classes(self) -> int:
        """Number of foreground classes C (labels are 0..C); 1 when no labels are declared."""
        return len(self.class_names) - 1 if self.class_names else 1


def rel(root: Path, p: Path) -> str:
    try:
        return str(Path(p).relative_to(root))
    except ValueError:
        return str(p)


def strip_ext(name: str) -> str:
    for ext in EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------

def read_layout(root, *, need_labels: bool = True, min_cases: int = 2) -> Layout:
    """Parse ``dataset.json`` and list the cases (files checked to exist, nothing decoded).

    ``need_labels``: dataset.json must declare consecutive labels 0..C (C ≥ 1); without it a missing
    ``labels`` entry is accepted (binary readers that use label > 0)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder does not exist")
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise UserError(f"{meta_path}: missing (expected the nnU-Net raw / MSD layout: dataset.json, imagesTr/, labelsTr/)")
    raw = meta_path.read_bytes()
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{meta_path}: not valid JSON ({getattr(e, 'msg', e.__class__.__name__)})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path}: must hold a JSON object")
    class_names = None
    if need_labels or "labels" in meta:
        if not isinstance(meta.get("labels"), dict) or not meta["labels"]:
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
    ending = meta.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending:
        raise UserError(f"{meta_path}: \"file_ending\" must be a non-empty string")
    ood_ids = _ood_ids(meta, meta_path)
    if isinstance(meta.get("training"), list) and meta["training"]:
        cases = _cases_msd(root, meta["training"], meta_path, ending, ood_ids)
    else:
        cases = _cases_v2(root, ending, len(channel_names) if ("channel_names" in meta or "modality" in meta) else None,
                          ood_ids)
    if len(cases) < min_cases:
        raise UserError(f"{root}: needs at least {min_cases} labelled training cases, found {len(cases)}")
    return Layout(root, str(meta.get("name") or root.name), class_names, channel_names, cases, meta, raw)


def _ood_ids(meta: dict, where: Path) -> set:
    values = meta.get("values", {})
    if not isinstance(values, dict):
        raise UserError(f"{where}: \"values\" must be an object (e.g. {{\"ood\": [case names]}}), not a "
                        f"{type(values).__name__}")
    lists = [values.get("ood", []) if isinstance(values, dict) else [], meta.get("ood_cases", [])]
    for lst in lists:
        if not isinstance(lst, list):
            raise UserError(f"{where}: the list of shifted (OoD) cases must be a JSON list")
    return {str(c) for lst in lists for c in lst}


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


def _paths(e: dict, key: str, i: int, root: Path, where: Path) -> list[tuple[str, Path]]:
    """(as written, resolved) paths of a training entry's ``image`` or ``label`` (a path or a list)."""
    out = []
    for p in (e[key] if isinstance(e[key], list) else [e[key]]):
        if not isinstance(p, str):
            raise UserError(f"{where}: training entry {i}: {key} paths must be strings")
        out.append((p, (root / p).resolve()))
    return out


def _cases_msd(root: Path, training: list, where: Path, ending: str, ood_ids: set) -> list[Case]:
    out, seen = [], set()
    base = root.resolve()
    for i, e in enumerate(training):
        if not isinstance(e, dict) or "image" not in e:
            raise UserError(f"{where}: training entry {i} needs \"image\" and \"label\"")
        images = []
        for p, img in _paths(e, "image", i, root, where):
            if not img.is_file():  # nnU-Net v2 style entry without the channel suffix
                alt = sorted((root / "imagesTr").glob(strip_ext(Path(p).name) + "_[0-9][0-9][0-9][0-9]" + ending))
                if not alt:
                    raise UserError(f"{rel(base, img)}: image file missing")
                images += [a.resolve() for a in alt]
            else:
                images.append(img)
        if "label" not in e:
            raise UserError(f"{rel(base, images[0])}: no label declared in dataset.json")
        labels = [lab for _, lab in _paths(e, "label", i, root, where)]
        for lab in labels:
            if not lab.is_file():
                raise UserError(f"{rel(base, lab)}: label file missing for image {rel(base, images[0])}")
        name = str(e.get("id") or strip_ext(Path(_paths(e, "image", i, root, where)[0][0]).name))
        if name in seen:
            raise UserError(f"{where}: case {name} listed twice")
        seen.add(name)
        out.append(Case(name, images, labels, bool(e.get("ood", False)) or name in ood_ids))
    return out


def _cases_v2(root: Path, fe: str, n_ch: int | None, ood_ids: set) -> list[Case]:
    def visible(d):
        return [p for p in (root / d).iterdir() if p.name.endswith(fe) and not p.name.startswith(".")]
    names = sorted(p.name[: -len(f"_0000{fe}")] for p in visible("imagesTr") if p.name.endswith(f"_0000{fe}"))
    labs = {p.name[: -len(fe)]: p for p in visible("labelsTr")}
    out = []
    for case in names:
        if n_ch is None:
            files = sorted((root / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{fe}"))
        else:
            files = [root / "imagesTr" / f"{case}_{c:04d}{fe}" for c in range(n_ch)]
            for f in files:
                if not f.is_file():
                    raise UserError(f"{rel(root, f)}: channel file missing ({n_ch} channels declared)")
        if case in labs:
            labels = [labs.pop(case)]
        else:
            labels = [labs.pop(k) for k in sorted(labs) if k[:-3] == case and k[-3] == "_" and k[-2:].isdigit()]
        if not labels:
            raise UserError(f"{rel(root, files[0])}: no label file (expected labelsTr/{case}{fe})")
        out.append(Case(case, files, labels, case in ood_ids))
    for case, p in sorted(labs.items()):
        raise UserError(f"{rel(root, p)}: label without image (expected imagesTr/{case}_0000{fe})")
    return out


def nib_load(path: Path, root: Path | None = None):
    """A NIfTI image (header read, data lazy); an unreadable file is a ``UserError`` naming it."""
    try:
        import nibabel as nib
    except ImportError:  # pragma: no cover
        raise UserError("reading NIfTI needs nibabel (pip install nibabel)") from None
    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises many kinds for a bad file
        where = rel(root.resolve(), path) if root is not None else str(path)
        raise UserError(f"{where}: cannot read NIfTI ({e.__class__.__name__}: {str(e)[:80]})") from None


def read_volume(path: Path, root: Path | None = None) -> np.ndarray:
    """The voxel array of one file, as stored (any dimensionality); a zero-length axis or NaN/Inf
    voxels are one ``UserError`` naming the file."""
    img = nib_load(path, root)
    where = rel(root.resolve(), path) if root is not None else str(path)
    check_shape(img.shape, where)
    try:
        arr = np.asanyarray(img.dataobj)
    except MemoryError:
        raise
    except Exception as e:  # truncated data, bad compression, ...
        raise UserError(f"{where}: cannot read NIfTI data ({e.__class__.__name__}: {str(e)[:80]})") from None
    return check_finite(arr, where)


def check_shape(shape, where: str) -> tuple:
    """A volume's header shape: 2 to 4 axes, none of zero length (a zero-length axis would divide by
    zero in resampling or fail in a reshape much later)."""
    return validate.shape(shape, where, ndim=(2, 3, 4))


def check_finite(arr: np.ndarray, where: str) -> np.ndarray:
    """Voxels must be finite numbers (a NaN label would silently count as background)."""
    return validate.finite(arr, where)


@dataclass
class CaseHeader:
    shape: tuple
    spacing: tuple
    n_channels: int


def check_header(layout: Layout, case: Case) -> CaseHeader:
    """Shapes, affines and channel counts of one 3D case (headers only)."""
    root = layout.root.resolve()
    lab = nib_load(case.label, root)
    if len(lab.shape) != 3 and not (len(lab.shape) == 4 and lab.shape[3] == 1):
        raise UserError(f"{rel(root, case.label)}: label must be a 3D volume, has shape {tuple(lab.shape)}")
    lshape = check_shape(lab.shape[:3], rel(root, case.label))
    n_ch = 0
    for f in case.images:
        im = nib_load(f, root)
        check_shape(im.shape, rel(root, f))
        if tuple(int(v) for v in im.shape[:3]) != lshape:
            raise UserError(f"{rel(root, case.label)}: shape {lshape} does not match image "
                            f"{rel(root, f)} {tuple(int(v) for v in im.shape[:3])}")
        if not np.allclose(im.affine, lab.affine, rtol=1e-4, atol=1e-3):
            raise UserError(f"{rel(root, case.label)}: affine differs from image {rel(root, f)} "
                            f"(spacing {np.round(im.header.get_zooms()[:3], 4).tolist()} vs "
                            f"{np.round(lab.header.get_zooms()[:3], 4).tolist()}, or origin/orientation)")
        n_ch += int(im.shape[3]) if len(im.shape) == 4 else 1
    if n_ch != len(layout.channel_names):
        raise UserError(f"{rel(root, case.images[0])}: has {n_ch} channel(s), dataset.json declares {len(layout.channel_names)}")
    spacing = tuple(float(abs(v)) for v in lab.header.get_zooms()[:3])
    if min(spacing) <= 0:
        raise UserError(f"{rel(root, case.label)}: non-positive voxel spacing {spacing}")
    return CaseHeader(lshape, spacing, n_ch)


def load_label(layout: Layout, case: Case, rater: int = 0) -> np.ndarray:
    """Integer label volume ``[X, Y, Z]`` of one rater, checked against the declared classes."""
    root = layout.root.resolve()
    path = case.labels[rater]
    arr = read_volume(path, root)
    arr = arr.reshape(arr.shape[:3])
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise UserError(f"{rel(root, path)}: label values must be integers")
    vals = np.unique(arr)
    bad = [int(v) for v in vals if v < 0 or v > layout.n_classes]
    if bad:
        raise UserError(f"{rel(root, path)}: label values {bad[:5]} are not classes of dataset.json (0..{layout.n_classes})")
    return arr.astype(np.uint8 if layout.n_classes < 255 else np.int16)


def load_image(layout: Layout, case: Case) -> np.ndarray:
    """``[channels, *spatial]`` float32 (4D MSD files are channels-last); NaN/inf is an error."""
    root = layout.root.resolve()
    chans = []
    for f in case.images:
        arr = read_volume(f, root).astype(np.float32)
        if arr.ndim == 4:
            chans.extend(np.moveaxis(arr, 3, 0))
        else:
            chans.append(arr)
    try:
        out = np.stack(chans, 0)
    except ValueError:
        raise UserError(f"{rel(root, case.images[0])}: the channel files of case {case.name} differ in shape") from None
    if not np.all(np.isfinite(out)):
        raise UserError(f"{rel(root, case.images[0])}: image contains NaN/inf")
    return out


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

@dataclass
class NewCase:
    """One case to write: channel arrays (each ``[*spatial]``), rater label arrays, shifted or not."""
    name: str
    channels: Sequence[np.ndarray]
    labels: Sequence[np.ndarray]
    ood: bool = False


def reuse_generated(out: Path, generator: dict, what: str) -> bool:
    """For writers of generated datasets: True when ``out`` already holds the dataset written with
    ``generator`` (its dataset.json ``"generator"`` entry); an empty folder is removed; anything
    else there is refused (``UserError``)."""
    if not out.exists():
        return False
    try:
        old = json.loads((out / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError):
        old = None
    if old and old.get("generator") == generator:
        return True
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        return False
    raise UserError(f"{out} holds something else (not {what} with these parameters); use another --out")


def write_layout(root, cases: Iterable[NewCase], *, name: str, class_names: Sequence[str],
                 channel_names: Sequence[str], spacing: Sequence[float] | None = None, meta: dict | None = None,
                 progress=None) -> Path:
    """Write ``cases`` to ``root`` in the nnU-Net v2 raw layout (``CASE_XXXX`` channel files; one
    ``CASE.nii.gz`` label, or ``CASE_NN.nii.gz`` per rater when a case has several), shifted cases
    listed under ``values.ood``.  Written into a temporary folder and renamed into place, so a crash
    never leaves a half-written dataset; an existing ``root`` is refused."""
    try:
        import nibabel as nib
    except ImportError:  # pragma: no cover
        raise UserError("writing NIfTI needs nibabel (pip install nibabel)") from None
    root = Path(root)
    if root.exists():
        raise UserError(f"{root} exists; refusing to overwrite it")
    with atomic_dir(root) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        ood, n = [], 0
        for case in cases:
            dim = np.asarray(case.channels[0]).ndim
            affine = np.diag([*(spacing if spacing is not None else (1.0,) * 3), 1.0])
            if dim == 2:
                affine = np.eye(4)
            for c, arr in enumerate(case.channels):
                nib.save(nib.Nifti1Image(np.asarray(arr), affine), str(tmp / "imagesTr" / f"{case.name}_{c:04d}.nii.gz"))
            suffixes = [""] if len(case.labels) == 1 else [f"_{r:02d}" for r in range(len(case.labels))]
            for sfx, lab in zip(suffixes, case.labels):
                nib.save(nib.Nifti1Image(np.asarray(lab), affine), str(tmp / "labelsTr" / f"{case.name}{sfx}.nii.gz"))
            if case.ood:
                ood.append(case.name)
            n += 1
            if progress is not None:
                progress(n)
        doc = {"name": name, "channel_names": {str(c): nm for c, nm in enumerate(channel_names)},
               "modality": {str(c): nm for c, nm in enumerate(channel_names)},
               "labels": {nm: i for i, nm in enumerate(class_names)}, "numTraining": n, "file_ending": ".nii.gz",
               **({"values": {"ood": ood}} if ood else {}), **(meta or {})}
        atomic_write_json(tmp / "dataset.json", doc)
    return root
