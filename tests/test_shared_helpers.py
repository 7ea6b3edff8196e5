"""The small helpers several layers share: the score CSVs' decision columns, an exception as one line, lazy exports."""
from __future__ import annotations

import csv
import io
import sys
import types

import pytest

from scgan.utils.errors import one_line
from scgan.utils.lazy import lazy_exports
from scgan.utils.tables import DECISION_COLUMNS, csv_text, decision_cells

pytestmark = pytest.mark.unit


def test_decision_cells_fill_the_decision_columns_in_order():
    rows = [decision_cells(1.234567, 1.0, 0.71, 0.5, True), decision_cells(0.2, 1.0, 0.1, 0.5, False),
            decision_cells(float("nan"), None, None, None, None), decision_cells(None, 1.0, None, 0.5, None, note="x")]
    got = list(csv.DictReader(io.StringIO(csv_text(DECISION_COLUMNS, rows))))
    assert [r["decision"] for r in got] == ["anomalous", "normal", "", "x"]
    assert got[0] == {"score": "1.23457", "threshold": "1", "score_normalized": "0.71", "threshold_normalized": "0.5",
                      "decision": "anomalous"}
    assert (got[2]["score"], got[2]["threshold"], got[3]["score"]) == ("nan", "", "")


def test_one_line_keeps_the_first_line_the_class_or_the_missing_file():
    assert one_line(ValueError("bad input\n  details")) == "bad input"
    assert one_line(RuntimeError("  ")) == "RuntimeError"
    assert one_line(FileNotFoundError("no model")) == "no model"
    assert one_line(FileNotFoundError(2, "No such file", "m.pt")) == "[Errno 2] No such file: 'm.pt'"
    # the file name on a later line than the first: it is added to the first
    assert one_line(FileNotFoundError(2, "No such file\nsee the docs", "m.pt")) == "[Errno 2] No such file: m.pt"


def test_lazy_exports_import_on_first_use_and_keep_the_name(monkeypatch):
    pkg = types.ModuleType("fakepkg")
    monkeypatch.setitem(sys.modules, "fakepkg", pkg)
    pkg.__getattr__ = lazy_exports("fakepkg", {"dumps": "json", "sqrt": "math"})
    assert pkg.dumps([1]) == "[1]" and "dumps" in vars(pkg)  # kept: the next lookup is a plain attribute
    assert pkg.sqrt(4.0) == 2.0
    with pytest.raises(AttributeError, match="module 'fakepkg' has no attribute 'loads'"):
        pkg.loads  # noqa: B018
