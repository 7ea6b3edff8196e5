"""Mirrored training images in the memory bank (patchcore.flips): the features of a mirrored image put back in the
image's own places, a quarter of the images in each of the four views, and `auto` telling a surface from an object
by the training images alone."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_FEATURES
from helpers import make_fake_mvtec


def _config(root, category, **overrides):
    from scgan.config import load_config

    return load_config("default", overrides={**TINY_FEATURES, "data.root": str(root), "data.category": category,
                                             **overrides})


def _best_cell_shift(a: torch.Tensor, b: torch.Tensor) -> tuple[float, tuple[int, int]]:
    """The correlation of two (h, w) maps at b's best whole-cell shift within two cells, and that shift."""
    best = (-2.0, (0, 0))
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            x, y = a - a.mean(), (r := torch.roll(b, (dy, dx), (0, 1))) - r.mean()
            best = max(best, (float((x * y).sum() / (x.norm() * y.norm())), (dy, dx)))
    return best


@pytest.mark.unit
@pytest.mark.parametrize("flip", [(3,), (2,), (2, 3)])
@pytest.mark.parametrize("blocks", [(6,), (14,), (6, 14)])  # (6, 14): the default's, on block 6's 8 px cells
def test_a_mirrored_image_s_features_come_back_where_the_image_s_own_are(flip, blocks, one_thread):
    """A patch of texture far off the centre of a blank image: where the features answer it, mirrored and put back,
    lines up with where they answer it unmirrored (the best whole-cell shift, within two, is none, and the two maps
    correlate closely); left in the mirrored image's places, many cells away, they do not. Within a cell, not to the
    pixel: the backbone's convolutions are not symmetric, and a mirrored view is answered a few pixels off
    (studies/surface_proxy/flip_alignment.py). torch.roll wraps the map around: the patch is far from the far side."""
    from scgan.models.patchcore.backbone import load_backbone
    from scgan.models.patchcore.model import FeatureLayout, embed
    from scgan.training.patchcore import patch_features

    g = torch.Generator().manual_seed(0)
    backbone = load_backbone("lite1", max(blocks))
    layout = FeatureLayout(layers=blocks, neighbourhood=1, pad=32)
    blank = torch.zeros(1, 3, 128, 192)
    image = blank.clone()
    image[..., 16:32, 24:40] = torch.rand(1, 3, 16, 16, generator=g) * 2 - 1  # far up and left of the centre
    h, w = embed(backbone, blank, layout).shape[-2:]

    def answer(x, flip=()):
        return (patch_features(backbone, layout, x, flip) - patch_features(backbone, layout, blank, flip)).norm(
            dim=1).reshape(h, w)

    plain = answer(image)
    corr, shift = _best_cell_shift(plain, answer(image, flip))
    assert shift == (0, 0) and corr > 0.95
    with torch.no_grad():  # the mirrored image's features where that image has them
        left = (embed(backbone, image.flip(flip), layout) - embed(backbone, blank.flip(flip), layout)).norm(dim=1)[0]
    assert _best_cell_shift(plain, left)[0] < corr - 0.2


@pytest.mark.unit
def test_each_view_takes_a_quarter_of_the_images_drawn_by_seed(tmp_path):
    from scgan.data.datasets import stream_for
    from scgan.models.patchcore.kind import PATCHCORE
    from scgan.training.patchcore import FLIPS, bank_flips

    root = make_fake_mvtec(tmp_path, "tiles", n_train=21, size=32)
    cfg = _config(root, "tiles", **{"patchcore.flips": "always"})
    stream = stream_for(cfg.data, "train", PATCHCORE.input_spec(cfg))
    flips = bank_flips(cfg, stream, None, None)  # "always" needs no backbone: nothing is measured
    assert flips.facts() == {"bank_mirrored": True} and len(flips.views) == len(stream)
    counts = sorted(flips.views.count(f) for f in FLIPS)
    assert counts[-1] - counts[0] <= 1 and sum(counts) == len(stream)
    assert flips.views == bank_flips(cfg, stream, None, None).views  # seeded
    cfg.seed = 1
    assert flips.views != bank_flips(cfg, stream, None, None).views
    cfg.patchcore.flips = "none"
    assert bank_flips(cfg, stream, None, None).views is None


@pytest.mark.integration
def test_auto_mirrors_a_surface_and_leaves_an_object_as_it_is(tmp_path, demo_root, demo_category, one_thread):
    """Noise textures (any place like any other) are a surface, the demo's centred object is not; the summary says
    what was decided on what; mirroring changes the bank, and an object fitted with auto equals one fitted without."""
    from scgan.artifacts.model_file import load_model
    from scgan.training.fit import train
    from scgan.training.patchcore import SURFACE_SAMPLE, SURFACE_SHARE

    root = make_fake_mvtec(tmp_path / "data", "tiles", n_train=20, size=32)
    banks, facts = {}, {}
    for name, root_, category, how in [("surface_auto", root, "tiles", "auto"), ("surface_none", root, "tiles", "none"),
                                      ("object_auto", demo_root, demo_category, "auto"),
                                      ("object_none", demo_root, demo_category, "none")]:
        out = tmp_path / name
        train(_config(root_, category, **{"patchcore.flips": how}), out, progress=False)
        facts[name] = json.loads((out / "train_summary.json").read_text())
        banks[name] = load_model(out / "model.pt").parts["memory"].bank
    assert facts["surface_auto"]["bank_mirrored"] is True
    assert facts["surface_auto"]["bank_surface_share"] < SURFACE_SHARE
    assert facts["surface_auto"]["bank_surface_images"] == min(SURFACE_SAMPLE, facts["surface_auto"]["n_train"])
    assert facts["object_auto"]["bank_mirrored"] is False
    assert facts["object_auto"]["bank_surface_share"] >= SURFACE_SHARE
    assert facts["surface_none"]["bank_mirrored"] is False and "bank_surface_share" not in facts["surface_none"]
    assert not torch.equal(banks["surface_auto"], banks["surface_none"])
    assert torch.equal(banks["object_auto"], banks["object_none"])


@pytest.mark.unit
def test_an_unknown_flips_value_is_refused_in_one_line():
    from scgan.config import load_config

    with pytest.raises(ValueError, match="patchcore.flips must be one of none, auto, always; got 'on'"):
        load_config("default", overrides={"patchcore.flips": "on"})


@pytest.mark.integration
def test_auto_on_too_few_readable_images_leaves_them_as_they_are_and_counts_a_bad_one_once(tmp_path, capsys,
                                                                                         one_thread):
    """Fewer than eight readable textures tell a surface from an object no better than chance (a texture's share is
    about one over their count): they enter as they are, and say why; the unreadable file among them is skipped once,
    not once for the measurement and again for the fit."""
    from scgan.training.fit import train

    root = make_fake_mvtec(tmp_path / "data", "tiles", n_train=9, size=32)
    (root / "tiles" / "train" / "good" / "000_unreadable.png").write_bytes(b"not an image")
    out = tmp_path / "few"
    with pytest.warns(UserWarning, match="skipped 1 unreadable file"):
        train(_config(root, "tiles", **{"patchcore.flips": "auto", "data.skip_bad_images": True}), out,
              progress=False)
    facts = json.loads((out / "train_summary.json").read_text())
    assert facts["bank_mirrored"] is False and facts["bank_surface_images"] == facts["n_train"] - 1 < 8
    assert "fewer than 8 to tell a surface from an object" in capsys.readouterr().out
