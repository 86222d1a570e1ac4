"""Segmentation leftovers of issues 12/13: the starting budget decoupled from the query size and the
loops (--start-size, --query-size, --query-scale), Patch×½ (--patch-half), the schedule checked
against the dataset before training (capped default / refused user schedule), the dry run resolving
the D.5 patch and the network plan without writing, test-time mirroring as a plan option, and the
same training seed in every loop of a run."""
import json

import numpy as np
import pytest

from core.errors import UserError
from experiments.common import main_guard
from experiments.segmentation import main
from segmentation.budget import fit_schedule, packing_capacity, random_fill
from segmentation.plans import PRESETS, declared_mirror, match_setting, mirror_policy, query_setting
from tests.test_segmentation_data import write_msd


def _cli(capsys, argv):
    """(exit code, stdout, stderr) of the CLI through main_guard."""
    with pytest.raises(SystemExit) as e:
        main_guard(main, argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _dry(capsys, *argv):
    code, out, err = _cli(capsys, [*argv, "--dry-run"])
    assert code == 0, err
    return json.loads(out)


# -- a: query size, starting budget and loops are independent ------------------------------------

def test_query_size_no_longer_sets_the_starting_budget():
    acdc = match_setting("ACDC")
    base = query_setting(acdc, "low", 3, {})
    assert (base.start_size, base.query_size, base.loops) == (30, 30, 5) and base.budgets == [30, 60, 90, 120, 150]
    assert "start_size" not in base.to_dict()          # the thesis rule: old run configs stay equal
    qs = query_setting(acdc, "low", 3, {}, query_size_override=10, loops=4)
    assert (qs.start_size, qs.query_size, qs.loops) == (30, 10, 4) and qs.budgets == [30, 40, 50, 60]
    assert qs.to_dict()["start_size"] == 30
    qs = query_setting(acdc, "low", 3, {}, start_override=12)
    assert qs.budgets == [12, 42, 72, 102, 132]


@pytest.mark.parametrize("dataset,regime,scale,query,loops", [
    ("ACDC", "low", 0.5, 15, 9), ("ACDC", "low", 2, 60, 3), ("AMOS", "high", 0.5, 250, 9), ("KiTS", "low", 2, 80, 3)])
def test_query_scale_is_the_thesis_query_size_ablation(dataset, regime, scale, query, loops):
    """Spec §8.4 ([R] configurations): same starting and total budget, query × F, 1 + 4/F loops."""
    main_qs = query_setting(match_setting(dataset), regime, 3, {})
    qs = query_setting(match_setting(dataset), regime, 3, {}, query_scale=scale)
    assert (qs.query_size, qs.loops, qs.start_size) == (query, loops, main_qs.start_size)
    assert qs.budgets[-1] == main_qs.budgets[-1]


@pytest.mark.parametrize("kw,needle", [
    ({"query_scale": 0.3}, "must be whole numbers"),
    ({"query_scale": 2, "query_size_override": 10}, "do not combine it with --query-size"),
    ({"query_scale": 2, "loops": 4}, "do not combine it with --query-size or --loops"),
    ({"patch_half": True, "patch_override": (4, 4, 4)}, "do not combine it with --patch-size")])
def test_impossible_schedule_flags_are_refused(kw, needle):
    with pytest.raises(UserError, match=needle):
        query_setting(match_setting("ACDC"), "low", 3, {}, **kw)


def test_start_size_query_size_and_loops_reach_the_run(tmp_path):
    assert main(["--preset", "smoke", "--quiet", "--out", str(tmp_path), "--method", "random_fg33", "--no-full-data",
                 "--start-size", "12", "--query-size", "6", "--loops", "3"]) == 0
    run = tmp_path / "segmentation" / "phantoms" / "low" / "random_fg33" / "seed0"
    recs = json.loads((run / "state.json").read_text())["records"]
    assert [r["budget"] for r in recs] == [12, 18, 24]
    assert [len(r["queried"]) for r in recs] == [6, 6, 0]
    q = json.loads((run / "config.json").read_text())["config"]["query"]
    assert (q["start_size"], q["query_size"], q["loops"]) == (12, 6, 3)


# -- b: Patch×½ ----------------------------------------------------------------------------------

def test_patch_half_uses_the_reference_sizes_and_halves_d5_patches(capsys, tmp_path):
    # thesis datasets (array order x, y, z = the thesis' z, y, x reversed): [R] sizes, AMOS 16×32×32 (§12 erratum 8)
    for name, half in (("AMOS", (32, 32, 16)), ("ACDC", (20, 20, 2)), ("KiTS", (32, 32, 32)), ("Hippocampus", (10, 10, 10))):
        qs = query_setting(match_setting(name), "low", 3, {}, patch_half=True)
        assert qs.patch == half and qs.query_size == query_setting(match_setting(name), "low", 3, {}).query_size
    full = _dry(capsys, "--preset", "smoke", "--out", str(tmp_path / "o"))["query"]
    half = _dry(capsys, "--preset", "smoke", "--out", str(tmp_path / "o"), "--patch-half")["query"]
    assert half["patch"] == [max(1, p // 2) for p in full["patch"]] and half["budgets"] == full["budgets"]
    assert any("Patch×½" in n for n in half["notes"])
    code, _, err = _cli(capsys, ["--preset", "smoke", "--out", str(tmp_path / "o"), "--patch-half",
                                 "--patch-size", "4", "4", "4"])
    assert code == 2 and "--patch-half" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


# -- d: the dry run resolves the D.5 patch and the network plan without writing -----------------

def test_dry_run_resolves_patch_and_plan_like_the_run_and_writes_nothing(capsys, tmp_path):
    root = write_msd(tmp_path / "ds", n=8, shape=(24, 24, 16))   # 12x12x8 is too small for the network: refused
    before = sorted(p.name for p in root.rglob("*"))
    c = _dry(capsys, "--preset", "smoke", "--dataset", str(root), "--out", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists() and sorted(p.name for p in root.rglob("*")) == before
    from segmentation.data import prepare
    from segmentation.plans import d5_patch_size, plan_network
    data = prepare(root, tmp_path / "cache")
    assert c["query"]["patch"] == list(d5_patch_size(data.lcc_bbox))
    fp = data.fingerprint()
    assert c["network_plan"] == plan_network(fp["median_shape"], data.spacing, PRESETS["smoke"]).to_dict()
    assert c["dataset_facts"]["median_shape"] == fp["median_shape"]
    assert c["dataset_facts"]["target_spacing"] == list(data.spacing)


# -- e: the schedule is checked against the dataset before any training --------------------------

def test_capacity_estimates():
    shapes = [(40, 40, 40)] * 3
    assert packing_capacity(shapes, (10, 10, 10)) == 3 * 64
    fills = [random_fill(shapes, (10, 10, 10), (1, 1, 1), s) for s in range(3)]
    assert all(3 * 8 <= f <= 3 * 64 for f in fills)          # between the worst maximal and the perfect packing
    assert random_fill(shapes, (10, 10, 10), (1, 1, 1), 5) == random_fill(shapes, (10, 10, 10), (1, 1, 1), 5)
    assert random_fill([(20, 20, 20)], (10, 10, 10), (10, 10, 10), 0) == 8   # stride = patch: perfect tiling


def test_default_schedule_is_capped_and_a_user_schedule_refused():
    shapes = [(30, 30, 30)] * 4
    qs = query_setting(None, "low", 2, {0: [[10, 10, 10], [10, 10, 10]]})          # D.5: 100 patches/loop
    capped = fit_schedule(qs, shapes, 3, user_set=False)
    assert capped.start_size == capped.query_size < 100 and capped.loops == 5
    assert capped.budgets[-1] <= packing_capacity(shapes, (10, 10, 10))
    assert "schedule capped" in capped.notes[-1] and "100 + 4 × 100" in capped.notes[-1]
    with pytest.raises(UserError, match=r"10 \+ 4 × 30 = 130 patches .* use --query-size \d+ or less"):
        fit_schedule(query_setting(None, "low", 2, {0: [[10, 10, 10]] * 2}, query_size_override=30, start_override=10),
                     shapes, 3, {"start", "query"})
    # only --query-size set: the default starting budget is what gets capped, the user's query size stays
    qs2 = fit_schedule(query_setting(None, "low", 2, {0: [[10, 10, 10]] * 2}, query_size_override=2), shapes, 3, {"query"})
    assert qs2.query_size == 2 and 3 <= qs2.start_size < 100 and "100 + 4 × 2" in qs2.notes[-1]
    # only --start-size set: the query size is capped
    qs3 = fit_schedule(query_setting(None, "low", 2, {0: [[10, 10, 10]] * 2}, start_override=5), shapes, 3, {"start"})
    assert qs3.start_size == 5 and 1 <= qs3.query_size < 100
    with pytest.raises(UserError, match="no schedule with a starting budget of one patch per label"):
        fit_schedule(qs, [(10, 10, 10)], 3, user_set=False)
    ok = query_setting(None, "low", 2, {0: [[10, 10, 10]] * 2}, query_size_override=2, start_override=3)
    assert fit_schedule(ok, shapes, 3, user_set=True) is ok
    # a thesis table's per-image limit (20 patches per image) caps a default query on few images
    hip = query_setting(match_setting("Hippocampus"), "high", 2, {})                  # 60 patches per query
    small = fit_schedule(hip, [(200, 200, 200)] * 2, 3, user_set=())
    assert small.query_size <= 2 * 20 and small.n_patch_per_image == 20


def test_small_dataset_default_is_capped_up_front_and_runs_every_loop(tmp_path, capsys, monkeypatch):
    """Issue 13: the D.5 default (50 patches per class and loop) on a 6-image dataset — capped with a
    printed note before training; all 5 loops run (no "only 15 of 20 patches fit" at loop 4)."""
    monkeypatch.setenv("REALISTIC_AL_QUIET", "0")
    root = write_msd(tmp_path / "ds", n=8, shape=(24, 24, 16), channels=1)
    argv = ["--preset", "smoke", "--dataset", str(root), "--method", "random_fg66", "--no-full-data",
            "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "schedule capped to fit the dataset: 100 + 4 × 100" in err
    run = next((tmp_path / "o" / "segmentation").glob("*/low/random_fg66/seed0"))
    recs = json.loads((run / "state.json").read_text())["records"]
    q = json.loads((run / "config.json").read_text())["config"]["query"]
    assert len(recs) == 5 and [r["budget"] for r in recs] == [q["query_size"] * (k + 1) for k in range(5)]
    assert any("schedule capped" in n for n in q["notes"])
    # a user's schedule that cannot fit: one line before anything is trained or written
    code, _, err = _cli(capsys, argv[:-1] + [str(tmp_path / "o2"), "--query-size", "200"])
    assert code == 2 and err.count("\n") == 1 and "do not fit" in err and "--query-size" in err
    assert not list((tmp_path / "o2").glob("**/low"))


# -- c: test-time mirroring is a per-dataset plan option -----------------------------------------

def test_mirror_policy_per_dataset():
    assert mirror_policy(["bg", "liver"], None) == (True, True, "no left/right labels")
    assert mirror_policy(["bg", "tooth"], None, match_setting("ToothFairy2"))[:2] == (False, False)   # §D.3
    assert mirror_policy(["bg", "tumour"], None, match_setting("MAMA-MIA"))[:2] == (True, False)     # no TTA
    assert mirror_policy(["bg", "liver"], None, match_setting("LiTS"))[:2] == (True, True)
    assert mirror_policy(["bg", "liver"], {"test": False})[:2] == (True, False)
    assert mirror_policy(["bg", "liver"], {"train": False})[:2] == (False, False)
    assert mirror_policy(["bg", "left_kidney"], {"train": True, "test": False})[:2] == (True, False)
    assert mirror_policy(["bg", "tumour"], True, match_setting("MAMA-MIA"))[:2] == (True, True)     # dataset.json wins
    for bad in ("yes", {"tta": False}, {"test": 1}, {}):
        with pytest.raises(UserError, match='"mirror" must be'):
            declared_mirror({"mirror": bad}, "dataset.json")


def test_test_time_mirroring_follows_the_dataset_plan(tmp_path, monkeypatch):
    from dataclasses import replace
    from segmentation.data import prepare
    from segmentation.experiment import SegmentationDomain
    from segmentation.plans import plan_network
    root = write_msd(tmp_path / "ds", n=8)
    meta = json.loads((root / "dataset.json").read_text())
    seen = {}
    for declared, expect in ((None, True), ({"test": False}, False)):
        if declared is not None:
            meta["mirror"] = declared
            (root / "dataset.json").write_text(json.dumps(meta))
        data = prepare(root, tmp_path / "cache")
        preset = replace(PRESETS["smoke"], tta_test=True)
        qs = query_setting(None, "low", data.n_classes, data.lcc_bbox)
        dom = SegmentationDomain(data, qs, preset, plan_network(data.fingerprint()["median_shape"], data.spacing, preset),
                                 seed=0)

        class Model:
            def predict(self, image, overlap=0.25, mirror=False):
                seen.setdefault(str(declared), []).append(mirror)
                import torch
                return torch.ones((1, data.n_classes + 1, *image.shape[1:])) / (data.n_classes + 1)
        dom.test_metrics(Model())
        assert set(seen[str(declared)]) == {expect} and data.mirror is True


# -- f: one training seed per run (common random numbers across loops) --------------------------

@pytest.mark.parametrize("train_seed,same", [("run", True), ("loop", False)])
def test_loops_share_the_initialisation_of_their_run(tmp_path, train_seed, same):
    from dataclasses import replace
    import torch
    from segmentation.data import prepare
    from segmentation.experiment import SegmentationDomain
    from segmentation.plans import plan_network
    data = prepare(write_msd(tmp_path / "ds", n=8, shape=(24, 24, 16), channels=1), tmp_path / "cache")
    preset = replace(PRESETS["smoke"], ensemble=1, iterations=1, train_seed=train_seed)
    qs = query_setting(None, "low", data.n_classes, data.lcc_bbox, query_size_override=4, start_override=4)
    dom = SegmentationDomain(data, qs, preset, plan_network(data.fingerprint()["median_shape"], data.spacing, preset),
                             seed=3)
    pool = dom.initial_pool()
    a, b = dom.train(pool, 0), dom.train(pool, 1)        # same annotation, loops 1 and 2
    wa = torch.cat([p.detach().flatten() for p in a.models[0].parameters()])
    wb = torch.cat([p.detach().flatten() for p in b.models[0].parameters()])
    assert torch.equal(wa, wb) is same


def test_images_too_small_for_the_network_are_one_line_before_training(tmp_path, capsys):
    """A 12×12×8 dataset cannot be pooled twice to 4-voxel feature maps: refused in one line (was a
    DynUNet traceback inside the job)."""
    root = write_msd(tmp_path / "ds", n=8, shape=(12, 12, 8), channels=1)
    code, _, err = _cli(capsys, ["--preset", "smoke", "--dataset", str(root), "--method", "random", "--no-full-data",
                                 "--out", str(tmp_path / "o")])
    assert code == 2 and "too small for the network" in err and len(err.strip().splitlines()) == 1, err
    assert not list((tmp_path / "o").rglob("config.json"))


def test_images_too_small_for_the_network_are_refused_by_the_dry_run_too(tmp_path, capsys):
    """``--dry-run`` applies the same network-fit check as the run: one ``error:`` line, exit 2,
    nothing written (it printed a plan the run would refuse)."""
    root = write_msd(tmp_path / "ds", n=8, shape=(12, 12, 8), channels=1)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = _cli(capsys, ["--preset", "smoke", "--dataset", str(root), "--method", "random",
                                   "--out", str(tmp_path / "o"), "--dry-run"])
    assert code == 2 and out == "", out
    assert err.startswith("error: ") and "too small for the network" in err and err.count("\n") == 1, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before   # nothing written
    # the same images are planned by nnU-Net's own planner: no refusal there
    code, out, err = _cli(capsys, ["--preset", "smoke", "--dataset", str(root), "--method", "random",
                                   "--backend", "nnunet", "--out", str(tmp_path / "o"), "--dry-run"])
    assert code == 0 and json.loads(out)["backend"] == "nnunet", err
