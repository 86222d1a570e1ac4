import json

import numpy as np
import pytest

from classification import query as _cls  # noqa: F401  (registers the classification methods)
from core import query as Q
from core.errors import UserError
from core.loop import ActiveLearningLoop, SimulatedCrash
from core.pool import Pool
from core.query import Evidence
from core.store import RunStore


def test_pool_label_and_errors():
    p = Pool(10, val_ids=[0, 1], test_ids=[2])
    p.label([1, 3], 0)
    assert p.labelled.tolist() == [1, 3] and p.n_labelled == 2
    with pytest.raises(ValueError, match="duplicate"):
        p.label([4, 4], 1)
    with pytest.raises(ValueError, match="outside"):
        p.label([10], 1)
    with pytest.raises(ValueError, match="already labelled"):
        p.label([3], 1)
    assert p.n_labelled == 2  # failed requests change nothing
    q = Pool(10)
    q.load_state_dict(json.loads(json.dumps(p.state_dict())))
    assert q.labelled_at.tolist() == p.labelled_at.tolist() and q.val_ids.tolist() == [0, 1]


def test_registry_errors_and_evidence_laziness():
    with pytest.raises(UserError, match="valid:"):
        Q.get("classification", "nope")
    calls = []
    ev = Evidence({"n": lambda: calls.append(1) or 5})
    assert ev["n"] == 5 and ev["n"] == 5 and len(calls) == 1
    assert set(Q.names("classification")) >= {"random", "entropy", "bald", "coreset", "badge", "power_bald",
                                               "power_entropy", "softrank_bald"}
    assert "claspe" not in Q.names("classification")


