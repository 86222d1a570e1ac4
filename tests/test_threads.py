"""The CPU thread policy (core.threads): resolved in one place, applied inside training, recorded."""
import json

import numpy as np
import pytest
import torch

from core import threads
from tests.test_cifar10_cli import needs_fmnist


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_resolve_order(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve(None, "cpu") == 1            # CPU default: one intra-op thread per run
    assert threads.resolve(None, "cuda") is None        # CUDA: torch's choice
    assert threads.resolve(3, "cpu") == 3 and threads.resolve(3, "cuda") == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.resolve(None, "cpu") == 2 and threads.resolve(None, "cuda") == 2   # honoured when set
    assert threads.resolve(4, "cpu") == 4                # --threads wins
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert threads.resolve(None, "cpu") == 1


def test_limited_restores_and_small_products_limit_blas(keep_threads):
    from threadpoolctl import threadpool_info
    torch.set_num_threads(1)
    with threads.limited(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    with threads.small_products():
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(n == 1 for n in blas)


def test_common_parsers_have_one_threads_flag():
    from experiments import blobs, cifar10, segmentation, values
    for mod, req in ((cifar10, []), (segmentation, []), (values, ["--dataset", "toy2d"]), (blobs, [])):
        p = mod.build_parser()
        assert p.parse_args([*req, "--threads", "2"]).threads == 2, mod.__name__
        assert p.parse_args(req).threads is None


@needs_fmnist
def test_thread_policy_applied_inside_training_and_recorded(tmp_path, monkeypatch, keep_threads):
    """--threads N: every training step runs with N torch threads and each run's config records N;
    without it, $OMP_NUM_THREADS decides."""
    from classification import training
    from experiments import cifar10
    seen = []
    orig = training.SupervisedModule.training_step

    def spy(self, batch, i):
        seen.append(torch.get_num_threads())
        return orig(self, batch, i)

    monkeypatch.setattr(training.SupervisedModule, "training_step", spy)
    monkeypatch.setenv("REALISTIC_AL_QUIET", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = ["--preset", "smoke", "--seeds", "1", "--method", "random", "--rounds", "2", "--device", "cpu", "--quiet"]
    torch.set_num_threads(1)
    assert cifar10.main([*base, "--threads", "2", "--out", str(tmp_path / "a")]) == 0
    assert seen and set(seen) == {2}
    cfg = json.loads(next((tmp_path / "a").rglob("config.json")).read_text())["config"]
    assert cfg["threads"] == 2
    seen.clear()
    torch.set_num_threads(2)
    assert cifar10.main([*base, "--out", str(tmp_path / "b")]) == 0      # OMP_NUM_THREADS=1 honoured
    assert seen and set(seen) == {1}
    assert json.loads(next((tmp_path / "b").rglob("config.json")).read_text())["config"]["threads"] == 1


_SEEN = {}


def _record_threads(context, run):
    _SEEN["torch"] = torch.get_num_threads()
    _SEEN["run"] = run.threads
    return {"ok": 1}


def test_study_job_runs_with_the_requested_threads(tmp_path, keep_threads):
    """A study worker applies the thread count per job (and restores it afterwards)."""
    from core.study import Job, execute_job
    torch.set_num_threads(1)
    out = execute_job(Job("j/seed0", "run", _record_threads, {"x": 1}, key="k"), str(tmp_path), None, 2)
    assert out["status"] == "done", out
    assert _SEEN == {"torch": 2, "run": 2} and torch.get_num_threads() == 1


def test_selection_same_picks_under_any_blas_threads():
    """The one-BLAS-thread block around the greedy loops changes speed, not picks."""
    from threadpoolctl import threadpool_limits
    from core.selection import kmeanspp_badge
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(400, 10, generator=g) * 3, 1)
    h = torch.randn(400, 64, generator=g).relu_()
    a = kmeanspp_badge(probs, h, 20, np.random.default_rng(1))
    with threadpool_limits(limits=2):
        b = kmeanspp_badge(probs, h, 20, np.random.default_rng(1))
    assert a.tolist() == b.tolist()


@needs_fmnist
def test_same_seed_and_threads_same_numbers_and_recorded(tmp_path, monkeypatch, keep_threads):
    """Same seed + same thread count → identical cycle records; the thread count is part of the run's
    identity (numbers may differ in the last bits across thread counts: measured, see README), so
    resuming a run with another --threads is refused with one line instead of mixing them."""
    from experiments import cifar10
    monkeypatch.setenv("REALISTIC_AL_QUIET", "1")
    base = ["--preset", "smoke", "--seeds", "1", "--method", "entropy", "--rounds", "2", "--device", "cpu", "--quiet",
            "--threads", "1"]

    def records(out):
        f = next(out.rglob("cycles.jsonl"))
        return [(r["budget"], r["queried"], r["metrics"]["accuracy"], r["metrics"]["val_best"])
                for r in map(json.loads, f.read_text().splitlines())]

    assert cifar10.main([*base, "--out", str(tmp_path / "a")]) == 0
    assert cifar10.main([*base, "--out", str(tmp_path / "b")]) == 0
    assert records(tmp_path / "a") == records(tmp_path / "b")
    cfg = json.loads(next((tmp_path / "a").rglob("config.json")).read_text())["config"]
    assert cfg["threads"] == 1


def test_segmentation_training_uses_and_records_the_thread_count(tmp_path, monkeypatch, keep_threads):
    """The segmentation CLI: --threads 2 inside every training of the loop, and in the run's config."""
    from experiments import segmentation as seg_cli
    from segmentation import experiment
    seen = []
    orig = experiment.SegmentationDomain.train

    def spy(self, *a, **k):
        seen.append(torch.get_num_threads())
        return orig(self, *a, **k)

    monkeypatch.setattr(experiment.SegmentationDomain, "train", spy)
    monkeypatch.setenv("REALISTIC_AL_QUIET", "1")
    torch.set_num_threads(1)
    assert seg_cli.main(["--preset", "smoke", "--seeds", "1", "--method", "random", "--no-full-data", "--loops", "2",
                         "--iterations", "2", "--ensemble", "1", "--threads", "2", "--quiet",
                         "--out", str(tmp_path)]) == 0
    assert seen and set(seen) == {2}
    cfg = json.loads(next(tmp_path.rglob("seed0/config.json")).read_text())["config"]
    assert cfg["threads"] == 2
