"""Augmentations: patch sizes and counts, pasted content, seeding, batches and the registry."""
import pytest
import torch

from scgan.data.augment import (
    AUGMENTATIONS,
    Augmentation,
    CopyPaste,
    build_augmentation,
    color_jitter,
    resolve_augmentation,
)

pytestmark = pytest.mark.unit

S = 100  # a 10 x 10 patch is exactly 1% of the image


def _noise(b: int = 4, s: int = S, seed: int = 0) -> torch.Tensor:
    """(B, 3, s, s) noise on the uint8 grid: distinct pixel values almost surely."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, s, s), generator=g).float() / 127.5 - 1


def _changed(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels (any channel) that differ, per image: (B,)."""
    return (x != y).any(1).float().mean((1, 2))


def _run(name: str, x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return build_augmentation(name, n_patches=n)(x, torch.Generator().manual_seed(seed))


PASTING = ["copypaste", "copypaste_color", "cutout", "cutout_color", "confetti"]


def test_registry_and_errors():
    assert set(AUGMENTATIONS) == {"copypaste", "copypaste_color", "cutout", "cutout_color", "confetti", "perlin",
                                  "mixture", "none"}
    assert all(issubclass(AUGMENTATIONS[n], Augmentation) for n in PASTING + ["none"])  # the patch ones
    with pytest.raises(ValueError, match="copypaste, copypaste_color"):
        build_augmentation("mixup")
    with pytest.raises(ValueError, match="resolve_augmentation"):
        build_augmentation("auto")
    with pytest.raises(ValueError, match="n_patches"):
        build_augmentation("copypaste", n_patches=-1)
    with pytest.raises(ValueError, match="patch_area"):
        build_augmentation("copypaste", patch_area=1.5)


def test_resolve_auto_follows_the_paper():
    assert resolve_augmentation("auto", "texture") == "copypaste_color"
    assert resolve_augmentation("auto", "object") == "copypaste"
    assert resolve_augmentation("cutout", "texture") == "cutout"
    with pytest.raises(ValueError, match="valid augmentations"):
        resolve_augmentation("mixup", "object")
    with pytest.raises(ValueError, match="texture, object"):
        resolve_augmentation("auto", "fabric")


@pytest.mark.parametrize("size,side", [(100, 10), (64, 6), (256, 26), (32, 3), (5, 1)])
def test_patch_side(size, side):
    assert CopyPaste(patch_area=0.01).patch_side(size, size) == side


def test_copypaste_pastes_only_pixels_of_the_same_image():
    x = _noise(3)
    y = _run("copypaste", x, 30, 0)
    for xi, yi in zip(x, y):
        source = {tuple(p) for p in xi.reshape(3, -1).T.tolist()}
        assert all(tuple(p) in source for p in yi.reshape(3, -1).T.tolist())
    # and not from the other images of the batch: image 0's colours are (almost surely) not in image 1
    other = {tuple(p) for p in x[1].reshape(3, -1).T.tolist()}
    pasted = (y[0] != x[0]).any(0)
    assert sum(tuple(p) in other for p in y[0][:, pasted].T.tolist()) < 3


@pytest.mark.parametrize("name", ["copypaste", "copypaste_color", "cutout", "cutout_color"])
def test_one_square_patch_changes_one_percent(name):
    x = _noise(4)
    frac = _changed(x, _run(name, x, 1, 0))
    assert torch.allclose(frac, torch.full((4,), 0.01)), frac  # exactly one 10 x 10 square per image


def test_one_confetti_blob_is_at_most_a_patch():
    x = _noise(8)
    frac = _changed(x, _run("confetti", x, 1, 0))
    # rotated rectangles with sides in [5, 10] px: 25-100% of a 10 x 10 patch, give or take edge pixels
    assert (frac > 0.0015).all() and (frac <= 0.012).all(), frac
    assert frac.unique().numel() > 1  # sizes vary


@pytest.mark.parametrize("name", PASTING)
def test_thirty_patches_change_at_most_thirty_percent(name):
    x = _noise(4)
    frac = _changed(x, _run(name, x, 30, 0))
    assert (frac > 0.02).all() and (frac <= 0.30).all(), frac


@pytest.mark.parametrize("name", PASTING)
def test_more_patches_cover_more(name):
    x = _noise(4)
    assert (_changed(x, _run(name, x, 100, 0)).mean() > _changed(x, _run(name, x, 10, 0)).mean() * 2)


@pytest.mark.parametrize("name", PASTING + ["none"])
def test_seeded_batched_and_input_untouched(name):
    x = _noise(4)
    before = x.clone()
    a, b, c = _run(name, x, 30, 1), _run(name, x, 30, 1), _run(name, x, 30, 2)
    assert torch.equal(x, before)  # the input is not modified
    assert a.shape == x.shape and a.dtype == x.dtype and a.data_ptr() != x.data_ptr()
    assert torch.equal(a, b)
    if name == "none":
        assert torch.equal(a, x) and torch.equal(c, x)
        return
    assert not torch.equal(a, c)
    # same content in every image of the batch, yet each is augmented differently
    same = x[:1].expand(4, -1, -1, -1).clone()
    out = _run(name, same, 30, 3)
    masks = [(out[i] != same[i]).any(0) for i in range(4)]
    assert not any(torch.equal(masks[0], m) for m in masks[1:])


def test_cutout_values():
    x = _noise(2)
    y = _run("cutout", x, 5, 0)
    assert (y[(y != x)] == -1).all()
    z = _run("cutout_color", x, 1, 0)
    diff = (z != x).any(1)
    for i in range(2):  # one flat colour per patch
        assert z[i][:, diff[i]].unique(dim=1).shape[1] == 1


def test_values_stay_in_range_and_global_generator_works():
    x = _noise(2)
    torch.manual_seed(0)
    for name in PASTING:
        y = build_augmentation(name)(x)
        assert y.min() >= -1 and y.max() <= 1 and y.shape == x.shape


def test_color_jitter_changes_colours_within_range():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(16, 3, 8, 8, generator=g) * 2 - 1
    q = color_jitter(p, torch.Generator().manual_seed(1))
    assert q.shape == p.shape and q.min() >= -1 and q.max() <= 1
    assert (q - p).abs().mean() > 0.02
    assert torch.equal(q, color_jitter(p, torch.Generator().manual_seed(1)))


def test_works_on_non_square_bf16_and_rejects_bad_shapes():
    x = torch.zeros(2, 3, 40, 60, dtype=torch.bfloat16)
    y = build_augmentation("cutout_color", 3)(x, torch.Generator().manual_seed(0))
    assert y.dtype == torch.bfloat16 and (y != 0).any()
    with pytest.raises(ValueError, match="B, C, H, W"):
        build_augmentation("copypaste")(torch.zeros(3, 32, 32))
