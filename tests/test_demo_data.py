"""The synthetic demo dataset: layout, counts, exact masks, determinism and learnability."""
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from scgan.data import demo
from scgan.data.datasets import MVTecAD, category_kind
from scgan.data.demo import DEMO_CATEGORIES, DEMO_DEFECTS, make_demo_dataset, render_demo_image

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=20, n_test=12, image_size=64, seed=0)


def test_categories_and_kinds():
    assert {category_kind(c) for c in DEMO_CATEGORIES} == {"texture", "object"}
    assert category_kind("weave") == "texture" and category_kind("washer") == "object"


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_layout_counts_and_masks(small, category):
    tr = MVTecAD(small, category, "train", spec=64)
    va = MVTecAD(small, category, "val", spec=64)
    assert len(tr) + len(va) == 20
    test = MVTecAD(small, category, "test", spec=64)
    assert len(test) == 12 and int(test.labels.sum()) == 6 and test.has_masks
    assert {s.defect for s in test.samples} == {"good", *DEMO_DEFECTS[category]}
    non_empty = test.masks.reshape(len(test), -1).any(1)
    assert (non_empty == test.labels.astype(bool)).all()  # a mask exactly for the anomalous images
    for s in test.samples:
        if s.label:
            raw = np.asarray(Image.open(s.mask_path))
            assert raw.shape == (64, 64) and set(np.unique(raw)) <= {0, 255}
            assert 0.01 <= (raw > 0).mean() <= 0.06  # clearly visible, not the whole image


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_mask_is_exactly_the_changed_pixels(category):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        img, support = demo._NORMALS[category](48, rng)
        for defect in DEMO_DEFECTS[category]:
            out, mask = demo._apply_defect(category, defect, img, support, rng)
            assert np.array_equal((out != img).any(-1), mask), (defect, seed)
            assert mask.mean() >= 0.01


def test_defects_are_strong():
    for category in DEMO_CATEGORIES:
        for defect in DEMO_DEFECTS[category]:
            img, mask = render_demo_image(category, defect, 64, seed=3)
            good, _ = render_demo_image(category, "good", 64, seed=3)
            diff = np.abs(img.astype(float) - good.astype(float)).mean(-1)
            assert diff[mask].mean() > 40, (category, defect)  # of 255: well above the pixel noise


def test_deterministic_and_seeded(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n_train=4, n_test=6, image_size=32, seed=1)
    b = make_demo_dataset(tmp_path / "b", n_train=4, n_test=6, image_size=32, seed=1, categories=["washer"])
    c = make_demo_dataset(tmp_path / "c", n_train=4, n_test=6, image_size=32, seed=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 2 * (4 + 6 + 3)
    assert all((a / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files if f.parts[0] == "washer")
    assert not (b / "weave").exists()
    assert sum((a / f).read_bytes() != (c / f).read_bytes() for f in files) == len(files)
    train = [np.asarray(Image.open(a / "weave" / "train" / "good" / f"{i:03d}.png")) for i in range(4)]
    assert not np.array_equal(train[0], train[1])  # normal images vary


def test_rerun_replaces_and_foreign_folders_are_kept(tmp_path):
    make_demo_dataset(tmp_path, n_train=6, n_test=4, image_size=32, categories=["weave"])
    make_demo_dataset(tmp_path, n_train=3, n_test=2, image_size=32, categories=["weave"])
    assert len(list((tmp_path / "weave" / "train" / "good").iterdir())) == 3
    (tmp_path / "washer").mkdir()
    (tmp_path / "washer" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="washer"):
        make_demo_dataset(tmp_path, n_train=3, n_test=2, image_size=32)
    assert (tmp_path / "washer" / "mine.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left


def test_bad_arguments():
    with pytest.raises(ValueError, match="weave, washer"):
        make_demo_dataset("/nonexistent-never-written", categories=["carpet"])
    with pytest.raises(ValueError, match="unknown defect"):
        render_demo_image("weave", "missing")


def test_default_dataset_sizes(tmp_path):
    """The defaults 'scgan demo' trains on (its time: benchmarks/bench_demo_data.py)."""
    root = make_demo_dataset(tmp_path)
    for c in DEMO_CATEGORIES:
        assert len(list((root / c / "train" / "good").iterdir())) == 100
        test = sorted((root / c / "test").rglob("*.png"))
        assert len(test) == 40 and sum(p.parent.name == "good" for p in test) == 20
        assert len(list((root / c / "ground_truth").rglob("*.png"))) == 20  # one mask per anomalous image
        with Image.open(test[0]) as im:
            assert im.size == (128, 128)


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_a_linear_reconstruction_baseline_separates_the_anomalies(tmp_path, category):
    """PCA (a linear auto-encoder) at 32 px already reaches image AUROC >= 0.9: the demo is learnable."""
    root = make_demo_dataset(tmp_path, n_train=60, n_test=24, image_size=64, categories=[category])
    tr, te = MVTecAD(root, category, "train", spec=32), MVTecAD(root, category, "test", spec=32)
    x = tr.images.reshape(len(tr), -1) / 255.0
    mean = x.mean(0)
    basis = np.linalg.svd(x - mean, full_matrices=False)[2][:10]
    t = te.images.reshape(len(te), -1) / 255.0
    residual = np.abs(t - ((t - mean) @ basis.T @ basis + mean)).mean(1)
    assert roc_auc_score(te.labels, residual) >= 0.9
