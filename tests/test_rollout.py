"""Roll-out loaders (ISIC-2019 CSV + JPEGs, MIO-TCD class folders, folder:PATH) and A.3.6 transforms."""
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from classification import augment as A
from classification import datasets
from classification import rollout as R
from classification.regimes import class_count_regimes
from classification.data import Splits
from core.errors import UserError

COLOURS = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30], [230, 30, 230],
                    [30, 230, 230], [128, 128, 128], [250, 250, 250], [60, 20, 90], [10, 120, 60], [200, 100, 0]])


def _jpeg(path, colour, w=40, h=30, mark=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.broadcast_to(np.asarray(colour, np.uint8), (h, w, 3)).copy()
    arr[:3] = 0                      # a dark band so resizing is not trivial
    arr[-4:] = (37 * mark) % 256     # a per-image band: every image differs
    Image.fromarray(arr).save(path, quality=95)


@pytest.fixture
def isic_dir(tmp_path):
    root = tmp_path / "isic"
    rows = ["image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"]
    counts = [10, 16, 8, 6, 6, 5, 5, 4]
    k = 0
    for c, n in enumerate(counts):
        for _ in range(n):
            name = f"ISIC_{k:07d}"
            onehot = ["0.0"] * 9
            onehot[c] = "1.0"
            rows.append(",".join([name] + onehot))
            _jpeg(root / R.ISIC_DIR / f"{name}.jpg", COLOURS[c], mark=k)
            k += 1
    rows.append("ISIC_9999999," + ",".join(["0.0"] * 8 + ["1.0"]))  # UNK row: dropped
    _jpeg(root / R.ISIC_DIR / "ISIC_9999999.jpg", COLOURS[9])
    (root / R.ISIC_CSV).write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def mio_dir(tmp_path):
    root = tmp_path / "MIO-TCD-Classification"
    for c, name in enumerate(R.MIO_CLASSES):
        for i in range(4 + (c == 4) * 8):
            _jpeg(root / "train" / name / f"{c:02d}{i:04d}.jpg", COLOURS[c], w=50 + 3 * i, h=30)
    return root


def test_isic_layout_splits_and_tensors(isic_dir):
    s = datasets.load("isic2019", datasets.LoadRequest(0, data_dir=isic_dir, image_size=16))
    assert isinstance(s, Splits) and s.n_classes == 8 and s.info["classes"] == list(R.ISIC_CLASSES)
    assert s.metric == "balanced_accuracy" and s.imbalanced and (s.mean, s.std) == datasets.IMAGENET_NORM
    n = len(s.train) + len(s.val) + len(s.test)
    assert n == 60 and s.info["n_total"] == 60 and s.info["expected_total"] == 25331  # UNK dropped
    assert abs(len(s.test) - 15) <= 1 and abs(len(s.val) - 9) <= 1
    for part in (s.train, s.val, s.test):
        assert part.images.dtype == torch.uint8 and tuple(part.images.shape[1:]) == (3, 16, 16)
    # labels follow the CSV: the image colour identifies the class
    centre = s.train.images[:, :, 10, 8].numpy().astype(int)
    assert np.abs(centre - COLOURS[s.train.targets]).max() < 25
    s1 = datasets.load("isic2019", datasets.LoadRequest(1, data_dir=isic_dir, image_size=16))
    assert torch.equal(s.test.images, s1.test.images)               # test split fixed across seeds
    assert not torch.equal(s.val.images, s1.val.images)             # validation split per seed
    assert set(s.test.targets.tolist()) == set(range(8))            # stratified: every class in test


def test_split_rollout_fractions_and_disjoint():
    targets = np.repeat(np.arange(5), [400, 200, 100, 50, 50])
    tr, va, te = R.split_rollout(targets, seed=3)
    assert len(tr) + len(va) + len(te) == 800 and not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert (len(tr), len(va), len(te)) == (480, 120, 200)
    np.testing.assert_array_equal(te, R.split_rollout(targets, seed=4)[2])
    assert np.bincount(targets[te]).tolist() == [100, 50, 25, 12, 13] or np.bincount(targets[te]).tolist() == [100, 50, 25, 13, 12]


def test_isic_errors_are_one_line(isic_dir, tmp_path):
    with pytest.raises(UserError, match="ISIC_2019_Training_GroundTruth.csv"):
        datasets.load("isic2019", datasets.LoadRequest(0, data_dir=tmp_path / "nothing"))
    with pytest.raises(UserError, match="--data-dir"):
        datasets.load("isic2019", datasets.LoadRequest(0))
    (isic_dir / R.ISIC_DIR / "ISIC_0000003.jpg").unlink()
    with pytest.raises(UserError, match="missing") as e:
        datasets.load("isic2019", datasets.LoadRequest(0, data_dir=isic_dir))
    assert "\n" not in str(e.value)
    csv = isic_dir / R.ISIC_CSV
    csv.write_text(csv.read_text().replace("image,MEL", "img,MEL"))
    with pytest.raises(UserError, match="column"):
        R.list_isic(isic_dir)


def test_miotcd_layout_and_centre_crop(mio_dir):
    s = datasets.load("miotcd", datasets.LoadRequest(0, data_dir=mio_dir, image_size=16))
    assert s.n_classes == 11 and s.info["transforms"] == "imagenet"
    assert len(s.train) + len(s.val) + len(s.test) == 11 * 4 + 8
    # also accepted: the train folder itself
    assert len(R.list_miotcd(mio_dir / "train").paths) == 52
    (mio_dir / "train" / "lorry").mkdir()
    with pytest.raises(UserError, match="lorry"):
        R.list_miotcd(mio_dir)


def test_decode_views(tmp_path):
    arr = np.zeros((30, 90, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)
    arr[:, 30:60] = (0, 255, 0)
    arr[:, 60:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "a.png")
    isic = R.decode(R.FileList([tmp_path / "a.png"], np.zeros(1, np.int64), ("x",), "isic"), [0], 12)[0]
    imnet = R.decode(R.FileList([tmp_path / "a.png"], np.zeros(1, np.int64), ("x",), "imagenet"), [0], 12)[0]
    assert isic[0, 6, 1] > 200 and isic[2, 6, 10] > 200          # squashed: all three stripes visible
    assert imnet[1, 6, 1] > 200 and imnet[1, 6, 10] > 200         # shorter side + centre crop: green only


def test_folder_layouts_and_cache(tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    for c, name in enumerate(("cat", "dog", "eel")):
        for i in range(8):
            _jpeg(flat / name / f"{i}.jpg", COLOURS[c])
    (flat / "cat" / "notes.txt").write_text("ignored")
    cache = tmp_path / "cache"
    s = datasets.load(f"folder:{flat}", datasets.LoadRequest(0, image_size=8, cache_dir=cache))
    assert s.info["classes"] == ["cat", "dog", "eel"] and len(s.train) + len(s.val) + len(s.test) == 24
    assert any(p.suffix == ".npy" for p in cache.iterdir())
    # everything decoded is cached: a second load decodes nothing
    monkeypatch.setattr(R, "_decode_one", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    s2 = datasets.load(f"folder:{flat}", datasets.LoadRequest(1, image_size=8, cache_dir=cache))
    assert torch.equal(s.test.images, s2.test.images)
    monkeypatch.undo()
    split = tmp_path / "split"
    for part, n in (("train", 10), ("test", 3)):
        for c, name in enumerate(("a", "b")):
            for i in range(n):
                _jpeg(split / part / name / f"{i}.jpg", COLOURS[c])
    s = datasets.load(f"folder:{split}", datasets.LoadRequest(0, image_size=8, max_train=6))
    assert len(s.test) == 6 and len(s.train) + len(s.val) <= 20 and len(s.train) == 6
    with pytest.raises(UserError, match="class folders"):
        datasets.load(f"folder:{tmp_path / 'cache'}", datasets.LoadRequest(0))
    with pytest.raises(UserError, match="not a folder"):
        datasets.load(f"folder:{tmp_path / 'nope'}", datasets.LoadRequest(0))


# ----------------------------------------------------------------------------- transforms

@pytest.mark.parametrize("kind", ["isic", "imagenet"])
@pytest.mark.parametrize("name", A.AUGMENTATIONS)
def test_augment_rollout_contract(kind, name):
    x = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    y = A.augment_rollout(x, name, kind)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.min() >= 0 and y.max() <= 255
    torch.manual_seed(0)
    assert torch.equal(y, A.augment_rollout(x, name, kind))           # seeded → same batch
    if name != "none":
        assert not torch.equal(y, x.float())
    fn = A.augmenter(kind)
    torch.manual_seed(0)
    assert torch.equal(fn(x, name), y)


def test_isic_geometry_matches_torchvision():
    x = torch.zeros(2, 3, 32, 32)
    x[..., 8:24, 12:18] = 255
    same = A.isic_geometry(x, rotation=None, degrees=(0, 0), translate=0, scale=(1, 1), resize=1, flips=False)
    assert torch.allclose(same, x)
    rot = A.isic_geometry(x, rotation=(30, 30), degrees=(0, 0), translate=0, scale=(1, 1), resize=1, flips=False)
    ref = TF.rotate(x, 30, interpolation=TF.InterpolationMode.BILINEAR)
    assert (rot - ref).abs().mean() < 0.5
    aff = A.isic_geometry(x, rotation=None, degrees=(20, 20), translate=0, scale=(1.2, 1.2), resize=1, flips=False)
    ref = TF.affine(x, angle=-20, translate=[0, 0], scale=1.2, shear=[0, 0], interpolation=TF.InterpolationMode.BILINEAR)
    assert (aff - ref).abs().mean() < 0.5  # torchvision's affine angle is clockwise


def test_random_resized_crop_and_colour_ops():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 16, 16)).float()
    assert torch.equal(A.random_resized_crop(x, 16, scale=(1, 1), ratio=(1, 1), flip=False), x)
    y = A.random_resized_crop(x, 8)
    assert y.shape == (5, 3, 8, 8)
    assert torch.equal(A.color_jitter(x, 0, 0, 0, 0), x)
    assert torch.equal(A.color_jitter(x, 0.5, 0.5, 0.5, 0.1, p=0.0), x)
    const = torch.full((3, 3, 32, 32), 100.0)
    assert torch.allclose(A.gaussian_blur(const, p=1.0), const, atol=1e-3)
    g = A.random_grayscale(x, 1.0)
    assert torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])


def test_regime_table_rule():
    t = class_count_regimes(8, 3799)
    assert t["low"] == (40, 40, 10, 200) and t["high"] == (800, 800, 10, 3799)
    assert class_count_regimes(11, 77875)["medium"] == (275, 275, 10, 1375)


def test_own_hsv_ops_match_torchvision_public_adjust_hue():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x[0, :, :2] = 0.5                                                 # grey pixels: hue undefined
    hsv = A.rgb_to_hsv(x)
    shifted = A.hsv_to_rgb(torch.stack(((hsv[:, 0] + 0.1).remainder(1.0), hsv[:, 1], hsv[:, 2]), 1))
    assert torch.equal(shifted, TF.adjust_hue(x, 0.1))
    assert torch.allclose(A.hsv_to_rgb(hsv), x, atol=1e-6)
