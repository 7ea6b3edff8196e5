"""Heat-map overlays and the test report."""
import re

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from scgan.data.io import resize_map
from scgan.reporting.report import ReportExample, format_metric, write_report
from scgan.reporting.visualize import colorize, mask_contour, overlay
from scgan.utils.atomic import save_png

pytestmark = pytest.mark.unit

WHITE = np.array([255, 255, 255], np.uint8)


# ---------------------------------------------------------------- visualize

def test_colorize_runs_blue_to_red():
    rgb = colorize(np.array([[0.0, 0.5, 1.0, 7.0]]))
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    low, mid, high, clipped = rgb[0].astype(int)
    assert low[2] > 100 and low[0] == 0  # 0 is blue
    assert high[0] > 100 and high[2] == 0  # 1 is red
    assert mid[1] > 200  # jet's middle is green-ish
    assert (clipped == high).all()  # values above 1 are clipped


def test_overlay_blends_heat_and_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    out = overlay(image, np.ones((16, 20)), alpha=0.7)
    assert out.shape == (16, 20, 3) and out.dtype == np.uint8
    red = colorize(np.ones((1, 1)))[0, 0].astype(float)
    expected = np.rint(0.7 * red + 0.3 * image.astype(float))
    assert np.abs(out.astype(float) - expected).max() <= 1
    assert (overlay(image, np.zeros((16, 20)), alpha=0.0) == image).all()  # alpha 0: the image itself


def test_overlay_resizes_heat_to_the_image():
    image = np.zeros((32, 48, 3), np.uint8)
    heat = np.zeros((8, 12))
    heat[:, 6:] = 1.0  # right half hot
    out = overlay(image, heat)
    assert out.shape == (32, 48, 3)
    assert out[16, 2, 2] > out[16, 2, 0]  # left: blue
    assert out[16, 45, 0] > out[16, 45, 2]  # right: red


def test_overlay_draws_the_mask_contour_only_on_its_boundary():
    image = np.full((32, 32, 3), 90, np.uint8)
    heat = np.zeros((32, 32))
    mask = np.zeros((32, 32), bool)
    mask[10:20, 12:22] = True
    plain = overlay(image, heat)
    out = overlay(image, heat, mask, contour_width=1)
    white = (out == WHITE).all(axis=2)
    boundary = mask & ~ndimage.binary_erosion(mask)
    assert (white == boundary).all()  # exactly the 1-pixel inner boundary, 36 pixels
    assert boundary.sum() == 36
    assert (out[~boundary] == plain[~boundary]).all()  # everything else untouched
    # A thicker contour stays inside the mask, within 2 pixels of its edge.
    thick = (overlay(image, heat, mask, contour_width=2) == WHITE).all(axis=2)
    assert (thick == mask_contour(mask, 2)).all() and thick.sum() == 36 + 28
    # A mask at another resolution is resized (nearest) to the image.
    small = mask[::2, ::2]
    assert (overlay(image, heat, small, contour_width=1) == WHITE).all(axis=2).sum() > 0


def test_overlay_default_contour_width_scales_with_size():
    mask = np.zeros((256, 256), bool)
    mask[100:150, 100:150] = True
    out = overlay(np.zeros((256, 256, 3), np.uint8), np.zeros((256, 256)), mask)
    assert ((out == WHITE).all(axis=2) == mask_contour(mask, 2)).all()  # 256 px -> 2 px thick


def test_resize_map_is_bilinear_float32_with_height_width_order():
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (8, 1))  # (8, 16), rising to the right
    out = resize_map(ramp, (20, 40))
    assert out.shape == (20, 40) and out.dtype == np.float32
    assert np.all(np.diff(out, axis=1) >= -1e-6)  # still rising to the right
    assert np.allclose(out, out[:1])  # constant down the columns
    assert 0.0 <= out.min() < 0.05 and 0.95 < out.max() <= 1.0
    assert len(np.unique(np.round(out[0], 4))) > 30  # interpolated, not nearest


