"""What a run says: training says what it will do before its first epoch ends; the small-calibration warning
appears once, on its own line; the package metadata builds without a deprecation banner."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import pytest

from conftest import REPO, TINY
from scgan.cli import main

pytestmark = pytest.mark.integration


def test_training_says_what_it_will_do_before_the_first_epoch(capsys, demo_root, demo_category, tmp_path):
    overrides = [f"{k}={v}" for k, v in {**TINY, "epochs": 1}.items()]
    assert main(["train", "--preset", "cpu", "--root", str(demo_root), "--category", demo_category,
                 "--output", str(tmp_path / "run"), *overrides]) == 0
    out, err = capsys.readouterr()
    # On stdout with the command's other results (stderr stays one line on an error); the epoch lines come later.
    plan = out.splitlines()[0]
    assert plan.startswith("training an SCGAN") and "training an SCGAN" not in err
    assert re.search(r"preset cpu: 32 px.* on \d+ normal images: 1 epochs of \d+ steps of batch 8 \(\d+ steps\)",
                     plan), plan
    assert "validation images calibrate it" in plan and "epoch 1/1" in err


def test_a_feature_fit_says_what_it_will_do_even_without_progress(capsys, demo_root, demo_category, tmp_path):
    from scgan.config import load_config
    from scgan.training.fit import train

    cfg = load_config("default", overrides={"patchcore.resolution": 64, "patchcore.bank_size": 64,
                                            "patchcore.max_patches": 5000, "data.root": str(demo_root),
                                            "data.category": demo_category})
    train(cfg, tmp_path / "f", progress=False)
    out = capsys.readouterr().out
    assert re.search(r"^fitting a PatchCore detector \(preset default: backbone lite1, blocks [\d, ]+\) on \d+ normal "
                     r"images at 64 px", out, re.M), out


@pytest.mark.system
def test_the_demo_says_its_small_calibration_warning_once_on_its_own_line(tmp_path):
    """A real process with progress bars on (stderr is a pipe, not a terminal): the warning appears once and starts
    its own line, not after a progress bar's carriage return."""
    out = subprocess.run([sys.executable, "-m", "scgan.cli", "demo", "--output", str(tmp_path / "demo"),
                          "patchcore.resolution=64", "patchcore.bank_size=128", "patchcore.max_patches=5000"],
                         capture_output=True, text=True, timeout=600, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert text.count("fewer than 20") == 1, text[-3000:]
    i = out.stderr.index("fewer than 20")
    start = out.stderr.rfind("\n", 0, i) + 1
    assert "\r" not in out.stderr[start:i] and out.stderr[start:i].startswith("WARNING: ")


@pytest.mark.unit
def test_the_licence_is_an_spdx_string_setuptools_reads_without_a_deprecation():
    tomllib = pytest.importorskip("tomllib")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert any(r.replace(" ", "") == "setuptools>=77" for r in project["build-system"]["requires"])  # SPDX support
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert dist.metadata.license_expression == "MIT"
    assert not [w for w in caught if "license" in str(w.message).lower()], [str(w.message)[:200] for w in caught]
