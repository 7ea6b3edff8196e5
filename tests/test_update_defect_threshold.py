"""A threshold from a few real defects: scgan calibrate --defects DIR with --catch or --false-alarms sets the default
score's threshold, prints the catch rate and the false-alarm rate it implies with their intervals, warns when the
images cannot show the target and refuses when they cannot meet it (naming which), and says that defects collected
from feedback are a biased sample."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.stats import beta

from helpers import one_error_line
from scgan.artifacts.model_file import load_model
from scgan.calibration.stats import clopper_pearson, target_threshold, threshold_false_alarms
from scgan.cli import main


@pytest.mark.unit
def test_clopper_pearson_is_the_exact_binomial_interval():
    assert clopper_pearson(5, 5) == pytest.approx((0.025 ** (1 / 5), 1.0))  # all caught: (alpha/2)^(1/n)
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    low, high = clopper_pearson(3, 10)
    assert low == pytest.approx(beta.ppf(0.025, 3, 8)) and high == pytest.approx(beta.ppf(0.975, 4, 7))


@pytest.mark.unit
def test_a_catch_target_keeps_the_threshold_as_high_as_it_can():
    normal = np.linspace(0.0, 1.0, 50)
    defects = np.array([0.5, 2.0, 3.0, 4.0, 5.0])
    t = target_threshold(normal, defects, catch=0.8)  # 4 of 5: just below 2.0, above every normal score
    assert 1.0 < t.threshold < 2.0 and t.caught == 4 and t.false_alarms.above == 0
    assert t.refusal is None and "cannot show it" in t.warning  # 4 of 5 caught: the interval reaches 28%
    assert t.warning.endswith("about 17 defective images, all caught, would show it")  # 0.8 ** 17 < 0.025
    all_five = target_threshold(normal, defects, catch=0.95)
    assert all_five.caught == 5 and 0.5 > all_five.threshold and all_five.false_alarms.above > 0


@pytest.mark.unit
def test_a_false_alarm_target_is_refused_when_the_normal_images_cannot_meet_it():
    normal = np.linspace(0.0, 1.0, 50)
    t = target_threshold(normal, np.array([2.0]), false_alarms=0.05)
    assert t.false_alarms.expected <= 0.05 and t.refusal is None
    assert t.false_alarms.expected == pytest.approx(threshold_false_alarms(normal, t.threshold).expected)
    refused = target_threshold(normal, np.array([2.0]), false_alarms=0.01)
    assert "false-alarm target 1% cannot be met with 50 normal images" in refused.refusal
    with pytest.raises(ValueError, match="one target"):
        target_threshold(normal, np.array([2.0]), catch=0.9, false_alarms=0.1)


@pytest.fixture(scope="module")
def defects_dir(demo_root, demo_category):
    """Five defective images of the demo category."""
    files = sorted(p for p in (demo_root / demo_category / "test").rglob("*.png") if p.parent.name != "good")
    assert len(files) >= 5
    return files[:5]


@pytest.mark.integration
def test_calibrate_with_five_defects_prints_the_rates_and_their_intervals(feature_model, defects_dir, tmp_path,
                                                                          capsys, caplog):
    folder = tmp_path / "defects"
    folder.mkdir()
    for p in defects_dir:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    out = tmp_path / "c.pt"
    with caplog.at_level(logging.WARNING, logger="scgan"):
        assert main(["calibrate", "--checkpoint", str(feature_model[0].model_path), "--output", str(out),
                     "--defects", str(folder), "--catch", "0.95"]) == 0
    printed = capsys.readouterr().out
    assert "of 5 defective images above it; 95% interval" in printed and "Clopper-Pearson" in printed
    assert "false alarms expected on" in printed
    assert "cannot show it" in caplog.text  # five images cannot show 95%
    cal = load_model(out).calibration
    rule = cal.threshold_rule
    assert rule["target"] == "catch" and rule["n_defects"] == 5 and rule["feedback"] is False
    assert cal.false_alarms().above == rule["above"] and cal.false_alarms().n == cal.n_images
    out2 = tmp_path / "c2.pt"
    assert main(["calibrate", "--checkpoint", str(feature_model[0].model_path), "--output", str(out2),
                 "--defects", str(folder), "--false-alarms", "0.01"]) == 1
    line = one_error_line(capsys.readouterr().err, "calibrate")
    assert "false-alarm target 1% cannot be met" in line and not out2.exists()


@pytest.mark.integration
def test_defects_from_feedback_are_called_a_biased_sample(feature_model, defects_dir, tmp_path, capsys, caplog):
    from scgan.data.feedback import record_feedback

    fb = tmp_path / "feedback"
    for p in defects_dir:
        record_feedback(fb, p.name, p.read_bytes(), {"label": "missed_defect"})
    out = tmp_path / "c.pt"
    with caplog.at_level(logging.WARNING, logger="scgan"):
        assert main(["calibrate", "--checkpoint", str(feature_model[0].model_path), "--output", str(out),
                     "--defects", str(fb), "--catch", "0.8"]) == 0
    assert "biased sample" in caplog.text and "collected at random" in caplog.text
    assert load_model(out).calibration.threshold_rule["feedback"] is True


@pytest.mark.unit
def test_the_warnings_name_too_few_images_and_a_biased_sample():
    from scgan.calibration.stats import Calibration
    from scgan.inference.recalibrate import BIASED_SAMPLE, threshold_warnings

    shown = target_threshold(np.linspace(0.0, 1.0, 50), np.full(200, 2.0), catch=0.95)  # 200 caught show 95%
    few = target_threshold(np.linspace(0.0, 1.0, 50), np.array([0.5, 2.0, 3.0, 4.0, 5.0]), catch=0.8)
    cal = Calibration(quantile=0.99, n_images=50)
    assert threshold_warnings(shown, cal) == [] and threshold_warnings(few, cal) == [few.warning]
    cal.threshold_rule = {"feedback": True}
    assert threshold_warnings(few, cal) == [few.warning, BIASED_SAMPLE]


@pytest.mark.integration
def test_a_threshold_from_defects_is_set_in_the_calibration_from_python(feature_model, defects_dir, tmp_path):
    """defect_threshold without the command: the default score's threshold is the target's, the rule is recorded,
    and a target the images cannot meet is refused with the calibration left as it was."""
    import copy

    from scgan.inference.recalibrate import defect_threshold

    folder = tmp_path / "defects"
    folder.mkdir()
    for p in defects_dir:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    loaded = load_model(feature_model[0].model_path)
    cfg, scorer = loaded.config, loaded.scorer()
    normal = [im.numpy() for im in loaded.calibration_images]
    cal = copy.deepcopy(loaded.calibration)
    target = defect_threshold(loaded, cfg, scorer, cal, normal, folder, 0.8, None)
    name = cal.resolve(cfg.score.default_score, loaded.kind.score_preference)
    assert cal.scores[name].threshold == target.threshold and target.n_defects == 5 and target.caught >= 4
    assert cal.threshold_rule == {**target.record(), "score": name, "defects": str(folder), "feedback": False}
    kept = copy.deepcopy(loaded.calibration)
    with pytest.raises(ValueError, match="false-alarm target 1% cannot be met.*nothing was written"):
        defect_threshold(loaded, cfg, scorer, kept, normal, folder, None, 0.01)
    assert kept.scores[name].threshold == loaded.calibration.scores[name].threshold and not kept.threshold_rule
