"""Synthetic anomalies with exact masks: apply() masks, Perlin noise, the mixture, and old runs reproducing."""
import importlib.util
import math
import shutil
import subprocess

import numpy as np
import pytest
import torch

from conftest import REPO
from scgan.data.augment import AUGMENTATIONS, Augmented, Mixture, Perlin, SyntheticAnomaly, build_augmentation
from scgan.data.procedural import perlin_noise

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_thread")]

OLD_COMMIT = "fba493c"  # the last commit before apply() and masks: its outputs are what seeded runs reproduce
OLD_NAMES = ["copypaste", "copypaste_color", "cutout", "cutout_color", "confetti", "none"]


def _noise(b: int = 8, s: int = 64, seed: int = 0) -> torch.Tensor:
    """(B, 3, s, s) noise on the uint8 grid."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, s, s), generator=g).float() / 127.5 - 1


def _apply(name: str, x: torch.Tensor, seed: int, **options) -> Augmented:
    return build_augmentation(name, n_patches=10, **options).apply(x, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def old_augment():
    """src/scgan/data/augment.py as of OLD_COMMIT, imported as a separate module from `git show`."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    res = subprocess.run(["git", "-C", str(REPO), "show", f"{OLD_COMMIT}:src/scgan/data/augment.py"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT} is not in this checkout: {res.stderr.strip()}")
    spec = importlib.util.spec_from_loader("old_augment", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(res.stdout, "old_augment.py", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("name", OLD_NAMES)
def test_call_is_bit_identical_to_the_old_implementation(old_augment, name):
    # Masks are tracked without drawing random numbers, so every old seeded run reproduces exactly.
    for seed, shape, n in [(0, (4, 3, 64, 64), 30), (1, (3, 3, 40, 56), 7), (2, (2, 3, 100, 100), 1)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(100 + seed)) * 2 - 1
        old = old_augment.build_augmentation(name, n)(x, torch.Generator().manual_seed(seed))
        new = build_augmentation(name, n)(x, torch.Generator().manual_seed(seed))
        assert torch.equal(old, new), (name, seed)
    torch.manual_seed(5)  # the global generator too
    old = old_augment.build_augmentation(name)(x)
    torch.manual_seed(5)
    assert torch.equal(old, build_augmentation(name)(x))


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_is_exactly_the_changed_pixels(name, seed):
    x = _noise(8, 48, seed)
    aug = _apply(name, x, seed)
    assert aug.image.shape == x.shape and aug.mask.shape == (8, 1, 48, 48) and aug.mask.dtype == torch.bool
    assert torch.equal(aug.mask, (aug.image != x).any(1, keepdim=True))
    assert torch.equal(aug.image, build_augmentation(name, n_patches=10)(x, torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_mask_excludes_pasted_pixels_equal_to_the_original(name):
    # A flat image: a copy pasted from elsewhere changes nothing, so nothing may be labelled.
    x = torch.full((4, 3, 32, 32), 0.25)
    aug = _apply(name, x, 0)
    assert torch.equal(aug.mask, (aug.image != x).any(1, keepdim=True))
    if name == "copypaste":
        assert not aug.mask.any()


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_seeded_determinism_and_input_untouched(name):
    x = _noise(8, 32, 3)
    before = x.clone()
    a, b, c = _apply(name, x, 7), _apply(name, x, 7), _apply(name, x, 8)
    assert torch.equal(x, before)
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    if name != "none":
        assert not torch.equal(a.image, c.image)


def test_registry_classes_and_options():
    assert all(issubclass(c, SyntheticAnomaly) for c in AUGMENTATIONS.values())
    assert isinstance(build_augmentation("perlin", p_texture=1.0), Perlin)
    m = build_augmentation("mixture", 5, 0.02, sources={"cutout": 1.0, "perlin": 3.0}, p_clean=0.5)
    assert isinstance(m, Mixture) and m.weights == {"cutout": 0.25, "perlin": 0.75} and m.sources[0].n_patches == 5
    with pytest.raises(ValueError, match="valid augmentations"):
        Mixture({"mixup": 1.0})
    with pytest.raises(ValueError, match="other than itself"):
        Mixture({"mixture": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        Mixture({"perlin": 0.0})
    with pytest.raises(ValueError, match="p_clean"):
        Mixture(p_clean=1.5)
    with pytest.raises(ValueError, match="not among the sources"):
        Mixture({"perlin": 1.0}, source_options={"cutout": {}})
    with pytest.raises(ValueError, match="beta_max"):
        Perlin(beta_max=1.0)
    with pytest.raises(ValueError, match="RGB"):
        Perlin().apply(torch.zeros(2, 1, 32, 32))


def _reference_perlin(angles: np.ndarray, res: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """DRAEM's rand_perlin_2d_np written out with numpy, on a lattice that wraps (last point = first)."""
    ry, rx = res
    a = np.pad(angles[:ry, :rx], ((0, 1), (0, 1)), mode="wrap")
    grads = np.stack([np.cos(a), np.sin(a)], -1)  # (ry + 1, rx + 1, 2)
    uy = np.arange(shape[0])[:, None] * ry / shape[0] + np.zeros((1, shape[1]))
    ux = np.arange(shape[1])[None, :] * rx / shape[1] + np.zeros((shape[0], 1))
    iy, ix = np.floor(uy).astype(int), np.floor(ux).astype(int)
    fy, fx = uy - iy, ux - ix

    def dot(oy, ox):
        g = grads[iy + oy, ix + ox]
        return g[..., 0] * (fy - oy) + g[..., 1] * (fx - ox)

    def fade(t):
        return 6 * t**5 - 15 * t**4 + 10 * t**3

    n0 = dot(0, 0) + fade(fy) * (dot(1, 0) - dot(0, 0))
    n1 = dot(0, 1) + fade(fy) * (dot(1, 1) - dot(0, 1))
    return math.sqrt(2) * (n0 + fade(fx) * (n1 - n0))


def test_perlin_noise_matches_draem_formula():
    g = torch.Generator().manual_seed(0)
    angles = 2 * math.pi * torch.rand(3, 8, 8, generator=g)
    res_y, res_x = torch.tensor([1, 4, 8]), torch.tensor([2, 8, 1])
    noise = perlin_noise(angles, res_y, res_x, 64, 48)
    assert noise.shape == (3, 64, 48)
    for i in range(3):
        ref = _reference_perlin(angles[i].double().numpy(), (int(res_y[i]), int(res_x[i])), (64, 48))
        np.testing.assert_allclose(noise[i].numpy(), ref, atol=1e-5)
    # zero at the lattice points, and smooth: neighbours differ little at a coarse lattice
    assert noise[:, 0, 0].abs().max() < 1e-6
    assert (noise[0, 1:] - noise[0, :-1]).abs().max() < 0.2
    # a rotation by 0 changes nothing; a quarter turn of a square lattice moves the noise
    assert torch.allclose(perlin_noise(angles, res_y, res_x, 64, 48, torch.zeros(3)), noise, atol=1e-5)
    turned = perlin_noise(angles, res_y, res_y, 64, 64, torch.full((3,), math.pi / 2))
    assert not torch.allclose(turned, perlin_noise(angles, res_y, res_y, 64, 64), atol=1e-2)


def test_perlin_changes_most_images_with_varied_regions():
    x = _noise(16, 32, 0)
    for seed in range(3):
        aug = _apply("perlin", x, seed)
        share = aug.mask.float().mean((1, 2, 3))
        assert (share > 0).sum() >= 10, share  # a few images may get an empty region, most do not
        assert share.max() < 0.6 and share.unique().numel() > 8
        assert aug.image.min() >= -1 and aug.image.max() <= 1


@pytest.mark.parametrize("size", [64, 128])
def test_perlin_region_share_is_draems(size):
    # DRAEM's formula (_reference_perlin) at 256 px with its scales covers 4.8% of the image above 0.5 on
    # average, 11% of draws empty (300 draws); the coarse-grid evaluation at 128 px must keep that.
    g = torch.Generator().manual_seed(0)
    share = Perlin().region(160, size, size, g, torch.zeros(1)).float().mean((1, 2, 3))
    assert 0.035 < share.mean() < 0.065 and (share == 0).float().mean() < 0.2, (share.mean(), (share == 0).sum())


def test_perlin_blend_follows_draem():
    # With beta_max 0 the region holds the fill exactly; textures alone, then copies alone.
    x = _noise(8, 32, 1)
    perlin = Perlin(beta_max=0.0, p_texture=1.0)
    g = torch.Generator().manual_seed(0)
    region = perlin.region(8, 32, 32, g, x)
    torch.rand((8, 1, 1, 1), generator=g)  # beta, drawn between region and fill
    fill = perlin.fill(x, g)
    aug = perlin.apply(x, torch.Generator().manual_seed(0))
    assert torch.equal(aug.image, torch.where(region, fill, x))
    # a copy fill is the image itself, shifted and jittered: the same colours up to jitter, not a texture
    copy = Perlin(p_texture=0.0).fill(x, torch.Generator().manual_seed(0))
    assert copy.shape == x.shape and copy.min() >= -1 and copy.max() <= 1


def test_perlin_on_grey_images_and_bf16():
    grey = _noise(8, 32, 2)[:, :1].expand(-1, 3, -1, -1).contiguous()  # how the data layer delivers grey images
    aug = _apply("perlin", grey, 0)
    assert torch.equal(aug.mask, (aug.image != grey).any(1, keepdim=True)) and aug.mask.any()
    x = _noise(4, 32, 3).bfloat16()
    aug = _apply("mixture", x, 0)
    assert aug.image.dtype == torch.bfloat16 and torch.equal(aug.mask, (aug.image != x).any(1, keepdim=True))


def test_mixture_clean_share_and_sources():
    x = _noise(400, 16, 0)
    m = Mixture({"cutout": 0.5, "perlin": 0.5}, p_clean=0.3, n_patches=3, patch_area=0.05)
    aug = m.apply(x, torch.Generator().manual_seed(0))
    choice = m.choose(400, torch.Generator().manual_seed(0), x)
    assert abs((choice == 0).float().mean().item() - 0.3) < 0.06
    assert abs((choice == 1).float().mean().item() - 0.35) < 0.06
    untouched = ~aug.mask.flatten(1).any(1)
    assert untouched[choice == 0].all()  # clean images are untouched...
    assert not untouched[choice == 1].any()  # ...cutout always changes noise images
    black = (aug.image == -1).all(1, keepdim=True) & aug.mask
    assert black.flatten(1).any(1)[choice == 1].all() and not black.flatten(1).any(1)[choice == 0].any()
    assert Mixture(p_clean=1.0).apply(x[:8]).mask.sum() == 0
    assert (Mixture(p_clean=0.0, sources={"cutout": 1.0}).apply(x[:8]).mask.flatten(1).any(1)).all()
