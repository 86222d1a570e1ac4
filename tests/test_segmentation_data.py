"""MSD / nnU-Net raw loader on generated NIfTI fixtures, resampling, split, phantoms, D.5 rule."""
import json

import nibabel as nib
import numpy as np
import pytest

from core.errors import UserError
from segmentation.data import largest_component_bbox, prepare, split_cases
from segmentation.msd import read_layout
from segmentation.phantoms import make_case, write_phantoms
from segmentation.plans import d5_patch_size, match_setting, query_setting


def _case(rng, shape):
    lab = np.zeros(shape, np.uint8)
    lab[2:8, 2:8, 1:5] = 1
    lab[9:11, 9:11, 5:7] = 2
    img = (lab * 1.0 + rng.normal(0, 0.1, shape)).astype(np.float32)
    return img, lab


def write_msd(root, n=8, shape=(12, 12, 8), spacings=None, channels=2, bad=None):
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(n):
        img, lab = _case(rng, shape)
        sp = spacings[i] if spacings else (1.0, 1.0, 2.0)
        aff = np.diag([*sp, 1.0])
        data = np.stack([img * (c + 1) for c in range(channels)], -1) if channels > 1 else img
        nib.save(nib.Nifti1Image(data, aff), str(root / "imagesTr" / f"c{i}.nii.gz"))
        lab_aff, lab_data = aff, lab
        if bad == "shape" and i == 3:
            lab_data = lab[:-1]
        if bad == "affine" and i == 3:
            lab_aff = np.diag([*sp, 1.0])
            lab_aff[0, 3] = 5.0
        if bad == "value" and i == 3:
            lab_data = lab.copy()
            lab_data[0, 0, 0] = 7
        if not (bad == "missing" and i == 3):
            nib.save(nib.Nifti1Image(lab_data, lab_aff), str(root / "labelsTr" / f"c{i}.nii.gz"))
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    meta = {"name": "Fixture", "modality": {str(c): f"MR{c}" for c in range(channels)},
            "labels": {"0": "background", "1": "big", "2": "small"}, "numTraining": n, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_msd_loader_multichannel_resampling_and_cache(tmp_path):
    sp = [(1.0, 1.0, 2.0)] * 6 + [(2.0, 2.0, 4.0)] * 2    # two coarser cases get resampled
    root = write_msd(tmp_path / "raw", spacings=sp)
    ds = read_layout(root)
    assert ds.class_names == ["background", "big", "small"] and ds.channel_names == ["MR0", "MR1"]
    p = prepare(root, tmp_path / "cache")
    assert len(p.train) == 6 and len(p.test) == 2 and p.n_channels == 2
    assert set(p.train) | set(p.test) == set(range(8))
    train_sp = [sp[i] for i in p.train]
    assert p.spacing == tuple(np.median(train_sp, 0))
    for i in range(8):
        factor = np.asarray(sp[i]) / np.asarray(p.spacing)
        assert p.shapes[i] == tuple(int(round(s * f)) for s, f in zip((12, 12, 8), factor))
        img, lab = p.image(i), np.asarray(p.label(i))
        assert img.shape == (2, *p.shapes[i]) and lab.shape == p.shapes[i]
        assert set(np.unique(lab)) <= {0, 1, 2}
        np.testing.assert_allclose(img.reshape(2, -1).mean(1), 0, atol=1e-4)  # per-image z-score
    # second call: served from the cache, identical
    q = prepare(root, tmp_path / "cache")
    assert q.cache_dir == p.cache_dir and np.array_equal(q.train, p.train)
    assert len([d for d in (tmp_path / "cache").iterdir() if not d.name.startswith(".")]) == 1  # + its lock file
    # D.5 bounding boxes were recorded for train+pool cases
    assert set(p.lcc_bbox) == set(p.train.tolist())


def test_v2_layout_with_channel_files(tmp_path):
    root = tmp_path / "Dataset001_X"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        img, lab = _case(rng, (12, 12, 8))
        for c in range(2):
            nib.save(nib.Nifti1Image(img + c, np.eye(4)), str(root / "imagesTr" / f"x_{i:03d}_{c:04d}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labelsTr" / f"x_{i:03d}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "T2"}, "file_ending": ".nii.gz",
                                                   "labels": {"background": 0, "big": 1, "small": 2}, "numTraining": 4}))
    p = prepare(root, tmp_path / "cache")
    assert p.cases == [f"x_{i:03d}" for i in range(4)] and p.n_channels == 2
    assert p.norm[0]["scheme"] == "ct" and p.norm[1]["scheme"] == "zscore"
    (root / "labelsTr" / "x_002.nii.gz").unlink()
    with pytest.raises(UserError, match="x_002_0000.nii.gz: no label file"):
        prepare(root, tmp_path / "cache2")


