"""Starting budget: the thesis rule on ample data, graceful degradation on small datasets (issue 13 item 4)."""
import numpy as np
import pytest

from core.errors import UserError
from segmentation.start import starting_budget
from tests.test_segmentation_query import phantom_env


def _boxes(env, labels, ids):
    img, org = env.pool.decode(ids)
    k = env.pool.kernels[0]
    return [(int(j), labels[j][o[0]:o[0] + k[0], o[1]:o[1] + k[1], o[2]:o[2] + k[2]]) for j, o in zip(img, org)]


def _overlap(env, ids):
    occ = {j: np.zeros(env.pool.shapes[j], int) for j in range(env.pool.n_images)}
    img, org = env.pool.decode(ids)
    k = env.pool.kernels[0]
    for j, o in zip(img, org):
        occ[j][o[0]:o[0] + k[0], o[1]:o[1] + k[1], o[2]:o[2] + k[2]] += 1
    return max(v.max() for v in occ.values())


def test_thesis_rule_on_ample_data_two_per_label_in_distinct_images():
    env, labels = phantom_env(n_img=9)
    notes = []
    ids = starting_budget(env, 12, np.random.default_rng(0), notes=notes)
    assert notes == [] and len(np.unique(ids)) == 12
    boxes = _boxes(env, labels, ids[:8])           # the 8 class-seeded patches come first
    assert len({j for j, _ in boxes}) == 8         # at most one class-seeded patch per image
    for c in range(4):
        assert len({j for j, b in boxes if (b == c).any()}) >= 2
    # same seed, same draw
    assert np.array_equal(ids, starting_budget(phantom_env(n_img=9)[0], 12, np.random.default_rng(0)))


def test_small_dataset_degrades_instead_of_refusing():
    # 3 images, 4 labels x 2 class-seeded patches = 8 > 3: the thesis rule cannot be met
    env, labels = phantom_env(n_img=3)
    notes = []
    ids = starting_budget(env, 12, np.random.default_rng(0), class_names=["bg", "a", "b", "c"], notes=notes)
    assert len(np.unique(ids)) == 12 and _overlap(env, ids) <= 1     # no overlap anywhere
    seeded = _boxes(env, labels, ids[:8])
    for c in range(4):                                              # every label still seeded twice
        assert sum(bool((b == c).any()) for _, b in seeded) >= 2
    assert notes and all("class-seeded starting patch" in n for n in notes)
    # a class present in one image only: both of its patches go into that image
    env1, labels1 = phantom_env(n_img=4)
    for lab in labels1[1:]:
        lab[lab == 3] = 1
    labels1[0][0:2, 0:2, 0:20] = 3                                # a long thin class-3 structure
    env1._present.clear()
    notes = []
    ids = starting_budget(env1, 8, np.random.default_rng(0), class_names=["bg", "a", "b", "c"], notes=notes)
    with3 = [j for j, b in _boxes(env1, labels1, ids) if (b == 3).any()]
    assert with3 == [0, 0] and _overlap(env1, ids) <= 1
    assert any("'c'" in n and "1 image(s)" in n for n in notes)
    # a budget below 2 per label: one per label, noted
    notes = []
    ids = starting_budget(phantom_env()[0], 6, np.random.default_rng(0), notes=notes)
    assert len(ids) == 6 and "one patch per label" in notes[0]


def test_refusal_only_without_a_valid_start():
    with pytest.raises(UserError, match="too small"):
        starting_budget(phantom_env()[0], 3, np.random.default_rng(0))   # fewer patches than labels
    env, labels = phantom_env(n_img=4)
    for lab in labels:
        lab[lab == 3] = 1                                               # class 3 gone everywhere
    env._present.clear()
    with pytest.raises(UserError, match="'c' occurs in no"):
        starting_budget(env, 8, np.random.default_rng(0), class_names=["bg", "a", "b", "c"])
