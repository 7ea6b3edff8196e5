"""Heat-map colours fitted on normal validation pixels: normal pixels blue, the map's threshold green, for every
model kind (tests/test_head_model.py and tests/test_patchcore.py check the head and PatchCore models on their own
fixtures); old model files show as before; the colour bar, the report, ONNX and the serve page say what the colours
mean."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import assert_normal_blue_threshold_green
from scgan.calibration.stats import HEAT_AT_THRESHOLD, HEAT_LOW_QUANTILE, Calibration, fit_calibration, heat_scale

pytestmark = pytest.mark.integration


@pytest.mark.unit
def test_the_heat_scale_puts_normal_pixels_at_blue_and_the_threshold_at_green():
    from scgan.reporting.visualize import colorize

    rng = np.random.default_rng(0)
    maps = [0.38 + 0.02 * rng.random((32, 32)) for _ in range(50)]  # a head's normal pixels: 0.38-0.40
    low, thr = heat_scale([m.ravel() for m in maps], np.array([m.max() for m in maps]), 0.99)
    assert low == pytest.approx(np.quantile(np.concatenate([m.ravel() for m in maps]), HEAT_LOW_QUANTILE))
    cal = fit_calibration(np.array([[m.max()] for m in maps]), ("map_max",), 0.99, heat=(low, thr))
    heat = np.stack([cal.heat(m) for m in maps])
    assert (heat == 0).mean() >= HEAT_LOW_QUANTILE - 0.01 and (heat < 0.35).mean() > 0.95
    rgb = colorize(heat.reshape(-1, 32))
    blue = (rgb[..., 0] == 0) & (rgb[..., 2] > rgb[..., 1])  # no red, more blue than green
    assert blue.mean() > 0.95
    assert cal.heat(np.array([[thr]]))[0, 0] == pytest.approx(HEAT_AT_THRESHOLD, abs=1e-5)
    r, g, b = colorize(np.array([[HEAT_AT_THRESHOLD]]))[0, 0]
    assert g == 255 and r < 160 and b < 160  # green, as the legend says
    assert cal.heat(np.array([[0.67]]))[0, 0] == 1.0  # a real defect's 0.67 is red, not yellow
    assert "green" in cal.heat_legend() and f"{thr:.3g}" in cal.heat_legend()
    assert [label.split()[-1] for _, label in cal.heat_ticks()[:2]] == ["normal", "threshold"]


@pytest.mark.unit
def test_a_calibration_without_the_heat_scale_shows_its_maps_as_before():
    d = fit_calibration(np.array([[1.0], [2.0]]), ("map_max",), 0.99, heat=(0.5, 1.5)).to_dict()
    assert Calibration.from_dict(d).heat_range() == pytest.approx((0.5, 2.5))  # round trip (model file, ONNX)
    del d["heat_low"], d["heat_threshold"]  # a model file written before the scale existed
    old = Calibration.from_dict(d)
    amap = np.array([[0.0, 1.0, 2.0, 4.0]], np.float32)
    np.testing.assert_array_equal(old.heat(amap), np.clip(amap / old.map_high, 0, 1))
    assert "scgan calibrate" in old.heat_legend()


def test_a_residual_models_normal_pixels_are_blue(trained):
    from scgan.artifacts.model_file import load_model

    loaded = load_model(trained[0].model_path)
    assert_normal_blue_threshold_green(loaded)
    # The map is the smoothed residual and map_max its maximum: the map's threshold is map_max's.
    assert loaded.calibration.heat_threshold == pytest.approx(loaded.calibration.scores["map_max"].threshold)


def test_the_colours_reach_onnx_the_detector_the_report_and_the_page(trained, exported_onnx, tested):
    from scgan.inference.detector import Detector
    from scgan.serve import create_app

    torch_det, onnx_det = Detector.load(trained[0].model_path), Detector.load(exported_onnx)
    cal = torch_det.calibration
    assert (onnx_det.calibration.heat_low, onnx_det.calibration.heat_threshold) == (cal.heat_low, cal.heat_threshold)
    assert torch_det.describe()["calibration"]["heat_legend"] == cal.heat_legend()
    _, out = tested
    assert f"Heat-map colours: {cal.heat_legend()}" in (out / "report.md").read_text()
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    with TestClient(create_app(torch_det), base_url="http://localhost") as c:
        assert c.get("/model").json()["calibration"]["heat_legend"] == cal.heat_legend()
        page = c.get("/").text
    assert "blue normal, red anomalous" not in page and "cal.heat_legend" in page


@pytest.mark.unit
def test_the_colour_bar_says_what_the_colours_mean(monkeypatch):
    from scgan.reporting import figures as report_figures

    figures = []
    monkeypatch.setattr(report_figures, "_png", lambda fig, dpi=100: figures.append(fig) or b"png")
    ex = report_figures.ReportExample("a/b.png", np.zeros((40, 60, 3), np.uint8), np.zeros((8, 8)), 0.5, 0, None,
                                      "normal")
    ticks = [(0.0, "0.2 normal"), (0.5, "0.45 threshold"), (1.0, "0.7")]
    report_figures.examples_png([ex], heat_ticks=ticks)
    bar = next(ax._colorbar for sub in figures[0].subfigs for ax in sub.axes if getattr(ax, "_colorbar", None))
    labels = [t.get_text() for t in bar.ax.get_yticklabels()]
    assert labels == ["0.2 normal", "0.45 threshold", "0.7"]
    assert list(bar.get_ticks()) == [0.0, 0.5, 1.0]
