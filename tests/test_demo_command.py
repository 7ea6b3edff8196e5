"""`scgan demo` end to end: demo data written, the default detector fitted, tested, a report written."""
from __future__ import annotations

import json

import pytest

from scgan.cli import main


@pytest.mark.system
def test_scgan_demo_fits_the_default_detector_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--output", str(out), "--no-progress", "patchcore.resolution=64", "patchcore.bank_size=256"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "image AUROC" in printed and "report.html" in printed
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert metrics["config"]["kind"] == "patchcore" and metrics["image_auroc"] >= 0.9
    assert (out / "train" / "model.pt").is_file() and (out / "test" / "report.html").is_file()
    # A second demo into the same folder is refused unless it may replace the first (make demo passes --overwrite).
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
