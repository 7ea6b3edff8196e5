"""What the model's own threshold does, where a user sees it: catch and false-alarm rates per defect type printed
first by `scgan test`, and the threshold (raw and normalised) beside the score in every CSV row."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import csv_rows

pytestmark = pytest.mark.integration


@pytest.mark.unit
def test_decisions_by_defect_count_catches_and_false_alarms():
    from scgan.inference.summary import decisions_by_defect

    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.7, 0.3, 0.95])
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    defects = ["good", "good", "good", "crack", "crack", "hole", "hole"]
    d = decisions_by_defect(scores, labels, defects, threshold=0.5, threshold_normalized=0.9)
    assert (d["caught"], d["defective"], d["false_alarms"], d["normal"]) == (3, 4, 1, 3)
    assert d["catch_rate"] == pytest.approx(0.75) and d["false_alarm_rate"] == pytest.approx(1 / 3)
    assert d["by_defect"] == {"crack": {"images": 2, "caught": 2, "catch_rate": 1.0},
                              "hole": {"images": 2, "caught": 1, "catch_rate": 0.5}}
    assert d["threshold"] == 0.5 and d["threshold_normalized"] == 0.9


def test_scgan_test_prints_the_catch_and_false_alarm_rates_first(tested):
    printed, out = tested
    lines = printed.splitlines()
    m = json.loads((out / "metrics.json").read_text())
    d = m["at_threshold"]
    rows = csv_rows(out / "scores.csv")
    flagged = [r["decision"] == "anomalous" for r in rows]
    defective = [r["label"] == "1" for r in rows]
    assert d["caught"] == sum(f and y for f, y in zip(flagged, defective)) and d["defective"] == sum(defective)
    assert d["false_alarms"] == sum(f and not y for f, y in zip(flagged, defective))
    assert d["quantile"] == 0.99 and d["calibration_images"] >= 1
    assert lines[0].startswith(f"at the model's threshold ({m['default_score']} > ")
    assert f"catches {d['caught']} of {d['defective']} defective images" in lines[0]
    assert f"false alarms on {d['false_alarms']} of {d['normal']} normal images" in lines[0]
    per_type = lines[1]
    assert per_type.strip().startswith("caught per defect type:")
    for name, v in d["by_defect"].items():
        assert f"{name} {v['caught']}/{v['images']}" in per_type
    assert lines[2].startswith("image AUROC ") and "pixel AUROC" in lines[2] and "AUPRO" in lines[2]


def test_every_csv_row_holds_the_threshold_raw_and_normalised(trained, tested, demo_root, demo_category, tmp_path):
    from scgan.inference.detector import Detector
    from scgan.inference.predict import run_predict

    det = Detector.load(trained[0].model_path)
    files = sorted((demo_root / demo_category / "test").rglob("*.png"))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    run_predict([*files, bad], tmp_path / "p", detector=det, progress=False)
    rows = csv_rows(tmp_path / "p" / "predictions.csv")
    t, t_norm = det.threshold, det.normalize(det.threshold)
    assert 0.0 <= t_norm <= 1.0  # the 0.99 quantile of the values that span [0, 1] after normalisation
    assert len(rows) == len(files) + 1
    for r in rows:
        assert float(r["threshold"]) == pytest.approx(t, rel=1e-5)
        assert float(r["threshold_normalized"]) == pytest.approx(t_norm, rel=1e-5)
        if r["decision"].startswith("error"):
            continue
        anomalous = r["decision"] == "anomalous"
        assert (float(r["score"]) > float(r["threshold"])) == anomalous
        norm, norm_t = float(r["score_normalized"]), float(r["threshold_normalized"])
        assert abs(norm - norm_t) < 1e-5 or (norm > norm_t) == anomalous  # the same decision on either scale
    _, out = tested
    for r in csv_rows(out / "scores.csv"):
        assert float(r["threshold"]) == pytest.approx(t, rel=1e-5)
        assert float(r["threshold_normalized"]) == pytest.approx(t_norm, rel=1e-5)
        assert (float(r["score"]) > float(r["threshold"])) == (r["decision"] == "anomalous")
