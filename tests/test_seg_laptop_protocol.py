"""The laptop preset's training protocol: a seed ensemble (every model on all annotated images)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from segmentation.plans import PRESETS, plan_network, query_setting
from tests.test_segmentation_data import write_msd


def _domain(tmp_path, **preset_kw):
    from segmentation.data import prepare
    from segmentation.experiment import SegmentationDomain
    data = prepare(write_msd(tmp_path / "ds", n=8, shape=(24, 24, 16), channels=1), tmp_path / "cache")
    preset = replace(PRESETS["smoke"], iterations=1, **preset_kw)
    qs = query_setting(None, "low", data.n_classes, data.lcc_bbox, query_size_override=4, start_override=4)
    return SegmentationDomain(data, qs, preset, plan_network(data.fingerprint()["median_shape"], data.spacing, preset),
                              seed=3)


@pytest.mark.parametrize("split", ["cv", "seeds"])
def test_seed_ensemble_trains_every_model_on_all_annotated_images(tmp_path, monkeypatch, split):
    import segmentation.experiment as ex
    seen = []
    real = ex.train_model

    def spy(sampler, *a, **k):
        seen.append(len(sampler.images))
        return real(sampler, *a, **k)
    monkeypatch.setattr(ex, "train_model", spy)
    dom = _domain(tmp_path, ensemble=2, ensemble_split=split)
    pool = dom.initial_pool()
    n_annotated = sum(pool.annotation_mask(j).any() for j in range(pool.n_images))
    assert n_annotated >= 2
    ens = dom.train(pool, 0)
    w = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in ens.models]
    assert len(w) == 2 and not torch.equal(w[0], w[1])        # the two models differ by their seeds
    if split == "seeds":
        assert ens.folds == [[], []] and seen == [n_annotated, n_annotated]
    else:                                                     # K-fold CV: each model misses its fold
        assert all(len(f) > 0 for f in ens.folds) and all(s < n_annotated for s in seen)
        assert sorted(i for f in ens.folds for i in f) == [j for j in range(pool.n_images)
                                                           if pool.annotation_mask(j).any()]


def test_seed_ensemble_on_the_nnunet_backend_is_one_line(tmp_path, capsys):
    from tests.test_seg_followups import _cli
    code, _, err = _cli(capsys, ["--preset", "smoke", "--dataset", "phantoms", "--method", "random", "--backend", "nnunet",
                                 "--ensemble-split", "seeds", "--out", str(tmp_path / "o")])
    assert code == 2 and "--ensemble-split seeds needs --backend monai" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_seed_spread_benchmark_reproduces_a_recorded_loop(tmp_path, capsys):
    """benchmarks/seg_seed_spread.py rebuilds a loop's annotation from the run's state: with the run's
    own train seed it reproduces the recorded Dice exactly; another seed trains another model."""
    import importlib.util
    import json
    from pathlib import Path
    from tests.test_seg_followups import _cli
    root = write_msd(tmp_path / "ds", n=8, shape=(24, 24, 16), channels=1)
    out = tmp_path / "o"
    code, _, err = _cli(capsys, ["--preset", "smoke", "--dataset", str(root), "--method", "random", "--no-full-data",
                                 "--loops", "2", "--start-size", "4", "--query-size", "4", "--out", str(out)])
    assert code == 0, err
    run = next(out.rglob("cycles.jsonl")).parent
    recorded = [json.loads(line)["metrics"]["mean_dice"] for line in open(run / "cycles.jsonl")]
    spec = importlib.util.spec_from_file_location("seg_seed_spread", Path(__file__).parents[1] / "benchmarks/seg_seed_spread.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    log = tmp_path / "spread.jsonl"
    assert mod.main([str(run), "--cycle", "1", "--dataset", str(root), "--train-seeds", "run", "1", "--log", str(log)]) == 0
    rows = [json.loads(line) for line in open(log)]
    assert [r["train_seed"] for r in rows] == ["run", "1"] and rows[0]["n_patches"] == 8
    assert rows[0]["mean_dice"] == recorded[1]


def test_the_split_is_recorded_only_when_it_is_not_the_thesis_cv():
    """Configs and full-data keys written before the field existed stay valid (resumable, same key)."""
    from dataclasses import asdict
    cv = replace(PRESETS["laptop"], ensemble_split="cv")
    assert "ensemble_split" not in cv.to_dict() and "ensemble_split" not in PRESETS["thesis"].to_dict()
    assert cv.to_dict() == {k: v for k, v in asdict(cv).items() if k != "ensemble_split"}
    assert PRESETS["laptop"].to_dict()["ensemble_split"] == "seeds"


def test_the_laptop_preset_is_a_two_model_seed_ensemble_and_nnunet_keeps_its_folds(tmp_path, capsys):
    """The laptop preset trains two models on all annotated images (its measured 5-loop brain curves);
    with --backend nnunet, which trains its own folds, the preset's split becomes nnU-Net's 2 folds
    instead of a refusal (only an explicit --ensemble-split seeds is refused there)."""
    import json
    from tests.test_seg_followups import _cli
    lap = PRESETS["laptop"]
    assert (lap.ensemble, lap.ensemble_split, lap.iterations) == (2, "seeds", 800)
    base = ["--preset", "laptop", "--dataset", "phantoms", "--method", "random", "--out", str(tmp_path / "o"),
            "--dry-run"]
    code, out, err = _cli(capsys, base)
    assert code == 0, err
    cfg = json.loads(out)
    assert cfg["preset"]["ensemble"] == 2 and cfg["preset"]["ensemble_split"] == "seeds"
    code, out, err = _cli(capsys, base + ["--backend", "nnunet"])
    assert code == 0, err
    cfg = json.loads(out)
    assert cfg["backend"] == "nnunet" and cfg["preset"]["ensemble"] == 2 and "ensemble_split" not in cfg["preset"]
    assert not (tmp_path / "o").exists()
