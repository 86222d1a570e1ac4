"""Reliability: the store's truth and its repaired views, locks, disk faults, the PPM by seed id, NaN in
the uncertainty metrics, fp32 augmentation under bf16 autocast, safe checkpoint loading."""
from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from classification import query as _cls  # noqa: F401  (registers the classification methods)
from core import query as Q
from core.errors import UserError
from core.loop import ActiveLearningLoop, SimulatedCrash
from core.pool import Pool
from core.store import RunStore, load_run
from test_core_pool_store_loop import _Fake

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ the store: one truth

def _run(d: Path, n=60):
    pool = Pool(n)
    store = RunStore(d, {"method": "entropy"})
    if store.pool_state is None:
        pool.label([0, 1, 2], 0)
    f = _Fake(n)
    return ActiveLearningLoop(pool, train=f.train, evaluate=f.evaluate, evidence=f.evidence, query=Q.get("classification", "entropy"),
                              query_sizes=[5, 5, 5], store=store, seed=3).run()


def _strip(records):
    return [{k: v for k, v in r.items() if k != "timings"} for r in records]


def _view(d: Path):
    return [json.loads(x) for x in (d / "cycles.jsonl").read_text().splitlines()]


def test_finished_run_whose_view_lost_its_last_cycle_is_repaired_on_resume_and_report(tmp_path):
    full = _run(tmp_path / "a")
    # the state of a SIGKILL between the last commit's two writes: truth has 4 cycles, the view 3, no DONE
    d = tmp_path / "b"
    _run(d)
    state = json.loads((d / "state.json").read_text())
    (d / "cycles.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in state["records"][:-1]))
    state["done"] = False
    (d / "state.json").write_text(json.dumps(state))
    (d / "DONE").unlink()
    assert len(_view(d)) == 3
    _, records = load_run(d)                      # a report reads the truth and repairs the view
    assert len(records) == 4 and len(_view(d)) == 4
    (d / "cycles.jsonl").write_text("")           # view damaged again: resume repairs it too
    resumed = _run(d)
    assert _strip(resumed) == _strip(full) and _view(d) == resumed and (d / "DONE").exists()


def test_done_marker_without_cycles_is_stale_and_the_run_completes(tmp_path):
    d = tmp_path / "run"
    RunStore(d, {"method": "entropy"}).close()   # created, killed before the first commit
    (d / "DONE").write_text("")
    records = _run(d)
    assert len(records) == 4 and json.loads((d / "state.json").read_text())["done"] and (d / "DONE").exists()


def test_temp_files_of_killed_writes_are_removed_when_the_run_is_opened(tmp_path):
    d = tmp_path / "run"
    RunStore(d, {"method": "entropy"}).close()
    (d / ".state.json.abc123.tmp").write_text("{half")
    (d / "sub").mkdir()
    (d / "sub" / ".piece.npz.x.tmp").write_bytes(b"\0")
    RunStore(d, {"method": "entropy"}).close()
    assert not list(d.rglob("*.tmp"))


@pytest.mark.parametrize("damage,needle", [
    ({"records": "x", "pool": None}, "records is a str"),
    ({"records": [[1, 2]], "pool": {}}, "record 0 is a list"),
    ({"records": [{"cycle": 0, "budget": "ten"}], "pool": {}}, "'budget' has the wrong type"),
    ({"records": [{"cycle": 1}], "pool": {}}, "labelled cycle 1"),
    ({"records": [{"cycle": 0}], "pool": None}, "pool state missing"),
    ({"records": [], "pool": None, "done": "yes"}, "done is not true/false"),
])
def test_state_with_wrong_types_is_one_line_naming_file_and_recovery(tmp_path, damage, needle):
    d = tmp_path / "run"
    RunStore(d, {"a": 1}).close()
    (d / "state.json").write_text(json.dumps(damage))
    with pytest.raises(UserError) as e:
        RunStore(d, {"a": 1})
    assert needle in str(e.value) and str(d / "state.json") in str(e.value) and "delete" in str(e.value)
    assert "\n" not in str(e.value)


def test_done_run_with_fewer_records_than_the_schedule_is_refused(tmp_path):
    d = tmp_path / "run"
    _run(d)
    state = json.loads((d / "state.json").read_text())
    state["records"] = state["records"][:2]
    (d / "state.json").write_text(json.dumps(state))
    with pytest.raises(UserError, match="2 records marked done but the schedule has 4 cycles"):
        _run(d)


def test_second_writer_of_a_run_directory_is_refused(tmp_path):
    d = tmp_path / "run"
    with RunStore(d, {"a": 1}):
        code = ("import sys; sys.path.insert(0, %r)\nfrom core.store import RunStore\nfrom core.errors import UserError\n"
                "try:\n    RunStore(%r, {'a': 1})\nexcept UserError as e:\n    print(e); sys.exit(3)\n") % (str(ROOT), str(d))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 3 and "being written by another process" in r.stdout
    RunStore(d, {"a": 1}).close()  # released


def test_simulated_crash_releases_the_lock_for_an_in_process_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("REALISTIC_AL_CRASH_AFTER_CYCLE", "1")
    with pytest.raises(SimulatedCrash):
        _run(tmp_path)
    monkeypatch.delenv("REALISTIC_AL_CRASH_AFTER_CYCLE")
    assert len(_run(tmp_path)) == 4


# ------------------------------------------------------------------------ disk faults

def test_disk_full_at_the_write_boundary_is_one_line_naming_the_path(tmp_path):
    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")
    from core.store import atomic_write
    with pytest.raises(UserError) as e:
        atomic_write(tmp_path / "x" / "state.json", full)
    msg = str(e.value)
    assert str(tmp_path / "x" / "state.json") in msg and "no space left" in msg and "--resume" in msg
    assert not [p for p in (tmp_path / "x").iterdir()]   # no temp file left


def test_main_guard_turns_read_only_and_memory_errors_into_one_line(capsys):
    from experiments.common import main_guard

    def ro(argv):
        raise OSError(errno.EROFS, "Read-only file system", "/data/out/model.npy")

    def oom(argv):
        raise MemoryError()
    for fn, needle in ((ro, "/data/out/model.npy: read-only file system"), (oom, "out of memory")):
        with pytest.raises(SystemExit) as e:
            main_guard(fn, [])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err


def _unshare_ok() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _unshare_ok(), reason="needs unshare (user + mount namespaces) for a tiny tmpfs")
def test_real_disk_full_is_one_line_and_resume_on_more_space_reproduces(tmp_path):
    """values smoke on a 20 KB tmpfs: ENOSPC mid-run → one line, exit 2; the same folder remounted
    with space → --resume → the results of an uninterrupted run."""
    args = ["--dataset", "toy2d", "--preset", "smoke", "--seeds", "1", "--workers", "1", "--models", "softmax",
            "--tasks", "separation", "ood", "--no-plots", "--quiet"]
    from experiments.common import main_guard
    from experiments.values import main
    with pytest.raises(SystemExit):
        main_guard(main, [*args, "--out", str(tmp_path / "ref")])
    mnt, host = tmp_path / "mnt", tmp_path / "host"
    mnt.mkdir()
    host.mkdir()
    py = f"{sys.executable} -m experiments.values " + " ".join(args) + f" --out {mnt}/out"
    script = (f"mount -t tmpfs -o size=20k none {mnt} || exit 9\n"
              f"{py} 2> {host}/err1; echo $? > {host}/rc1\n"
              f"mount -o remount,size=64m {mnt}\n"
              f"{py} --resume 2> {host}/err2; echo $? > {host}/rc2\n"
              f"cp {mnt}/out/toy2d_smoke/results.csv {host}/ 2>/dev/null; true\n")
    env = {**os.environ, "REALISTIC_AL_QUIET": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    err1 = (host / "err1").read_text()
    assert (host / "rc1").read_text().strip() == "2", err1
    assert err1.count("\n") == 1 and err1.startswith("error: ") and "no space left on device" in err1, err1
    assert (host / "rc2").read_text().strip() == "0", (host / "err2").read_text()
    assert (host / "results.csv").read_text() == (tmp_path / "ref" / "toy2d_smoke" / "results.csv").read_text()


# ------------------------------------------------------------------------ PPM by seed id

def test_ppm_pairs_by_seed_id_with_shifted_seed_sets():
    """A on seeds 0–4, B on seeds 1–5; for every common seed A is better by 0.1 + noise, but the
    seed levels differ by 10: pairing by position would make B win everywhere."""
    from core.report import ppm_from_runs
    runs = []
    for k in range(6):
        base = 10.0 * k
        diff = 0.1 + 0.01 * k
        if k <= 4:
            runs.append({"method": "A", "seed": k, "setting": "s", "budgets": [1, 2, 3], "values": [base + diff] * 3})
        if k >= 1:
            runs.append({"method": "B", "seed": k, "setting": "s", "budgets": [1, 2, 3], "values": [base] * 3})
    ppm = ppm_from_runs(runs)
    a, b = ppm.methods.index("A"), ppm.methods.index("B")
    assert ppm.wins[a, b] == 1.0 and ppm.wins[b, a] == 0.0
    assert len(ppm.notes) == 1 and "common seed(s) 1,2,3,4" in ppm.notes[0] and "A: 0,1,2,3,4" in ppm.notes[0]
    # the same seeds in any order give the same matrix and no note
    same = [r for r in runs if 1 <= r["seed"] <= 4]
    ppm2 = ppm_from_runs(list(reversed(same)))
    assert ppm2.wins[a, b] == 1.0 and not ppm2.notes


# ------------------------------------------------------------------------ NaN in every uncertainty metric

def _metric_cases():
    from core.metrics import uncertainty as cm
    rng = np.random.default_rng(0)
    s, y = rng.random(20), (rng.random(20) > 0.5).astype(float)
    maps, masks = rng.random((3, 16)), (rng.random((3, 16)) > 0.5).astype(float)
    return [  # (metric, args, index of the argument to poison)
        (cm.auroc, (s, y), 0), (cm.auroc, (s, y), 1),
        (cm.rc_curve, (s, y), 0), (cm.aurc, (s, y), 0), (cm.aurc, (s, y), 1),
        (cm.optimal_aurc, (s,), 0), (cm.eaurc, (s, y), 0), (cm.eaurc, (s, y), 1),
        (cm.platt_fit, (maps, masks), 0), (cm.platt_fit, (maps, masks), 1),
        (cm.ace, (maps, masks), 0), (cm.ace, (maps, masks), 1),
        (cm.ncc, (maps, maps[::-1]), 0), (cm.ncc, (maps, maps[::-1]), 1),
        (cm.dice_matrix, (masks, masks), 1), (cm.ged, (masks, masks[:2]), 0), (cm.ged, (masks, masks[:2]), 1),
        (cm.platt_apply, (s, 1.0, 0.0), 0),
    ]


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("k", range(len(_metric_cases())))
def test_uncertainty_metrics_reject_nan_and_inf(k, poison):
    fn, args, i = _metric_cases()[k]
    bad = list(args)
    x = np.array(bad[i], dtype=float, copy=True)
    x.flat[1] = poison
    bad[i] = x
    with pytest.raises(ValueError, match=f"{fn.__name__}: .* NaN/Inf"):
        fn(*bad)
    out = fn(*bad, nan_policy="propagate")     # asked for NaN: NaN, never a plausible number
    vals = np.concatenate([np.ravel(o) for o in out]) if isinstance(out, tuple) else np.ravel(out)
    assert np.isnan(vals).any()
    fn(*args)                                    # clean input still works


def test_auroc_label_nan_no_longer_counts_as_positive():
    from core.metrics import uncertainty as cm
    with pytest.raises(ValueError):
        cm.auroc([0.1, 0.2, 0.9, 0.8], [0, 0, np.nan, 1])
    with pytest.raises(ValueError, match="0/1"):
        cm.auroc([0.1, 0.2, 0.9, 0.8], [0, 0, 2, 1])


# ------------------------------------------------------------------------ fp32 augmentation under bf16

def _augmenters():
    from classification import augment, selfsl
    cfg = selfsl.SimCLRConfig()
    return {
        "supervised/fixmatch randaugment": lambda x: augment.augmenter("cifar")(x, "randaugment"),
        "fixmatch weak": lambda x: augment.augmenter("cifar")(x, "randaugment_weak"),
        "standard": lambda x: augment.augmenter("cifar")(x, "standard"),
        "simclr view": lambda x: selfsl.simclr_view(x, cfg, (0.5,) * 3, (0.25,) * 3),
        "roll-out isic": lambda x: augment.augmenter("isic")(x, "randaugment"),
        "roll-out imagenet": lambda x: augment.augmenter("imagenet")(x, "standard"),
    }


@pytest.mark.parametrize("name", list(_augmenters()))
def test_augmented_batch_is_identical_with_and_without_bf16_autocast(name):
    fn = _augmenters()[name]
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(7)
    ref = fn(x)
    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn(x)
    assert got.dtype == torch.float32 and torch.equal(got, ref)


# ------------------------------------------------------------------------ safe checkpoint loading

class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_planted_simclr_checkpoint_cannot_run_code(tmp_path, monkeypatch):
    from classification import selfsl
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "simclr-x.pt"
    with open(path, "wb") as f:
        pickle.dump({"backbone": {}, "meta": "{}", "x": _Evil()}, f)
    with pytest.raises(UserError, match="corrupt or foreign SimCLR checkpoint"):
        selfsl.load_checkpoint(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    ck = {"backbone": {"w": torch.ones(2)}, "arch": {"width": 8}, "knn_history": [[1, 0.5]], "seed": 3}
    selfsl.save_checkpoint(ck, tmp_path / "ok.pt")
    back = selfsl.load_checkpoint(tmp_path / "ok.pt")
    assert torch.equal(back["backbone"]["w"], ck["backbone"]["w"]) and back["arch"] == {"width": 8}


def test_every_torch_load_uses_weights_only():
    hits = []
    for p in [*ROOT.glob("core/**/*.py"), *ROOT.glob("classification/*.py"), *ROOT.glob("segmentation/*.py"),
              *ROOT.glob("uncertainty/*.py"), *ROOT.glob("experiments/*.py")]:
        for i, line in enumerate(p.read_text().splitlines()):
            if "torch.load(" in line and "weights_only=True" not in line:
                hits.append(f"{p.relative_to(ROOT)}:{i + 1}")
            if "weights_only=False" in line:
                hits.append(f"{p.relative_to(ROOT)}:{i + 1}")
    assert not hits


# ------------------------------------------------------------------------ roll-out runs (folder dataset)

@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    from PIL import Image
    tmp = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c, n in (("cat", 80), ("dog", 48)):
        (tmp / "imgs" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp / "imgs" / c / f"{i}.png")
    from experiments.cifar10 import main
    args = ["--preset", "smoke", "--seeds", "1", "--method", "random", "--quiet", "--out", str(tmp / "out")]
    assert main([*args, "--dataset", f"folder:{tmp / 'imgs'}"]) == 0
    return tmp, args


def test_folder_spelling_with_trailing_slash_is_the_same_run_and_cache(folder_run):
    tmp, args = folder_run
    from experiments.cifar10 import main
    before = sorted(p.relative_to(tmp) for p in (tmp / "out").rglob("*") if p.suffix != ".lock")
    assert main([*args, "--dataset", f"folder:{tmp / 'imgs'}/", "--resume"]) == 0
    after = sorted(p.relative_to(tmp) for p in (tmp / "out").rglob("*") if p.suffix != ".lock")
    assert before == after   # no second run directory, no second image cache


def test_rollout_config_records_real_split_sizes_and_report_scores_balanced_accuracy(folder_run):
    tmp, _ = folder_run
    [cfg_path] = list((tmp / "out").rglob("config.json"))
    cfg = json.loads(cfg_path.read_text())["config"]
    _, records = load_run(cfg_path.parent)
    assert cfg["metric"] == "balanced_accuracy"
    assert cfg["pool_size"] < 800 and cfg["test_size"] < 300          # the data, not the preset's caps
    assert cfg["pool_size"] + cfg["test_size"] <= 128
    from experiments.runs import load
    col = load([str(tmp / "out")])
    assert col.metric == "balanced_accuracy"
    assert col.curves.sort_values("cycle")["value"].tolist() == [r["metrics"]["balanced_accuracy"] for r in records]