def test_save_png_round_trips(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "sub" / "x.png"
    save_png(path, arr)
    assert (np.asarray(Image.open(path)) == arr).all()
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temp file left behind
    with pytest.raises(ValueError, match="uint8"):
        save_png(path, arr.astype(float))


# ---------------------------------------------------------------- report

def _example(i: int, anomalous: bool) -> ReportExample:
    image = np.full((32, 32, 3), 60 + 10 * i, np.uint8)
    mask = np.zeros((32, 32), bool)
    heat = np.full((16, 16), 0.1)
    if anomalous:
        mask[8:20, 8:20] = True
        heat[4:10, 4:10] = 0.9
    return ReportExample(f"img_{i}", image, heat, 0.5 + i / 10, int(anomalous), mask if anomalous else None)


CONFIG = {"model": {"image_size": 32, "attention": True}, "train": {"epochs": 3, "lr": 0.0002}}
# The shape scgan.inference.evaluate writes to metrics.json.
METRICS = {
    "image_auroc": 0.9125, "pixel_auroc": 0.875, "aupro": 0.6, "f1_max": 0.8, "default_score": "as",
    "scores": {
        "as": {"image_auroc": 0.9125, "pixel_auroc": 0.875, "aupro": 0.6, "f1_max": 0.8,
               "at_threshold": {"threshold": 0.55, "accuracy": 0.85, "recall": float("nan")},
               "description": "beta * L_con + (1 - beta) * L_enc"},
        "l_con": {"image_auroc": 0.75, "pixel_auroc": float("nan"), "aupro": float("nan"), "f1_max": 0.7},
        "map_max": {"image_auroc": 0.5, "f1_max": 0.6667},
    },
    "threshold": 0.55,
    "info": {"seed": 7},
    "config": CONFIG,
}


def test_write_report_full(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(12), np.ones(8)].astype(int)
    scores = rng.random(20) + labels
    md, html = write_report(
        tmp_path, title="SCGAN test: bottle", metrics=METRICS, config=CONFIG, scores=scores, labels=labels,
        score_name="as", examples_top=[_example(0, True), _example(1, True)], examples_bottom=[_example(2, False)],
        info={"seed": 7, "checkpoint": "last epoch, no test-set selection"},
    )
    assert (md, html) == (tmp_path / "report.md", tmp_path / "report.html")
    for name in ("roc.png", "score_hist.png", "examples_most.png", "examples_least.png"):
        assert Image.open(tmp_path / name).size[0] > 100
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert 'src="roc.png"' not in page  # self-contained
    for text in ("91.2", "87.5", "60.0", "80.0", "75.0", "n/a", "image_size: 32", "lr: 0.0002",
                 "last epoch, no test-set selection", "SCGAN test: bottle"):
        assert text in page, text
    doc = md.read_text()
    for name in ("as (default)", "l_con", "map_max"):
        assert re.search(rf"^\| {re.escape(name)} \|", doc, re.M), name
    assert "| score | image AUROC (%) | pixel AUROC (%) | AUPRO (%) | F1-max (%) | description |" in doc
    assert "| as (default) | 91.2 | 87.5 | 60.0 | 80.0 | beta * L_con + (1 - beta) * L_enc |" in doc
    assert "| map_max | 50.0 | n/a | n/a | 66.7 |" in doc
    # Per-score dicts become their own table; fractions in %, the threshold as a number.
    assert "## Decisions at the validation threshold" in doc
    assert "| as (default) | 0.55 | 85.0 | n/a |" in doc
    assert "![ROC curve](roc.png)" in doc and "```yaml" in doc and "epochs: 3" in doc
    assert "**threshold**: 0.55" in doc
    assert "**config**" not in doc and "**info**" not in doc  # shown in their own sections


def test_write_report_single_class_without_masks_or_examples(tmp_path):
    (tmp_path / "roc.png").write_bytes(b"stale")  # from an earlier run: must not survive
    metrics = {"image_auroc": float("nan"), "f1_max": float("nan")}
    md, html = write_report(
        tmp_path, title="normal only", metrics=metrics, config={}, scores=np.array([0.1, 0.3, 0.2]),
        labels=np.zeros(3), score_name="as", examples_top=[], examples_bottom=[],
    )
    doc = md.read_text()
    assert "| as (default) | n/a | n/a |" in doc
    assert "only one class" in doc and "only one class" in html.read_text()
    assert not (tmp_path / "roc.png").exists()
    assert (tmp_path / "score_hist.png").exists()
    assert not (tmp_path / "examples_most.png").exists()
    assert html.read_text().count("data:image/png;base64,") == 1


def test_format_metric():
    assert format_metric(0.97349) == "97.3"
    assert format_metric(float("nan")) == "n/a" and format_metric(None) == "n/a"


def test_report_and_console_show_the_pixel_auroc_per_defect_type(tmp_path, capsys):
    from scgan.commands.common import print_metrics

    metrics = {**METRICS, "pixel_auroc_by_defect": {
        "Crack": {"images": 3, "pixel_share": 0.25, "pixel_auroc": 0.96},
        "Uneven": {"images": 5, "pixel_share": 0.75, "pixel_auroc": 0.781}}}
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(12), np.ones(8)].astype(int)
    md, _ = write_report(tmp_path, title="t", metrics=metrics, config=CONFIG, scores=rng.random(20) + labels,
                         labels=labels, score_name="as", examples_top=[], examples_bottom=[])
    doc = md.read_text()
    assert "| defect | images | share of the defect pixels (%) | pixel AUROC (%) |" in doc
    assert "| Crack | 3 | 25.0 | 96.0 |" in doc and "| Uneven | 5 | 75.0 | 78.1 |" in doc
    assert doc.count("Uneven") == 1  # in its table, not again among the other metrics
    print_metrics(metrics, tmp_path)
    assert ("pixel AUROC per defect type (with the normal images; share of the defect pixels): Crack 96.0% (25.0%), "
            "Uneven 78.1% (75.0%)") in capsys.readouterr().out
