"""The README's parameter counts are measured, not estimated: recompute them from the code."""
import re

import pytest

from conftest import REPO
from scgan.config import get_preset
from scgan.model.networks import build_discriminator, build_generator


@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_readme_parameter_counts(preset):
    text = (REPO / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| `{preset}`"))
    counts = [int(x.replace(",", "")) for x in re.findall(r"\b\d{1,3}(?:,\d{3})+\b", row)]
    cfg = get_preset(preset)
    g = sum(p.numel() for p in build_generator(cfg.model).parameters())
    d = sum(p.numel() for p in build_discriminator(cfg.model).parameters())
    assert counts == [g, d]
