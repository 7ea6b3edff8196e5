"""Numbers and tables as text: one format for percentages, mean ± std, Markdown tables and score CSVs.

Every table scgan writes (reports, benchmark and ablation tables, the CLI summary, the benchmark
scripts) goes through these functions, so a number looks the same wherever it is shown.
"""
from __future__ import annotations

import csv
import io
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from scgan.utils.names import csv_cell

MISSING = "n/a"  # an undefined metric (a single-class test set) or one not computed


def is_missing(value: Any) -> bool:
    """True for None and for non-finite reals (NaN, inf): values a table shows as ``missing``."""
    return value is None or (isinstance(value, numbers.Real) and not math.isfinite(float(value)))


def num(value: Any, digits: int = 1, *, missing: str = MISSING, sign: bool = False) -> str:
    """A real with ``digits`` decimals ("93.2"; "+4.5" with ``sign``); None/NaN as ``missing``."""
    if is_missing(value):
        return missing
    return f"{float(value):{'+' if sign else ''}.{digits}f}"


def pct(value: Any, digits: int = 1, *, missing: str = MISSING, sign: bool = False, unit: str = "") -> str:
    """A fraction in [0, 1] as a percentage: 0.9732 -> "97.3" (``unit="%"``: "97.3%"); None/NaN as ``missing``."""
    if is_missing(value):
        return missing
    return num(100 * float(value), digits, sign=sign) + unit


def fmt_mean_std(values: Iterable[Any], digits: int = 1, *, scale: float = 100.0, missing: str = MISSING) -> str:
    """Mean ± sample std (ddof 1) of the finite values, times ``scale`` (fractions as %): "93.2 ± 0.3".

    One value: just it; none: ``missing``. None and NaN entries (a seed whose metric is undefined) are left out.
    """
    vals = [float(v) for v in values if not is_missing(v)]
    if not vals:
        return missing
    mean = scale * float(np.mean(vals))
    if len(vals) == 1:
        return num(mean, digits)
    return f"{num(mean, digits)} ± {num(scale * float(np.std(vals, ddof=1)), digits)}"


def _md_cell(value: Any) -> str:
    """A table cell on one line; a '|' inside it escaped so that it cannot split the cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_row(cells: Sequence[Any]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in map(_md_cell, cells)) + "|"


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table (no trailing newline): the header, a ``|---|`` rule, one line per row."""
    header = list(header)
    return "\n".join([_md_row(header), "|" + "---|" * len(header), *(_md_row(r) for r in rows)])


def csv_value(value: Any) -> str:
    """One CSV cell: reals with 6 significant digits, None as empty, text safe from spreadsheet formulas."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.6g}"
    return csv_cell(value)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (header, then rows) with every cell through :func:`csv_value`."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(csv_cells(row) for row in rows)
    return buf.getvalue()


def csv_cells(row: Sequence[Any]) -> list[str]:
    """One row's cells as :func:`csv_text` writes them (for a ``csv.writer`` that appends row by row)."""
    return [csv_value(v) for v in row]


def decision_label(anomalous: bool | None) -> str:
    """A threshold decision as written in score CSVs: "anomalous", "normal", or "" without a calibration."""
    return "" if anomalous is None else ("anomalous" if anomalous else "normal")


# The columns of a score CSV (scores.csv, predictions.csv) that hold the default score beside its threshold.
DECISION_COLUMNS = ("score", "threshold", "score_normalized", "threshold_normalized", "decision")


def decision_cells(score: float | None, threshold: float | None, normalized: float | None,
                   threshold_normalized: float | None, anomalous: bool | None, *, note: str | None = None) -> list[Any]:
    """One row's :data:`DECISION_COLUMNS` cells for :func:`csv_text`; ``note`` (why there is no score) replaces the
    decision."""
    return [score, threshold, normalized, threshold_normalized, decision_label(anomalous) if note is None else note]
