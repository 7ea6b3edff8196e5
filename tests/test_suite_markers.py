"""The suite's own rule: every test says whether it is a unit, integration or system test."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system


def test_an_unclassified_test_fails_collection_whatever_m_selects(tmp_path):
    for name in ("conftest.py", "postgres.py"):  # the conftest and the fixture module it imports
        shutil.copy(Path(__file__).with_name(name), tmp_path / name)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    unit: u\n    integration: i\n    system: s\n")
    (tmp_path / "test_a.py").write_text("import pytest\n\n\n@pytest.mark.unit\ndef test_ok():\n    pass\n\n\n"
                                        "def test_unclassified():\n    pass\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "unit"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert "test_a.py::test_unclassified" in run.stderr and "test_ok" not in run.stderr
    (tmp_path / "test_a.py").write_text("import pytest\n\n\n@pytest.mark.unit\ndef test_ok():\n    pass\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr
