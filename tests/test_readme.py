"""The README's example runs as written; the presets' parameter counts (docs/reproduction.md) are measured, not
estimated: recompute them from the code."""
import re

import pytest

from conftest import REPO
from scgan.config import get_preset
from scgan.models.scgan.networks import build_discriminator, build_generator

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_preset_parameter_counts(preset):
    text = (REPO / "docs" / "reproduction.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| `{preset}`"))
    counts = [int(x.replace(",", "")) for x in re.findall(r"\b\d{1,3}(?:,\d{3})+\b", row)]
    cfg = get_preset(preset)
    g = sum(p.numel() for p in build_generator(cfg.model).parameters())
    d = sum(p.numel() for p in build_discriminator(cfg.model).parameters())
    assert counts == [g, d]


def test_readme_python_example_runs(feature_model, demo_root, demo_category, tmp_path):
    """The README's Python example, run as written in a folder laid out like `make demo`'s runs/demo."""
    import shutil
    import subprocess
    import sys

    text = (REPO / "README.md").read_text()
    section = text.split("## Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 12  # "a ten-line example"
    assert demo_category == "washer"  # the example's paths name the demo's object category
    (tmp_path / "runs" / "demo" / "train").mkdir(parents=True)
    shutil.copy(feature_model[0].model_path, tmp_path / "runs" / "demo" / "train" / "model.pt")
    shutil.copytree(demo_root / demo_category / "test", tmp_path / "runs" / "demo" / "data" / "washer" / "test")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split()[0] in ("normal", "anomalous") and lines[2].startswith("(")
    assert (tmp_path / "runs" / "demo" / "overlay.png").is_file()  # inside the demo's folder, not the repository root
    n_images = len(list((tmp_path / "runs" / "demo" / "data" / "washer" / "test").rglob("*.png")))
    assert len(lines) == 3 + n_images
