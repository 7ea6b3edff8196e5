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


@pytest.mark.unit
@pytest.mark.parametrize("flip", [(3,), (2,), (2, 3)])
def test_a_mirrored_image_s_features_come_back_in_the_image_s_own_places(flip):
    """patch_features(x, flip) sees x mirrored and mirrors the features back: given the mirrored image, it gives
    the plain image's features mirrored, patch by patch (so a patch's place in the map is its place in the image)."""
    from scgan.models.patchcore.backbone import load_backbone
    from scgan.models.patchcore.model import FeatureLayout, embed
    from scgan.training.patchcore import patch_features

    torch.manual_seed(0)
    backbone = load_backbone("lite1", 6)
    layout = FeatureLayout(layers=(3, 6), neighbourhood=3, pad=16)
    x = torch.rand(1, 3, 64, 96) * 2 - 1  # not square: rows and columns are not confused
    plain = embed(backbone, x, layout)
    got = patch_features(backbone, layout, x.flip(flip), flip)
    assert torch.equal(got, plain.flip(flip).permute(0, 2, 3, 1).reshape(-1, plain.shape[1]).float())
    assert not torch.equal(got, patch_features(backbone, layout, x.flip(flip)))  # the flip did something


@pytest.mark.unit
def test_each_view_takes_a_quarter_of_the_images_drawn_by_seed(tmp_path):
    from scgan.data.datasets import stream_for
    from scgan.models.patchcore.kind import PATCHCORE
    from scgan.training.patchcore import FLIPS, bank_flips

    root = make_fake_mvtec(tmp_path, "tiles", n_train=21, size=32)
    cfg = _config(root, "tiles", **{"patchcore.flips": "always"})
    stream = stream_for(cfg.data, "train", PATCHCORE.input_spec(cfg))
    flips, facts = bank_flips(cfg, stream, None, None)  # "always" needs no backbone: nothing is measured
    assert facts == {"flips": "always"} and len(flips) == len(stream)
    counts = sorted(flips.count(f) for f in FLIPS)
    assert counts[-1] - counts[0] <= 1 and sum(counts) == len(stream)
    assert flips == bank_flips(cfg, stream, None, None)[0]  # seeded
    cfg.seed = 1
    assert flips != bank_flips(cfg, stream, None, None)[0]
    cfg.patchcore.flips = "none"
    assert bank_flips(cfg, stream, None, None) == (None, {"flips": "none"})


@pytest.mark.integration
def test_auto_mirrors_a_surface_and_leaves_an_object_as_it_is(tmp_path, demo_root, demo_category, one_thread):
    """Noise textures (any place like any other) are a surface, the demo's centred object is not; the summary says
    what was decided on what; mirroring changes the bank, and an object fitted with auto equals one fitted without."""
    from scgan.artifacts.model_file import load_model
    from scgan.training.fit import train
    from scgan.training.patchcore import SURFACE_SHARE

    root = make_fake_mvtec(tmp_path / "data", "tiles", n_train=20, size=32)
    banks, facts = {}, {}
    for name, root_, category, how in [("surface_auto", root, "tiles", "auto"), ("surface_none", root, "tiles", "none"),
                                      ("object_auto", demo_root, demo_category, "auto"),
                                      ("object_none", demo_root, demo_category, "none")]:
        out = tmp_path / name
        train(_config(root_, category, **{"patchcore.flips": how}), out, progress=False)
        facts[name] = json.loads((out / "train_summary.json").read_text())
        banks[name] = load_model(out / "model.pt").parts["memory"].bank
    assert facts["surface_auto"]["bank_flips"] == "always"
    assert facts["surface_auto"]["bank_surface_share"] < SURFACE_SHARE
    assert facts["object_auto"]["bank_flips"] == "none"
    assert facts["object_auto"]["bank_surface_share"] >= SURFACE_SHARE
    assert facts["surface_none"]["bank_flips"] == "none" and "bank_surface_share" not in facts["surface_none"]
    assert not torch.equal(banks["surface_auto"], banks["surface_none"])
    assert torch.equal(banks["object_auto"], banks["object_none"])


@pytest.mark.unit
def test_an_unknown_flips_value_is_refused_in_one_line():
    from scgan.config import load_config

    with pytest.raises(ValueError, match="patchcore.flips must be one of none, auto, always; got 'on'"):
        load_config("default", overrides={"patchcore.flips": "on"})
