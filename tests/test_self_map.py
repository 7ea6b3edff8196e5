"""The self map (patchcore.self_map): each patch's distance to its own image's median patch, judged by location against
the training images' and fused into the map returned; the scores, and so every decision, stay the distance map's."""
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
@pytest.mark.parametrize("n", [7, 6])
def test_self_deviation_is_each_patch_s_distance_to_its_image_s_lower_median_patch(n):
    """Per image and dimension the median of the patches (the lower middle value where their count is even, as
    torch.median takes it), then each patch's Euclidean distance to it: by hand, two images of n patches."""
    from scgan.models.patchcore.model import self_deviation

    q = torch.randn(2, n, 5, generator=torch.Generator().manual_seed(0))
    got = self_deviation(q)
    for b in range(2):
        middle = torch.tensor([sorted(q[b, :, d].tolist())[(n - 1) // 2] for d in range(5)])
        want = torch.tensor([float(((q[b, i] - middle) ** 2).sum().sqrt()) for i in range(n)])
        assert torch.allclose(got[b], want, atol=1e-6)
        assert torch.equal(middle, q[b].median(dim=0).values)


@pytest.mark.unit
def test_the_fused_map_is_the_mean_of_the_two_normalised_maps_and_a_new_bank_keeps_the_statistics():
    """fuse_self by hand on a made-up grid: ((map - a) / b + ((self - mean) / spread - c) / d) / 2, the 2 x 2 grids
    brought to the map's 4 x 4 by bilinear weights (rows and columns 1, 3/4 + 1/4, 1/4 + 3/4, 1 of the two cells);
    with_bank (the update's and the cross-fit's) carries the statistics over."""
    from scgan.models.patchcore.model import MemoryBank

    memory = MemoryBank(torch.randn(4, 3))
    assert not memory.has_self
    mean, spread = torch.tensor([[0.0, 4.0], [8.0, 12.0]]), torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    memory.set_self(mean, spread, 2.5, torch.tensor([1.0, 2.0, 0.5, 3.0]))
    weights = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])  # 2 cells -> 4 pixels
    up = lambda grid: weights @ grid @ weights.T  # noqa: E731
    smooth = torch.arange(16.0).reshape(1, 1, 4, 4)
    own = torch.full((1, 1, 4, 4), 10.0)
    want = ((smooth - 1.0) / 2.0 + ((own - up(mean)) / up(spread) - 0.5) / 3.0) / 2
    assert torch.allclose(memory.fuse_self(smooth, own), want)
    other = memory.with_bank(torch.randn(2, 3))
    assert other.has_self and torch.equal(other.self_norm, memory.self_norm) and float(other.self_sigma) == 2.5
    assert torch.allclose(other.fuse_self(smooth, own), want)


class _Stream:
    """What SelfGrid reads of the training stream: each image's size."""

    def __init__(self, shapes):
        self.shapes = shapes
        self.samples = [type("S", (), {"path": f"image{i}.png"}) for i in range(len(shapes))]

    def shape(self, index):
        return self.shapes[index]


@pytest.mark.unit
def test_the_normal_statistics_are_the_mean_and_floored_spread_of_the_images_smoothed_self_maps():
    """SelfGrid against the same steps written out: each image's self map, smoothed and brought to its size, area-
    averaged into the grid; the mean over images, the standard deviation (n - 1) floored at a tenth of its median.
    A patch count that does not match the image's size is refused."""
    import torch.nn.functional as F

    from scgan.models.patchcore.model import distance_maps, self_deviation
    from scgan.models.scoring import GaussianBlur
    from scgan.training.self_map import SelfGrid

    g = torch.Generator().manual_seed(1)
    shapes = [(32, 48), (48, 32), (32, 32)]
    patches = [torch.randn((h // 8) * (w // 8), 6, generator=g) for h, w in shapes]
    grid = SelfGrid(_Stream(shapes), stride=8, sigma=1.5, grid=4)
    cells = []
    for i, (h, w) in enumerate(shapes):
        grid(i, patches[i])
        own = self_deviation(patches[i][None]).reshape(1, 1, h // 8, w // 8)
        cells.append(F.adaptive_avg_pool2d(distance_maps(own, (h, w), GaussianBlur(1.5))[1], 4)[0, 0])
    c = torch.stack(cells)
    mean, spread = grid.stats()
    sd = c.std(0)
    assert torch.allclose(mean, c.mean(0), atol=1e-5)
    assert torch.allclose(spread, sd.clamp_min(0.1 * sd.median()), atol=1e-5)
    with pytest.raises(RuntimeError, match="did it change while fitting"):
        grid(0, patches[1][:3])


@pytest.mark.integration
@pytest.mark.parametrize("crossfit", [False, True])
def test_the_self_map_changes_the_map_and_never_a_score(tmp_path, one_thread, crossfit):
    """Fitted with and without the self map on the same textures: the same bank and the same scores on every image
    (so the same decisions), another map; the scoring path (`run`) and the exported graph's (`forward`) give the
    same; the file keeps the statistics, and says the map fused them. With the default's cross-fitted threshold and
    map_z beside it too (the fit's pass feeds the folds and the self map at once)."""
    from scgan.artifacts.model_file import load_model
    from scgan.training.fit import train

    root = make_fake_mvtec(tmp_path / "data", "tiles", n_train=20, size=32)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    extra = {"score.threshold_source": "crossfit", "patchcore.position_grid": 8, "score.default_score": "map_z"}
    got = {}
    for how in ("always", "none"):
        train(_config(root, "tiles", **{"patchcore.self_map": how, **(extra if crossfit else {})}), tmp_path / how,
              progress=False)
        loaded = load_model(tmp_path / how / "model.pt")
        scorer, image = loaded.scorer(), x[:, :loaded.input_spec.channels]
        with torch.inference_mode():
            got[how] = (loaded.parts["memory"], *scorer(image))
            run = scorer.run(image)
        assert torch.allclose(run[0], got[how][1], rtol=1e-5, atol=1e-4)
        assert torch.allclose(run[1], got[how][2], rtol=1e-5, atol=1e-5)
        facts = json.loads((tmp_path / how / "train_summary.json").read_text())
        assert facts["map_self_fused"] is (how == "always")
    (memory, scores, maps), (plain, plain_scores, plain_maps) = got["always"], got["none"]
    assert memory.has_self and not plain.has_self
    assert torch.equal(memory.bank, plain.bank) and torch.allclose(scores, plain_scores)
    assert not torch.allclose(maps, plain_maps)
    assert bool((memory.self_norm[1::2] > 0).all()) and bool((memory.self_spread > 0).all())


@pytest.mark.integration
def test_a_self_map_model_refuses_another_smoothing_and_a_config_that_disowns_it(tmp_path, one_thread):
    """Its normal statistics hold at the sigma they were measured with: another is refused, as map_z's grid refuses
    it; a file whose config says none, or says always and holds none, does not load."""
    from scgan.artifacts.model_file import load_model
    from scgan.models.patchcore.kind import PATCHCORE
    from scgan.training.fit import train

    root = make_fake_mvtec(tmp_path / "data", "tiles", n_train=20, size=32)
    cfg = _config(root, "tiles", **{"patchcore.self_map": "always"})
    train(cfg, tmp_path / "fit", progress=False)
    loaded = load_model(tmp_path / "fit" / "model.pt")
    scorer = loaded.scorer()
    with pytest.raises(ValueError, match="the self map's normal maps were smoothed with sigma"):
        scorer.set_sigma(scorer.sigma + 1.0)
    state = {"memory": loaded.parts["memory"].state_dict()}
    cfg.patchcore.self_map = "none"
    with pytest.raises(RuntimeError, match="holds the self map's statistics, and its config says"):
        PATCHCORE.build_parts(cfg, state)
    cfg.patchcore.self_map = "always"
    plain = {"memory": {k: v for k, v in state["memory"].items() if not k.startswith("self_")}}
    with pytest.raises(RuntimeError, match="holds no self map's statistics"):
        PATCHCORE.build_parts(cfg, plain)


@pytest.mark.integration
def test_auto_fuses_it_on_a_surface_and_not_on_an_object(tmp_path, demo_root, demo_category, one_thread, capsys):
    """Noise textures are a surface: the map fuses the self map; the demo's centred object is not: its model is the
    one fitted without (the same memory, bit for bit); each says what it decided and on what. With mirroring on
    auto too, one measurement decides both, each in its own line; a setting left off says nothing."""
    from scgan.artifacts.model_file import load_model
    from scgan.training.fit import train

    root = make_fake_mvtec(tmp_path / "data", "tiles", n_train=20, size=32)
    train(_config(root, "tiles", **{"patchcore.self_map": "auto", "patchcore.flips": "auto"}), tmp_path / "surface",
          progress=False)
    said = [line for line in capsys.readouterr().out.splitlines() if "=auto:" in line]
    assert len(said) == 2 and said[0].startswith("patchcore.flips=auto: a surface (where a patch lies explains")
    assert said[1].startswith("patchcore.self_map=auto: a surface")
    assert said[0].split(": ")[1] == said[1].split(": ")[1]  # the same measurement: "a surface (where ... images)"
    assert load_model(tmp_path / "surface" / "model.pt").parts["memory"].has_self
    states = {}
    for how in ("auto", "none"):
        train(_config(demo_root, demo_category, **{"patchcore.self_map": how}), tmp_path / how, progress=False)
        states[how] = load_model(tmp_path / how / "model.pt").parts["memory"].state_dict()
    out = capsys.readouterr().out
    assert "patchcore.self_map=auto: an object (where a patch lies explains" in out and "patchcore.flips" not in out
    assert states["auto"].keys() == states["none"].keys()
    assert all(torch.equal(states["auto"][k], states["none"][k]) for k in states["auto"])


@pytest.mark.integration
def test_a_self_map_model_exports_to_onnx_within_the_parity_tolerance(tmp_path, one_thread):
    """The median patch is taken by a sort in the graph (ONNX has no median): maps and scores agree with torch's on
    images of two shapes."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from scgan.artifacts.export import export_onnx
    from scgan.artifacts.model_file import load_model
    from scgan.artifacts.onnx_file import OnnxScorer, parity_gap
    from scgan.training.fit import train

    root = make_fake_mvtec(tmp_path / "data", "tiles", n_train=20, size=32)
    train(_config(root, "tiles", **{"patchcore.self_map": "always"}), tmp_path / "fit", progress=False)
    loaded = load_model(tmp_path / "fit" / "model.pt")
    onnx = OnnxScorer(export_onnx(loaded, tmp_path / "model.onnx"))
    scorer = loaded.scorer()
    for shape in [(2, 64, 64), (1, 64, 96)]:
        x = torch.rand(shape[0], loaded.input_spec.channels, *shape[1:], generator=torch.Generator().manual_seed(2))
        scores, maps = onnx.run((x * 2 - 1).numpy())
        with torch.inference_mode():
            ts, tm = scorer(x * 2 - 1)
        assert parity_gap(scores, ts.numpy()) is None and parity_gap(maps, tm.numpy()) is None


@pytest.mark.unit
@pytest.mark.parametrize("overrides, message", [
    ({"patchcore.self_map": "on"}, "patchcore.self_map must be one of none, auto, always; got 'on'"),
    ({"patchcore.self_map": "always", "score.sigma": "auto", "patchcore.position_grid": 0},
     "patchcore.self_map needs a fixed score.sigma"),
    ({"patchcore.self_map": "always", "patchcore.position_map": True},
     "patchcore.self_map and patchcore.position_map both make the anomaly map"),
])
def test_a_self_map_the_model_cannot_make_is_refused_in_one_line(overrides, message):
    from scgan.config import load_config
    from scgan.models.checks import check_config

    with pytest.raises(ValueError, match=message):
        check_config(load_config("default", overrides=overrides))