def test_store_refuses_foreign_and_different_config(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a realistic-al run"):
        RunStore(foreign, {"a": 1})
    assert (foreign / "notes.txt").read_text() == "mine" and not (foreign / "config.json").exists()
    s = RunStore(tmp_path / "run", {"a": 1})
    s.commit({"cycle": 0}, {"labelled_at": [0]})
    with pytest.raises(UserError, match="different config"):
        RunStore(tmp_path / "run", {"a": 2})
    with pytest.raises(UserError, match="--resume"):
        RunStore(tmp_path / "run", {"a": 1}, resume=False)
    (tmp_path / "run" / "state.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        RunStore(tmp_path / "run", {"a": 1})


class _Fake:
    """A deterministic 'model': accuracy grows with the labelled set; uncertainty is a fixed score."""

    def __init__(self, n):
        self.scores = np.random.default_rng(1).random(n)

    def train(self, pool, cycle):
        return pool.n_labelled

    def evaluate(self, model, pool):
        return {"accuracy": float(model) / 100 + float(self.scores[pool.labelled].sum())}

    def evidence(self, model, pool):
        unl = pool.unlabelled
        return Evidence({"probs": lambda: np.stack([self.scores[unl], 1 - self.scores[unl]], 1)}, candidates=unl)


def _loop(tmp_path, method, n=60):
    pool = Pool(n)
    store = RunStore(tmp_path, {"method": method})
    if store.pool_state is None:
        pool.label([0, 1, 2], 0)
    f = _Fake(n)
    return ActiveLearningLoop(pool, train=f.train, evaluate=f.evaluate, evidence=f.evidence, query=Q.get("classification", method),
                              query_sizes=[5, 5, 5, 5], store=store, seed=3)


@pytest.mark.parametrize("method", ["random", "entropy", "power_entropy"])
def test_kill_and_resume_gives_identical_records(tmp_path, monkeypatch, method):
    full = _loop(tmp_path / "a", method).run()
    monkeypatch.setenv("REALISTIC_AL_CRASH_AFTER_CYCLE", "1")
    with pytest.raises(SimulatedCrash):
        _loop(tmp_path / "b", method).run()
    assert len(json.loads((tmp_path / "b" / "state.json").read_text())["records"]) == 2
    assert not (tmp_path / "b" / "DONE").exists()
    monkeypatch.delenv("REALISTIC_AL_CRASH_AFTER_CYCLE")
    resumed = _loop(tmp_path / "b", method).run()
    strip = lambda rs: [{k: v for k, v in r.items() if k != "timings"} for r in rs]
    assert strip(resumed) == strip(full)
    assert len(full) == 5 and (tmp_path / "b" / "DONE").exists()
    lines = (tmp_path / "b" / "cycles.jsonl").read_text().splitlines()
    assert [json.loads(x)["cycle"] for x in lines] == [0, 1, 2, 3, 4]
    queried = sum((r["queried"] for r in full), [])
    assert len(set(queried)) == 20 and not set(queried) & {0, 1, 2}


def test_schedule_larger_than_pool_fails_before_training(tmp_path):
    pool = Pool(10)
    pool.label([0, 1], 0)
    trained = []
    loop = ActiveLearningLoop(pool, train=lambda p, c: trained.append(c), evaluate=lambda m, p: {},
                              evidence=lambda m, p: Evidence(candidates=p.unlabelled), query=Q.get("classification", "random"),
                              query_sizes=[5, 5], store=RunStore(tmp_path, {}), seed=0)
    with pytest.raises(UserError, match="only 3 would remain"):
        loop.run()
    assert trained == []


def test_exclusive_lock_refuses_a_second_holder(tmp_path):
    import subprocess
    from pathlib import Path
    import sys
    from core.errors import UserError
    from core.store import exclusive
    lock = tmp_path / "out" / ".lock"
    with exclusive(lock, "study out"):
        with pytest.raises(UserError, match="study out is being written by another process"):
            with exclusive(lock, "study out"):
                pass
        # another process is refused too
        code = ("import sys; sys.path.insert(0, %r)\n"
                "from core.store import exclusive\nfrom core.errors import UserError\n"
                "try:\n    exclusive(%r, 'x').__enter__()\nexcept UserError:\n    sys.exit(3)\n") % (str(Path(__file__).resolve().parents[1]), str(lock))
        assert subprocess.run([sys.executable, "-c", code]).returncode == 3
    with exclusive(lock, "study out"):  # released after the block
        pass


def test_old_segmentation_run_dirs_load_with_todays_names(tmp_path):
    """Run directories written before the per-domain registry (``registry_name: seg_<name>``, no β)
    are read with today's names: reports see ``claspe``; the names and β do not block a resume — the
    seeding version does (its numbers came from the older seed derivation), with a one-line error."""
    from core.store import FORMAT, MARKER, load_run
    from experiments.runs import load
    from segmentation import query as _seg  # noqa: F401  (registers the aliases)
    old = {"experiment": "segmentation", "dataset": "Phantoms", "regime": "low", "method": "claspe",
           "registry_name": "seg_claspe", "seed": 0}
    run = tmp_path / "phantoms" / "low" / "claspe" / "seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({MARKER: FORMAT, "config": old}))
    rec = {"cycle": 0, "budget": 10, "metrics": {"mean_dice": 0.5}, "queried": [3, 4]}
    (run / "state.json").write_text(json.dumps({"records": [rec], "pool": {"labelled_at": [0]}, "extra": {}}))
    cfg, records = load_run(run)
    assert cfg["method"] == "claspe" and "registry_name" not in cfg and cfg["beta"] == 1.0 and records == [rec]
    new = {k: v for k, v in old.items() if k != "registry_name"} | {"beta": 1.0}
    store = RunStore(run, new)                                  # same config once mapped
    assert store.records == [rec]
    with pytest.raises(UserError, match=r"different config \(seeding\)"):
        RunStore(run, new | {"seeding": 2})
    col = load([str(tmp_path)])
    assert col.metric == "mean_dice" and col.methods == ["claspe"]
    assert Q.canonical("segmentation", "seg_random_fg33") == "random_fg33"
    assert Q.upgrade_config({"experiment": "segmentation", "method": "seg_pe"})["method"] == "pe"
    with pytest.raises(UserError, match="different config"):
        RunStore(run, new | {"beta": 2.0})
