"""End-to-end: `python -m experiments.segmentation --preset smoke`, resume, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core.errors import UserError
from core.loop import SimulatedCrash
from experiments.segmentation import main

ROOT = Path(__file__).resolve().parents[1]


def _records(run_dir):
    recs = json.loads((Path(run_dir) / "state.json").read_text())["records"]
    for r in recs:
        r.pop("timings")
    return recs


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg")
    assert main(["--preset", "smoke", "--quiet", "--out", str(out), "--method", "random_fg33", "claspe"]) == 0
    return out


def test_smoke_run_writes_everything(smoke_run, capsys):
    setting = smoke_run / "segmentation" / "phantoms" / "low"
    for f in ("curves.png", "table.md", "table.csv", "ppm.png", "queries.png", "summary.json"):
        assert (setting / f).stat().st_size > 0, f
    for m in ("random_fg33", "claspe"):
        recs = _records(setting / m / "seed0")
        assert (setting / m / "seed0" / "DONE").exists()
        assert [r["budget"] for r in recs] == [20, 40, 60, 80, 100]
        assert all(len(r["queried"]) == 20 for r in recs[:-1]) and recs[-1]["queried"] == []
        fg = [r["metrics"]["annotated_fg_voxels"] for r in recs]
        assert fg == sorted(fg) and recs[-1]["metrics"]["annotated_voxels"] > recs[0]["metrics"]["annotated_voxels"]
        assert 0 <= recs[-1]["metrics"]["mean_dice"] <= 1
    # both methods share the starting budget of the seed
    s1 = json.loads((setting / "random_fg33" / "seed0" / "state.json").read_text())["pool"]
    s2 = json.loads((setting / "claspe" / "seed0" / "state.json").read_text())["pool"]
    start = lambda s: sorted(i for i, c in zip(s["ids"], s["cycles"]) if c == 0)
    assert start(s1) == start(s2)
    table = (setting / "table.md").read_text()
    assert "ClaSP PE" in table and "Random 33% FG" in table and "FG-Eff" in table
    # every query is stored with its scores: ClaSP's quotas and β, the pool's score distribution
    q = _records(setting / "claspe" / "seed0")[1]["query"]
    assert q["detail"]["method"] == "claspe" and q["detail"]["beta"] == pytest.approx(10 ** 0.5)
    assert sum(q["detail"]["quota"].values()) == 20 and q["pool"]["n"] > 20 and len(q["picked"]["stratum"]) == 20
    from experiments.report import main as report_main
    assert report_main([str(setting), "--out", str(smoke_run / "rep"), "--scores", "1"]) == 0
    assert (smoke_run / "rep" / "scores_cycle1.png").stat().st_size > 0
    # the report finds the CLI's full-data reference (same key) and fits FG-Eff like the CLI's table
    import pandas as pd
    fg = pd.read_csv(smoke_run / "rep" / "fgeff.csv").set_index("method")["fg_eff"]
    cli_fg = pd.read_csv(setting / "table.csv").set_index("method")["fg_eff"]
    assert fg.loc["claspe"] == pytest.approx(cli_fg.loc["claspe"]) and "FG-Eff" in (smoke_run / "rep" / "ranks.csv").read_text()


def test_resume_after_crash_gives_identical_records(smoke_run, tmp_path, monkeypatch):
    args = ["--preset", "smoke", "--quiet", "--out", str(tmp_path), "--method", "claspe", "--no-full-data"]
    monkeypatch.setenv("REALISTIC_AL_CRASH_AFTER_CYCLE", "1")
    with pytest.raises(SimulatedCrash):
        main(args)
    run = tmp_path / "segmentation" / "phantoms" / "low" / "claspe" / "seed0"
    assert len(_records(run)) == 2 and not (run / "DONE").exists()
    monkeypatch.delenv("REALISTIC_AL_CRASH_AFTER_CYCLE")
    with pytest.raises(UserError, match="--resume"):
        main(args)
    assert main(args + ["--resume"]) == 0
    assert _records(run) == _records(smoke_run / "segmentation" / "phantoms" / "low" / "claspe" / "seed0")


def _bad_dataset(root: Path):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(4):
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(root / "imagesTr" / f"k{i}.nii.gz"))
        if i != 2:
            nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), str(root / "labelsTr" / f"k{i}.nii.gz"))
        training.append({"image": f"./imagesTr/k{i}.nii.gz", "label": f"./labelsTr/k{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "Bad", "labels": {"0": "bg", "1": "fg"},
                                                   "modality": {"0": "CT"}, "training": training}))
    return root


def test_bad_input_is_one_line_exit_2_and_writes_no_run(tmp_path):
    root = _bad_dataset(tmp_path / "Bad")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "experiments.segmentation", "--dataset", str(root), "--preset", "smoke",
                           "--quiet", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "labelsTr/k2.nii.gz" in lines[0]
    assert not (out / "segmentation").exists()


def test_query_patch_larger_than_image_names_the_file(tmp_path):
    with pytest.raises(UserError, match=r"labelsTr/phantom_\d+\.nii\.gz: query patch \(30, 30, 30\) is larger"):
        main(["--preset", "smoke", "--quiet", "--out", str(tmp_path), "--patch-size", "30", "30", "30"])
    assert not (tmp_path / "segmentation").exists()


def test_make_phantoms_cli(tmp_path):
    from experiments.make_phantoms import main as mk
    from segmentation.msd import read_layout
    assert mk(["--out", str(tmp_path / "ph"), "--n", "5", "--size", "16", "--quiet"]) == 0
    assert len(read_layout(tmp_path / "ph").cases) == 5
    with pytest.raises(UserError, match="something else"):
        mk(["--out", str(tmp_path / "ph"), "--n", "6", "--size", "16", "--quiet"])