@pytest.mark.parametrize("bad,match", [
    ("missing", r"labelsTr/c3.nii.gz: label file missing"),
    ("shape", r"labelsTr/c3.nii.gz: shape \(11, 12, 8\) does not match"),
    ("affine", r"labelsTr/c3.nii.gz: affine differs"),
    ("value", r"labelsTr/c3.nii.gz: label values \[7\] are not classes"),
])
def test_bad_datasets_fail_with_the_file_named_and_write_nothing(tmp_path, bad, match):
    root = write_msd(tmp_path / "raw", bad=bad, channels=1)
    with pytest.raises(UserError, match=match):
        prepare(root, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_bad_dataset_json(tmp_path):
    root = write_msd(tmp_path / "raw", channels=1)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "2": "gap"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="consecutive"):
        read_layout(root)
    meta["labels"] = {"0": "background", "1": "a"}
    meta["modality"] = {"0": "a", "1": "b"}     # 2 channels declared, files have 1
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="has 1 channel"):
        prepare(root, tmp_path / "cache")
    with pytest.raises(UserError, match="dataset.json: missing"):
        read_layout(tmp_path)


def test_split_is_75_25_and_fixed_by_seed():
    tr, te = split_cases(100)
    assert len(te) == 25 and len(tr) == 75 and not set(tr) & set(te)
    assert np.array_equal(split_cases(100)[1], te)
    assert not np.array_equal(split_cases(100, seed=1)[1], te)


def test_phantoms_are_seeded_and_written_in_msd_layout(tmp_path):
    a_img, a_lab = make_case(0, 3, 24)
    b_img, b_lab = make_case(0, 3, 24)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(make_case(1, 3, 24)[1], a_lab)
    assert set(np.unique(a_lab)) <= {0, 1, 2, 3} and (a_lab == 1).mean() > 0.03
    root = write_phantoms(tmp_path / "ph", n=6, size=24, seed=0)
    ds = read_layout(root)
    assert len(ds.cases) == 6 and ds.class_names == ["background", "organ", "vessel", "lesion"]
    assert np.array_equal(np.asarray(nib.load(str(ds.cases[3].label)).dataobj), a_lab)
    write_phantoms(tmp_path / "ph", n=6, size=24, seed=0)         # same parameters: reused
    with pytest.raises(UserError):
        write_phantoms(tmp_path / "ph", n=7, size=24, seed=0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.suffix != ".lock"]  # no temp folders


def test_d5_patch_rule_and_thesis_settings():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[0:10, 0:8, 0:6] = 1
    lab[15:17, 15:19, 15:16] = 1      # smaller component of class 1 is ignored
    lab[12:15, 0:3, 0:3] = 2
    bb = largest_component_bbox(lab, 2)
    assert bb.tolist() == [[10, 8, 6], [3, 3, 3]]
    assert d5_patch_size({0: bb, 1: bb}) == (6, 6, 4)   # median over the 2 classes (round half to even)
    hip = match_setting("Task04_Hippocampus")
    qs = query_setting(hip, "medium", 2, {})
    assert qs.patch == (20, 20, 20) and qs.query_size == 40 and qs.n_patch_per_image == 20
    acdc = query_setting(match_setting("ACDC"), "low", 3, {})
    assert acdc.patch == (40, 40, 4) and acdc.agg_stride == (8, 8, 1)   # thesis (z,y,x) → array (x,y,z)
    new = query_setting(None, "low", 3, {0: bb})
    assert new.query_size == 150 and new.patch == (6, 6, 4) and new.n_patch_per_image == 150
    with pytest.raises(UserError):
        query_setting(match_setting("LiTS"), "low", 2, {})
