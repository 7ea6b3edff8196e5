"""What a new user meets first; each test names the rough edge it keeps smooth.

The predict overlay names (crack/000.png vs scratch/000.png) are tested in test_predict_files.py.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from scgan.cli import main
from scgan.config import get_preset, load_config

pytestmark = pytest.mark.integration


def _no_masks_root(demo_root: Path, demo_category: str, tmp_path: Path) -> Path:
    root = tmp_path / "no_masks"
    shutil.copytree(demo_root / demo_category, root / demo_category)
    shutil.rmtree(root / demo_category / "ground_truth")
    return root


def test_missing_masks_error_names_the_flag_that_works(capsys, trained, demo_root, demo_category, tmp_path):
    root = _no_masks_root(demo_root, demo_category, tmp_path)
    args = ["test", "--checkpoint", str(trained[0].model_path), "--root", str(root), "--no-progress", "--no-report",
            "--output", str(tmp_path / "out")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "has no ground-truth mask" in err and "scgan test --image-level-only" in err
    assert main([*args, "--image-level-only"]) == 0  # the advice can be followed as written


def test_argument_errors_name_the_subcommand_and_its_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["test", "--checkpoint", "m.pt", "--output", "o", "require_masks=False"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("scgan test: error: unrecognized arguments: require_masks=False")
    assert "takes no key=value" in err and "see 'scgan test --help'" in err  # where the options that work are
    with pytest.raises(SystemExit):
        main(["predict", "--checkpoint", "m.pt", "--output", "o", "x.png", "--bogus"])
    assert capsys.readouterr().err.startswith("scgan predict: error: unrecognized arguments: --bogus")


def test_report_examples_show_the_stored_resolution_truth_and_decision(trained, demo_root, demo_category, tmp_path,
                                                                       monkeypatch):
    import scgan.reporting.report

    root = tmp_path / "big"
    shutil.copytree(demo_root / demo_category, root / demo_category)
    for p in (root / demo_category).rglob("*.png"):  # stored at 96 x 80 px, scored at S = 32
        im = Image.open(p)
        nearest = "ground_truth" in p.parts
        im.resize((96, 80), Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR).save(p)
    seen = []
    real = scgan.reporting.report.write_report

    def capture(out_dir, **kw):
        seen.extend(kw["examples_top"] + kw["examples_bottom"])
        return real(out_dir, **kw)

    monkeypatch.setattr(scgan.reporting.report, "write_report", capture)
    from scgan.inference.evaluate import run_test

    run_test(trained[0].model_path, tmp_path / "out", root=str(root), progress=False)
    assert seen and all(ex.image.shape == (80, 96, 3) for ex in seen)
    assert all(ex.decision in ("normal", "anomalous") for ex in seen)
    assert any(ex.mask is not None and ex.mask.shape == (80, 96) for ex in seen)
    assert (tmp_path / "out" / "examples_most.png").is_file()


def test_examples_figure_has_a_colour_bar(monkeypatch):
    from scgan.reporting import figures as report_figures

    figures = []
    monkeypatch.setattr(report_figures, "_png", lambda fig, dpi=100: figures.append(fig) or b"png")
    ex = report_figures.ReportExample("a/b.png", np.zeros((40, 60, 3), np.uint8),
                                      np.random.default_rng(0).random((8, 8)), 0.5, 1, None, "anomalous")
    report_figures.examples_png([ex])
    axes = [ax for sub in figures[0].subfigs for ax in sub.axes]
    assert any(getattr(ax, "_colorbar", None) is not None for ax in axes)
    titles = [t.get_text() for sub in figures[0].subfigs for t in sub.texts] + [sub._suptitle.get_text()
                                                                                for sub in figures[0].subfigs]
    assert any("ground truth: anomalous" in t and "decision: anomalous (correct)" in t for t in titles)


def test_report_warns_when_f1_max_is_the_trivial_value(tmp_path):
    from scgan.reporting.report import trivial_f1, write_report

    labels = np.array([0, 0, 1, 1, 1, 1])
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.4])  # anomalies score lower: no threshold beats "all anomalous"
    for f1, warned in ((trivial_f1(labels), True), (0.95, False)):
        md, _ = write_report(tmp_path / str(warned), title="t", metrics={"f1_max": f1, "image_auroc": 0.0}, config={},
                             scores=scores, labels=labels, score_name="as", examples_top=[], examples_bottom=[])
        assert ("equals the trivial value of calling every test image anomalous" in md.read_text()) is warned
    assert trivial_f1(labels) == pytest.approx(2 * (4 / 6) / (1 + 4 / 6))


def test_training_ends_with_its_calibration_and_logs_one_line_per_epoch(capsys, caplog, demo_root, demo_category,
                                                                        tmp_path):
    """Off a terminal (capsys is not a TTY) progress is one line per epoch, no carriage returns."""
    overrides = [f"{k}={v}" for k, v in TINY.items()]
    assert main(["train", "--preset", "cpu", "--root", str(demo_root), "--category", demo_category,
                 "--output", str(tmp_path / "run"), *overrides]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "\r" not in out
    assert [line.split(":")[0] for line in err.splitlines() if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert "threshold" in next(line for line in err.splitlines() if line.startswith("epoch 2/2"))
    assert "normal validation image(s)" in out and "threshold " in out and out.count("score ") >= 1
    # The demo's 24 training images leave a small validation split: said once (the training's log line).
    assert (err + out + caplog.text).count("fewer than 20") == 1


@pytest.mark.parametrize("preset", ["cpu", "paper", "default", "gpu"])
def test_shipped_configs_and_scgan_config_round_trip(preset, capsys, tmp_path):
    from importlib import resources

    shipped = resources.files("scgan").joinpath("configs", f"{preset}.yaml")
    text = shipped.read_text()
    assert text.lstrip().startswith("#") and text.count("\n  # ") > 10  # commented
    path = tmp_path / "shipped.yaml"
    path.write_text(text)
    assert load_config("cpu", path) == get_preset(preset) == load_config("paper", path)
    assert main(["config", "--preset", preset]) == 0
    mine = tmp_path / "my.yaml"
    mine.write_text(capsys.readouterr().out)
    assert main(["config", "--config", str(mine)]) == 0
    assert load_config("cpu", mine) == get_preset(preset)
    assert capsys.readouterr().out == mine.read_text()
