"""Toy data, real-data loader, prediction models, measures and aggregations of the testbed."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from core.errors import UserError
from uncertainty import aggregation as ag
from uncertainty.data import MSDConfig, ToyConfig, load_msd, make_toy, write_msd
from uncertainty.measures import UTYPE, measure_maps
from uncertainty.models import SSN, TTA, SegNet, TrainConfig, build_model, nets_needed, ssn_sample, train_net

SMALL = ToyConfig(dim=2, size=32, n_train=8, n_val=4, n_test_iid=4, n_test_ood=6, n_pool_iid=4, n_pool_ood=4)
TINY = TrainConfig(channels=(4, 8), features=4, epochs=1, batch_size=4, ensemble_size=2, ttd_passes=3,
                   ssn_rank=2, ssn_train_samples=2, ssn_test_samples=4, ssn_warmup_epochs=0)


# ------------------------------------------------------------------------------------ measures
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(2, 4), st.integers(0, 10_000))
def test_pe_equals_ee_plus_mi_and_mi_nonnegative(m, c, seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn((2, m, c, 5, 4), generator=g), dim=2)
    d = measure_maps(probs, ["pe", "ee", "mi", "msr"])
    torch.testing.assert_close(d["pe"], d["ee"] + d["mi"], atol=1e-5, rtol=0)
    assert (d["mi"] >= 0).all()
    assert d["pe"].shape == (2, 5, 4)
    if m == 1:
        assert d["mi"].abs().max() < 1e-6
    if c == 2:
        assert d["pe"].max() <= np.log(2) + 1e-6 and d["msr"].max() <= 0.5 + 1e-6


def test_identical_samples_have_zero_mi():
    p = torch.softmax(torch.randn(1, 1, 2, 6, 6), 2).repeat(1, 5, 1, 1, 1)
    assert measure_maps(p, ["mi"])["mi"].abs().max() < 1e-6


def test_uncertainty_type_mapping_flips_for_ssn():
    for m in ("ttd", "ensemble", "tta"):
        assert UTYPE[m] == {"pe": "PU", "ee": "AU", "mi": "EU"}
    assert UTYPE["ssn"] == {"pe": "PU", "mi": "AU", "ee": "EU"}
    assert UTYPE["softmax"] == {"msr": "PU"}


# ------------------------------------------------------------------------------------ aggregation
def test_aggregations_of_a_constant_map():
    u = np.full((3, 20, 20), 0.3)
    np.testing.assert_allclose(ag.image_sum(u), 0.3 * 400)
    np.testing.assert_allclose(ag.patch_max(u), 0.3 * 100)
    np.testing.assert_allclose(ag.threshold_mean(u, 0.2), 0.3)
    np.testing.assert_allclose(ag.threshold_mean(u, 0.3), 0.3)      # ">=" as the reference code
    np.testing.assert_allclose(ag.threshold_mean(u, 0.5), 0.0)      # nothing above λ → 0
    u3 = np.full((2, 12, 12, 12), 0.5)
    np.testing.assert_allclose(ag.patch_max(u3), 0.5 * 1000)


@pytest.mark.parametrize("shape", [(2, 14, 17), (1, 11, 12, 13)])
def test_patch_max_equals_brute_force(shape):
    rng = np.random.default_rng(0)
    u = rng.random(shape)
    got = ag.patch_max(u)
    for i in range(shape[0]):
        x = u[i]
        if x.ndim == 2:
            best = max(x[a:a + 10, b:b + 10].sum() for a in range(x.shape[0] - 9) for b in range(x.shape[1] - 9))
        else:
            best = max(x[a:a + 10, b:b + 10, c:c + 10].sum() for a in range(x.shape[0] - 9)
                       for b in range(x.shape[1] - 9) for c in range(x.shape[2] - 9))
        assert got[i] == pytest.approx(best)


def test_image_sum_scales_with_object_size_threshold_does_not():
    u = np.zeros((2, 40, 40))
    u[0, 10:20, 10:20] = 0.5     # object of 100 px
    u[1, 5:25, 5:25] = 0.5       # object of 400 px, same uncertainty level
    s = ag.image_sum(u)
    assert s[1] == pytest.approx(4 * s[0])
    np.testing.assert_allclose(ag.threshold_mean(u, 0.1), [0.5, 0.5])


def test_fit_threshold_keeps_alpha_share_above():
    rng = np.random.default_rng(0)
    u = rng.random((10, 30, 30))
    lam = ag.fit_threshold(u, fg_fraction=0.2)
    assert (u >= lam).mean() == pytest.approx(0.2, abs=0.005)


# ------------------------------------------------------------------------------------ toy data
def test_toy_is_seeded_and_has_the_spec_raters():
    a, b = make_toy(SMALL), make_toy(SMALL)
    np.testing.assert_array_equal(a.splits["pool"].images, b.splits["pool"].images)
    c = make_toy(ToyConfig(**{**SMALL.to_dict(), "seed": 1}))
    assert not np.array_equal(a.splits["train"].images, c.splits["train"].images)
    big = make_toy(ToyConfig(dim=2, size=64, n_train=2, n_val=2, n_test_iid=20, n_test_ood=3, n_pool_iid=2, n_pool_ood=2))
    t = big.splits["test_iid"]
    vol = t.raters.reshape(len(t), 3, -1).sum(-1).astype(float)
    amb = t.ambiguous
    assert amb.sum() == 20
    assert (vol[amb, 0] / vol[amb, 2]).mean() == pytest.approx(0.10, abs=0.02)
    assert (vol[amb, 1] / vol[amb, 2]).mean() == pytest.approx(0.55, abs=0.03)
    assert (t.raters[~amb] == t.raters[~amb][:, :1]).all()          # unblurred: raters identical
    ref = t.reference_variance()
    assert ref[~amb].max() == 0 and ref[amb].max() == pytest.approx(2 / 9)


def test_toy_shifts_and_splits():
    d = make_toy(SMALL)
    o = d.splits["test_ood"]
    assert o.ood.all() and sorted(set(o.shift)) == ["border", "gray", "shape"]
    assert not d.splits["train"].ood.any() and not d.splits["val"].ood.any()
    assert d.splits["pool"].ood.sum() == 4 and (~d.splits["pool"].ood).sum() == 4
    border = o.raters[o.shift == "border", 0]
    assert all(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() for m in border)
    # i.i.d. objects are whole discs (one may touch the border pixel, none is cut by it): square bounding box
    tr = d.splits["train"]

    def extent(m):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert all(h == w for h, w in map(extent, tr.raters[~tr.ambiguous, 0]))
    imgs = d.splits["train"].images.reshape(len(d.splits["train"]), -1)
    np.testing.assert_allclose(imgs.mean(1), 0, atol=1e-5)            # z-scored per case
    d3 = make_toy(ToyConfig(dim=3, size=16, n_train=2, n_val=2, n_test_iid=1, n_test_ood=3, n_pool_iid=2, n_pool_ood=2))
    assert d3.splits["train"].images.shape == (2, 1, 16, 16, 16) and d3.dim == 3


# ------------------------------------------------------------------------------------ MSD layout
def test_msd_roundtrip_with_multiple_raters(tmp_path):
    d = make_toy(SMALL)
    write_msd(d, tmp_path / "ds")
    r = load_msd(tmp_path / "ds", MSDConfig(size=32), log=lambda *a: None)
    n_all = sum(len(s) for s in d.splits.values())
    assert sum(len(s) for s in r.splits.values()) == n_all
    assert r.splits["train"].raters.shape[1] == 3
    assert r.splits["test_ood"].ood.all() and not r.splits["train"].ood.any()
    assert r.dim == 2 and r.spatial == (32, 32)
    assert sum(s.ood.sum() for s in r.splits.values()) == sum(s.ood.sum() for s in d.splits.values())


def test_msd_single_rater_training_list_and_errors(tmp_path):
    import json
    import nibabel as nib
    root = tmp_path / "msd"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i in range(10):
        img = rng.random((12, 12, 6)).astype(np.float32)
        lab = (img > 0.6).astype(np.uint8)
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / "imagesTr" / f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labelsTr" / f"c{i}.nii.gz"))
        entries.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz", "ood": i >= 8})
    (root / "dataset.json").write_text(json.dumps({"name": "x", "training": entries}))
    d = load_msd(root, MSDConfig(size=8), log=lambda *a: None)
    assert d.dim == 3 and d.spatial == (8, 8, 8) and d.splits["train"].raters.shape[1] == 1
    assert d.splits["test_ood"].ood.all() and len(d.splits["test_ood"]) == 1
    with pytest.raises(UserError, match="does not exist"):
        load_msd(tmp_path / "nope")
    with pytest.raises(UserError, match="dataset.json"):
        load_msd(root / "imagesTr")


# ------------------------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def tiny_nets():
    d = make_toy(SMALL)
    tr = d.splits["train"]
    nets = {}
    for kind, k in {nk for m in ("softmax", "ttd", "ensemble", "ssn") for nk in nets_needed(m, TINY)}:
        nets[(kind, k)] = train_net(kind, tr.images, tr.raters, 2, 2, TINY, seed=k + 1)
    return d, nets


@pytest.mark.parametrize("name,m", [("softmax", 1), ("ttd", 3), ("ensemble", 2), ("tta", 8), ("ssn", 4)])
def test_predict_samples_interface(tiny_nets, name, m):
    d, nets = tiny_nets
    model = build_model(name, nets, TINY, "cpu", seed=0)
    x = d.splits["test_iid"].images[0]
    p = model.predict_samples(x)
    assert p.shape == (m, 2, 32, 32)
    torch.testing.assert_close(p.sum(1), torch.ones(m, 32, 32))
    model.reset_rng(5)
    a = model.predict_batch(d.splits["test_iid"].images[:2])
    model.reset_rng(5)
    b = model.predict_batch(d.splits["test_iid"].images[:2])
    torch.testing.assert_close(a, b)                                  # reproducible sampling
    if m > 1 and name != "ensemble":
        assert (a[:, 0] - a[:, 1]).abs().max() > 0                    # samples differ


def test_training_is_deterministic():
    d = make_toy(SMALL)
    tr = d.splits["train"]
    a = train_net("ttd", tr.images, tr.raters, 2, 2, TINY, seed=3)
    b = train_net("ttd", tr.images, tr.raters, 2, 2, TINY, seed=3)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)


class _PixelNet(torch.nn.Module):
    """Pixel-wise (1×1) net: flip-equivariant, so TTA without noise must give identical samples
    — but only if every output is flipped back."""

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.c(x)


def test_tta_flips_outputs_back():
    net = _PixelNet()
    x = torch.randn(2, 1, 9, 7)
    tta = TTA(net, noise_var=0.0)
    p = tta.predict_batch(x)
    assert p.shape == (2, 8, 2, 9, 7)
    assert measure_maps(p, ["mi"])["mi"].abs().max() < 1e-6
    torch.testing.assert_close(p[:, 3], torch.softmax(net(x), 1))
    noisy = TTA(net, noise_var=0.1).predict_batch(x)
    assert measure_maps(noisy, ["mi"])["mi"].max() > 0


def test_ssn_samples_have_the_low_rank_covariance():
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(1, 2, 3)                      # B=1, C=2, V=3 → 6 logits
    fac = torch.randn(1, 2 * 2, 3, generator=g)    # rank 2
    ld = torch.randn(1, 2, 3, generator=g) * 0.3
    s = ssn_sample(mu, ld, fac, 40000, g).reshape(40000, 6)
    P = fac.reshape(1, 2, 2, 3).permute(0, 1, 3, 2).reshape(6, 2)
    cov = P @ P.T + torch.diag((torch.exp(ld) + 1e-5).reshape(6))
    torch.testing.assert_close(torch.cov(s.T), cov, atol=0.08, rtol=0.05)


def test_3d_models_have_16_tta_passes_and_ssn_samples():
    cfg = TrainConfig(channels=(4, 8), features=4, ssn_rank=2)
    x = torch.randn(1, 8, 8, 8)
    assert TTA(SegNet(3, 1, 2, cfg).eval()).predict_samples(x).shape == (16, 2, 8, 8, 8)
    p = SSN(SegNet(3, 1, 2, cfg, ssn_rank=2).eval(), samples=3).predict_samples(x)
    assert p.shape == (3, 2, 8, 8, 8)
    torch.testing.assert_close(p.sum(1), torch.ones(3, 8, 8, 8))
