import numpy as np
import pytest
import torch

from classification import data as D
from classification.regimes import regime
from classification import datasets
from classification.augment import AUGMENTATIONS, augment_batch
from core.errors import UserError


def test_lt_counts_match_table_a1():
    assert D.lt_counts(4500, 10).tolist() == [4500, 2913, 1886, 1221, 790, 512, 331, 214, 139, 90]
    assert D.lt_counts(4500, 10).sum() == 12596


def test_long_tail_split_is_balanced_val_then_tail():
    targets = np.repeat(np.arange(10), 5000)
    tr, va = D.split_ids(targets, 10, seed=0, long_tail=True)
    assert np.bincount(targets[va]).tolist() == [500] * 10
    assert np.bincount(targets[tr], minlength=10).tolist() == D.lt_counts(4500, 10).tolist()
    assert not set(tr) & set(va)
    tr2, va2 = D.split_ids(targets, 10, seed=1, long_tail=False)
    assert len(va2) == 5000 and len(tr2) == 45000 and not set(tr2) & set(va2)
    assert not np.array_equal(D.split_ids(targets, 10, 0, False)[1], va2)  # validation split per seed


@pytest.mark.parametrize("ds,name,expect", [
    ("cifar10", "low", (50, 50, 10, 250)), ("cifar10", "medium", (250, 250, 10, 1250)),
    ("cifar10", "high", (1000, 1000, 10, 5000)), ("cifar100", "high", (5000, 5000, 5, 5000)),
    ("cifar100", "low", (500, 500, 10, 2500)), ("fashion_mnist", "low", (50, 50, 10, 250)),
])
def test_regimes_table_a4(ds, name, expect):
    r = regime(ds, name)
    assert (r.start, r.query, r.rounds, r.val_size) == expect
    assert r.final_budget == (25000 if ds == "cifar100" and name == "high" else 10 * r.start)
    f = regime(ds, name, "fixmatch")
    assert f.query == 3 * r.start and f.rounds == 4


def test_label_strategy_balanced_and_imbalanced(rng):
    targets = np.repeat(np.arange(10), [500, 400, 300, 200, 100, 50, 40, 30, 20, 10])
    bal = D.label_strategy(targets, 50, 10, rng, balanced=True)
    assert np.bincount(targets[bal]).tolist() == [5] * 10
    imb = D.label_strategy(targets, 250, 10, rng, balanced=False)
    assert len(imb) == 250 and len(set(imb)) == 250 and np.bincount(targets[imb]).min() >= 5
    with pytest.raises(UserError):
        D.label_strategy(targets, 55, 10, rng, balanced=True)


def test_fashion_mnist_loader_and_missing_data(tmp_path):
    if not (D.DEBIAN_FMNIST / "train-labels-idx1-ubyte.gz").exists():
        pytest.skip("Debian dataset-fashion-mnist not installed")
    tr, te = D.load_fashion_mnist(None)
    assert tuple(tr.images.shape) == (60000, 3, 32, 32) and tr.images.dtype == torch.uint8
    assert len(te) == 10000 and np.bincount(tr.targets).tolist() == [6000] * 10
    assert tr.images[:, :, :2].max() == 0  # zero padding 28 -> 32


def test_missing_cifar_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        datasets.load("cifar10", datasets.LoadRequest(0, str(tmp_path)))


def test_cifar_loader_reads_real_pickle_layout(tmp_path, monkeypatch):
    import pickle
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    r = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({"data": r.integers(0, 255, (20, 3072), dtype=np.uint8),
                         "labels": list(np.arange(20) % 10)}, f, protocol=2)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["c%d" % i for i in range(10)]}, f, protocol=2)
    import torchvision.datasets.cifar as tvc
    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)  # fixtures lack the official md5
    s = datasets.load("cifar10", datasets.LoadRequest(0, str(tmp_path)))
    assert len(s.train) + len(s.val) == 100 and len(s.test) == 20
    assert tuple(s.train.images.shape[1:]) == (3, 32, 32)


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_augmentations_batched_and_seeded(name):
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(0)
    a = augment_batch(x, name)
    torch.manual_seed(0)
    b = augment_batch(x, name)
    assert a.shape == (16, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 255
    if name != "none":
        assert not torch.equal(a, x.float())
